//! Create: validate the request, load the config and the bundle's spec, route to a backend,
//! create the container there and start watching its init's exit and OOM events.

use std::path::Path;
use std::sync::Arc;

use super::model::{CreateTask, TaskEvent};
use super::process::{Container, Proc};
use super::Service;
use crate::backend::{BundleRecord, CreateRequest, Recorder, Spawned};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::router;
use crate::sys::stdio::IoHandle;

impl Service {
    pub async fn create(&self, req: CreateTask) -> Result<u32> {
        super::model::validate_id("container id", &req.id)?;
        if self.table().contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )));
        }
        if req.checkpoint {
            return Err(Error::Unimplemented(
                "restoring from a checkpoint is not supported by containerd-shim-pvelxc-v2".into(),
            ));
        }
        let bundle = req.bundle.clone();
        if !bundle.is_absolute() || !bundle.is_dir() {
            return Err(Error::invalid(format!(
                "bundle {:?} is not a directory",
                bundle.display()
            )));
        }
        let opts = req.options.clone().unwrap_or_default();
        let loaded = Config::load(opts.config_path.as_deref())?;
        let spec = load_spec(&bundle)?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        let config = Arc::new(loaded.config);
        let lookup = &self.backends;
        let decision = router::route(
            &config,
            &router::Request {
                namespace: &self.namespace,
                container_id: &req.id,
                annotations: &annotations,
            },
            |k| lookup(k).admit(&annotations),
            |k| lookup(k).usable(&config),
        )?;
        log::info!(
            "{}: backend {} ({})",
            req.id,
            decision.backend,
            decision.reason
        );
        let backend = lookup(decision.backend);
        let record = Arc::new(Recorder::start(
            &bundle,
            BundleRecord {
                backend: Some(decision.backend),
                namespace: self.namespace.clone(),
                id: req.id.clone(),
                config_path: loaded.path.map(|p| p.display().to_string()),
                ..Default::default()
            },
        )?);

        let stdio = req.stdio.clone();
        let (instance, spawned) = backend
            .create(CreateRequest {
                namespace: self.namespace.clone(),
                id: req.id.clone(),
                bundle: bundle.clone(),
                spec,
                rootfs: req.rootfs.clone(),
                stdio: stdio.clone(),
                options: opts,
                config,
                record,
            })
            .await?;
        let Spawned { pid, io, exit } = spawned;
        let init = Arc::new(Proc::new("", pid, stdio.clone(), None));
        match IoHandle::start(&stdio, io, &req.id, &self.namespace).await {
            Ok(h) => {
                init.set_io(h);
            }
            Err(e) => {
                let _ = instance.delete(true).await;
                return Err(e);
            }
        }
        let c = Arc::new(Container::new(
            req.id.clone(),
            bundle.clone(),
            instance.clone(),
            init.clone(),
        ));
        self.table().insert(req.id.clone(), c.clone());
        self.events.publish(TaskEvent::Create {
            id: req.id.clone(),
            bundle,
            rootfs: req.rootfs,
            stdio,
            pid,
        });

        self.watch_exit(c.clone(), init, exit);
        if let Some(mut oom) = instance.oom_events() {
            let events = self.events.clone();
            let id = req.id.clone();
            tokio::spawn(async move {
                while oom.recv().await.is_some() {
                    events.publish(TaskEvent::Oom { id: id.clone() });
                }
            });
        }
        Ok(pid)
    }
}

fn load_spec(bundle: &Path) -> Result<oci_spec::runtime::Spec> {
    let p = bundle.join("config.json");
    let text = std::fs::read(&p).map_err(|e| Error::io(format!("read {}", p.display()), e))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::invalid(format!("malformed {}: {e}", p.display())))
}
