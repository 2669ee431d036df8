//! The runtime binary run from a sealed in-memory copy.
//!
//! crun protects itself against CVE-2019-5736 (a container overwriting the host binary
//! through `/proc/<pid>/exe`) by copying itself into a sealed memfd and re-executing that copy
//! at every start, unless it already runs from a fully sealed memfd (or a read-only file
//! system). Handing it that copy ourselves keeps the protection and saves it the second
//! `execve` and dynamic link on every create, start, exec, kill and delete.
//!
//! The copy lives only as long as the command it starts: nothing stays resident per shim.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// The seals crun checks for (`CRUN_MEMFD_SEALS`): with all four the copy can never change.
fn seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

/// A sealed memfd holding the bytes of `binary` (close-on-exec: `execve` of
/// `/proc/self/fd/N` opens it before the descriptor is closed).
/// Only an ELF executable: a script (a wrapper around crun, say) run from a close-on-exec
/// descriptor would find no file for its interpreter, so it is run as it is.
pub fn copy(binary: &Path) -> std::io::Result<OwnedFd> {
    use std::io::{Read, Seek};
    let mut src = File::open(binary)?;
    let mut magic = [0u8; 4];
    src.read_exact(&mut magic)?;
    if &magic != b"\x7fELF" {
        return Err(std::io::Error::other("not an ELF executable"));
    }
    src.rewind()?;
    let fd = memfd_create(
        c"pvelxc-runtime",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut dst = File::from(fd);
    std::io::copy(&mut src, &mut dst)?;
    fcntl(&dst, FcntlArg::F_ADD_SEALS(seals()))?;
    Ok(OwnedFd::from(dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_sealed_and_runs() {
        let Ok(sh) = crate::sys::command::which("true") else {
            return;
        };
        let fd = copy(&sh).expect("copy");
        let got = fcntl(&fd, FcntlArg::F_GET_SEALS).expect("seals");
        assert_eq!(got, seals().bits(), "all four seals, as crun checks");
        let f = File::from(fd.try_clone().expect("dup"));
        assert_eq!(
            f.metadata().expect("stat").len(),
            std::fs::metadata(&sh).expect("stat").len()
        );
        // Writing to the copy is refused.
        use std::io::Write;
        assert!((&f).write_all(b"x").is_err());
        let st = crate::sys::command::program("true".as_ref(), Some(&fd))
            .status()
            .expect("run the copy");
        assert!(st.success());
    }

    #[test]
    fn a_script_is_not_copied() {
        let dir = tempfile::tempdir().expect("dir");
        let script = dir.path().join("wrapper");
        std::fs::write(&script, "#!/bin/sh\nexec crun \"$@\"\n").expect("write");
        assert!(copy(&script).is_err());
    }
}
