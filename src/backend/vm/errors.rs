//! Agent/QEMU errors → the shim's error kinds (and so gRPC codes).

use pvelxc_agent::host::VmError;

use crate::error::Error;

pub fn map(e: VmError) -> Error {
    let msg = e.to_string();
    match e {
        VmError::QemuNotFound(_)
        | VmError::KernelNotFound(_)
        | VmError::InitramfsNotFound(_)
        | VmError::RootfsNotFound(_) => Error::FailedPrecondition(format!("vm backend: {msg}")),
        VmError::Config(_) => Error::InvalidArgument(format!("vm backend: {msg}")),
        VmError::Io { what, source } => Error::io(format!("vm backend: {what}"), source),
        VmError::BootTimeout { .. } | VmError::Timeout(_) => {
            Error::DeadlineExceeded(format!("vm backend: {msg}"))
        }
        VmError::Disconnected(_) => Error::Unavailable(format!("vm backend: {msg}")),
        VmError::QemuExited { .. } | VmError::Guest(_) | VmError::Protocol(_) => {
            Error::Internal(format!("vm backend: {msg}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::ttrpc::Code;

    #[test]
    fn kinds() {
        let e = map(VmError::KernelNotFound("/k/vmlinux".into()));
        assert_eq!(e.code(), Code::FAILED_PRECONDITION);
        assert!(e.to_string().contains("fetch-kernel.sh"), "{e}");
        let e = map(VmError::BootTimeout {
            after: std::time::Duration::from_secs(3),
            console_tail: "last words".into(),
        });
        assert_eq!(e.code(), Code::DEADLINE_EXCEEDED);
        assert!(e.to_string().contains("last words"));
        assert_eq!(
            map(VmError::Disconnected("eof".into())).code(),
            Code::UNAVAILABLE
        );
    }
}
