//! Fixtures: a busybox-static rootfs and an OCI image tarball of it, built once per machine under
//! `target/fixtures/<version>` (a file lock shared by every test binary) and once per process.

use super::{fixtures_dir, run_ok, CONTAINER_PATH};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Fixture paths, built once per machine (cached under target/fixtures) and once per process.
pub struct Fixtures {
    /// A busybox-static rootfs (read it, copy it: `TestEnv::rootfs()` gives a private copy).
    pub rootfs: PathBuf,
    /// OCI layout tarball of the busybox image (for `ctr image import`).
    pub image_tar: PathBuf,
}

struct FileLock(fs::File);

impl FileLock {
    fn acquire(path: &Path) -> FileLock {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open lock file {}: {e}", path.display()));
        // SAFETY: flock on an fd we own; blocks until the other test binary is done building.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {} failed", path.display());
        FileLock(f)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking an fd we own.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn busybox_binary() -> PathBuf {
    for c in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(c).is_file() {
            return PathBuf::from(c);
        }
    }
    which("busybox").expect("busybox not found: install busybox-static (scripts/setup.sh)")
}

fn build_rootfs(dest: &Path) {
    let _ = fs::remove_dir_all(dest);
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp", "root", "run",
        "var",
    ] {
        fs::create_dir_all(dest.join(d)).expect("mkdir rootfs dir");
    }
    let bb = busybox_binary();
    fs::copy(&bb, dest.join("bin/busybox")).expect("copy busybox into rootfs");
    let d = dest.to_str().expect("utf8 rootfs path");
    run_ok(&["chroot", d, "/bin/busybox", "--install", "-s"]);
    fs::write(
        dest.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(dest.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("write group");
    fs::write(dest.join("etc/hostname"), "busybox\n").expect("write hostname");
    // /tmp must be writable by everyone, as usual
    run_ok(&["chmod", "1777", dest.join("tmp").to_str().expect("utf8")]);
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn build_image_tar(rootfs: &Path, work: &Path, dest_tar: &Path) {
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work).expect("mkdir image work dir");
    let img = work.join("img");
    let bundle = work.join("bundle");
    let img_tag = format!("{}:latest", img.display());
    run_ok(&["umoci", "init", "--layout", img.to_str().expect("utf8")]);
    run_ok(&["umoci", "new", "--image", &img_tag]);
    run_ok(&[
        "umoci",
        "unpack",
        "--image",
        &img_tag,
        bundle.to_str().expect("utf8"),
    ]);
    let src = format!("{}/.", rootfs.display());
    let dst = format!("{}/rootfs/", bundle.display());
    run_ok(&["cp", "-a", &src, &dst]);
    run_ok(&[
        "umoci",
        "repack",
        "--image",
        &img_tag,
        bundle.to_str().expect("utf8"),
    ]);
    run_ok(&[
        "umoci",
        "config",
        "--image",
        &img_tag,
        "--config.cmd",
        "/bin/sh",
        "--config.env",
        CONTAINER_PATH,
        "--architecture",
        oci_arch(),
        "--os",
        "linux",
    ]);
    let tmp_tar = dest_tar.with_extension("tar.tmp");
    run_ok(&[
        "tar",
        "-cf",
        tmp_tar.to_str().expect("utf8"),
        "-C",
        img.to_str().expect("utf8"),
        ".",
    ]);
    fs::rename(&tmp_tar, dest_tar).expect("rename image tar");
    let _ = fs::remove_dir_all(work);
}

/// Build (once, under a file lock shared by all test binaries) and return the fixtures.
pub fn fixtures() -> &'static Fixtures {
    static FIX: OnceLock<Fixtures> = OnceLock::new();
    FIX.get_or_init(|| {
        let dir = fixtures_dir();
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let _lock = FileLock::acquire(&dir.join(".lock"));
        let rootfs = dir.join("busybox-rootfs");
        let rootfs_done = dir.join("busybox-rootfs.done");
        if !rootfs_done.exists() {
            let tmp = dir.join("busybox-rootfs.tmp");
            build_rootfs(&tmp);
            let _ = fs::remove_dir_all(&rootfs);
            fs::rename(&tmp, &rootfs).expect("rename rootfs fixture");
            fs::write(&rootfs_done, "ok\n").expect("write marker");
        }
        let image_tar = dir.join("busybox-oci.tar");
        if !image_tar.exists() {
            build_image_tar(&rootfs, &dir.join("image-work"), &image_tar);
        }
        Fixtures { rootfs, image_tar }
    })
}
