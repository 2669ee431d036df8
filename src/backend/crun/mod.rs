//! The plain-OCI backend: crun (default) or runc, driven through their CLI.

mod cli;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use oci_spec::runtime::{LinuxResources, Process};
use tokio::sync::mpsc;

use super::record::OciRecord;
use super::{Backend, BackendState, BundleRecord, CreateRequest, Instance, Spawned, Target};
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};
use crate::sys::cgroup::Cgroup;
use crate::sys::cgroup::Metrics;
use crate::sys::console::ConsoleSocket;
use crate::sys::stdio::{ProcessIo, StdioPaths};
use crate::sys::{command, fdio, mount, reaper};
use cli::Runtime;

pub struct OciBackend {
    kind: BackendKind,
}

impl OciBackend {
    pub fn new(kind: BackendKind) -> Self {
        OciBackend { kind }
    }

    fn settings<'c>(&self, config: &'c Config) -> &'c crate::config::OciRuntimeConfig {
        match self.kind {
            BackendKind::Runc => &config.runc,
            _ => &config.crun,
        }
    }
}

fn runtime(rec: &OciRecord, bundle: &Path) -> Runtime {
    Runtime {
        binary: rec.binary.clone(),
        root: rec.root.clone(),
        log: bundle.join("log.json").into_os_string(),
    }
}

#[async_trait]
impl Backend for OciBackend {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    fn usable(&self, config: &Config) -> std::result::Result<(), String> {
        command::which(&self.settings(config).binary).map(|_| ())
    }

    async fn check(&self, config: &Config) -> crate::check::Report {
        let mut r = crate::check::Report::default();
        match command::which(&self.settings(config).binary) {
            Ok(p) => {
                let bin = p.display().to_string();
                match crate::check::version_of(&bin, "--version").await {
                    Ok(v) => r.fact("binary", format!("{bin} ({v})")),
                    Err(e) => r.problem(format!("{bin} does not run: {e}")),
                }
            }
            Err(e) => r.problem(e),
        }
        r.done()
    }

    async fn create(&self, req: CreateRequest) -> Result<(Arc<dyn Instance>, Spawned)> {
        let settings = self.settings(&req.config);
        let binary = req
            .options
            .binary_name
            .clone()
            .unwrap_or_else(|| settings.binary.clone());
        // Like the runc shim: an options Root gets the namespace appended.
        let root = req
            .options
            .root
            .as_ref()
            .map(|r| Path::new(r).join(&req.namespace).display().to_string())
            .unwrap_or_else(|| {
                if settings.root.is_empty() {
                    format!("/run/pvelxc/{}/{}", self.kind, req.namespace)
                } else {
                    settings.root.clone()
                }
            });
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::io(format!("create runtime root {root}"), e))?;

        let oci = OciRecord { binary, root };
        req.record.set(BackendState::Oci(oci.clone()))?;
        let rt = runtime(&oci, &req.bundle);

        let rootfs = req.bundle.join("rootfs");
        mount::mount_rootfs(&req.rootfs, &rootfs).await?;
        let rootfs_mounted = !req.rootfs.is_empty();

        let result = async {
            let pid_file = req.bundle.join("init.pid");
            let mut args: Vec<std::ffi::OsString> = vec![
                "create".into(),
                "--bundle".into(),
                req.bundle.clone().into_os_string(),
                "--pid-file".into(),
                pid_file.clone().into_os_string(),
            ];
            let (io, pid) =
                spawn_with_stdio(&rt, &mut args, &req.id, &req.stdio, &req.bundle, "init").await?;
            let pid = match pid {
                Some(p) => p,
                None => read_pid(&pid_file)?,
            };
            Ok::<_, Error>((io, pid))
        }
        .await;
        let (io, pid) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = rt.run(["delete", "--force", req.id.as_str()]).await;
                if rootfs_mounted {
                    let _ = mount::unmount_all(&rootfs);
                }
                return Err(e);
            }
        };
        let exit = reaper::watch(pid as i32);
        let host_pid = !has_pid_namespace(&req.spec);
        let exit_rt = rt.clone();
        let exit_id = req.id.clone();
        let exit: super::ExitFuture = Box::pin(async move {
            let code = exit.await.unwrap_or_else(|_| reaper::Exit::new(255));
            if host_pid {
                // Without a pid namespace the init's children outlive it: end them too.
                let _ = exit_rt.run(["kill", "--all", exit_id.as_str(), "9"]).await;
            }
            code
        });
        let cgroup = Cgroup::of_pid(pid).ok();
        let oom = cgroup.as_ref().and_then(|c| match c.watch_oom() {
            Ok(rx) => Some(rx),
            Err(e) => {
                log::warn!("{}: OOM events unavailable: {e}", req.id);
                None
            }
        });
        let inst = OciInstance {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            rt,
            pid,
            cgroup,
            oom: Mutex::new(oom),
            rootfs_mounted,
        };
        Ok((Arc::new(inst), Spawned { pid, io, exit }))
    }

    async fn cleanup(&self, record: &BundleRecord, _config: &Config) -> Result<()> {
        let bundle = std::env::current_dir().map_err(|e| Error::io("cwd", e))?;
        let oci = match record.backend_state() {
            BackendState::Oci(o) => o,
            _ => OciRecord::default(),
        };
        let rt = runtime(&oci, &bundle);
        if !rt.binary.is_empty() {
            match rt.run(["delete", "--force", record.id.as_str()]).await {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => log::warn!("cleanup {}: {e}", record.id),
            }
        }
        mount::unmount_all(&bundle.join("rootfs"))
    }
}

