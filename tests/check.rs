//! `containerd-shim-pvelxc-v2 check` and `-info`, as an admin runs them: on this plain Debian
//! host (no Proxmox: the pct backend must say so and why) and inside a host shaped like a
//! Proxmox node of each version the double plays (pct ready, the right init mechanism, the
//! cluster's guests counted), plus the refusals a real host can hit (noexec state dir,
//! unknown storage).
//!
//! Needs: root (as every suite here), `cargo build --release -p pve-double`, the static init (`PVELXC_INIT_BIN`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)]

mod common;

use common::pve::{shape_bin, static_init};
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn shim() -> std::path::PathBuf {
    shim_dir().join(SHIM_BINARY)
}

/// PATH with the build directory (the double's pct/pveversion) first.
fn path_env() -> std::ffi::OsString {
    let mut p = shim_dir().into_os_string();
    p.push(":");
    p.push(std::env::var_os("PATH").unwrap_or_default());
    p
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON ({e})\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn problems(v: &Value, backend: &str) -> String {
    v["backends"][backend]["problems"].to_string()
}

fn fact<'a>(v: &'a Value, backend: &str, key: &str) -> Option<&'a str> {
    v["backends"][backend]["facts"]
        .as_array()?
        .iter()
        .find(|f| f[0] == key)?[1]
        .as_str()
}

fn pct_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("pvelxc.toml");
    std::fs::write(
        &cfg,
        format!(
            "backend = \"pct\"\n[pct]\nvmid_min = 810000\nvmid_max = 810099\n\
             init_path = {:?}\n{extra}",
            static_init().display().to_string()
        ),
    )
    .expect("config");
    cfg
}

#[test]
fn check_on_this_host_names_what_pct_lacks() {
    assert!(
        !Path::new("/etc/pve/lxc").exists(),
        "this test expects a host that is not a Proxmox node"
    );
    // Default config: crun, which this machine has.
    let mut c = Command::new(shim());
    c.args(["check", "--json"]).env_remove("PVELXC_CONFIG");
    let out = run_cmd(c, None, T);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "crun is ready here: {v}");
    assert_eq!(v["default_backend"], "crun");
    assert_eq!(v["backends"]["crun"]["ready"], true, "{v}");
    assert!(fact(&v, "crun", "binary").is_some_and(|b| b.contains("crun version")));
    assert!(v["host"]["facts"].to_string().contains("containerd"), "{v}");
    assert_eq!(v["backends"]["pct"]["ready"], false);
    assert!(
        problems(&v, "pct").contains("not a Proxmox VE node"),
        "{}",
        problems(&v, "pct")
    );

    // pct as the default: not ready, exit 1, and the text output says why.
    let dir = tempfile::tempdir().expect("dir");
    let cfg = pct_config(dir.path(), "");
    let mut c = Command::new(shim());
    c.args(["check", "--config"]).arg(&cfg);
    let out = run_cmd(c, None, T);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("pct: NOT READY"), "{text}");
    assert!(text.contains("default backend pct: NOT READY"), "{text}");

    // A bad argument or a bad config: exit 2 with a message, not a report.
    let mut c = Command::new(shim());
    c.args(["check", "--bogus"]);
    let out = run_cmd(c, None, T);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
    std::fs::write(&cfg, "backend = \"nope\"\n").expect("write");
    let mut c = Command::new(shim());
    c.args(["check", "--config"]).arg(&cfg);
    let out = run_cmd(c, None, T);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pvelxc.toml"));
}

/// A Proxmox-shaped host of `profile` for the duration of one closure.
fn with_shape(profile: &str, f: impl FnOnce(&Path, &dyn Fn(&[&str], &Path) -> Output)) {
    let root = tempfile::Builder::new()
        .prefix("pvc-")
        .tempdir_in("/tmp")
        .expect("root");
    let run = |args: &[&str], cfg: &Path| {
        let mut c = Command::new(shape_bin());
        c.arg("--root")
            .arg(root.path())
            .args([
                "--profile",
                profile,
                "--foreign-from",
                "810000",
                "--foreign",
                "7",
            ])
            .args(["exec", "--"])
            .arg(shim())
            .args(args)
            .arg("--config")
            .arg(cfg)
            .env("PATH", path_env())
            .env_remove("PVELXC_CONFIG");
        run_cmd(c, None, T)
    };
    f(root.path(), &run);
    let mut stop = Command::new(shape_bin());
    stop.arg("--root").arg(root.path()).arg("stop");
    let _ = run_cmd(stop, None, T);
}

