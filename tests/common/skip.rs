//! The one way a test of this workspace skips: loud, counted, and a failure where a skip is not
//! allowed. Shared by every test crate (`tests/common/mod.rs` declares it; the crates under
//! `crates/*/tests` include this same file with `#[path]`). Only `std`.
//!
//! Every skip prints `SKIP: <test>: <reason>` to stderr and, when `PVELXC_SKIP_LOG` names a file,
//! appends `<kind>\t<test>\t<reason>` to it (scripts/test.sh counts those lines and prints them:
//! the stderr of a passing test is hidden by the harness, so without the log a skip looks like a pass).
//!
//! Two kinds:
//! * [`unavailable`]: a prerequisite this machine lacks (root, LXC, QEMU, a guest kernel). A failure
//!   (panic) instead of a skip when `CI=true`, or when one of the test's `*_REQUIRED` /
//!   `PVELXC_REQUIRE_*` switches is set, unless `PVELXC_SKIP_SUITES` names the test's suite (an
//!   explicit decision of the caller, e.g. the GitHub workflow: no vm tests on a hosted runner).
//! * [`not_applicable`]: the test does not apply to this run's configuration (a test only our shim
//!   can pass while `PVELXC_TEST_RUNTIME` names the stock shim). Always allowed: the same test runs
//!   in the run that tests our shim.
#![allow(dead_code)]

use std::io::Write;

/// Kind tag of a skip in `PVELXC_SKIP_LOG`: a missing prerequisite.
pub const KIND_UNAVAILABLE: &str = "unavailable";
/// Kind tag: the suite was excluded by `PVELXC_SKIP_SUITES`.
pub const KIND_EXCLUDED: &str = "excluded";
/// Kind tag: not applicable to the runtime under test.
pub const KIND_NOT_APPLICABLE: &str = "not-applicable";

/// The running test's name (libtest names each test's thread after the test).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

fn env_is_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// True under CI (`CI=true` or `CI=1`, as CI systems set it).
pub fn under_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// True when `PVELXC_SKIP_SUITES` (comma-separated) names `suite`.
pub fn suite_excluded(suite: &str) -> bool {
    std::env::var("PVELXC_SKIP_SUITES")
        .map(|v| v.split(',').any(|s| s.trim() == suite))
        .unwrap_or(false)
}

fn record(kind: &str, test: &str, reason: &str) {
    eprintln!("SKIP: {test}: {reason}");
    let Some(path) = std::env::var_os("PVELXC_SKIP_LOG").filter(|p| !p.is_empty()) else {
        return;
    };
    let line = format!("{kind}\t{test}\t{}\n", reason.replace(['\n', '\t'], " "));
    // One write of a short line to an O_APPEND file: lines of parallel tests do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!(
            "SKIP: {test}: {reason} (and PVELXC_SKIP_LOG={} could not be written: {e})",
            path.to_string_lossy()
        );
    }
}

/// A prerequisite of `suite` (`"vm"`, `"lxc"`, `"root"`, ...) is missing: `reason` says what and
/// how to get it. Returns (after printing and recording the skip) when skipping is allowed;
/// panics when `CI=true` or any of `switches` (e.g. `PVELXC_VM_REQUIRED`) is set, unless
/// `PVELXC_SKIP_SUITES` names `suite`. The caller returns from the test right after.
pub fn unavailable(suite: &str, switches: &[&str], reason: &str) {
    let test = test_name();
    if suite_excluded(suite) {
        record(
            KIND_EXCLUDED,
            &test,
            &format!("{reason} (suite {suite} excluded by PVELXC_SKIP_SUITES)"),
        );
        return;
    }
    if let Some(switch) = switches.iter().find(|s| env_is_set(s)) {
        panic!("{test}: {switch} is set, so this test must run, but {reason}");
    }
    if under_ci() {
        panic!(
            "{test}: CI=true, so this test must run, but {reason} \
             (to leave the {suite} suite out on purpose set PVELXC_SKIP_SUITES={suite})"
        );
    }
    record(KIND_UNAVAILABLE, &test, reason);
}

/// `unavailable` unless `cond`: true when the test may go on, false when it skipped.
pub fn require(cond: bool, suite: &str, switches: &[&str], reason: &str) -> bool {
    if !cond {
        unavailable(suite, switches, reason);
    }
    cond
}

/// The test does not apply to this run (e.g. another runtime under test): printed and recorded
/// as `not-applicable`, never a failure.
pub fn not_applicable(reason: &str) {
    record(KIND_NOT_APPLICABLE, &test_name(), reason);
}

/// True when the process runs as root (reads /proc/self/status: no libc needed here).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
