//! Error type: every failure knows how Proxmox would print it and which exit code it gives.

use std::fmt;

/// A failure of a pct/pvesh invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PveError {
    /// `ERROR: unknown command 'pct foo'` + usage line.
    UnknownCommand { tool: String, cmdline: String },
    /// `400 Parameter verification failed.` with per-parameter messages and the short usage.
    Param {
        errors: Vec<(String, String)>,
        usage: String,
    },
    /// Any other `400 <msg>` (e.g. "unable to parse option", "too many arguments"), optionally
    /// preceded by Getopt::Long warnings such as `Unknown option: foo`.
    BadRequest {
        warnings: Vec<String>,
        msg: String,
        usage: String,
    },
    /// `die "msg\n"`: message on stderr, exit 255.
    Die(String),
    /// Exit with a given status and print nothing more (exec pass-through).
    Exit(i32),
}

pub type Result<T> = std::result::Result<T, PveError>;

/// Shorthand for `PveError::Die`.
pub fn die(msg: impl Into<String>) -> PveError {
    PveError::Die(msg.into())
}

/// A single-parameter verification error.
pub fn param_err(param: &str, msg: impl Into<String>, usage: &str) -> PveError {
    PveError::Param {
        errors: vec![(param.to_string(), msg.into())],
        usage: usage.to_string(),
    }
}

impl PveError {
    /// Text for stderr (always ends with a newline, unless empty) and the exit status.
    pub fn render(&self) -> (String, i32) {
        match self {
            PveError::UnknownCommand { tool, cmdline } => (
                format!("ERROR: unknown command '{cmdline}'\nUSAGE: {tool} <COMMAND> [ARGS] [OPTIONS]\n"),
                255,
            ),
            PveError::Param { errors, usage } => {
                let mut s = String::from("400 Parameter verification failed.\n");
                for (p, m) in errors {
                    s.push_str(&format!("{p}: {m}\n"));
                }
                s.push('\n');
                s.push_str(usage);
                s.push('\n');
                (s, 255)
            }
            PveError::BadRequest {
                warnings,
                msg,
                usage,
            } => {
                let mut s = String::new();
                for w in warnings {
                    s.push_str(w);
                    s.push('\n');
                }
                s.push_str(&format!("400 {msg}\n\n{usage}\n"));
                (s, 255)
            }
            PveError::Die(m) => {
                let mut s = m.clone();
                if !s.ends_with('\n') {
                    s.push('\n');
                }
                (s, 255)
            }
            PveError::Exit(code) => (String::new(), *code),
        }
    }
}

impl fmt::Display for PveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, _) = self.render();
        f.write_str(s.trim_end())
    }
}

impl std::error::Error for PveError {}

/// Attach a context message to io errors: "ctx - os error text".
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| PveError::Die(format!("{} - {e}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_error_format() {
        let e = param_err(
            "vmid",
            "invalid format - value does not look like a valid VM ID",
            "pct start <vmid> [OPTIONS]",
        );
        let (s, code) = e.render();
        assert_eq!(
            s,
            "400 Parameter verification failed.\nvmid: invalid format - value does not look like a valid VM ID\n\npct start <vmid> [OPTIONS]\n"
        );
        assert_eq!(code, 255);
    }

    #[test]
    fn unknown_command_format() {
        let e = PveError::UnknownCommand {
            tool: "pct".into(),
            cmdline: "pct foo".into(),
        };
        assert_eq!(
            e.render().0,
            "ERROR: unknown command 'pct foo'\nUSAGE: pct <COMMAND> [ARGS] [OPTIONS]\n"
        );
    }

    #[test]
    fn die_adds_newline() {
        assert_eq!(
            die("CT 101 not running").render(),
            ("CT 101 not running\n".into(), 255)
        );
    }
}
