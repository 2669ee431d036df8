//! Integration-test harness: a private containerd per test, fixtures cached under
//! `target/fixtures/`, `ctr` helpers with bounded timeouts, an event watcher and a pty runner.
//! One file per concern, re-exported here (`use common::*` reaches everything):
//! * [`env`]: [`TestEnv`], the private containerd (builder, start/stop/restart, cleanup on Drop);
//! * [`ctr`]: `ctr` invocation on a `TestEnv`, task queries and output assertions;
//! * [`process`]: child processes with bounded waits ([`BgProcess`], [`run_cmd`], [`wait_until`]);
//! * [`procfs`]: /proc lookups (pids, shims, mounts) and killing what we started;
//! * [`fixtures`]: the busybox rootfs and OCI image, built once per machine;
//! * [`events`]: `ctr events` in the background ([`EventWatcher`]);
//! * [`pty`]: a command on a pty we own ([`PtySession`]);
//! * [`skip`], [`pve`], [`vm`]: skips, the pct test host, the vm test host.
//!
//! Rules kept here:
//! * every external command is an argv vector (no shell);
//! * every wait is bounded and panics with a message saying what it waited for;
//! * a `TestEnv` never talks to the system containerd and removes everything it created on Drop.
//!
//! Environment knobs:
//! * `PVELXC_TEST_RUNTIME` — runtime under test (default `io.containerd.pvelxc.v2`); set it to
//!   `io.containerd.runc.v2` to run the same tests against the stock shim.
//! * `PVELXC_SHIM_DIR` — directory holding `containerd-shim-pvelxc-v2` (default: the directory of
//!   the binary cargo built for this test run, i.e. `target/release` under `--release`).
//! * `PVELXC_TEST_KEEP=1` — keep the env dir (containerd log, config) of a test for debugging.
//!
//! Skips go through [`skip`] (`SKIP: <test>: <reason>` on stderr, appended to `$PVELXC_SKIP_LOG`,
//! a failure under `CI=true` unless `PVELXC_SKIP_SUITES` names the suite).
#![allow(dead_code)]

pub mod ctr;
pub mod env;
pub mod events;
pub mod fixtures;
pub mod process;
pub mod procfs;
pub mod pty;
pub mod pve;
pub mod skip;
pub mod vm;

// Each test crate uses a subset of these.
#[allow(unused_imports)]
pub use self::{ctr::*, env::*, events::*, fixtures::*, process::*, procfs::*, pty::*};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Our runtime name.
pub const OUR_RUNTIME: &str = "io.containerd.pvelxc.v2";
/// The stock Go shim.
pub const STOCK_RUNTIME: &str = "io.containerd.runc.v2";
/// Our shim binary name.
pub const SHIM_BINARY: &str = "containerd-shim-pvelxc-v2";
/// The image every `TestEnv::import_busybox` provides.
pub const BUSYBOX_IMAGE: &str = "localhost/test/busybox:latest";
/// PATH given to `--rootfs` containers (a `--rootfs` spec has no env).
pub const CONTAINER_PATH: &str = "PATH=/bin:/sbin:/usr/bin:/usr/sbin";
/// Default bound for one `ctr` invocation.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

const FIXTURE_VERSION: &str = "v1";

/// The runtime under test: `$PVELXC_TEST_RUNTIME` or `io.containerd.pvelxc.v2`.
pub fn runtime() -> String {
    match std::env::var("PVELXC_TEST_RUNTIME") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => OUR_RUNTIME.to_string(),
    }
}

/// True when the runtime under test is ours (by name or by a path to our binary).
pub fn testing_our_runtime() -> bool {
    let r = runtime();
    r == OUR_RUNTIME || r.ends_with(SHIM_BINARY)
}

/// Binary name containerd resolves for the runtime under test
/// (`io.containerd.X.vN` -> `containerd-shim-X-vN`, or the basename of a path).
pub fn expected_shim_binary() -> String {
    let r = runtime();
    if r.contains('/') {
        return Path::new(&r)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or(r);
    }
    let parts: Vec<&str> = r.split('.').collect();
    match parts.as_slice() {
        [.., name, version] => format!("containerd-shim-{name}-{version}"),
        _ => r,
    }
}

/// For tests of behaviour only our shim provides: returns true (after printing and recording a
/// `not-applicable` skip, see [`skip`]) when another runtime is under test.
pub fn skip_unless_our_runtime() -> bool {
    if testing_our_runtime() {
        return false;
    }
    skip::not_applicable(&format!(
        "needs {OUR_RUNTIME}, PVELXC_TEST_RUNTIME={}",
        runtime()
    ));
    true
}

/// Directory holding the shim binary (put first on containerd's PATH).
pub fn shim_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PVELXC_SHIM_DIR") {
        if !d.is_empty() {
            return PathBuf::from(d);
        }
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-pvelxc-v2"));
    match bin.parent() {
        Some(p) => p.to_path_buf(),
        None => workspace_dir().join("target").join("release"),
    }
}

/// The workspace (root crate) directory.
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory used for this build.
pub fn target_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-pvelxc-v2"));
    // <target>/<profile>/containerd-shim-pvelxc-v2
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace_dir().join("target"))
}

/// Where fixtures are cached.
pub fn fixtures_dir() -> PathBuf {
    target_dir().join("fixtures").join(FIXTURE_VERSION)
}
