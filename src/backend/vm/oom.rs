//! Guest OOM kills, read from the serial console log (the guest kernel prints
//! `Out of memory: Killed process N (comm) ...` at KERN_ERR, which `quiet` still shows).

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

const POLL: Duration = Duration::from_millis(500);

pub struct OomWatch {
    console: PathBuf,
    /// Bytes of the log already read, and an unfinished last line.
    pos: Mutex<(u64, String)>,
    tx: mpsc::UnboundedSender<()>,
}

/// True for the kernel's OOM-kill line.
fn is_oom_kill(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("out of memory") && l.contains("killed process")
}

impl OomWatch {
    /// Start polling `console`; the receiver gets one message per OOM kill.
    pub fn start(console: PathBuf) -> (Arc<OomWatch>, mpsc::UnboundedReceiver<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let w = Arc::new(OomWatch {
            console,
            pos: Mutex::new((0, String::new())),
            tx,
        });
        let w2 = w.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                if w2.tx.is_closed() || !w2.scan() {
                    break;
                }
            }
        });
        (w, rx)
    }

    /// Read what the console log gained since the last call and report OOM kills in it.
    /// Returns false once the log is gone (the VM was shut down).
    pub fn scan(&self) -> bool {
        let mut f = match std::fs::File::open(&self.console) {
            Ok(f) => f,
            Err(_) => return false,
        };
        let mut pos = self.pos.lock().unwrap_or_else(|p| p.into_inner());
        if f.seek(SeekFrom::Start(pos.0)).is_err() {
            return true;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return true;
        }
        pos.0 += buf.len() as u64;
        let mut text = std::mem::take(&mut pos.1);
        text.push_str(&String::from_utf8_lossy(&buf));
        let (done, rest) = match text.rfind('\n') {
            Some(i) => text.split_at(i + 1),
            None => ("", text.as_str()),
        };
        for line in done.lines().filter(|l| is_oom_kill(l)) {
            log::warn!("guest OOM: {}", line.trim());
            let _ = self.tx.send(());
        }
        pos.1 = rest
            .chars()
            .rev()
            .take(4096)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_kills_across_partial_lines() {
        let dir = std::env::temp_dir().join(format!("pvelxc-oom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("console.log");
        std::fs::write(&log, "boot\n[ 3.1] Out of memory: Killed pro").expect("write");
        let (w, mut rx) = OomWatch::start(log.clone());
        assert!(w.scan());
        assert!(rx.try_recv().is_err());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        std::io::Write::write_all(&mut f, b"cess 7 (tail) total-vm:1kB\nok\n").expect("append");
        assert!(w.scan());
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
        std::fs::remove_dir_all(&dir).expect("rm");
        assert!(!w.scan());
    }
}
