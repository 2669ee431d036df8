//! `pvelxc-init`: PID 1 of a containerd-shim-pvelxc-v2 CT (no arguments), or
//! `pvelxc-init exec FILE` (apply a Process JSON and execve in place), or one of the pod
//! modes run through `pct exec` (`unpack DIR`, `container FILE`, `exec-in PID FILE`,
//! `remove DIR`: see `podmode`). See PROTOCOL.md.

mod init;
mod podmode;

use pvelxc_init::process;
use pvelxc_init::proto::PROTOCOL_VERSION;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the shim's directory is mounted in the CT (PVELXC_DIR overrides, for tests).
const DEFAULT_DIR: &str = "/.pvelxc";

const USAGE: &str = "usage: pvelxc-init | pvelxc-init exec FILE | pvelxc-init unpack DIR \
    | pvelxc-init container FILE | pvelxc-init exec-in PID FILE | pvelxc-init remove DIR";

fn log(msg: &str) {
    process::write_stderr(&format!("pvelxc-init: {msg}\n"));
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let dir = PathBuf::from(std::env::var_os("PVELXC_DIR").unwrap_or_else(|| DEFAULT_DIR.into()));
    let code = match args.get(1).map(|a| a.as_bytes()) {
        None => init::init_main(&dir),
        Some(b"exec") if args.len() == 3 => exec_main(Path::new(&args[2])),
        Some(b"unpack") if args.len() == 3 => podmode::unpack::main(Path::new(&args[2])),
        Some(b"container") if args.len() == 3 => podmode::container::main(Path::new(&args[2])),
        Some(b"exec-in") if args.len() == 4 => {
            podmode::execin::main(&args[2].to_string_lossy(), Path::new(&args[3]))
        }
        Some(b"remove") if args.len() == 3 => podmode::remove_main(Path::new(&args[2])),
        Some(b"--version") => {
            println!(
                "pvelxc-init {} protocol {PROTOCOL_VERSION}",
                env!("CARGO_PKG_VERSION")
            );
            0
        }
        _ => {
            log(USAGE);
            2
        }
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------- exec mode

fn exec_main(file: &Path) -> i32 {
    let prepared = match std::fs::read(file)
        .map_err(|e| format!("read {}: {e}", file.display()))
        .and_then(|b| process::from_json(&b))
        .and_then(|p| process::prepare(&p))
    {
        Ok(p) => p,
        Err(e) => {
            log(&e);
            return 126;
        }
    };
    process::reset_signals();
    if let Err(e) = process::apply(&prepared) {
        e.report(process::TAG);
        return 126;
    }
    process::exec(&prepared, process::TAG)
}
