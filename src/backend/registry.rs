//! Backend name → implementation.

use std::sync::{Arc, OnceLock};

use super::crun::OciBackend;
use super::Backend;
use crate::config::BackendKind;

/// One pct backend per shim process: it knows the pods (sandbox CTs) this shim runs.
fn pct() -> Arc<super::pct::PctBackend> {
    static PCT: OnceLock<Arc<super::pct::PctBackend>> = OnceLock::new();
    PCT.get_or_init(Default::default).clone()
}

pub fn get(kind: BackendKind) -> Arc<dyn Backend> {
    match kind {
        BackendKind::Crun | BackendKind::Runc => Arc::new(OciBackend::new(kind)),
        BackendKind::Pct => pct(),
        BackendKind::Vm => Arc::new(super::vm::VmBackend),
    }
}
