//! Typed builders for `pct` and `pvesh` argv (docs/pct.md).
//!
//! Every command renders to a `Vec<OsString>` of arguments *after* the program name
//! (no shell, no quoting: each value is one argv element). Values are validated on
//! render; property strings (`--netN`, `--mpN`, `--features`, `--rootfs`) are built
//! from typed parts and refuse characters that would change their meaning (`,` `=`).

mod clone;
mod command;
mod mounts;
mod net;
mod options;
mod values;

#[cfg(test)]
mod tests;

use std::ffi::OsString;

pub use clone::CloneArgs;
pub use command::{PctCommand, PveshCommand};
pub use mounts::{Features, MountPoint};
pub use net::{IpConfig, NetSpec};
pub use options::{CreateArgs, CtOptions};
pub use values::{Arch, Cmode, Hostname, OsType, Rootfs, Tag};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdError {
    #[error("invalid value for {param}: {msg}")]
    Invalid { param: String, msg: String },
}

fn invalid(param: impl Into<String>, msg: impl Into<String>) -> CmdError {
    CmdError::Invalid {
        param: param.into(),
        msg: msg.into(),
    }
}

fn b(v: bool) -> &'static str {
    if v {
        "1"
    } else {
        "0"
    }
}

/// No NUL (argv cannot carry it).
fn plain(param: &str, v: &str) -> Result<(), CmdError> {
    if v.contains('\0') {
        return Err(invalid(param, "contains a NUL byte"));
    }
    Ok(())
}

/// A value inside a property string (`k=v,k=v`): no `,`, no `=`, no control chars, not empty.
fn prop_value(param: &str, v: &str) -> Result<(), CmdError> {
    if v.is_empty() {
        return Err(invalid(param, "empty value"));
    }
    if v.chars().any(|c| c == ',' || c == '=' || c.is_control()) {
        return Err(invalid(
            param,
            format!("{v:?} contains ',', '=' or a control character"),
        ));
    }
    Ok(())
}

/// A key inside a property string: `[A-Za-z0-9_-]+`.
fn prop_key(param: &str, k: &str) -> Result<(), CmdError> {
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(param, format!("bad property key {k:?}")));
    }
    Ok(())
}

/// Appends `--k v` (two argv elements).
fn push(argv: &mut Vec<OsString>, k: &str, v: impl Into<OsString>) {
    argv.push(OsString::from(format!("--{k}")));
    argv.push(v.into());
}