#[test]
fn check_on_proxmox_shaped_hosts() {
    for (profile, entrypoint) in [("pve8", false), ("pve9.0", false), ("pve9.1", true)] {
        with_shape(
            profile,
            |root: &Path, run: &dyn Fn(&[&str], &Path) -> Output| {
                let cfg = pct_config(
                    root,
                    &format!("state_dir = {:?}\n", root.join("ct").display().to_string()),
                );
                let out = run(&["check", "--json"], &cfg);
                let v = json(&out);
                assert_eq!(out.status.code(), Some(0), "{profile}: pct ready: {v}");
                assert_eq!(v["backends"]["pct"]["ready"], true, "{profile}: {v}");
                let pc = fact(&v, "pct", "pve-container").expect("version");
                let mech = fact(&v, "pct", "init mechanism").expect("mechanism");
                assert_eq!(
                    mech.contains("--entrypoint"),
                    entrypoint,
                    "{profile}: {pc} {mech}"
                );
                assert_eq!(
                    mech.contains("lxc.init.cmd"),
                    !entrypoint,
                    "{profile}: {mech}"
                );
                let range = fact(&v, "pct", "VMID range").expect("range");
                assert!(
                    range.contains("93 free, 7 taken"),
                    "{profile}: the seven foreign guests count: {range}"
                );
                assert!(fact(&v, "pct", "rootfs").is_some(), "{v}");
                assert!(
                    !root.join("ct").exists(),
                    "{profile}: check created the state dir"
                );

                // /run is noexec on Proxmox hosts: a state dir there is refused by name.
                let cfg = pct_config(root, "state_dir = \"/run/pvelxc-check/ct\"\n");
                let v = json(&run(&["check", "--json"], &cfg));
                assert_eq!(v["backends"]["pct"]["ready"], false, "{profile}: {v}");
                assert!(
                    problems(&v, "pct").contains("noexec"),
                    "{}",
                    problems(&v, "pct")
                );

                // An unknown storage names the ones that exist.
                let cfg = pct_config(root, "storage = \"tank\"\n");
                let out = run(&["check"], &cfg);
                let text = String::from_utf8_lossy(&out.stdout);
                assert_eq!(out.status.code(), Some(1), "{text}");
                assert!(
                    text.contains("\"tank\" is not defined"),
                    "{profile}: {text}"
                );
            },
        );
    }
}

#[test]
fn info_answers_with_a_runtime_info() {
    let mut c = Command::new(shim());
    c.arg("-info").env_remove("PVELXC_CONFIG");
    let out = run_cmd(c, Some(Vec::new()), T);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // RuntimeInfo field 1 (name) is the first thing encoded: tag 0x0a, length, the name.
    let name = b"io.containerd.pvelxc.v2";
    assert_eq!(out.stdout[0], 0x0a);
    assert_eq!(usize::from(out.stdout[1]), name.len());
    assert_eq!(&out.stdout[2..2 + name.len()], name);
    // Garbage for options is refused, not echoed.
    let mut c = Command::new(shim());
    c.arg("-info").env_remove("PVELXC_CONFIG");
    let out = run_cmd(c, Some(vec![0xff, 0xff, 0xff]), T);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn gc_prunes_templates_on_request() {
    let dir = tempfile::tempdir().expect("dir");
    let tpl = dir.path().join("templates");
    std::fs::create_dir(&tpl).expect("mkdir");
    let names = [
        format!("pvelxc-{}.tar", "a".repeat(64)),
        format!("pvelxc-{}.tar", "b".repeat(64)),
    ];
    for n in &names {
        std::fs::write(tpl.join(n), vec![1u8; 4096]).expect("template");
    }
    std::fs::write(tpl.join("not-ours.tar"), b"x").expect("foreign file");
    let cfg = pct_config(
        dir.path(),
        &format!("template_dir = {:?}\n", tpl.display().to_string()),
    );
    // Under the configured cap: nothing goes.
    let mut c = Command::new(shim());
    c.args(["gc", "--config"]).arg(&cfg);
    let out = run_cmd(c, None, T);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 removed"));
    assert!(names.iter().all(|n| tpl.join(n).exists()));
    // --all: every template no create holds goes, and nothing that is not a template.
    let mut c = Command::new(shim());
    c.args(["gc", "--all", "--config"]).arg(&cfg);
    let out = run_cmd(c, None, T);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("2 removed"), "{text}");
    assert!(names.iter().all(|n| !tpl.join(n).exists()), "{text}");
    assert!(
        tpl.join("not-ours.tar").exists(),
        "gc removed a file that is not a template"
    );
}

/// `-v` names the revision the binary was built from: in a git checkout, HEAD's commit (the
/// build script follows new commits, not only branch switches).
#[test]
fn version_names_the_checked_out_revision() {
    let out = run_cmd(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_containerd-shim-pvelxc-v2"));
            c.arg("-v");
            c
        },
        None,
        T,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let rev = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Revision:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no Revision line in -v:\n{text}"));
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match (head, std::env::var_os("PVELXC_REVISION")) {
        (Ok(h), None) if h.status.success() => {
            assert_eq!(rev, String::from_utf8_lossy(&h.stdout).trim());
        }
        // Built from a tarball or with the revision given: only its presence is checked.
        _ => assert!(!rev.is_empty(), "empty revision:\n{text}"),
    }
}
