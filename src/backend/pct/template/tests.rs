use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::key::{content_digest, WalkOpts};
use super::*;

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn digest(p: &Path) -> String {
    content_digest(p, WalkOpts::default()).expect("digest")
}

fn set_mtime(p: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(p)
        .expect("open")
        .set_modified(t)
        .expect("mtime");
}

#[test]
fn storage_cfg() {
    let cfg = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n\
               lvmthin: local-lvm\n\tthinpool data\n\ndir: tpl\n\tpath /srv/tpl\n";
    assert_eq!(storage_path(cfg, "tpl"), Some(PathBuf::from("/srv/tpl")));
    assert_eq!(
        storage_path(cfg, "local"),
        Some(PathBuf::from("/var/lib/vz"))
    );
    assert_eq!(storage_path(cfg, "nfs"), None);
}

/// The attack: two trees with identical metadata (path, mode, owner, size, mtime) but other
/// bytes must not share a template.
#[test]
fn same_metadata_other_bytes_other_key() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let mk = |body: &str| {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("bin")).expect("mkdir");
        let f = d.path().join("bin/sh");
        std::fs::write(&f, body).expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        set_mtime(&f, t);
        d
    };
    let (a, b, c) = (mk("good"), mk("evil"), mk("good"));
    let (ma, mb) = (
        std::fs::metadata(a.path().join("bin/sh")).expect("stat"),
        std::fs::metadata(b.path().join("bin/sh")).expect("stat"),
    );
    assert_eq!(
        (ma.mode(), ma.uid(), ma.gid(), ma.size(), ma.mtime()),
        (mb.mode(), mb.uid(), mb.gid(), mb.size(), mb.mtime())
    );
    assert_ne!(digest(a.path()), digest(b.path()));
    // Equal content (other inodes, other dir mtimes) shares the template.
    assert_eq!(digest(a.path()), digest(c.path()));
    // Metadata that tar keeps counts too: mode, link target, names.
    std::fs::set_permissions(
        c.path().join("bin/sh"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .expect("chmod");
    assert_ne!(digest(a.path()), digest(c.path()));
}

#[test]
fn symlinks_are_hashed_as_links_never_followed() {
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("shadow");
    std::fs::write(&secret, "root:hash1").expect("write");
    std::fs::create_dir(outside.path().join("dir")).expect("mkdir");
    let d = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(&secret, d.path().join("shadow")).expect("symlink");
    std::os::unix::fs::symlink(outside.path().join("dir"), d.path().join("dir")).expect("symlink");
    std::os::unix::fs::symlink("/etc/shadow", d.path().join("etc-shadow")).expect("symlink");
    let before = digest(d.path());
    // What the links point at is never read: changing it changes nothing.
    std::fs::write(&secret, "root:hash2-longer").expect("write");
    std::fs::write(outside.path().join("dir/new"), "x").expect("write");
    assert_eq!(before, digest(d.path()));
    // The link target itself is part of the key.
    std::fs::remove_file(d.path().join("shadow")).expect("rm");
    std::os::unix::fs::symlink("/etc/passwd", d.path().join("shadow")).expect("symlink");
    assert_ne!(before, digest(d.path()));
}

#[test]
fn devices_and_fifos_are_keyed_without_opening_them() {
    let d = tempfile::tempdir().expect("tempdir");
    let fifo = d.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    // Opening a FIFO for reading would block; the walk must not.
    let a = digest(d.path());
    if !is_root() {
        eprintln!("SKIP: device node part needs root");
        return;
    }
    let mk = |name: &str, minor: u64| {
        nix::sys::stat::mknod(
            &d.path().join(name),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, minor),
        )
        .expect("mknod");
    };
    mk("null", 3);
    let b = digest(d.path());
    assert_ne!(a, b);
    std::fs::remove_file(d.path().join("null")).expect("rm");
    mk("null", 5);
    assert_ne!(b, digest(d.path()));
}

#[test]
fn unprivileged_refuses_unmappable_owner_naming_the_file() {
    if !is_root() {
        eprintln!("SKIP: chown to 70000 needs root");
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join("usr/lib")).expect("mkdir");
    std::fs::write(d.path().join("usr/lib/ok"), "x").expect("write");
    let bad = d.path().join("usr/lib/owned-by-70000");
    std::fs::write(&bad, "x").expect("write");
    std::os::unix::fs::chown(&bad, Some(70000), Some(70001)).expect("chown");
    let err = content_digest(d.path(), WalkOpts { unprivileged: true })
        .expect_err("must refuse")
        .to_string();
    assert!(err.contains("/usr/lib/owned-by-70000"), "{err}");
    assert!(err.contains("uid 70000 gid 70001"), "{err}");
    assert!(err.contains("unprivileged = false"), "{err}");
    let e = content_digest(d.path(), WalkOpts { unprivileged: true }).expect_err("refuse");
    assert!(
        matches!(e, Error::InvalidArgument(_)),
        "not InvalidArgument: {e:?}"
    );
    // gid alone, too.
    std::os::unix::fs::chown(&bad, Some(0), Some(65536)).expect("chown");
    assert!(content_digest(d.path(), WalkOpts { unprivileged: true }).is_err());
    // Privileged CTs map everything.
    content_digest(d.path(), WalkOpts::default()).expect("privileged is fine");
}