/// Run `args` (create or exec) with the process's stdio wired up: a console socket for a
/// terminal, pipes otherwise. Returns the shim's ends and, for a tty, nothing else.
async fn spawn_with_stdio(
    rt: &Runtime,
    args: &mut Vec<std::ffi::OsString>,
    id: &str,
    stdio: &StdioPaths,
    bundle: &Path,
    tag: &str,
) -> Result<(ProcessIo, Option<u32>)> {
    if stdio.terminal {
        let sock_path = console_path(bundle, tag);
        let sock = ConsoleSocket::bind(&sock_path)?;
        args.push("--console-socket".into());
        args.push(sock.path().as_os_str().to_owned());
        args.push(id.into());
        // The runtime may fail before it ever connects: never wait on the socket alone.
        let run = rt.run(args.clone());
        let recv = sock.receive();
        tokio::pin!(run, recv);
        let master = tokio::select! {
            r = &mut run => {
                r?;
                tokio::time::timeout(std::time::Duration::from_secs(10), recv)
                    .await
                    .map_err(|_| Error::internal("the runtime sent no terminal on its console socket"))??
            }
            m = &mut recv => {
                let m = m?;
                run.await?;
                m
            }
        };
        return Ok((ProcessIo::Pty { master }, None));
    }
    args.push(id.into());
    let mut mine: [Option<OwnedFd>; 3] = [None, None, None];
    let mut theirs: Vec<std::process::Stdio> = Vec::new();
    for (i, path) in [&stdio.stdin, &stdio.stdout, &stdio.stderr]
        .into_iter()
        .enumerate()
    {
        if path.is_empty() {
            theirs.push(std::process::Stdio::null());
            continue;
        }
        let (r, w) = fdio::pipe().map_err(|e| Error::io("pipe", e))?;
        let (m, t) = if i == 0 { (w, r) } else { (r, w) };
        mine[i] = Some(m);
        theirs.push(std::process::Stdio::from(t));
    }
    run_with_stdio(rt, args.clone(), theirs).await?;
    let [stdin, stdout, stderr] = mine;
    Ok((
        ProcessIo::Pipes {
            stdin,
            stdout,
            stderr,
        },
        None,
    ))
}

/// Run the runtime with the given stdio for the process it starts (it is inherited).
async fn run_with_stdio(
    rt: &Runtime,
    args: Vec<std::ffi::OsString>,
    stdio: Vec<std::process::Stdio>,
) -> Result<()> {
    let argv = rt.argv(args);
    let shown = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut it = stdio.into_iter();
    let (Some(i), Some(o), Some(e)) = (it.next(), it.next(), it.next()) else {
        return Err(Error::internal("stdio"));
    };
    let Some((prog, rest)) = argv.split_first() else {
        return Err(Error::internal("empty argv"));
    };
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest).stdin(i).stdout(o).stderr(e);
    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("spawn {}", prog.to_string_lossy()), e))?;
    drop(cmd);
    let code = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        reaper::watch(child.id() as i32),
    )
    .await
    .map_err(|_| Error::DeadlineExceeded(format!("`{shown}` did not finish within 60s")))?
    .map(|x| x.code)
    .unwrap_or(255);
    if code != 0 {
        let msg = std::fs::read_to_string(Path::new(&rt.log))
            .ok()
            .and_then(|t| cli::last_log_msg(&t))
            .unwrap_or_else(|| format!("exit status {code}"));
        return Err(Error::Internal(format!("{}: {msg}", rt.binary)));
    }
    Ok(())
}

fn console_path(bundle: &Path, tag: &str) -> PathBuf {
    // Keep it short (sun_path is 108 bytes): a hash of the bundle under /run/pvelxc/c.
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{}/{tag}", bundle.display()).as_bytes());
    let name: String = h.iter().take(10).map(|b| format!("{b:02x}")).collect();
    let dir = PathBuf::from("/run/pvelxc/c");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

fn read_pid(path: &Path) -> Result<u32> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    s.trim()
        .parse()
        .map_err(|_| Error::internal(format!("bad pid file {}: {s:?}", path.display())))
}

