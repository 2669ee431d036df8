//! LXC driver: generates `$ROOT/lxc/<vmid>/config` from a pct config the way PVE::LXC does and
//! drives the lxc-* tools (argv vectors only, never a shell).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::conf::PctConfig;
use crate::error::{die, Context, Result};
use crate::idmap;
use crate::paths::Root;
use crate::profile::Profile;
use crate::storage;

pub use crate::lxcconf::{
    cgroup_dir, cgroup_limits, ct_relative, host_is_cgroup2, host_managed_unsupported,
    is_host_managed, mount_entries, nets, render_config, resolve_volume_path, rootfs_path,
    volume_ids, MountEntry,
};

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

/// Create mount targets inside the rootfs (owned by the CT's root) without following symlinks.
pub fn create_mount_target(rootfs: &Path, rel: &str, unpriv: bool) -> Result<()> {
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
    let profile = Profile::load(Some(&root.root))?;
    for vol in volume_ids(conf) {
        storage::activate(root, &vol)?;
    }
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
        if is_host_managed(profile, &p) {
            if let Some(m) = host_managed_unsupported(i, &p) {
                return Err(die(m));
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
    let text = render_config(root, vmid, conf, host_is_cgroup2(), profile)?;
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
    for vol in volume_ids(conf) {
        storage::activate(root, &vol)?;
    }
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
