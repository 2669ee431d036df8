//! `pvelxc-init exec-in` into a running container, `unpack` (a GNU tar stream) then
//! `container` on the result, and `remove`: the built binary as root on the host, which plays
//! the CT. Needs root and busybox-static (skipped loudly otherwise).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

mod common;
mod pod;

use common::read_until;
use pod::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[test]
fn exec_in_joins_the_container() {
    if !prereqs() {
        return;
    }
    let t = Tmp::new("execin");
    let root = make_root(&t.0);
    let hosts = t.0.join("hosts");
    std::fs::write(&hosts, "10.0.0.2 exec-in-host\n").unwrap();
    let s = spec(&root, &hosts, &["sh", "-c", "echo ready; sleep 49"]);
    let f = write_json(&t.0, "c.json", &s);
    let mut h = spawn(&["container", f.to_str().unwrap()]);
    let mut so = h.stdout.take().unwrap();
    assert!(read_until(&mut so, "ready", T).contains("ready"));
    let c = child_of(h.id());
    let p = process(&[
        "sh",
        "-c",
        "echo $$; cat /etc/hosts; echo procs=$(ls /proc | grep -v '[^0-9]'); cd /etc && pwd",
    ]);
    let pf = write_json(&t.0, "p.json", &p);
    let out = run(&["exec-in", &c.to_string(), pf.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let l = lines(&out.stdout);
    let inner: u32 = l[0].parse().unwrap();
    assert!(
        inner > 1 && inner < 10,
        "a pid of the container's namespace: {l:?}"
    );
    assert_eq!(l[1], "10.0.0.2 exec-in-host");
    let procs: Vec<&str> = l[2].strip_prefix("procs=").unwrap().split(' ').collect();
    assert!(
        procs.contains(&"1") && procs.contains(&l[0].as_str()),
        "{l:?}"
    );
    assert_eq!(l[3], "/etc");
    // Its exit status comes back; a bad pid or a missing spec are refused.
    let p = process(&["sh", "-c", "exit 5"]);
    let pf = write_json(&t.0, "p5.json", &p);
    assert_eq!(
        run(&["exec-in", &c.to_string(), pf.to_str().unwrap()])
            .status
            .code(),
        Some(5)
    );
    assert_eq!(
        run(&["exec-in", "x", pf.to_str().unwrap()]).status.code(),
        Some(2)
    );
    let out = run(&["exec-in", &c.to_string(), "/nonexistent.json"]);
    assert_eq!(out.status.code(), Some(126));
    kill(c, libc::SIGKILL);
    assert_eq!(wait_exit(&mut h, T).code(), Some(137));
}

#[test]
fn unpack_then_container() {
    if !prereqs() {
        return;
    }
    let t = Tmp::new("unpack");
    let src = make_root(&t.0);
    // A device node (skipped) and a sparse file (kept, holes and all).
    let dev = std::ffi::CString::new(src.join("etc/null").to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
        0
    );
    let sparse = std::fs::File::create(src.join("etc/sparse")).unwrap();
    sparse.set_len(4 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_at(b"end", (4 << 20) - 3).unwrap();
    std::os::unix::fs::chown(src.join("etc/secret"), Some(1234), Some(5678)).unwrap();
    let tar = gnu_tar(&src);
    let dir = t.0.join("pod/c1/rootfs");
    let mut u = std::process::Command::new(BIN)
        .args(["unpack", dir.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    u.stdin.take().unwrap().write_all(&tar).unwrap();
    let out = u.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        err,
        "pvelxc-init: unpack: skipped 1 device and fifo entries\n"
    );
    assert!(!dir.join("etc/null").exists());
    let m = std::fs::metadata(dir.join("etc/sparse")).unwrap();
    assert_eq!(m.len(), 4 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "holes kept: {} blocks",
        m.blocks()
    );
    let secret = std::fs::metadata(dir.join("etc/secret")).unwrap();
    assert_eq!((secret.uid(), secret.gid()), (1234, 5678));
    assert_eq!(
        std::fs::metadata(dir.join("bin/busybox")).unwrap().mode(),
        std::fs::metadata(src.join("bin/busybox")).unwrap().mode()
    );

    let hosts = t.0.join("hosts");
    std::fs::write(&hosts, "").unwrap();
    let s = spec(
        &dir,
        &hosts,
        &["sh", "-c", "echo $(ls /bin) $(cat /etc/secret | wc -c)"],
    );
    let f = write_json(&t.0, "c.json", &s);
    let out = run(&["container", f.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        lines(&out.stdout),
        ["busybox cat echo grep hostname id kill ls pwd sh sleep touch true wc 0"]
    );

    // Unpacking into an existing directory, or from garbage, fails with one line.
    let out = run(&["unpack", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.starts_with("pvelxc-init: unpack: mkdir ") && e.ends_with("File exists (os error 17)\n"),
        "{e}"
    );
}

#[test]
fn remove_only_below_the_pod_dir() {
    if !prereqs() {
        return;
    }
    let t = Tmp::new("remove");
    std::fs::write(t.0.join("keep"), "k").unwrap();
    for bad in [
        t.0.to_str().unwrap(),
        "/.pvelxc-pod",
        "/.pvelxc-pod/../tmp",
        "/.pvelxc-pod/c1/../../tmp",
        "relative",
    ] {
        let out = run(&["remove", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("pvelxc-init: remove: refused"));
    }
    assert!(t.0.join("keep").exists());
    // A real one: its symlink to the temp dir is removed, not followed.
    let name = format!("pvelxc-test-{}", std::process::id());
    let pod_dir = Path::new("/.pvelxc-pod");
    let had_pod_dir = pod_dir.exists();
    let c = pod_dir.join(&name);
    std::fs::create_dir_all(c.join("rootfs/etc")).unwrap();
    std::os::unix::fs::symlink(&t.0, c.join("rootfs/etc/link")).unwrap();
    let out = run(&["remove", c.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!c.exists());
    assert!(t.0.join("keep").exists());
    assert_eq!(
        run(&["remove", c.to_str().unwrap()]).status.code(),
        Some(0),
        "gone: fine"
    );
    if !had_pod_dir {
        let _ = std::fs::remove_dir(pod_dir);
    }
}
