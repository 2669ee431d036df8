//! The end of the CT: the exit record (written to `rw/exit` and sent to the shim), then exit.

use pvelxc_init::proto::{ExitRecord, Msg};
use std::io::Write;

use super::{Init, RW_DIR};
use crate::{log, now_ns};

impl Init {
    fn write_exit_file(&self, rec: &ExitRecord) {
        // rw/ is the only directory of D the CT can write (PROTOCOL.md).
        let rw = self.dir.join(RW_DIR);
        let tmp = rw.join(".exit.tmp");
        let res = rec.to_json().map_err(std::io::Error::from).and_then(|b| {
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(&b)?;
            f.sync_all()?;
            std::fs::rename(&tmp, rw.join("exit"))
        });
        if let Err(e) = res {
            log(&format!("write exit file: {e}"));
        }
    }

    /// Write the exit file, tell the shim, exit (ending the CT).
    pub(super) fn finish(&mut self, rec: ExitRecord) -> ! {
        self.write_exit_file(&rec);
        if let Some(e) = &rec.error {
            self.send(&Msg::Error { msg: e.clone() }, &[]);
        }
        self.send(
            &Msg::Exited {
                pid: rec.pid,
                exit_code: rec.exit_code,
                signal: rec.signal,
                time_ns: rec.time_ns,
            },
            &[],
        );
        std::process::exit(rec.exit_code & 0xff)
    }

    pub(super) fn fail(&mut self, msg: &str) -> ! {
        log(msg);
        self.finish(ExitRecord {
            pid: 0,
            exit_code: 255,
            signal: None,
            time_ns: now_ns(),
            error: Some(msg.to_string()),
        })
    }

    pub(super) fn killed_before_start(&mut self, sig: libc::c_int) -> ! {
        self.finish(ExitRecord {
            pid: 0,
            exit_code: 128 + sig,
            signal: Some(sig),
            time_ns: now_ns(),
            error: None,
        })
    }
}
