//! Checks applied to every decoded message: values a peer controls are validated, and
//! the free text that reaches logs and errors is cleaned ([`clean_text`]).

use super::{clean_text, DecodeError, Msg};

/// Largest exit status: an exit code (0..=255) or 128 + a signal number (≤ 128 + 64).
pub const MAX_EXIT_STATUS: i32 = 255;

/// Validate `msg` and clean its free text. Host-bound text: `Error.message`,
/// `Ready.kernel`, `PidsReply` ids and names.
pub(super) fn checked(msg: Msg) -> Result<Msg, DecodeError> {
    Ok(match msg {
        Msg::Exit { status, .. } if !(0..=MAX_EXIT_STATUS).contains(&status) => {
            return Err(DecodeError::Invalid(format!(
                "exit status {status} outside 0..={MAX_EXIT_STATUS}"
            )))
        }
        Msg::Started { pid: 0, .. } => return Err(DecodeError::Invalid("started pid 0".into())),
        Msg::Error { req, message } => Msg::Error {
            req,
            message: clean_text(&message),
        },
        Msg::Ready { version, kernel } => Msg::Ready {
            version,
            kernel: clean_text(&kernel),
        },
        Msg::PidsReply { req, mut procs } => {
            for p in &mut procs {
                p.id = clean_text(&p.id);
                p.comm = clean_text(&p.comm);
            }
            Msg::PidsReply { req, procs }
        }
        other => other,
    })
}
