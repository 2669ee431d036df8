//! The shim's error type and its single mapping onto ttrpc/gRPC status codes.

use containerd_shim_protos::ttrpc::{self, Code};

/// Every failure inside the shim is one of these kinds; the service layer turns them into
/// gRPC codes in exactly one place ([`Error::code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub fn precondition(msg: impl Into<String>) -> Self {
        Error::FailedPrecondition(msg.into())
    }

    /// The gRPC code containerd sees for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Unavailable(_) => Code::UNAVAILABLE,
            Error::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Code::NOT_FOUND
            }
            Error::Io { .. } | Error::Internal(_) => Code::INTERNAL,
        }
    }

    /// Prefix the message with more context, keeping the kind (and so the gRPC code).
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{ctx}: {m}")),
            Error::NotFound(m) => Error::NotFound(format!("{ctx}: {m}")),
            Error::AlreadyExists(m) => Error::AlreadyExists(format!("{ctx}: {m}")),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(format!("{ctx}: {m}")),
            Error::Unimplemented(m) => Error::Unimplemented(format!("{ctx}: {m}")),
            Error::Unavailable(m) => Error::Unavailable(format!("{ctx}: {m}")),
            Error::DeadlineExceeded(m) => Error::DeadlineExceeded(format!("{ctx}: {m}")),
            Error::Io { context, source } => Error::Io {
                context: format!("{ctx}: {context}"),
                source,
            },
            Error::Internal(m) => Error::Internal(format!("{ctx}: {m}")),
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Io {
            context: "system call".into(),
            source: std::io::Error::from(e),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::InvalidArgument(format!("json: {e}"))
    }
}

impl From<containerd_shim::Error> for Error {
    fn from(e: containerd_shim::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<Error> for containerd_shim::Error {
    fn from(e: Error) -> Self {
        containerd_shim::Error::Other(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_kinds_and_survive_context() {
        let e = Error::NotFound("process e1".into()).context("kill");
        assert_eq!(e.code(), Code::NOT_FOUND);
        assert_eq!(e.to_string(), "kill: process e1");
        let io = Error::io("open", std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(io.code(), Code::NOT_FOUND);
        assert_eq!(Error::Unimplemented("x".into()).code(), Code::UNIMPLEMENTED);
        let t: ttrpc::Error = Error::precondition("not running").into();
        match t {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::FAILED_PRECONDITION);
                assert_eq!(s.message(), "not running");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