pub struct OciInstance {
    id: String,
    bundle: PathBuf,
    rt: Runtime,
    pid: u32,
    cgroup: Option<Cgroup>,
    oom: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
    rootfs_mounted: bool,
}

#[async_trait]
impl Instance for OciInstance {
    async fn start(&self) -> Result<Option<u32>> {
        self.rt.run(["start", self.id.as_str()]).await.map(|_| None)
    }

    async fn exec(&self, exec_id: &str, process: &Process, stdio: &StdioPaths) -> Result<Spawned> {
        let spec_file = self
            .bundle
            .join(format!("exec-{}.json", safe_name(exec_id)));
        let pid_file = self.bundle.join(format!("exec-{}.pid", safe_name(exec_id)));
        let json = serde_json::to_vec(process)?;
        std::fs::write(&spec_file, json)
            .map_err(|e| Error::io(format!("write {}", spec_file.display()), e))?;
        let mut args: Vec<std::ffi::OsString> = vec![
            "exec".into(),
            "--process".into(),
            spec_file.clone().into_os_string(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.clone().into_os_string(),
        ];
        let res = spawn_with_stdio(
            &self.rt,
            &mut args,
            &self.id,
            stdio,
            &self.bundle,
            &format!("exec-{exec_id}"),
        )
        .await;
        let _ = std::fs::remove_file(&spec_file);
        let (io, _) = res?;
        let pid = read_pid(&pid_file)?;
        let _ = std::fs::remove_file(&pid_file);
        let exit = reaper::watch(pid as i32);
        Ok(Spawned {
            pid,
            io,
            exit: Box::pin(async move { exit.await.unwrap_or_else(|_| reaper::Exit::new(255)) }),
        })
    }

    async fn kill(&self, target: Target<'_>, signal: u32, all: bool) -> Result<()> {
        match target {
            Target::Init => {
                let sig = signal.to_string();
                let mut args = vec!["kill"];
                if all {
                    args.push("--all");
                }
                args.push(self.id.as_str());
                args.push(sig.as_str());
                match self.rt.run(args).await {
                    Ok(_) => Ok(()),
                    Err(Error::NotFound(m)) => {
                        // The runtime lost the container (its state was deleted behind our
                        // back) while its init still runs: do not leave an unmanageable
                        // process behind.
                        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
                        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                            log::warn!(
                                "{}: runtime lost the container; killed init {}",
                                self.id,
                                self.pid
                            );
                        }
                        Err(Error::NotFound(m))
                    }
                    Err(e) => Err(e),
                }
            }
            Target::Exec { pid, .. } => {
                let sig = nix::sys::signal::Signal::try_from(signal as i32)
                    .map_err(|_| Error::invalid(format!("invalid signal {signal}")))?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).map_err(|e| {
                    if e == nix::errno::Errno::ESRCH {
                        Error::NotFound("process already finished".into())
                    } else {
                        Error::from(e)
                    }
                })
            }
        }
    }

    async fn pause(&self) -> Result<()> {
        self.rt.run(["pause", self.id.as_str()]).await.map(|_| ())
    }

    async fn resume(&self) -> Result<()> {
        self.rt.run(["resume", self.id.as_str()]).await.map(|_| ())
    }

    async fn pids(&self) -> Result<Vec<u32>> {
        let out = self
            .rt
            .run(["ps", "--format", "json", self.id.as_str()])
            .await?;
        let pids: Vec<u32> = serde_json::from_str(out.stdout.trim()).map_err(|e| {
            Error::internal(format!("{} ps: unexpected output: {e}", self.rt.binary))
        })?;
        Ok(pids)
    }

    async fn stats(&self) -> Result<Metrics> {
        let cg = match &self.cgroup {
            Some(c) => c.clone(),
            None => Cgroup::of_pid(self.pid)?,
        };
        Ok(cg.metrics())
    }

    async fn update(&self, resources: &LinuxResources) -> Result<()> {
        let file = self.bundle.join("update.json");
        std::fs::write(&file, serde_json::to_vec(resources)?)
            .map_err(|e| Error::io("write update.json", e))?;
        let res = self
            .rt
            .run([
                std::ffi::OsString::from("update"),
                "--resources".into(),
                file.clone().into_os_string(),
                self.id.clone().into(),
            ])
            .await;
        let _ = std::fs::remove_file(&file);
        res.map(|_| ())
    }

    async fn delete(&self, force: bool) -> Result<()> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(self.id.as_str());
        match self.rt.run(args).await {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if self.rootfs_mounted {
            mount::unmount_all(&self.bundle.join("rootfs"))?;
        }
        Ok(())
    }

    fn oom_events(&self) -> Option<mpsc::UnboundedReceiver<()>> {
        self.oom.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn has_pid_namespace(spec: &oci_spec::runtime::Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|ns| {
            ns.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none()
            })
        })
        .unwrap_or(false)
}

/// Exec ids come from clients: keep file names tame.
fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}
