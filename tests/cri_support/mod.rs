//! CRI test support: a private containerd with the CRI plugin (on top of `common::TestEnv`),
//! runtime handlers for our shim, a private CNI bridge network, the locally built pause and
//! busybox images in namespace `k8s.io`, and helpers that play the kubelet.
//!
//! Every wait is bounded and panics with what it waited for; Drop removes pods, the bridge, the
//! pod cgroups and the temp dir (the `TestEnv` inside removes containerd's own state).
#![allow(dead_code)]

pub mod client;

use std::collections::HashMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::{self, TestEnv};
use client::v1;
pub use client::{container_config, pod_config, CriClient};

/// The CRI plugin's namespace.
pub const K8S_NS: &str = "k8s.io";
/// The sandbox image CRI 1.6 asks for.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.6";
/// Busybox image, imported into k8s.io.
pub const BUSYBOX: &str = common::BUSYBOX_IMAGE;

/// Handler with the default shim config (runtime type = the runtime under test).
pub const H_DEFAULT: &str = "pvelxc";
/// Handler whose runtime options carry `ConfigPath` to a config with `backend = "runc"`.
pub const H_RUNC: &str = "pvelxc-runc";
/// Handler whose config forbids annotation overrides (`allow_annotation_override = false`).
pub const H_LOCKED: &str = "pvelxc-locked";
/// The stock Go shim driving crun (reference behaviour).
pub const H_STOCK: &str = "runc-crun";
/// Handler whose `ConfigPath` says `backend = "pct"` (only in [`CriEnv::with_pct`]: containerd
/// then runs inside a Proxmox-shaped host with the pct double).
pub const H_PCT: &str = "pvelxc-pct";

pub const ANN_BACKEND: &str = "io.pvelxc.backend";

const BOUND: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Fixtures: the pause image
// ---------------------------------------------------------------------------------------------

