//! LXC driver: generates `$ROOT/lxc/<vmid>/config` from a pct config the way PVE::LXC does and
//! drives the lxc-* tools (argv vectors only, never a shell).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::conf::PctConfig;
use crate::error::{die, Context, Result};
use crate::idmap;
use crate::paths::Root;
use crate::propstr::PropStr;
use crate::storage::{self, Volume};

const LXC_CONFIG_DIR: &str = "/usr/share/lxc/config";

/// Is the CT running? Like PVE::LXC::check_running: look for the abstract command socket
/// `@<lxcpath>/<vmid>/command` in /proc/net/unix (no fork).
pub fn is_running(root: &Root, vmid: u32) -> bool {
    let want = format!(" @{}/{vmid}/command", root.lxc_path().display());
    match fs::read_to_string("/proc/net/unix") {
        Ok(t) => t.lines().any(|l| l.ends_with(&want)),
        Err(_) => false,
    }
}

fn lxc_cmd(root: &Root, tool: &str, vmid: u32) -> Command {
    let mut c = Command::new(tool);
    c.arg("-P")
        .arg(root.lxc_path())
        .arg("-n")
        .arg(vmid.to_string());
    c
}

/// Host PID of the CT's init (`lxc-info -p -H`).
pub fn init_pid(root: &Root, vmid: u32) -> Option<i32> {
    let out = lxc_cmd(root, "lxc-info", vmid)
        .args(["-p", "-H"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Is the host a pure cgroup v2 host?
pub fn host_is_cgroup2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Directory of a CT's cgroup for `controller` (the `lxc/<vmid>` level; processes live in `ns`).
pub fn cgroup_dir(vmid: u32, controller: &str) -> PathBuf {
    if host_is_cgroup2() {
        PathBuf::from(format!("/sys/fs/cgroup/lxc/{vmid}"))
    } else if controller.is_empty() {
        PathBuf::from(format!("/sys/fs/cgroup/unified/lxc/{vmid}"))
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/{controller}/lxc/{vmid}"))
    }
}

fn mib(v: &str) -> Option<u64> {
    v.parse::<u64>().ok().map(|m| m * 1024 * 1024)
}

fn host_cpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

/// cgroup limit settings (key without the `lxc.cgroup[2].` prefix, value).
pub fn cgroup_limits(conf: &PctConfig, v2: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mem = conf.get("memory").unwrap_or("512");
    let swap = conf.get("swap").unwrap_or("512");
    if let (Some(m), Some(s)) = (mib(mem), mib(swap)) {
        if v2 {
            out.push(("memory.max".into(), m.to_string()));
            out.push(("memory.swap.max".into(), s.to_string()));
        } else {
            out.push(("memory.limit_in_bytes".into(), m.to_string()));
            if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
                out.push(("memory.memsw.limit_in_bytes".into(), (m + s).to_string()));
            }
        }
    }
    if let Some(l) = conf.get("cpulimit").and_then(|l| l.parse::<f64>().ok()) {
        if l > 0.0 {
            let quota = (l * 100_000.0).round() as u64;
            if v2 {
                out.push(("cpu.max".into(), format!("{quota} 100000")));
            } else {
                out.push(("cpu.cfs_period_us".into(), "100000".into()));
                out.push(("cpu.cfs_quota_us".into(), quota.to_string()));
            }
        }
    }
    if let Some(u) = conf.get("cpuunits").and_then(|u| u.parse::<u64>().ok()) {
        if v2 {
            out.push(("cpu.weight".into(), u.clamp(1, 10000).to_string()));
        } else {
            out.push(("cpu.shares".into(), u.max(2).to_string()));
        }
    }
    if let Some(c) = conf.get("cores").and_then(|c| c.parse::<u64>().ok()) {
        let n = c.min(host_cpus()).max(1);
        let cpus = if n == 1 {
            "0".to_string()
        } else {
            format!("0-{}", n - 1)
        };
        out.push(("cpuset.cpus".into(), cpus));
    }
    out
}

/// A bind mount to set up in the CT.
#[derive(Debug, Clone, PartialEq)]
pub struct MountEntry {
    pub source: PathBuf,
    /// Path inside the CT, relative (no leading '/').
    pub target: String,
    pub ro: bool,
}

/// Validate a mount point path inside the CT; returns it relative to the rootfs.
pub fn ct_relative(mp: &str) -> std::result::Result<String, String> {
    let p = Path::new(mp);
    if !p.is_absolute() {
        return Err(format!("mount point path must be absolute: '{mp}'"));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => return Err(format!("invalid path in mount point: '{mp}'")),
        }
    }
    if parts.is_empty() {
        return Err(format!("mount point path must not be '/': '{mp}'"));
    }
    Ok(parts.join("/"))
}

/// Host path of the rootfs (or an mp) volume string.
pub fn resolve_volume_path(root: &Root, volume: &str) -> Result<PathBuf> {
    match storage::parse_volume(volume).map_err(die)? {
        Volume::Path(p) => Ok(p),
        Volume::Existing { sid, volname } => storage::volume_path(root, &sid, &volname),
        Volume::Alloc { .. } => Err(die(format!("volume '{volume}' is not allocated"))),
    }
}

/// Host path of the CT's rootfs.
pub fn rootfs_path(root: &Root, conf: &PctConfig) -> Result<PathBuf> {
    let rootfs = conf
        .get("rootfs")
        .ok_or_else(|| die("CT has no rootfs configured"))?;
    let p = PropStr::parse(rootfs, Some("volume")).map_err(|e| die(format!("rootfs: {e}")))?;
    let vol = p.default.ok_or_else(|| die("rootfs: missing volume"))?;
    resolve_volume_path(root, &vol)
}

/// The CT's mount points (mpN), sorted by target path so parents come first.
pub fn mount_entries(root: &Root, conf: &PctConfig) -> Result<Vec<MountEntry>> {
    let mut out = Vec::new();
    for (k, v) in &conf.main.keys {
        if !k.starts_with("mp") || !k[2..].bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let p = PropStr::parse(v, Some("volume")).map_err(|e| die(format!("{k}: {e}")))?;
        let vol = p
            .default
            .clone()
            .ok_or_else(|| die(format!("{k}: missing volume")))?;
        let mp = p
            .get("mp")
            .ok_or_else(|| die(format!("{k}: missing mount point path (mp=)")))?;
        out.push(MountEntry {
            source: resolve_volume_path(root, &vol)?,
            target: ct_relative(mp).map_err(die)?,
            ro: p.flag("ro"),
        });
    }
    out.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(out)
}

/// Parsed netN entries (index, properties).
pub fn nets(conf: &PctConfig) -> Result<Vec<(u32, PropStr)>> {
    let mut out = Vec::new();
    for (k, v) in &conf.main.keys {
        if let Some(i) = k.strip_prefix("net").and_then(|i| i.parse::<u32>().ok()) {
            let p = PropStr::parse(v, None).map_err(|e| die(format!("{k}: {e}")))?;
            out.push((i, p));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

fn env_entries(conf: &PctConfig) -> Vec<String> {
    conf.get("env")
        .map(|e| {
            e.split('\0')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Render the LXC config for a CT (pure; see [`prepare`] for side effects).
pub fn render_config(root: &Root, vmid: u32, conf: &PctConfig, v2: bool) -> Result<String> {
    let mut l: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: String| {
        l.push((k.to_string(), v));
    };
    let ostype = conf.get("ostype").unwrap_or("unmanaged");
    let unpriv = conf.is_unprivileged();
    let os_common = format!("{LXC_CONFIG_DIR}/{ostype}.common.conf");
    if ostype != "unmanaged" && Path::new(&os_common).exists() {
        push("lxc.include", os_common);
    } else {
        push("lxc.include", format!("{LXC_CONFIG_DIR}/common.conf"));
    }
    if unpriv {
        let os_userns = format!("{LXC_CONFIG_DIR}/{ostype}.userns.conf");
        if ostype != "unmanaged" && Path::new(&os_userns).exists() {
            push("lxc.include", os_userns);
        } else {
            push("lxc.include", format!("{LXC_CONFIG_DIR}/userns.conf"));
        }
    }
    let features = conf
        .get("features")
        .map(|f| PropStr::parse(f, None).unwrap_or_default())
        .unwrap_or_default();
    if features.flag("nesting") {
        push("lxc.include", format!("{LXC_CONFIG_DIR}/nesting.conf"));
    }
    push("lxc.arch", conf.get("arch").unwrap_or("amd64").to_string());
    push("lxc.apparmor.profile", "unconfined".into());
    push("lxc.autodev", "1".into());
    push("lxc.mount.auto", "proc:mixed sys:mixed cgroup:mixed".into());
    push("lxc.monitor.unshare", "1".into());
    push("lxc.tty.max", conf.get("tty").unwrap_or("2").to_string());
    push("lxc.uts.name", conf.hostname(vmid));
    if unpriv && !conf.main.lxc.iter().any(|(k, _)| k == "lxc.idmap") {
        for m in idmap::lxc_idmap_lines() {
            push("lxc.idmap", m);
        }
    }
    push("lxc.cgroup.dir.monitor", format!("lxc.monitor/{vmid}"));
    push("lxc.cgroup.dir.container", format!("lxc/{vmid}"));
    push("lxc.cgroup.dir.container.inner", "ns".into());
    let prefix = if v2 { "lxc.cgroup2" } else { "lxc.cgroup" };
    for (k, v) in cgroup_limits(conf, v2) {
        push(&format!("{prefix}.{k}"), v);
    }
    push(
        "lxc.rootfs.path",
        format!("dir:{}", rootfs_path(root, conf)?.display()),
    );
    let nets = nets(conf)?;
    if nets.is_empty() {
        push("lxc.net.0.type", "empty".into());
    }
    for (n, (i, p)) in nets.iter().enumerate() {
        let pre = format!("lxc.net.{n}");
        push(&format!("{pre}.type"), "veth".into());
        push(&format!("{pre}.veth.pair"), format!("veth{vmid}i{i}"));
        if let Some(h) = p.get("hwaddr") {
            push(&format!("{pre}.hwaddr"), h.to_string());
        }
        push(
            &format!("{pre}.name"),
            p.get("name").unwrap_or("eth0").to_string(),
        );
        if let Some(b) = p.get("bridge") {
            push(&format!("{pre}.link"), b.to_string());
        }
        if let Some(m) = p.get("mtu") {
            push(&format!("{pre}.mtu"), m.to_string());
        }
        if !p.flag("link_down") {
            push(&format!("{pre}.flags"), "up".into());
        }
    }
    if conf.get("console") == Some("0") {
        push("lxc.console.path", "none".into());
    } else {
        push(
            "lxc.console.logfile",
            root.console_log_path(vmid).display().to_string(),
        );
    }
    if features.flag("fuse") {
        push(
            "lxc.mount.entry",
            "/dev/fuse dev/fuse none bind,create=file 0 0".into(),
        );
    }
    for m in mount_entries(root, conf)? {
        let mut opts = "rbind,create=dir".to_string();
        if m.ro {
            opts.push_str(",ro");
        }
        push(
            "lxc.mount.entry",
            format!("{} {} none {opts} 0 0", m.source.display(), m.target),
        );
    }
    push(
        "lxc.init.cmd",
        conf.get("entrypoint").unwrap_or("/sbin/init").to_string(),
    );
    for e in env_entries(conf) {
        push("lxc.environment", e);
    }
    for (k, v) in &conf.main.lxc {
        push(k, v.clone());
    }
    let mut out = String::new();
    for (k, v) in l {
        if v.contains('\n') || v.contains('\0') {
            return Err(die(format!(
                "invalid value for {k}: contains a newline or NUL"
            )));
        }
        out.push_str(&format!("{k} = {v}\n"));
    }
    Ok(out)
}

/// Create mount targets inside the rootfs (owned by the CT's root) without following symlinks.
fn create_mount_target(rootfs: &Path, rel: &str, unpriv: bool) -> Result<()> {
    let mut cur = rootfs.to_path_buf();
    for part in rel.split('/') {
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => return Ok(()), // let LXC resolve it safely
            Ok(_) => {}
            Err(_) => {
                fs::create_dir(&cur)
                    .ctx(|| format!("unable to create mount point '{}'", cur.display()))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                    .ctx(|| format!("unable to chmod '{}'", cur.display()))?;
                if unpriv {
                    std::os::unix::fs::lchown(&cur, Some(idmap::BASE), Some(idmap::BASE))
                        .ctx(|| format!("unable to chown '{}'", cur.display()))?;
                }
            }
        }
    }
    Ok(())
}

/// cgroup hierarchy roots of this host.
fn cgroup_roots() -> Vec<PathBuf> {
    if host_is_cgroup2() {
        return vec![PathBuf::from("/sys/fs/cgroup")];
    }
    fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// VMIDs are host-global (cgroups `lxc/<vmid>`, `lxc.monitor/<vmid>`): remove empty leftovers
/// of a crashed CT, and refuse clearly when another LXC instance (another PVE_DOUBLE_ROOT)
/// still uses them.
pub fn clear_stale_cgroups(vmid: u32) -> Result<()> {
    let roots = cgroup_roots();
    let rels = [
        format!("lxc/{vmid}/ns"),
        format!("lxc/{vmid}"),
        format!("lxc.monitor/{vmid}"),
    ];
    for r in &roots {
        for rel in &rels {
            let p = r.join(rel);
            if p.is_dir() {
                let _ = fs::remove_dir(&p); // fails (harmlessly) while in use
            }
        }
    }
    for r in &roots {
        for rel in &rels[1..] {
            if r.join(rel).is_dir() {
                return Err(die(format!(
                    "cgroup '{}' is in use - is VMID {vmid} running under another PVE_DOUBLE_ROOT?",
                    r.join(rel).display()
                )));
            }
        }
    }
    Ok(())
}

/// Everything `pct start` does before lxc-start: checks, mount targets, LXC config file.
pub fn prepare(root: &Root, vmid: u32, conf: &PctConfig) -> Result<()> {
    let rootfs = rootfs_path(root, conf)?;
    if !rootfs.is_dir() {
        return Err(die(format!("rootfs '{}' does not exist", rootfs.display())));
    }
    for (i, p) in nets(conf)? {
        if let Some(b) = p.get("bridge") {
            if !Path::new("/sys/class/net").join(b).join("bridge").is_dir() {
                return Err(die(format!("net{i}: bridge '{b}' does not exist")));
            }
        }
    }
    let unpriv = conf.is_unprivileged();
    if unpriv {
        idmap::ensure_subids()?;
        root.ensure_traversable(&rootfs)?;
    }
    for m in mount_entries(root, conf)? {
        if !m.source.exists() {
            return Err(die(format!(
                "mount point source '{}' does not exist",
                m.source.display()
            )));
        }
        create_mount_target(&rootfs, &m.target, unpriv)?;
    }
    clear_stale_cgroups(vmid)?;
    let text = render_config(root, vmid, conf, host_is_cgroup2())?;
    let dir = root.lxc_dir(vmid);
    fs::create_dir_all(&dir).ctx(|| format!("unable to create '{}'", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .ctx(|| format!("unable to chmod '{}'", dir.display()))?;
    let rootfs_mnt = dir.join("rootfs");
    if !rootfs_mnt.exists() {
        fs::create_dir(&rootfs_mnt)
            .ctx(|| format!("unable to create '{}'", rootfs_mnt.display()))?;
    }
    let cfg = dir.join("config");
    fs::write(&cfg, text).ctx(|| format!("unable to write '{}'", cfg.display()))
}

/// How long `pct start` waits for the init to run (`PVE_DOUBLE_START_TIMEOUT_MS`, default 30 s).
pub fn start_timeout() -> Duration {
    std::env::var("PVE_DOUBLE_START_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
}

fn log_says_started(p: &Path) -> bool {
    fs::read_to_string(p)
        .map(|t| t.contains(" - Started \""))
        .unwrap_or(false)
}

/// argv of `lxc-start -F` as pve-container@.service runs it, plus the NOTICE log the double
/// reads to see that init was started.
pub fn start_argv(root: &Root, vmid: u32) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec!["lxc-start".into(), "-P".into()];
    v.push(root.lxc_path().into_os_string());
    v.extend([
        "-n".into(),
        vmid.to_string().into(),
        "-F".into(),
        "-o".into(),
    ]);
    v.push(root.lxc_log_path(vmid).into_os_string());
    v.extend(["-l".into(), "NOTICE".into()]);
    v
}

/// Truncate the CT's stderr file and remove the old LXC log (before every lxc-start).
pub fn start_files(root: &Root, vmid: u32) -> Result<File> {
    let stderr_path = root.stderr_path(vmid);
    let stderr =
        File::create(&stderr_path).ctx(|| format!("unable to open '{}'", stderr_path.display()))?;
    let _ = fs::remove_file(root.lxc_log_path(vmid));
    Ok(stderr)
}

/// Wait until LXC logged that init was started; `exited` tells whether lxc-start is gone.
/// False on timeout or when lxc-start ended first.
pub fn wait_started(
    root: &Root,
    vmid: u32,
    timeout: Duration,
    exited: &mut dyn FnMut() -> bool,
) -> bool {
    let log = root.lxc_log_path(vmid);
    let deadline = Instant::now() + timeout;
    loop {
        if log_says_started(&log) {
            return true;
        }
        if exited() {
            return log_says_started(&log);
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// init runs; wait until LXC reports RUNNING (or it already stopped again).
pub fn wait_running(root: &Root, vmid: u32) {
    let _ = lxc_cmd(root, "lxc-wait", vmid)
        .args(["-s", "RUNNING|STOPPED", "-t", "10"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Run the CT like pve-container@.service: `lxc-start -F -n VMID` in its own session,
/// stdout to /dev/null, stderr to `$ROOT/run/pve/ct-<vmid>.stderr`; return once it runs.
/// (Inside a pve-shape, cmd/start.rs asks the shape's service manager instead.)
pub fn start(root: &Root, vmid: u32) -> Result<()> {
    let failed = || die(format!("startup for container '{vmid}' failed"));
    let stderr = start_files(root, vmid)?;
    let argv = start_argv(root, vmid);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    // Like a systemd unit: own session, and no fds inherited from whoever called pct (a
    // caller's pipe kept open by the long-lived lxc-start would never see EOF).
    // SAFETY: setsid and close_range are async-signal-safe syscalls; nothing else runs
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| die(format!("unable to run lxc-start - {e}")))?;
    let mut exited = || matches!(child.try_wait(), Ok(Some(_)));
    if !wait_started(root, vmid, start_timeout(), &mut exited) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(failed());
    }
    wait_running(root, vmid);
    Ok(())
}

/// Wait until the CT's monitor is gone (command socket closed).
pub fn wait_stopped(root: &Root, vmid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_running(root, vmid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// `lxc-stop --kill`.
pub fn stop_kill(root: &Root, vmid: u32) -> Result<()> {
    let st = lxc_cmd(root, "lxc-stop", vmid)
        .arg("--kill")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| die(format!("unable to run lxc-stop - {e}")))?;
    if !st.success() && is_running(root, vmid) {
        return Err(die(format!("unable to stop CT {vmid}")));
    }
    wait_stopped(root, vmid, Duration::from_secs(10));
    Ok(())
}

/// `lxc-stop --nokill --timeout N`; true if the CT stopped.
pub fn shutdown(root: &Root, vmid: u32, timeout: u64) -> Result<bool> {
    let st = lxc_cmd(root, "lxc-stop", vmid)
        .args(["--nokill", "--timeout", &timeout.to_string()])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| die(format!("unable to run lxc-stop - {e}")))?;
    if st.success() {
        wait_stopped(root, vmid, Duration::from_secs(10));
    }
    Ok(st.success() || !is_running(root, vmid))
}

/// Apply cgroup limits to a running CT (hotplug of memory/swap/cpulimit/cores/cpuunits).
pub fn apply_limits_live(vmid: u32, conf: &PctConfig) -> Result<()> {
    let v2 = host_is_cgroup2();
    let mut items = cgroup_limits(conf, v2);
    // memsw must stay >= memory: try both orders
    for attempt in 0..2 {
        let mut failed = None;
        for (k, v) in &items {
            let ctrl = if v2 {
                ""
            } else {
                k.split('.').next().unwrap_or("")
            };
            let p = cgroup_dir(vmid, ctrl).join(k);
            if let Err(e) = fs::write(&p, v) {
                failed = Some(format!("unable to write '{}' - {e}", p.display()));
            }
        }
        match failed {
            None => return Ok(()),
            Some(e) if attempt == 1 => return Err(die(e)),
            Some(_) => items.reverse(),
        }
    }
    Ok(())
}

/// Replace the current process with `lxc-attach` (pct exec does `exec`).
pub fn exec_attach(root: &Root, vmid: u32, keep_env: bool, args: &[String]) -> io::Error {
    let mut c = lxc_cmd(root, "lxc-attach", vmid);
    c.arg(if keep_env {
        "--keep-env"
    } else {
        "--clear-env"
    });
    c.arg("--");
    c.args(args);
    if keep_env {
        c.env("PATH", "/sbin:/bin:/usr/sbin:/usr/bin");
    }
    c.exec()
}

/// Bind-mount the rootfs at `$ROOT/lxc/<vmid>/rootfs` (pct mount).
pub fn mount_rootfs(root: &Root, vmid: u32, conf: &PctConfig) -> Result<PathBuf> {
    let src = rootfs_path(root, conf)?;
    let dst = root.lxc_dir(vmid).join("rootfs");
    fs::create_dir_all(&dst).ctx(|| format!("unable to create '{}'", dst.display()))?;
    nix::mount::mount(
        Some(&src),
        &dst,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("mount '{}' failed", dst.display()))?;
    Ok(dst)
}

/// Undo [`mount_rootfs`] (ignores "not mounted").
pub fn unmount_rootfs(root: &Root, vmid: u32) -> Result<()> {
    let dst = root.lxc_dir(vmid).join("rootfs");
    match nix::mount::umount2(&dst, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(die(format!("unmount '{}' failed - {e}", dst.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Root {
        Root {
            root: PathBuf::from("/R"),
            node: "pve".into(),
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(ct_relative("/data/x/").unwrap(), "data/x");
        assert!(ct_relative("data").is_err());
        assert!(ct_relative("/a/../b").is_err());
        assert!(ct_relative("/").is_err());
    }

    #[test]
    fn config_rendering() {
        let (conf, _) = PctConfig::parse(
            "cores: 1\ncpulimit: 1.5\nentrypoint: /.pvelxc/init run\nenv: A=1\0B=x y\nhostname: web\nmemory: 256\nmp0: /srv/h,mp=/mnt/h,ro=1\nostype: unmanaged\nrootfs: local-lvm:subvol-101-disk-0,size=4G\nswap: 0\nunprivileged: 1\nlxc.init.cwd: /tmp\n",
            101,
        );
        let t = render_config(&root(), 101, &conf, false).unwrap();
        for want in [
            "lxc.include = /usr/share/lxc/config/common.conf\n",
            "lxc.include = /usr/share/lxc/config/userns.conf\n",
            "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n",
            "lxc.cgroup.dir.container = lxc/101\nlxc.cgroup.dir.container.inner = ns\n",
            "lxc.cgroup.dir.monitor = lxc.monitor/101\n",
            "lxc.cgroup.memory.limit_in_bytes = 268435456\n",
            "lxc.cgroup.cpu.cfs_quota_us = 150000\n",
            "lxc.cgroup.cpuset.cpus = 0\n",
            "lxc.rootfs.path = dir:/R/storage/local-lvm/subvol-101-disk-0\n",
            "lxc.net.0.type = empty\n",
            "lxc.apparmor.profile = unconfined\n",
            "lxc.autodev = 1\n",
            "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed\n",
            "lxc.mount.entry = /srv/h mnt/h none rbind,create=dir,ro 0 0\n",
            "lxc.init.cmd = /.pvelxc/init run\n",
            "lxc.environment = A=1\nlxc.environment = B=x y\n",
            "lxc.uts.name = web\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(t.ends_with("lxc.init.cwd = /tmp\n"));
        let t2 = render_config(&root(), 101, &conf, true).unwrap();
        assert!(t2.contains("lxc.cgroup2.memory.max = 268435456\n"));
        assert!(t2.contains("lxc.cgroup2.memory.swap.max = 0\n"));
        assert!(t2.contains("lxc.cgroup2.cpu.max = 150000 100000\n"));
    }

    #[test]
    fn default_entrypoint_and_net() {
        let (conf, _) = PctConfig::parse(
            "net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,type=veth\nrootfs: /srv/ct\n",
            100,
        );
        let t = render_config(&root(), 100, &conf, false).unwrap();
        assert!(t.contains("lxc.init.cmd = /sbin/init\n"));
        assert!(t.contains("lxc.net.0.type = veth\nlxc.net.0.veth.pair = veth100i0\n"));
        assert!(t.contains("lxc.net.0.link = vmbr0\n"));
        assert!(!t.contains("lxc.idmap"));
        assert!(t.contains("lxc.rootfs.path = dir:/srv/ct\n"));
    }
}
