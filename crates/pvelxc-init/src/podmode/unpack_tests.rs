//! Archives built here with the `tar` crate (headers written by hand where its builder
//! refuses: `..` paths, GNU sparse entries), unpacked into temp dirs. Run as root: owners are
//! checked exactly.

use super::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use tar::{EntryType, Header};

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("pvelxc-unpack-ut-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

/// A header whose name is written raw (the builder refuses `..`).
fn raw_name(h: &mut Header, name: &[u8]) {
    let n = &mut h.as_old_mut().name;
    n.fill(0);
    n[..name.len()].copy_from_slice(name);
    h.set_cksum();
}

fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

fn sample() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(EntryType::Directory, 0o755, 0, 0, 1_500_000_000);
    b.append_data(&mut h, "./", &[][..]).unwrap();
    let mut h = header(EntryType::Directory, 0o750, 1000, 1001, 1_600_000_000);
    b.append_data(&mut h, "./d/", &[][..]).unwrap();
    let mut h = header(EntryType::Regular, 0o640, 1000, 1001, 1_600_000_001);
    h.set_size(5);
    b.append_data(&mut h, "./d/f", &b"hello"[..]).unwrap();
    let mut h = header(EntryType::Regular, 0o4755, 0, 0, 1_600_000_002);
    h.set_size(2);
    b.append_data(&mut h, "./d/suid", &b"#!"[..]).unwrap();
    let mut h = header(EntryType::Symlink, 0o777, 1002, 1003, 1_600_000_003);
    b.append_link(&mut h, "./d/l", "f").unwrap();
    let mut h = header(EntryType::Symlink, 0o777, 0, 0, 1_600_000_003);
    b.append_link(&mut h, "./abs", "/etc/passwd").unwrap();
    let mut h = header(EntryType::Link, 0o640, 1000, 1001, 1_600_000_001);
    b.append_link(&mut h, "./d/h", "./d/f").unwrap();
    let mut h = header(EntryType::Char, 0o666, 0, 0, 1);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "./d/null", &[][..]).unwrap();
    let mut h = header(EntryType::Block, 0o660, 0, 6, 1);
    b.append_data(&mut h, "./d/sda", &[][..]).unwrap();
    let mut h = header(EntryType::Fifo, 0o644, 0, 0, 1);
    b.append_data(&mut h, "./d/fifo", &[][..]).unwrap();
    // GNU sparse: 512 bytes at 0, 4 at 8192, a hole to 16384.
    let mut h = header(EntryType::GNUSparse, 0o600, 7, 8, 1_600_000_004);
    h.set_size(516);
    {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(0);
        g.sparse[0].set_length(512);
        g.sparse[1].set_offset(8192);
        g.sparse[1].set_length(4);
        // GNU tar's way of a trailing hole: an empty chunk at the end.
        g.sparse[2].set_offset(16384);
        g.sparse[2].set_length(0);
        g.set_real_size(16384);
    }
    let data = [&[b'A'; 512][..], b"BBBB"].concat();
    b.append_data(&mut h, "./sparse", &data[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn unpacks_everything_but_devices() {
    let t = Tmp::new("all");
    let dir = t.0.join("parent/new");
    let s = unpack(&sample()[..], &dir).unwrap();
    assert_eq!(
        s,
        Stats {
            entries: 11,
            skipped: 3
        }
    );
    let md = |p: &str| std::fs::symlink_metadata(dir.join(p)).unwrap();
    // Exactly these names, nothing else.
    let mut names: Vec<String> = std::fs::read_dir(dir.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["f", "h", "l", "suid"]);
    let mut top: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["abs", "d", "sparse"]);

    assert_eq!(std::fs::read(dir.join("d/f")).unwrap(), b"hello");
    let f = md("d/f");
    assert_eq!(f.mode() & 0o7777, 0o640);
    assert_eq!(f.mtime(), 1_600_000_001);
    assert_eq!(md("d/suid").mode() & 0o7777, 0o4755, "set-id bits kept");
    let h = md("d/h");
    assert_eq!(h.ino(), f.ino(), "hard link");
    assert_eq!(f.nlink(), 2);
    let l = md("d/l");
    assert!(l.file_type().is_symlink());
    assert_eq!(std::fs::read_link(dir.join("d/l")).unwrap(), Path::new("f"));
    assert_eq!(l.mtime(), 1_600_000_003);
    assert_eq!(
        std::fs::read_link(dir.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    let d = md("d");
    assert!(d.is_dir());
    assert_eq!(d.mode() & 0o7777, 0o750);
    assert_eq!(d.mtime(), 1_600_000_000, "directory mtime kept");
    let top = md("");
    assert_eq!(top.mode() & 0o7777, 0o755);
    assert_eq!(top.mtime(), 1_500_000_000, "the . entry applies to DIR");
    if is_root() {
        assert_eq!((f.uid(), f.gid()), (1000, 1001));
        assert_eq!((l.uid(), l.gid()), (1002, 1003), "lchown of the link");
        assert_eq!((d.uid(), d.gid()), (1000, 1001));
        assert_eq!((md("sparse").uid(), md("sparse").gid()), (7, 8));
    }
    for p in ["d/null", "d/sda", "d/fifo"] {
        assert!(std::fs::symlink_metadata(dir.join(p)).is_err(), "{p}");
    }
    let sp = std::fs::read(dir.join("sparse")).unwrap();
    assert_eq!(sp.len(), 16384);
    assert!(sp[..512].iter().all(|b| *b == b'A'));
    assert_eq!(&sp[8192..8196], b"BBBB");
    assert!(sp[512..8192].iter().chain(&sp[8196..]).all(|b| *b == 0));
    assert!(!md("sparse").file_type().is_char_device());

    // DIR exists now: a second unpack refuses it.
    let e = unpack(&sample()[..], &dir).unwrap_err();
    assert!(e.contains("File exists"), "{e}");
}

#[test]
fn dotdot_entry_is_refused() {
    let t = Tmp::new("dotdot");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(EntryType::Regular, 0o644, 0, 0, 1);
    h.set_size(4);
    raw_name(&mut h, b"../evil");
    b.append(&h, &b"evil"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let dir = t.0.join("new");
    let e = unpack(&tar[..], &dir).unwrap_err();
    assert!(e.contains("would leave the directory"), "{e}");
    assert!(!t.0.join("evil").exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

/// `link -> <outside>` then `link/file`: the second entry must not land in `<outside>`; nor
/// may a hard link name a file outside.
#[test]
fn symlink_escape_is_refused() {
    let t = Tmp::new("escape");
    let outside = t.0.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let secret = t.0.join("secret");
    std::fs::write(&secret, "s").unwrap();
    for (n, second) in ["link/file", "link/sub/file"].iter().enumerate() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(EntryType::Symlink, 0o777, 0, 0, 1);
        b.append_link(&mut h, "link", &outside).unwrap();
        let mut h = header(EntryType::Regular, 0o644, 0, 0, 1);
        h.set_size(3);
        b.append_data(&mut h, second, &b"pwn"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let dir = t.0.join(format!("new{n}"));
        let e = unpack(&tar[..], &dir).unwrap_err();
        assert!(e.contains("outside of destination"), "{e}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{second}");
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(EntryType::Link, 0o644, 0, 0, 1);
    b.append_link(&mut h, "hl", &secret).unwrap();
    let tar = b.into_inner().unwrap();
    let dir = t.0.join("new-hl");
    assert!(unpack(&tar[..], &dir).is_err());
    assert!(!dir.join("hl").exists());
    assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1);
    // A relative path is refused before anything is made.
    assert!(unpack(&tar[..], Path::new("rel/dir")).is_err());
    assert!(!Path::new("rel").exists());
}