fn fake_template(dir: &Path, n: u8, mib: usize, age_secs: u64) -> PathBuf {
    let p = dir.join(format!("{PREFIX}{}.tar", format!("{n:02x}").repeat(32)));
    std::fs::write(&p, vec![1u8; mib << 20]).expect("write");
    set_mtime(&p, SystemTime::now() - Duration::from_secs(age_secs));
    p
}

#[tokio::test]
async fn gc_removes_least_recently_used_down_to_the_cap_never_a_leased_one() {
    let d = tempfile::tempdir().expect("tempdir");
    let oldest = fake_template(d.path(), 1, 1, 400);
    let b = fake_template(d.path(), 2, 1, 300);
    let c = fake_template(d.path(), 3, 1, 200);
    let newest = fake_template(d.path(), 4, 1, 100);
    let legacy = d.path().join(format!("{PREFIX}l{}.tar", "ab".repeat(16)));
    std::fs::write(&legacy, "old key scheme").expect("write");
    let foreign = d.path().join("debian-12-standard_12.7-1_amd64.tar.zst");
    std::fs::write(&foreign, vec![0u8; 1 << 20]).expect("write");
    set_mtime(&foreign, SystemTime::now() - Duration::from_secs(9999));

    let lease = lease::try_lease(&oldest)
        .await
        .expect("lease")
        .expect("exists");
    // Leasing stamps the template as just used; put it back to oldest to test the lock.
    let stamp = lease::stamp_path(&oldest).expect("stamp");
    set_mtime(&stamp, SystemTime::now() - Duration::from_secs(400));
    // A use stamp makes a template recent: c was used after newest was packed.
    std::fs::write(lease::stamp_path(&c).expect("stamp"), "").expect("stamp");
    let size = |p: &Path| std::fs::metadata(p).expect("stat").blocks() * 512;
    let cap = size(&oldest) + size(&newest) + size(&newest) / 2;
    let r = gc::collect(d.path(), cap).expect("gc");
    assert!(oldest.exists(), "a leased template was removed");
    assert!(
        !b.exists() && !newest.exists(),
        "LRU unleased ones stay: {r:?}"
    );
    assert!(c.exists(), "recently used (stamp) removed");
    assert!(!legacy.exists(), "legacy-key templates go");
    assert!(foreign.exists(), "not ours");
    assert_eq!(r.in_use, 1);
    assert!(r.total <= cap);

    // Released: now it can go (cap 1 byte leaves nothing unleased).
    drop(lease);
    let r = gc::collect(d.path(), 1).expect("gc");
    assert!(!oldest.exists() && !c.exists(), "{r:?}");
    assert!(!stamp.exists(), "the stamp goes with its template");
    assert!(foreign.exists());
    // cap 0 = no cap.
    let e = fake_template(d.path(), 5, 1, 10);
    gc::collect(d.path(), 0).expect("gc");
    assert!(e.exists());
}

#[tokio::test]
async fn a_lease_stamps_use_and_refuses_foreign_files() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = fake_template(d.path(), 7, 0, 1000);
    let before = std::fs::metadata(&p)
        .expect("stat")
        .modified()
        .expect("mtime");
    let l = lease::try_lease(&p).await.expect("lease").expect("exists");
    assert_eq!(l.path(), p);
    // The template itself is not modified; its use stamp is.
    let mtime = |p: &Path| {
        std::fs::metadata(p)
            .expect("stat")
            .modified()
            .expect("mtime")
    };
    assert_eq!(mtime(&p), before);
    assert!(mtime(&lease::stamp_path(&p).expect("stamp")) > before);
    drop(l);
    assert!(lease::try_lease(&d.path().join("missing.tar"))
        .await
        .expect("ok")
        .is_none());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    assert!(lease::try_lease(&p).await.is_err(), "world-writable served");
    let link = d.path().join(format!("{PREFIX}{}.tar", "cd".repeat(32)));
    std::os::unix::fs::symlink(&p, &link).expect("symlink");
    assert!(lease::try_lease(&link).await.is_err(), "symlink followed");
}

#[test]
fn stale_temps_of_crashed_packers_are_removed() {
    let d = tempfile::tempdir().expect("tempdir");
    let name = |n: u8| format!("{PREFIX}{}.tar", format!("{n:02x}").repeat(32));
    let tmp = |n: u8, pid: u32, age: u64| {
        let p = d.path().join(format!(".{}.tmp-{pid}", name(n)));
        std::fs::write(&p, "half").expect("write");
        set_mtime(&p, SystemTime::now() - Duration::from_secs(age));
        p
    };
    let stale = tmp(1, 111, 3600);
    let fresh = tmp(2, 222, 1);
    let locked = tmp(3, 333, 3600);
    let held = tmp(4, 444, 3600);
    let unrelated = d.path().join(".something.tmp-1");
    std::fs::write(&unrelated, "x").expect("write");
    set_mtime(&unrelated, SystemTime::now() - Duration::from_secs(3600));
    // A live packer of template 3 holds its lock.
    let lockf = std::fs::File::create(d.path().join(lock_name(&name(3)))).expect("lock");
    assert!(lease::try_flock(&lockf, true).expect("flock"));

    let n = gc::sweep_temps(d.path(), Some(&name(4)), gc::STALE_AGE);
    assert_eq!(n, 2);
    assert!(!stale.exists() && !held.exists());
    assert!(fresh.exists(), "too young");
    assert!(locked.exists(), "in use by a live packer");
    assert!(unrelated.exists(), "not ours");
}

