//! Minimal writer for the "newc" (SVR4, no CRC) cpio format the kernel unpacks as an initramfs.

use std::io::{self, Write};

/// Writes newc entries; call [`CpioWriter::finish`] to append the trailer.
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            ino: 1,
            written: 0,
        }
    }

    /// A directory (path without leading `/`, e.g. `dev`).
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | (perm & 0o7777), 2, 0, &[])
    }

    /// A regular file with `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, 0, data)
    }

    /// A character device node (`/dev/console` must exist before the kernel execs /init).
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(
            path,
            S_IFCHR | (perm & 0o7777),
            1,
            (major << 8) | minor,
            &[],
        )
        .map(|_| ())
    }

    /// Appends the `TRAILER!!!` entry and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, 0, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other("cpio member larger than 4 GiB"))?;
        let ino = if name == "TRAILER!!!" { 0 } else { self.ino };
        self.ino += 1;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible archives
            size,
            0, // dev major
            0, // dev minor
            rdev >> 8,
            rdev & 0xff,
            namesize,
            0, // check
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (4 - (self.written % 4)) % 4;
        self.put(&[0u8; 3][..rem as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_newc_and_aligned() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.file("init", 0o755, b"abcde").unwrap();
        let out = w.finish().unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("init\0"));
        assert!(s.contains("abcde"));
        assert!(s.contains("TRAILER!!!\0"));
        // Header 110 bytes + "dev\0" (4) = 114, padded to 116.
        assert_eq!(&out[116..122], b"070701");
    }
}
