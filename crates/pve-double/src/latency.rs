//! Perl-like start-up cost: every pct/pvesh/pveversion call sleeps `PVE_DOUBLE_LATENCY_MS`
//! (or the number in `$PVE_DOUBLE_ROOT/latency`) before doing anything (default 0).

use std::path::Path;
use std::time::Duration;

/// The configured latency; unparsable values count as 0.
pub fn configured(root: Option<&Path>) -> Duration {
    let v = match std::env::var("PVE_DOUBLE_LATENCY_MS") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => root
            .and_then(|r| std::fs::read_to_string(r.join("latency")).ok())
            .unwrap_or_default(),
    };
    Duration::from_millis(v.trim().parse::<u64>().unwrap_or(0).min(60_000))
}

/// Sleep the configured latency.
pub fn pause(root: Option<&Path>) {
    let d = configured(root);
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn from_file() {
        if std::env::var_os("PVE_DOUBLE_LATENCY_MS").is_some() {
            return;
        }
        let d = std::env::temp_dir().join(format!("double-latency-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(super::configured(Some(&d)).is_zero());
        std::fs::write(d.join("latency"), "250\n").unwrap();
        assert_eq!(super::configured(Some(&d)).as_millis(), 250);
        std::fs::write(d.join("latency"), "x").unwrap();
        assert!(super::configured(Some(&d)).is_zero());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
