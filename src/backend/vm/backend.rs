//! The [`Backend`] side of the micro-VM backend: check, create (assets, shares, cgroup, boot
//! the VM and wait for the agent) and crash cleanup (QEMU by recorded pid or state dir).

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pvelxc_agent::host::{Share, ShareSecurity, Vm, VmConfig};
use tokio::sync::watch;

use super::instance::VmInstance;
use super::shared::{InitState, QemuGone, Shared};
use super::{accel, assets, cgroup, errors, io, oom, runas, share, spec, state};
use crate::backend::record::VmRecord;
use crate::backend::{Backend, BackendState, BundleRecord, CreateRequest, Instance, Spawned};
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};
use crate::sys::mount;

pub struct VmBackend;

#[async_trait]
impl Backend for VmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vm
    }

    fn usable(&self, config: &Config) -> std::result::Result<(), String> {
        assets::check(&config.vm)
    }

    async fn check(&self, config: &Config) -> crate::check::Report {
        let mut r = crate::check::Report::default();
        match crate::sys::command::which(&config.vm.qemu) {
            Ok(q) => {
                let q = q.display().to_string();
                match crate::check::version_of(&q, "--version").await {
                    Ok(v) => r.fact("qemu", format!("{q} ({v})")),
                    Err(e) => r.problem(e),
                }
            }
            Err(e) => r.problem(format!("QEMU: {e}")),
        }
        r.fact(
            "kvm",
            match accel::kvm_usable() {
                Ok(()) => "usable".to_string(),
                Err(why) => format!("not usable ({why}): TCG, much slower"),
            },
        );
        if let Err(why) = assets::check(&config.vm) {
            r.problem(why);
        } else {
            r.fact("kernel", config.vm.kernel.clone());
        }
        r.done()
    }

    async fn create(&self, req: CreateRequest) -> Result<(Arc<dyn Instance>, Spawned)> {
        let s = &req.config.vm;
        let assets = assets::prepare(s).await?;
        let accel = accel::choose(&s.accel)?;
        let share = if s.share == "virtiofs" {
            Share::VirtioFs
        } else {
            Share::NineP
        };
        let spec_process = req
            .spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::invalid("the OCI spec has no process"))?;
        let process = spec::process(spec_process, req.stdio.terminal)?;
        let state_dir = state::state_dir(&s.state_dir, &req.namespace, &req.id)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state_dir)
            .map_err(|e| Error::io(format!("create {}", state_dir.display()), e))?;
        let mut record = VmRecord {
            state_dir: state_dir.clone(),
            ..Default::default()
        };
        req.record.set(BackendState::Vm(record.clone()))?;

        let security = if s.share_security == "passthrough" {
            ShareSecurity::Passthrough
        } else {
            ShareSecurity::MappedXattr
        };
        let qemu_user = runas::resolve(&s.qemu_user);
        let qemu_user = match qemu_user {
            Ok(u) => u,
            Err(e) => {
                let _ = state::remove_dir(&state_dir);
                return Err(e);
            }
        };
        let rootfs_mounted = !req.rootfs.is_empty();
        if let Err(e) = mount::mount_rootfs(&req.rootfs, &req.bundle.join("rootfs")).await {
            let _ = state::remove_dir(&state_dir);
            return Err(e);
        }
        let cg_slot: Mutex<Option<cgroup::QemuCgroup>> = Mutex::new(None);
        let undo = |e: Error| {
            // Shares first: removing the state dir must never reach through a mount.
            if let Err(u) = share::unmount_all(&state_dir) {
                log::warn!("{}: {u}", req.id);
            } else {
                let _ = state::remove_dir(&state_dir);
            }
            if let Some(cg) = cg_slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                cg.remove();
            }
            if rootfs_mounted {
                let _ = mount::unmount_all(&req.bundle.join("rootfs"));
            }
            e
        };
        let root = spec::rootfs_dir(&req.spec, &req.bundle, rootfs_mounted);
        let nine_p_mapped = share == Share::NineP && security == ShareSecurity::MappedXattr;
        // A rootfs already prepared for mapped-xattr no longer looks runnable from the host.
        if !(nine_p_mapped && share::is_mapped(&root)) {
            crate::backend::executable::check(&root, spec_process).map_err(undo)?;
        }
        if nine_p_mapped {
            share::prepare_rootfs(&root, qemu_user)
                .await
                .map_err(undo)?;
        }

        let res = req
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref());
        let read_only = spec::read_only(&req.spec);
        let mut mounts = spec::extra_mounts(&req.spec, &req.bundle);
        if let Some(owner) = qemu_user {
            for m in mounts.iter().filter(|m| !m.read_only) {
                runas::check_writable(&m.host_path, owner).map_err(undo)?;
            }
        }
        let shared_root = share::bind(&state_dir, 0, &root, read_only).map_err(undo)?;
        for (i, m) in mounts.iter_mut().enumerate() {
            m.host_path =
                share::bind(&state_dir, i + 1, &m.host_path, m.read_only).map_err(undo)?;
        }
        let mut cfg = VmConfig::new(&assets.kernel, &assets.initramfs, shared_root);
        cfg.qemu = assets.qemu.clone();
        cfg.memory_mib = spec::memory_mib(res, s);
        cfg.vcpus = spec::vcpus(res, s);
        cfg.accel = accel;
        cfg.share = share;
        cfg.read_only = read_only;
        cfg.mounts = mounts;
        cfg.security = security;
        cfg.prepare_rootfs = false;
        cfg.qemu_user = qemu_user;
        cfg.sandbox = s.sandbox;
        cfg.hostname = req
            .spec
            .hostname()
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| req.id.chars().take(63).collect());
        cfg.state_dir = state_dir.clone();
        cfg.boot_timeout = Duration::from_secs(s.boot_timeout_secs.max(1));

        let cg_rel = cgroup::rel_path(
            req.spec
                .linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_ref())
                .and_then(|p| p.to_str()),
            &req.namespace,
            &req.id,
        )
        .map_err(undo)?;
        let limits = cgroup::Limits {
            memory_bytes: (u64::from(cfg.memory_mib) + u64::from(s.qemu_overhead_mib)) << 20,
            cpu: spec::cpu_quota(res),
        };
        let cg = cgroup::QemuCgroup::create(&cg_rel, limits)
            .map_err(|e| undo(e.context("create the QEMU cgroup")))?;
        cfg.cgroup_procs = cg.procs_files();
        *cg_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(cg.clone());
        record.cgroup = Some(cg_rel.display().to_string());
        req.record
            .set(BackendState::Vm(record.clone()))
            .map_err(undo)?;
        log::info!(
            "{}: booting VM ({:?}, {} MiB, {} vCPU, {} extra mounts{}, 9p {:?}, QEMU as {:?}, cgroup {})",
            req.id,
            cfg.accel,
            cfg.memory_mib,
            cfg.vcpus,
            cfg.mounts.len(),
            if cfg.read_only {
                ", read-only rootfs"
            } else {
                ""
            },
            cfg.security,
            cfg.qemu_user,
            cg_rel.display()
        );

        let vm = match Vm::start(cfg).await {
            Ok(vm) => Arc::new(vm),
            Err(e) => {
                return Err(undo(
                    errors::map(e).context(format!("boot VM for {}", req.id)),
                ))
            }
        };
        let Some(qemu_pid) = vm.qemu_pid() else {
            return Err(undo(Error::internal("QEMU has no pid")));
        };
        log::info!(
            "{}: VM ready in {:.2} s (QEMU pid {qemu_pid})",
            req.id,
            vm.boot_time().as_secs_f64()
        );
        record.qemu_pid = Some(qemu_pid);
        if let Err(e) = req.record.set(BackendState::Vm(record)) {
            let _ = vm.shutdown().await;
            return Err(undo(e));
        }
        let (shim_io, ends) = match io::make(&req.stdio, process.console_size) {
            Ok(v) => v,
            Err(e) => {
                let _ = vm.shutdown().await;
                return Err(undo(e));
            }
        };
        let host_oom = crate::sys::cgroup::Cgroup::of_pid(qemu_pid)
            .and_then(|c| c.watch_oom())
            .map_err(|e| log::warn!("{}: no host OOM notifications for QEMU: {e}", req.id))
            .ok();
        let (oom, oom_rx) = oom::OomWatch::start(req.id.clone(), vm.take_console_lines(), host_oom);
        let shared = Arc::new(Shared {
            id: req.id.clone(),
            vm,
            qemu_pid,
            state: watch::channel(InitState::Created).0,
            deleting: AtomicBool::new(false),
            execs: Mutex::new(Default::default()),
            oom,
        });
        let exit = shared.clone().init_exit(QemuGone::new(qemu_pid));
        let inst = VmInstance {
            shared,
            bundle: req.bundle.clone(),
            state_dir: state_dir.clone(),
            cgroup: Some(cg),
            rootfs_mounted,
            pending: Mutex::new(Some((process, ends))),
            paused: AtomicBool::new(false),
            init_guest_pid: AtomicU32::new(0),
            last_pids: Mutex::new(Vec::new()),
            oom_rx: Mutex::new(Some(oom_rx)),
        };
        Ok((
            Arc::new(inst),
            Spawned {
                pid: qemu_pid,
                io: shim_io,
                exit,
            },
        ))
    }

    async fn cleanup(&self, record: &BundleRecord, _config: &Config) -> Result<()> {
        let bundle = std::env::current_dir().map_err(|e| Error::io("cwd", e))?;
        if let BackendState::Vm(rec) = record.backend_state() {
            let dir = rec.state_dir.as_path();
            if let Some(pid) = rec.qemu_pid {
                if state::kill_qemu(pid, dir).await {
                    log::info!("cleanup {}: killed QEMU {pid}", record.id);
                }
            }
            // A shim that died during boot never recorded the pid: look for the state dir.
            for pid in state::qemus_using(dir) {
                if state::kill_qemu(pid, dir).await {
                    log::info!("cleanup {}: killed unrecorded QEMU {pid}", record.id);
                }
            }
            state::remove_dir(dir)?;
            if let Some(rel) = &rec.cgroup {
                cgroup::QemuCgroup::existing(Path::new(rel)).remove();
            }
        }
        mount::unmount_all(&bundle.join("rootfs"))
    }
}
