//! Invocation log: every pct/pvesh call appends its argv as one JSON line to `$ROOT/calls.log`.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::paths::Root;

/// One JSON line: `{"argv":["pct","start","100"],"pid":123,"time":1700000000.123}`.
pub fn format_line(argv: &[String], pid: u32, time: f64) -> String {
    let v = serde_json::json!({ "argv": argv, "pid": pid, "time": time });
    format!("{v}\n")
}

/// Append this invocation (single write with O_APPEND, so concurrent callers don't interleave).
pub fn record(root: &Root, tool: &str, args: &[String]) {
    let mut argv = vec![tool.to_string()];
    argv.extend(args.iter().cloned());
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let line = format_line(&argv, std::process::id(), (time * 1000.0).round() / 1000.0);
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.calls_log())
    {
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn line() {
        let l = super::format_line(&["pct".into(), "exec".into(), "a\"b".into()], 7, 1.5);
        assert_eq!(
            l,
            "{\"argv\":[\"pct\",\"exec\",\"a\\\"b\"],\"pid\":7,\"time\":1.5}\n"
        );
    }
}
