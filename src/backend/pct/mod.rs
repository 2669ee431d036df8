//! The Proxmox VE backend: each container is a real CT driven through the `pct` CLI.

#![allow(dead_code)]

pub mod cmd;
pub mod output;
pub mod vmid;

use std::sync::Arc;

use super::{Backend, BundleRecord, CreateRequest, Instance, Spawned};
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};

#[derive(Default)]
pub struct PctBackend;

#[async_trait::async_trait]
impl Backend for PctBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Pct
    }

    fn usable(&self, config: &Config) -> std::result::Result<(), String> {
        crate::sys::command::which(&config.pct.pct)?;
        crate::sys::command::which(&config.pct.pvesh)?;
        Err("the pct backend's lifecycle is not wired up in this version".into())
    }

    async fn create(&self, _: CreateRequest) -> Result<(Arc<dyn Instance>, Spawned)> {
        Err(Error::Unimplemented(
            "the pct backend's lifecycle is not wired up in this version".into(),
        ))
    }

    async fn cleanup(&self, _: &BundleRecord, _: &Config) -> Result<()> {
        Ok(())
    }
}
