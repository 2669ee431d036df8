use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn elf_cases() {
    // The test binary itself is dynamically linked; /bin/sh too.
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("x");
    std::fs::write(&f, "#!/bin/sh\n").unwrap();
    assert!(find_init(&f.display().to_string()).is_ok());
    assert!(find_init("/bin/sh")
        .unwrap_err()
        .contains("dynamically linked"));
    assert!(find_init("/nonexistent/init")
        .unwrap_err()
        .contains("does not exist"));
}

#[test]
fn init_must_be_static() {
    elf_cases();
}

#[test]
fn layout_and_modes() {
    if !is_root() {
        eprintln!("SKIP: ctdir::layout_and_modes: needs root (chown, tmpfs)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let init = d.path().join("init-src");
    std::fs::write(&init, "x").unwrap();
    let state = d.path().join("state");
    let vmid = Vmid::new(300_999).unwrap();
    let settings = CtSettings {
        readonly_root: true,
        net: None,
    };
    let (ct, _l) = CtDir::prepare(
        &state,
        vmid,
        true,
        &init,
        &Process::default(),
        &settings,
        false,
    )
    .unwrap();
    let dir = ct.path().to_path_buf();
    assert_eq!(dir, state.join("300999"));
    let md = |p: &Path| std::fs::symlink_metadata(p).unwrap();
    let m = |p: &Path| md(p).permissions().mode() & 0o7777;
    assert_eq!(m(&state), 0o711);
    assert_eq!(
        (m(&dir), md(&dir).uid(), md(&dir).gid()),
        (0o750, 0, 100_000)
    );
    let init_copy = dir.join("init");
    assert_eq!((m(&init_copy), md(&init_copy).uid()), (0o750, 0));
    assert_eq!(
        md(&init_copy).nlink(),
        1,
        "a private copy, not a shared link"
    );
    assert_eq!(m(&dir.join("process.json")), 0o640);
    let ctj = std::fs::read_to_string(dir.join("ct.json")).unwrap();
    assert!(ctj.contains("\"readonly_root\":true"), "{ctj}");
    let rw = dir.join(RW_DIR);
    assert_eq!((m(&rw), md(&rw).uid()), (0o700, 100_000));
    assert_eq!(md(&dir.join(CTL_SOCK)).uid(), 100_000);
    let mps = ct.mount_points();
    assert_eq!(
        mps[0].render().unwrap(),
        format!("{},mp=/.pvelxc", dir.display())
    );
    assert_eq!(
        mps[1].render().unwrap(),
        format!("{},mp=/.pvelxc/rw", rw.display())
    );

    // Exec specs: replaced, never written through a planted name.
    let p = ct.write_exec_spec("e1", &Process::default()).unwrap();
    assert_eq!(p, "/.pvelxc/exec-e1.json");
    ct.write_exec_spec("e1", &Process::default()).unwrap();
    ct.remove_exec_spec("e1");
    assert!(!dir.join("exec-e1.json").exists());

    // The rw tmpfs is small: a CT cannot fill the host's disk through it.
    let big = std::fs::write(rw.join("fill"), vec![0u8; 1 << 20]);
    assert!(big.is_err(), "the rw tmpfs accepted 1 MiB");
    let _ = std::fs::remove_file(rw.join("fill"));

    assert!(ct.read_exit().is_none());
    std::fs::write(
        rw.join(EXIT_FILE),
        b"{\"pid\":2,\"exit_code\":3,\"signal\":null,\"time_ns\":1}\n",
    )
    .unwrap();
    assert_eq!(ct.read_exit().unwrap().exit_code, 3);
    drop(ct);
    remove(&dir).unwrap();
    remove(&dir).unwrap();
    assert!(!dir.exists());
}

/// What a hostile CT root can put where the exit record goes.
#[test]
fn hostile_exit_records_are_refused_without_blocking() {
    let d = tempfile::tempdir().unwrap();
    let rw = safe::open_dir(d.path()).unwrap();
    let exit = d.path().join(EXIT_FILE);
    let read = || read_exit_at(rw.as_fd());

    // A symlink to a host file is not followed.
    let secret = d.path().join("host-secret");
    std::fs::write(&secret, "{\"exit_code\":7,\"signal\":null,\"time_ns\":1}").unwrap();
    std::os::unix::fs::symlink(&secret, &exit).unwrap();
    assert!(read().is_none());
    std::fs::remove_file(&exit).unwrap();

    // A FIFO with no writer: refused at once instead of blocking forever.
    nix::unistd::mkfifo(&exit, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let t0 = std::time::Instant::now();
    assert!(read().is_none());
    assert!(t0.elapsed() < std::time::Duration::from_secs(1));
    std::fs::remove_file(&exit).unwrap();

    // A directory, a huge file, garbage, out-of-range values.
    std::fs::create_dir(&exit).unwrap();
    assert!(read().is_none());
    std::fs::remove_dir(&exit).unwrap();
    let f = std::fs::File::create(&exit).unwrap();
    f.set_len(64 << 20).unwrap();
    assert!(read().is_none());
    for bad in [
        &b"not json"[..],
        b"{\"exit_code\":256,\"signal\":null,\"time_ns\":1}",
        b"{\"exit_code\":-1,\"signal\":null,\"time_ns\":1}",
        b"{\"exit_code\":1,\"signal\":99,\"time_ns\":1}",
    ] {
        std::fs::write(&exit, bad).unwrap();
        assert!(read().is_none(), "{}", String::from_utf8_lossy(bad));
    }
    std::fs::write(
        &exit,
        format!(
            "{{\"exit_code\":255,\"signal\":null,\"time_ns\":1,\"error\":\"a\\u001b[2Jb{}\"}}",
            "x".repeat(2000)
        ),
    )
    .unwrap();
    let r = read().unwrap();
    let msg = r.error.unwrap();
    assert!(
        msg.starts_with('a') && !msg.chars().any(char::is_control) && msg.chars().count() <= 512,
        "{msg}"
    );
}

#[test]
fn noexec_state_dir_is_refused() {
    if !is_root() {
        eprintln!("SKIP: ctdir::noexec_state_dir_is_refused: needs root (mount)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let flags = nix::mount::MsFlags::MS_NOEXEC;
    nix::mount::mount(Some("tmpfs"), &m, Some("tmpfs"), flags, Some("size=1m")).unwrap();
    let e = check_state_dir(&m.join("state")).unwrap_err().to_string();
    nix::mount::umount(&m).unwrap();
    assert!(e.contains("noexec") && e.contains("state_dir"), "{e}");
    check_state_dir(&d.path().join("ok")).unwrap();
}