const PAUSE_C: &str = r#"
/* Minimal pause: sleeps until SIGTERM/SIGINT, reaps children (it is PID 1 of the pod). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void down(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction a;
    memset(&a, 0, sizeof a);
    a.sa_handler = down;
    sigaction(SIGINT, &a, NULL);
    sigaction(SIGTERM, &a, NULL);
    memset(&a, 0, sizeof a);
    a.sa_handler = reap;
    a.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &a, NULL);
    if (getpid() != 1) fprintf(stderr, "pause: warning: not PID 1\n");
    for (;;) pause();
    return 0;
}
"#;

struct Flock(fs::File);
impl Flock {
    fn acquire(path: &Path) -> Flock {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open lock {}: {e}", path.display()));
        // SAFETY: flock on an fd we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        Flock(f)
    }
}
impl Drop for Flock {
    fn drop(&mut self) {
        // SAFETY: unlocking an fd we own.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// OCI layout tarball of a static pause image tagged `3.6` (built once, cached in fixtures).
pub fn pause_image_tar() -> PathBuf {
    let dir = common::fixtures_dir();
    fs::create_dir_all(&dir).expect("mkdir fixtures");
    let _l = Flock::acquire(&dir.join(".pause.lock"));
    let tar = dir.join("pause-oci.tar");
    if tar.exists() {
        return tar;
    }
    let work = dir.join("pause-work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).expect("mkdir pause work");
    let c = work.join("pause.c");
    let bin = work.join("pause");
    fs::write(&c, PAUSE_C).expect("write pause.c");
    common::run_ok(&["gcc", "-static", "-Os", "-s", "-o", s(&bin), s(&c)]);
    let img = work.join("img");
    let bundle = work.join("bundle");
    let tag = format!("{}:3.6", img.display());
    common::run_ok(&["umoci", "init", "--layout", s(&img)]);
    common::run_ok(&["umoci", "new", "--image", &tag]);
    common::run_ok(&["umoci", "unpack", "--image", &tag, s(&bundle)]);
    fs::copy(&bin, bundle.join("rootfs/pause")).expect("copy pause");
    common::run_ok(&["umoci", "repack", "--image", &tag, s(&bundle)]);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    common::run_ok(&[
        "umoci",
        "config",
        "--image",
        &tag,
        "--config.entrypoint",
        "/pause",
        "--architecture",
        arch,
        "--os",
        "linux",
    ]);
    let tmp = dir.join("pause-oci.tar.tmp");
    common::run_ok(&["tar", "-cf", s(&tmp), "-C", s(&img), "."]);
    fs::rename(&tmp, &tar).expect("rename pause tar");
    let _ = fs::remove_dir_all(&work);
    tar
}

// ---------------------------------------------------------------------------------------------
// The environment
// ---------------------------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runtime type for handler `pvelxc`: the runtime under test (a path means ours).
pub fn default_runtime_type() -> String {
    let r = common::runtime();
    if r.contains('/') {
        common::OUR_RUNTIME.to_string()
    } else {
        r
    }
}

/// True when handler `pvelxc` runs our shim.
pub fn ours() -> bool {
    default_runtime_type() == common::OUR_RUNTIME
}

/// A pod made by `CriEnv::pod`.
#[derive(Clone, Debug)]
pub struct Pod {
    pub id: String,
    pub config: v1::PodSandboxConfig,
    pub handler: String,
}

pub struct CriEnv {
    pub cri: CriClient,
    env: Option<TestEnv>,
    /// Our own temp dir: CNI conf dir, shim configs, pod logs, IPAM state.
    pub dir: PathBuf,
    pub bridge: String,
    pub net_name: String,
    uniq: String,
    counter: u32,
    cgroup_parents: Vec<String>,
    /// Every pod / container id created here (for leftover checks and cleanup).
    pub pod_ids: Vec<String>,
    pub ctr_ids: Vec<String>,
    /// [`CriEnv::with_pct`]: the double's root (its CTs, `pct`, state).
    pub pct_root: Option<PathBuf>,
}

impl CriEnv {
    pub fn new() -> CriEnv {
        Self::build(None)
    }

    /// containerd (and CNI, and the shims) inside a Proxmox-shaped host whose `pct` is the
    /// double, with handler [`H_PCT`] routing pods to the pct backend over VMIDs `lo..=hi`.
    pub fn with_pct(lo: u32, hi: u32) -> CriEnv {
        Self::build(Some((lo, hi)))
    }

    /// `pct ARGS` in this env's host shape.
    pub fn pct(&self, args: &[&str]) -> std::process::Output {
        let root = self.pct_root.as_ref().expect("a pct CriEnv");
        let mut c = Command::new(common::pve::shape_bin());
        c.arg("--root")
            .arg(root)
            .args(["exec", "--"])
            .arg(common::pve::pct_bin())
            .args(args);
        common::run_cmd(c, None, Duration::from_secs(60))
    }

    /// The VMIDs `pct list` shows.
    /// CTs `pct list` shows, the shim's template CTs (linked clones' origin) left out.
    pub fn pct_list(&self) -> Vec<u32> {
        let root = self.pct_root.as_ref().expect("a pct CriEnv");
        self.pct_list_all()
            .into_iter()
            .filter(|v| {
                let conf = root.join(format!("etc/pve/nodes/pve/lxc/{v}.conf"));
                let text = fs::read_to_string(conf).unwrap_or_default();
                !(text.lines().any(|l| l == "template: 1") && text.contains("pvelxc-template"))
            })
            .collect()
    }

    /// Every CT `pct list` shows.
    pub fn pct_list_all(&self) -> Vec<u32> {
        common::stdout(&self.pct(&["list"]))
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    fn build(pct: Option<(u32, u32)>) -> CriEnv {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let uniq = format!("{:x}{n:x}", pid & 0xfffff);
        let dir = tempfile::Builder::new()
            .prefix("pvc-")
            .tempdir_in("/tmp")
            .expect("temp dir")
            .keep();
        let bridge = format!("pvtb{uniq}");
        assert!(bridge.len() <= 15, "bridge name too long: {bridge}");
        let net_name = format!("pvt-cri-{uniq}");
        // A private /24 inside 10.88.0.0/16; the bridge gets no address (isGateway false), so
        // no host route exists and overlapping subnets of other runs cannot clash.
        let third = 16 + ((pid as usize * 7 + n as usize) % 200);
        let conf_dir = dir.join("net.d");
        fs::create_dir_all(&conf_dir).expect("mkdir net.d");
        fs::create_dir_all(dir.join("logs")).expect("mkdir logs");
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": net_name,
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": false,
                "ipMasq": false,
                "hairpinMode": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": format!("10.88.{third}.0/24")}]],
                    "dataDir": dir.join("ipam").display().to_string(),
                }
            }]
        });
        fs::write(
            conf_dir.join("10-pvt.conflist"),
            serde_json::to_vec_pretty(&conflist).expect("json"),
        )
        .expect("write conflist");
        let runc_cfg = dir.join("runc.toml");
        fs::write(&runc_cfg, "backend = \"runc\"\n").expect("write runc.toml");
        let locked_cfg = dir.join("locked.toml");
        fs::write(
            &locked_cfg,
            "backend = \"crun\"\nallow_annotation_override = false\n",
        )
        .expect("write locked.toml");

        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let rts = format!("{cri}.containerd.runtimes");
        let pct_root = pct.map(|_| dir.join("pve"));
        let pct_handler = match (pct, &pct_root) {
            (Some((lo, hi)), Some(root)) => {
                fs::create_dir_all(root).expect("mkdir pve root");
                let cfg = dir.join("pct.toml");
                fs::write(&cfg, common::pve::config_text(root, lo, hi, "")).expect("pct.toml");
                format!(
                    "\n    [{rts}.{H_PCT}]\n      runtime_type = {our:?}\n\
                     \n    [{rts}.{H_PCT}.options]\n      ConfigPath = {c:?}\n",
                    our = common::OUR_RUNTIME,
                    c = s(&cfg),
                )
            }
            _ => String::new(),
        };
        let default_rt = default_runtime_type();
        let default_opts = if ours() {
            String::new()
        } else {
            format!("    [{rts}.{H_DEFAULT}.options]\n      BinaryName = \"/usr/bin/crun\"\n")
        };
        let ann = "      pod_annotations = [\"io.pvelxc.*\"]\n      container_annotations = [\"io.pvelxc.*\"]\n";
        let config = format!(
            "[{cri}]\n  sandbox_image = {PAUSE_IMAGE:?}\n  restrict_oom_score_adj = true\n\
             \n  [{cri}.containerd]\n    default_runtime_name = {H_STOCK:?}\n\
             \n    [{rts}.{H_DEFAULT}]\n      runtime_type = {default_rt:?}\n{ann}{default_opts}\
             \n    [{rts}.{H_RUNC}]\n      runtime_type = {our:?}\n{ann}\
             \n    [{rts}.{H_RUNC}.options]\n      ConfigPath = {runc:?}\n\
             \n    [{rts}.{H_LOCKED}]\n      runtime_type = {our:?}\n{ann}\
             \n    [{rts}.{H_LOCKED}.options]\n      ConfigPath = {locked:?}\n\
             \n    [{rts}.{H_STOCK}]\n      runtime_type = \"io.containerd.runc.v2\"\n\
             \n    [{rts}.{H_STOCK}.options]\n      BinaryName = \"/usr/bin/crun\"\n{pct_handler}\
             \n  [{cri}.cni]\n    bin_dir = \"/usr/lib/cni\"\n    conf_dir = {conf:?}\n    max_conf_num = 1\n",
            our = common::OUR_RUNTIME,
            runc = s(&runc_cfg),
            locked = s(&locked_cfg),
            conf = s(&conf_dir),
        );
        fs::write(dir.join("cri-config.toml"), &config).expect("save cri config copy");

        let pause = pause_image_tar();
        let busybox = common::fixtures().image_tar.clone();
        let mut b = TestEnv::builder().with_cri().extra_config(&config);
        if let (Some((lo, _)), Some(root)) = (pct, &pct_root) {
            b = b.wrap(common::pve::shape_argv(root, lo, 0));
        }
        let env = b.start();
        let ctr_k8s = |args: &[&str]| {
            let mut cmd = Command::new("ctr");
            cmd.arg("--address")
                .arg(env.address())
                .arg("-n")
                .arg(K8S_NS)
                .args(args);
            let out = common::run_cmd(cmd, None, Duration::from_secs(120));
            assert!(
                out.status.success(),
                "ctr -n {K8S_NS} {} failed:\n{}",
                args.join(" "),
                common::describe(&out)
            );
        };
        ctr_k8s(&[
            "images",
            "import",
            "--base-name",
            "registry.k8s.io/pause",
            s(&pause),
        ]);
        ctr_k8s(&[
            "images",
            "import",
            "--base-name",
            "localhost/test/busybox",
            s(&busybox),
        ]);
        let mut cri = CriClient::connect(env.address())
            .unwrap_or_else(|e| panic!("cannot connect the CRI client: {e}"));
        for img in [PAUSE_IMAGE, BUSYBOX] {
            common::wait_until(&format!("CRI to see image {img}"), BOUND, || {
                cri.image_present(img).then_some(())
            });
        }
        // Runtime and network ready (CNI config loaded).
        let mut last = String::new();
        let ok = common::poll_until(BOUND, || {
            let st = cri.status(v1::StatusRequest { verbose: false }).ok()?;
            let conds = st.status.map(|s| s.conditions).unwrap_or_default();
            last = format!("{conds:?}");
            conds.iter().all(|c| c.status).then_some(())
        });
        assert!(
            ok.is_some(),
            "CRI runtime/network not ready: {last}\ncontainerd log:\n{}",
            tail(&env.containerd_log(), 40)
        );
        CriEnv {
            cri,
            env: Some(env),
            dir,
            bridge,
            net_name,
            uniq,
            counter: 0,
            cgroup_parents: Vec::new(),
            pod_ids: Vec::new(),
            ctr_ids: Vec::new(),
            pct_root,
        }
    }

    pub fn env(&self) -> &TestEnv {
        self.env.as_ref().expect("env")
    }

    pub fn env_mut(&mut self) -> &mut TestEnv {
        self.env.as_mut().expect("env")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn containerd_log_tail(&self) -> String {
        tail(&self.env().containerd_log(), 60)
    }

    /// Restart containerd on the same state and reconnect the CRI client.
    pub fn restart_containerd(&mut self) {
        self.env_mut().restart_containerd();
        let sock = self.env().address().to_path_buf();
        let mut last = String::new();
        let ok = common::poll_until(BOUND, || {
            if let Err(e) = self.cri.reconnect() {
                last = e;
                return None;
            }
            match self.cri.version(v1::VersionRequest::default()) {
                Ok(_) => Some(()),
                Err(e) => {
                    last = e.to_string();
                    None
                }
            }
        });
        assert!(
            ok.is_some(),
            "CRI on {} not back after restart: {last}",
            sock.display()
        );
    }

    fn next(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }

    /// A pod config (not yet run): unique name/uid/hostname/cgroup parent, logs in our dir.
    pub fn pod_config(&mut self, host_network: bool) -> v1::PodSandboxConfig {
        let n = self.next();
        let cg = format!("/pvt-cri-{}-{n}", self.uniq);
        self.cgroup_parents.push(cg.clone());
        let hostname = if host_network {
            String::new()
        } else {
            format!("pod-{}-{n}", self.uniq)
        };
        let log_dir = self.log_dir().join(format!("pod{n}"));
        fs::create_dir_all(&log_dir).expect("mkdir pod log dir");
        pod_config(
            &format!("pod-{n}"),
            &format!("uid-{}-{n}", self.uniq),
            &hostname,
            &log_dir,
            &cg,
            host_network,
        )
    }

    /// RunPodSandbox; the error is returned.
    pub fn try_pod(
        &mut self,
        handler: &str,
        config: v1::PodSandboxConfig,
    ) -> Result<Pod, tonic::Status> {
        let id = self.cri.run_pod(&config, handler)?;
        self.pod_ids.push(id.clone());
        Ok(Pod {
            id,
            config,
            handler: handler.to_string(),
        })
    }

    /// RunPodSandbox with `annotations`; panics (with containerd's log) on failure.
    pub fn pod(&mut self, handler: &str, annotations: &[(&str, &str)], host_network: bool) -> Pod {
        let mut cfg = self.pod_config(host_network);
        for (k, v) in annotations {
            cfg.annotations.insert(k.to_string(), v.to_string());
        }
        let t = Instant::now();
        match self.try_pod(handler, cfg) {
            Ok(p) => p,
            Err(e) => panic!(
                "RunPodSandbox (handler {handler}) failed after {:?}: {e}\ncontainerd log:\n{}",
                t.elapsed(),
                self.containerd_log_tail()
            ),
        }
    }

    /// CreateContainer in `pod`; panics on failure.
    pub fn create(
        &mut self,
        pod: &Pod,
        name: &str,
        cmd: &[&str],
        annotations: &[(&str, &str)],
    ) -> String {
        let mut cfg = container_config(name, BUSYBOX, cmd);
        for (k, v) in annotations {
            cfg.annotations.insert(k.to_string(), v.to_string());
        }
        match self.cri.create_ctr(&pod.id, &cfg, &pod.config) {
            Ok(id) => {
                self.ctr_ids.push(id.clone());
                id
            }
            Err(e) => panic!(
                "CreateContainer {name} in pod {} failed: {e}\ncontainerd log:\n{}",
                pod.id,
                self.containerd_log_tail()
            ),
        }
    }

    /// CreateContainer from `cfg` + StartContainer + wait RUNNING; panics on failure.
    pub fn run_config(&mut self, pod: &Pod, cfg: &v1::ContainerConfig) -> String {
        let id = match self.cri.create_ctr(&pod.id, cfg, &pod.config) {
            Ok(id) => id,
            Err(e) => panic!("CreateContainer: {e}\n{}", self.containerd_log_tail()),
        };
        self.ctr_ids.push(id.clone());
        if let Err(e) = self.cri.start_ctr(&id) {
            panic!("StartContainer {id}: {e}\n{}", self.containerd_log_tail());
        }
        self.wait_state(&id, v1::ContainerState::ContainerRunning, BOUND);
        id
    }

    /// CreateContainer + StartContainer + wait RUNNING.
    pub fn run(
        &mut self,
        pod: &Pod,
        name: &str,
        cmd: &[&str],
        annotations: &[(&str, &str)],
    ) -> String {
        let id = self.create(pod, name, cmd, annotations);
        if let Err(e) = self.cri.start_ctr(&id) {
            panic!(
                "StartContainer {name} ({id}) failed: {e}\ncontainerd log:\n{}",
                self.containerd_log_tail()
            );
        }
        self.wait_state(&id, v1::ContainerState::ContainerRunning, BOUND);
        id
    }

    /// The container's status (panics if CRI errors).
    pub fn status(&mut self, id: &str) -> v1::ContainerStatus {
        match self.cri.ctr_status(id, false) {
            Ok(r) => r.status.expect("status present"),
            Err(e) => panic!("ContainerStatus {id}: {e}"),
        }
    }

    /// Wait (bounded) until the container reaches `state`.
    pub fn wait_state(
        &mut self,
        id: &str,
        state: v1::ContainerState,
        timeout: Duration,
    ) -> v1::ContainerStatus {
        let mut last = None;
        let r = common::poll_until(timeout, || {
            let st = self.cri.ctr_status(id, false).ok()?.status?;
            let hit = st.state == state as i32;
            last = Some(st.clone());
            hit.then_some(st)
        });
        match r {
            Some(st) => st,
            None => panic!(
                "container {id} not {state:?} within {timeout:?}; last status: {last:#?}\ncontainerd log:\n{}",
                self.containerd_log_tail()
            ),
        }
    }

    /// The verbose `info` JSON of a container.
    pub fn ctr_info(&mut self, id: &str) -> serde_json::Value {
        let r = self
            .cri
            .ctr_status(id, true)
            .unwrap_or_else(|e| panic!("ContainerStatus(verbose) {id}: {e}"));
        let info = r.info.get("info").cloned().unwrap_or_default();
        serde_json::from_str(&info).unwrap_or_else(|e| panic!("bad info JSON {info:?}: {e}"))
    }

    /// Host pid of a running container's init.
    pub fn ctr_pid(&mut self, id: &str) -> u32 {
        let v = self.ctr_info(id);
        v.get("pid")
            .and_then(|p| p.as_u64())
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("no pid in container info: {v}")) as u32
    }

    /// Host pid of the pod's sandbox (pause) process.
    pub fn pod_pid(&mut self, pod_id: &str) -> u32 {
        let r = self
            .cri
            .pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.to_string(),
                verbose: true,
            })
            .unwrap_or_else(|e| panic!("PodSandboxStatus(verbose) {pod_id}: {e}"));
        let info = r.info.get("info").cloned().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
        v.get("pid")
            .and_then(|p| p.as_u64())
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("no pid in sandbox info: {info}")) as u32
    }

    /// ExecSync; panics unless it returns (any exit code).
    pub fn exec(&mut self, id: &str, cmd: &[&str]) -> (i32, String, String) {
        match self.cri.exec(id, cmd, 20) {
            Ok(r) => (
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).into_owned(),
                String::from_utf8_lossy(&r.stderr).into_owned(),
            ),
            Err(e) => panic!(
                "ExecSync {cmd:?} in {id} failed: {e}\ncontainerd log:\n{}",
                self.containerd_log_tail()
            ),
        }
    }

    /// ExecSync; panics unless exit code 0; returns trimmed stdout.
    pub fn exec_ok(&mut self, id: &str, cmd: &[&str]) -> String {
        let (code, out, err) = self.exec(id, cmd);
        assert_eq!(
            code, 0,
            "ExecSync {cmd:?} in {id}: exit {code}, stdout {out:?}, stderr {err:?}"
        );
        out.trim().to_string()
    }

    /// The task bundle of a container / sandbox in containerd's private state dir.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.env()
            .state()
            .join("io.containerd.runtime.v2.task")
            .join(K8S_NS)
            .join(id)
    }

    /// The backend our shim recorded in the bundle's pvelxc.json.
    pub fn recorded_backend(&self, id: &str) -> String {
        let p = self.bundle(id).join("pvelxc.json");
        let text =
            fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad {}: {e}", p.display()));
        v.get("backend")
            .and_then(|b| b.as_str())
            .unwrap_or_else(|| panic!("no backend in {}: {text}", p.display()))
            .to_string()
    }

    /// Shim processes of this containerd.
    pub fn shim_pids(&self) -> Vec<u32> {
        self.env().shim_pids()
    }

    /// The shim socket containerd derives for a grouping id in namespace k8s.io.
    pub fn shim_socket(&self, grouping: &str) -> PathBuf {
        use sha2::Digest;
        let path = format!("{}/{K8S_NS}/{grouping}", self.env().address().display());
        let d = sha2::Sha256::digest(path.as_bytes());
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        PathBuf::from("/run/containerd/s").join(hex)
    }

    /// Stop and remove every container of the pod, then the pod (kubelet order); panics on errors.
    pub fn remove_pod_fully(&mut self, pod_id: &str) {
        let ctrs = self.cri.containers().expect("ListContainers");
        for c in ctrs.iter().filter(|c| c.pod_sandbox_id == pod_id) {
            if let Err(e) = self.cri.stop_ctr(&c.id, 2) {
                panic!(
                    "StopContainer {}: {e}\n{}",
                    c.id,
                    self.containerd_log_tail()
                );
            }
            if let Err(e) = self.cri.remove_ctr(&c.id) {
                panic!(
                    "RemoveContainer {}: {e}\n{}",
                    c.id,
                    self.containerd_log_tail()
                );
            }
        }
        if let Err(e) = self.cri.stop_pod(pod_id) {
            panic!(
                "StopPodSandbox {pod_id}: {e}\n{}",
                self.containerd_log_tail()
            );
        }
        if let Err(e) = self.cri.remove_pod(pod_id) {
            panic!(
                "RemovePodSandbox {pod_id}: {e}\n{}",
                self.containerd_log_tail()
            );
        }
    }

    /// After every pod is removed: no pods/containers listed, no shim, none of `pids` alive, no
    /// mounts under containerd's root/state, no bundle dirs, no shim sockets of our ids.
    pub fn assert_nothing_left(&mut self, pids: &[u32]) {
        let pods = self.cri.pods().expect("ListPodSandbox");
        assert!(pods.is_empty(), "pods left: {pods:#?}");
        let ctrs = self.cri.containers().expect("ListContainers");
        assert!(ctrs.is_empty(), "containers left: {ctrs:#?}");
        let mut last = Vec::new();
        let gone = common::poll_until(BOUND, || {
            last = self.shim_pids();
            last.is_empty().then_some(())
        });
        assert!(
            gone.is_some(),
            "shim processes still running after every pod was removed: {:?}",
            last.iter()
                .map(|p| (p, common::cmdline(*p)))
                .collect::<Vec<_>>()
        );
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| common::pid_alive(*p))
            .collect();
        assert!(alive.is_empty(), "container processes left: {alive:?}");
        let mounts = self.env().leftover_mounts();
        assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
        if let Some(root) = self.pct_root.clone() {
            let cts = self.pct_list();
            assert!(
                cts.is_empty(),
                "CTs left after every pod was removed: {cts:?}"
            );
            let state = root.join("ct");
            let dirs: Vec<String> = fs::read_dir(&state)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.parse::<u32>().is_ok())
                        .collect()
                })
                .unwrap_or_default();
            assert!(dirs.is_empty(), "per-CT directories left: {dirs:?}");
            // The shim's mounts live in the host shape's mount namespace.
            let mut c = Command::new(common::pve::shape_bin());
            c.arg("--root")
                .arg(&root)
                .args(["exec", "--", "cat", "/proc/self/mountinfo"]);
            let mi = common::stdout(&common::run_cmd(c, None, Duration::from_secs(30)));
            let st = state.display().to_string();
            let left: Vec<&str> = mi.lines().filter(|l| l.contains(&st)).collect();
            assert!(left.is_empty(), "mounts left below {st}: {left:#?}");
        }
        let tasks = self
            .env()
            .state()
            .join("io.containerd.runtime.v2.task")
            .join(K8S_NS);
        let bundles: Vec<String> = fs::read_dir(&tasks)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            bundles.is_empty(),
            "bundle dirs left in {}: {bundles:?}",
            tasks.display()
        );
        let ids: Vec<String> = self.pod_ids.iter().chain(&self.ctr_ids).cloned().collect();
        for id in ids {
            let sock = self.shim_socket(&id);
            assert!(
                !sock.exists(),
                "shim socket {} (grouping {id}) left behind",
                sock.display()
            );
        }
    }
}

impl Drop for CriEnv {
    fn drop(&mut self) {
        // Best effort, never panic: remove whatever pods are left through CRI (so CNI DEL runs
        // and netns are removed), then let the TestEnv stop containerd and clean up.
        if self.env.is_some() {
            self.cri.timeout = Duration::from_secs(20);
            if let Ok(ctrs) = self.cri.containers() {
                for c in ctrs {
                    let _ = self.cri.stop_ctr(&c.id, 0);
                    let _ = self.cri.remove_ctr(&c.id);
                }
            }
            if let Ok(pods) = self.cri.pods() {
                for p in pods {
                    let _ = self.cri.stop_pod(&p.id);
                    let _ = self.cri.remove_pod(&p.id);
                }
            }
            let socks: Vec<PathBuf> = self
                .pod_ids
                .iter()
                .chain(&self.ctr_ids)
                .map(|i| self.shim_socket(i))
                .collect();
            drop(self.env.take());
            for sck in socks {
                let _ = fs::remove_file(sck);
            }
        }
        if let Some(root) = self.pct_root.clone() {
            for v in self.pct_list_all() {
                let s = v.to_string();
                let _ = self.pct(&["destroy", &s, "--force", "1", "--purge", "1"]);
            }
            let mut stop = Command::new(common::pve::shape_bin());
            stop.arg("--root").arg(&root).arg("stop");
            let _ = common::run_cmd(stop, None, Duration::from_secs(60));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        // Pod cgroup parents (the runtimes remove the container cgroups under them).
        if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
            let hier: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            for cg in &self.cgroup_parents {
                for h in &hier {
                    remove_cgroup_tree(&h.join(cg.trim_start_matches('/')));
                }
            }
        }
        if std::env::var_os("PVELXC_TEST_KEEP").is_some() {
            eprintln!("PVELXC_TEST_KEEP: leaving {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn remove_cgroup_tree(p: &Path) {
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
        let _ = fs::remove_dir(p);
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Parse a CRI log file (`<RFC3339Nano> <stdout|stderr> <P|F> <text>`) into (stream, text)
/// pairs; panics on a malformed line.
pub fn parse_cri_log(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let (ts, stream, tag, msg) = (
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
            );
            assert!(
                ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.contains('T'),
                "log line without an RFC3339 timestamp: {l:?}"
            );
            assert!(
                stream == "stdout" || stream == "stderr",
                "log line with a bad stream: {l:?}"
            );
            assert!(tag == "F" || tag == "P", "log line with a bad tag: {l:?}");
            (stream.to_string(), msg.to_string())
        })
        .collect()
}

/// Read `/proc/<pid>/cgroup` and return the path of `controller` (v1) for the process.
pub fn cgroup_v1_path(pid: u32, controller: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let _ = it.next()?;
        let ctrls = it.next()?;
        let path = it.next()?;
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

/// `readlink /proc/<pid>/ns/<ns>` on the host.
pub fn host_ns(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Annotations as owned pairs (helper for HashMap-based checks).
pub fn ann_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
