//! TTY: `ctr run -t` and `ctr task exec -t` from a pty we own: a `/dev/pts/N` terminal, exit codes,
//! the initial window size and a live resize.

use super::{finish, kill_and_remove, run_argv, run_rootfs_detached, strs, Backend};
use crate::common::*;

fn pts_line(out: &str) -> bool {
    out.lines().any(|l| l.trim().starts_with("/dev/pts/"))
}

/// Prints `size=R C` once ctr's initial resize landed (polled, bounded: stty may transiently fail
/// or read 0x0 before). A macro: `concat!` takes literals only.
macro_rules! wait_size {
    () => {
        "n=0; while [ $n -lt 200 ]; do s=$(stty size 2>/dev/null); \
         case \"$s\" in ''|'0 0') sleep 0.05; n=$((n+1));; *) break;; esac; done; \
         echo \"size=$s\""
    };
}
const WAIT_SIZE: &str = wait_size!();

/// The initial size ([`WAIT_SIZE`]), then the size after our resize to 50x100.
const SIZE_SCRIPT: &str = concat!(
    wait_size!(),
    "; n=0; while [ \"$(stty size 2>/dev/null)\" != '50 100' ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done; \
     echo \"resized=$(stty size)\""
);

/// run -t (tty, exit code), run -t (initial size, live resize), exec -t (tty, size, exit code).
pub fn tty_run_exec_and_resize(b: &impl Backend) {
    let env = b.env();
    let t = b.expect().timeout;

    // run -t: tty and exit code
    let argv = run_argv(
        b,
        &["--rm", "-t"],
        "tty1",
        &["/bin/sh", "-c", "tty; exit 4"],
    );
    let (code, out) = run_in_pty(env.ctr_command(&strs(&argv)), 24, 80, t);
    assert_eq!(code, 4, "ctr run -t exit code; output {out:?}");
    assert!(pts_line(&out), "tty must print /dev/pts/N; output {out:?}");
    b.assert_gone("tty1");

    // run -t: initial size from our terminal, then a live resize
    let argv = run_argv(b, &["--rm", "-t"], "tty2", &["/bin/sh", "-c", SIZE_SCRIPT]);
    let mut pty = PtySession::spawn(env.ctr_command(&strs(&argv)), 37, 123);
    pty.wait_output_contains("size=", t);
    assert!(
        pty.output().contains("size=37 123"),
        "initial window size must be 37x123; output {:?}",
        pty.output()
    );
    pty.set_size(50, 100);
    let (code, out) = pty.finish(t);
    assert_eq!(code, 0, "output {out:?}");
    assert!(
        out.contains("resized=50 100"),
        "resize must reach the container; output {out:?}"
    );
    b.assert_gone("tty2");

    // exec -t: tty, window size (at start, or once ctr's resize landed), exit code
    run_rootfs_detached(b, "ttyd", &["/bin/sleep", "1000"]);
    let at_start = b.expect().exec_tty_sized_at_start;
    let (script, size) = if at_start {
        ("tty; stty size; exit 4".to_string(), "33 99")
    } else {
        (format!("tty; {WAIT_SIZE}; exit 4"), "size=33 99")
    };
    let cmd = env.ctr_command(&[
        "task",
        "exec",
        "-t",
        "--exec-id",
        "te1",
        "ttyd",
        "/bin/sh",
        "-c",
        &script,
    ]);
    let (code, out) = run_in_pty(cmd, 33, 99, t);
    assert_eq!(code, 4, "ctr task exec -t exit code; output {out:?}");
    assert!(
        pts_line(&out),
        "exec tty must print /dev/pts/N; output {out:?}"
    );
    assert!(out.contains(size), "exec -t window size; output {out:?}");
    kill_and_remove(b, "ttyd");
    b.assert_gone("ttyd");
    finish(b);
}
