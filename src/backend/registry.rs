//! Backend name → implementation.

use std::sync::Arc;

use super::crun::OciBackend;
use super::Backend;
use crate::config::BackendKind;

pub fn get(kind: BackendKind) -> Arc<dyn Backend> {
    match kind {
        BackendKind::Crun | BackendKind::Runc => Arc::new(OciBackend::new(kind)),
        BackendKind::Pct => Arc::new(super::pct::PctBackend::default()),
        BackendKind::Vm => Arc::new(Missing(kind)),
    }
}

/// A backend this build cannot run yet: it says so instead of pretending.
struct Missing(BackendKind);

#[async_trait::async_trait]
impl Backend for Missing {
    fn kind(&self) -> BackendKind {
        self.0
    }

    fn usable(&self, _: &crate::config::Config) -> std::result::Result<(), String> {
        Err(format!(
            "the {} backend is not implemented in this version",
            self.0
        ))
    }

    async fn create(
        &self,
        _: super::CreateRequest,
    ) -> crate::error::Result<(Arc<dyn super::Instance>, super::Spawned)> {
        Err(crate::error::Error::Unimplemented(format!(
            "the {} backend is not implemented in this version",
            self.0
        )))
    }

    async fn cleanup(
        &self,
        _: &super::BundleRecord,
        _: &crate::config::Config,
    ) -> crate::error::Result<()> {
        Ok(())
    }
}
