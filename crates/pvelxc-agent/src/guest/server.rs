//! The protocol loop on the control port.

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvelxc_agent::proto::{read_frame, FrameError, Msg, PROTOCOL_VERSION};

use super::log;
use super::procs::{send, Table, Writer};
use super::sysinfo;

/// Consecutive end-of-file reads (100 ms apart) after which the host is taken to be gone.
const HOST_GONE_EOFS: u32 = 50;

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Serves until told to shut down or the host disappears; the caller powers off.
pub fn serve(port: File) {
    let writer: Writer = match port.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            log!("dup control port: {e}");
            return;
        }
    };
    let table = Table::new(writer.clone());
    let reaper = table.clone();
    std::thread::spawn(move || reaper.reap_forever());
    send(
        &writer,
        &Msg::Ready {
            version: PROTOCOL_VERSION,
            kernel: kernel_release(),
        },
    );
    let mut reader = port;
    let mut eofs = 0;
    let mut ran = false;
    loop {
        match read_frame(&mut reader) {
            Ok(Some(msg)) => {
                eofs = 0;
                if !handle(msg, &table, &writer, &mut ran) {
                    return;
                }
            }
            Ok(None) | Err(FrameError::Io(_)) => {
                eofs += 1;
                if eofs >= HOST_GONE_EOFS {
                    log!("host disconnected");
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e @ FrameError::TooLarge(_)) => {
                log!("{e}: stream out of sync");
                return;
            }
            Err(e) => log!("{e}"),
        }
    }
}

/// Handles one host message; false means shut down.
fn handle(msg: Msg, table: &Arc<Table>, w: &Writer, ran: &mut bool) -> bool {
    let reply = |r: Result<(), String>, req: u32| match r {
        Ok(()) => Msg::Ok { req },
        Err(message) => Msg::Error { req, message },
    };
    let out = match msg {
        Msg::Ping { req } => Msg::Pong { req },
        Msg::Run { req, .. } if *ran => Msg::Error {
            req,
            message: "the container process was already started".into(),
        },
        Msg::Run { req, id, process } => {
            let r = table.start(&id, &process);
            *ran |= r.is_ok();
            started(req, id, r)
        }
        Msg::Exec { req, id, process } => {
            let r = table.start(&id, &process);
            started(req, id, r)
        }
        Msg::Stdin { id, data } => {
            table.stdin(&id, data);
            return true;
        }
        Msg::CloseStdin { req, id } => reply(table.close_stdin(&id), req),
        Msg::Signal { req, id, signo } => reply(table.signal(&id, signo), req),
        Msg::Resize {
            req,
            id,
            rows,
            cols,
        } => reply(table.resize(&id, rows, cols), req),
        Msg::Pids { req } => Msg::PidsReply {
            req,
            procs: sysinfo::pids(&table.ids_by_pid()),
        },
        Msg::Stats { req } => {
            let n = sysinfo::pids(&Default::default()).len();
            Msg::StatsReply {
                req,
                stats: sysinfo::stats(u32::try_from(n).unwrap_or(u32::MAX)),
            }
        }
        Msg::Shutdown { req } => {
            send(w, &Msg::Ok { req });
            return false;
        }
        other => Msg::Error {
            req: other.req().unwrap_or(0),
            message: "not a host request".into(),
        },
    };
    send(w, &out);
    true
}

fn started(req: u32, id: String, r: Result<u32, String>) -> Msg {
    match r {
        Ok(pid) => Msg::Started { req, id, pid },
        Err(message) => Msg::Error { req, message },
    }
}