#[tokio::test]
async fn timeout_terms_then_kills() {
    crate::sys::reaper::start().expect("reaper");
    let t0 = std::time::Instant::now();
    let argv: Vec<std::ffi::OsString> = vec!["sleep".into(), "30".into()];
    let e = tar::run(&argv, Duration::from_millis(200), Duration::from_secs(5))
        .await
        .expect_err("timeout");
    assert!(matches!(e, Error::DeadlineExceeded(_)), "{e:?}");
    assert!(e.to_string().contains("killed (SIGTERM)"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());

    // A packer that ignores SIGTERM is killed after the grace period.
    let t0 = std::time::Instant::now();
    let argv: Vec<std::ffi::OsString> = ["sh", "-c", "trap '' TERM; exec sleep 30"]
        .iter()
        .map(Into::into)
        .collect();
    let e = tar::run(
        &argv,
        Duration::from_millis(300),
        Duration::from_millis(300),
    )
    .await
    .expect_err("timeout");
    assert!(e.to_string().contains("SIGKILL"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // A packer that finishes in time reports its exit and stderr.
    let argv: Vec<std::ffi::OsString> =
        ["tar", "--create", "--file", "/nonexistent-dir/x.tar", "."]
            .iter()
            .map(Into::into)
            .collect();
    let out = tar::run(&argv, Duration::from_secs(30), tar::GRACE)
        .await
        .expect("ran");
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("nonexistent-dir"), "{}", out.stderr);
}

#[tokio::test]
async fn packer_packs_once_leases_and_rekeys_on_content() {
    crate::sys::reaper::start().expect("reaper");
    let base = tempfile::tempdir().expect("tempdir");
    let bundle = base.path().join("bundle");
    let rootfs = base.path().join("rootfs");
    std::fs::create_dir_all(&bundle).expect("mkdir");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
    std::fs::write(rootfs.join("etc/motd"), "one").expect("write");
    // A 64 MiB hole: packed sparse.
    let sparse = std::fs::File::create(rootfs.join("sparse")).expect("create");
    sparse.set_len(64 << 20).expect("truncate");
    let tdir = base.path().join("templates");
    let cfg = PctConfig {
        template_dir: tdir.display().to_string(),
        unprivileged: false,
        ..Default::default()
    };
    let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs.display().to_string()},
    }))
    .expect("spec");
    let packer = Packer {
        cfg: &cfg,
        mounts: &[],
        spec: &spec,
        bundle: &bundle,
        process: None,
    };
    let l1 = packer.ensure().await.expect("pack");
    let p1 = l1.path().to_path_buf();
    assert_eq!(
        std::fs::metadata(&tdir).expect("stat").mode() & 0o777,
        0o700
    );
    let md = std::fs::metadata(&p1).expect("stat");
    assert_eq!(md.mode() & 0o777, 0o600);
    assert!(md.blocks() * 512 < 1 << 20, "not sparse: {}", md.blocks());
    // The archive names the file (read directly: a `tar -t` child could be reaped by the
    // test process's shim reaper, which other tests start, before std's wait sees it).
    let archive = std::fs::read(&p1).expect("read template");
    let name = b"./etc/motd\0";
    assert!(
        archive.windows(name.len()).any(|w| w == name),
        "./etc/motd is not in the template"
    );
    // Reused while leased; a second lease shares it, and the template is never rewritten.
    let packed_at = std::fs::metadata(&p1).expect("stat").modified().expect("m");
    let l2 = packer.ensure().await.expect("reuse");
    assert_eq!(l2.path(), p1);
    assert_eq!(
        std::fs::metadata(&p1).expect("stat").modified().expect("m"),
        packed_at
    );
    drop((l1, l2));
    // Same size, same mtime, other bytes: another template.
    let t = std::fs::metadata(rootfs.join("etc/motd"))
        .expect("stat")
        .modified()
        .expect("m");
    std::fs::write(rootfs.join("etc/motd"), "two").expect("write");
    set_mtime(&rootfs.join("etc/motd"), t);
    let l3 = packer.ensure().await.expect("repack");
    assert_ne!(l3.path(), p1);
    let names: Vec<String> = std::fs::read_dir(&tdir)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    // An unleased template goes when the cap demands; the leased one stays.
    let mut small = cfg.clone();
    small.template_max_gib = 0;
    let r = collect_garbage(&small).expect("gc");
    assert!(r.removed.is_empty(), "no cap removes nothing");
    let r = gc::collect(&tdir, 1).expect("gc");
    assert_eq!(r.removed, vec![p1.clone()]);
    assert!(l3.path().exists());
}
