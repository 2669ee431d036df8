//! Backend name → implementation.

use std::sync::Arc;

use super::crun::OciBackend;
use super::Backend;
use crate::config::BackendKind;

pub fn get(kind: BackendKind) -> Arc<dyn Backend> {
    match kind {
        BackendKind::Crun | BackendKind::Runc => Arc::new(OciBackend::new(kind)),
        BackendKind::Pct => Arc::new(super::pct::PctBackend::default()),
        BackendKind::Vm => Arc::new(super::vm::VmBackend),
    }
}
