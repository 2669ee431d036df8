//! The event edge: the service's [`TaskEvent`]s as containerd's messages, in one ordered stream.
//!
//! Every event goes through a single forwarder task, so containerd sees them in the order the
//! service emitted them. Events are encoded with their generated code and a static type URL
//! (`containerd.events.<Name>`), without protobuf reflection: that keeps descriptor tables out
//! of an idle shim's memory. A failed forward reconnects and retries with backoff, so events
//! emitted while containerd restarts still arrive once it is back.

use std::time::Duration;

use containerd_shim::event::Event;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Client, EventsClient};
use containerd_shim_protos::ttrpc::context::Context;
use tokio::sync::mpsc;

use super::convert::timestamp;
use super::model::{EventSink, TaskEvent};

/// How many times one event is tried before it is dropped (with a log line).
const ATTEMPTS: u32 = 8;

/// containerd's task event messages.
trait ProtoEvent: Event + Message {}

macro_rules! task_events {
    ($($t:ty),*) => { $(impl ProtoEvent for $t {})* };
}
task_events!(
    TaskCreate,
    TaskStart,
    TaskDelete,
    TaskExit,
    TaskExecAdded,
    TaskExecStarted,
    TaskPaused,
    TaskResumed,
    TaskOOM
);

struct Encoded {
    topic: String,
    event: Any,
    at: std::time::SystemTime,
}

#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Encoded>,
}

impl Events {
    /// Forward to containerd's ttrpc address (TTRPC_ADDRESS).
    pub fn new(address: String, namespace: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Encoded>();
        tokio::spawn(forward_all(address, namespace, rx));
        Events { tx }
    }

    fn send<E: ProtoEvent>(&self, ev: E) {
        let value = match ev.write_to_bytes() {
            Ok(v) => v,
            Err(e) => {
                log::error!("encode {}: {e}", ev.topic());
                return;
            }
        };
        let mut any = Any::new();
        any.type_url = format!("containerd.events.{}", E::NAME);
        any.value = value;
        let enc = Encoded {
            topic: ev.topic(),
            event: any,
            at: std::time::SystemTime::now(),
        };
        if self.tx.send(enc).is_err() {
            log::warn!("event forwarder is gone");
        }
    }
}

impl EventSink for Events {
    fn publish(&self, ev: TaskEvent) {
        match ev {
            TaskEvent::Create {
                id,
                bundle,
                rootfs,
                stdio,
                pid,
            } => {
                let mut e = TaskCreate::new();
                e.container_id = id;
                e.bundle = bundle.display().to_string();
                e.rootfs = rootfs
                    .into_iter()
                    .map(|m| {
                        let mut a = api::Mount::new();
                        a.type_ = m.kind;
                        a.source = m.source;
                        a.options = m.options;
                        a
                    })
                    .collect();
                let mut tio = TaskIO::new();
                tio.stdin = stdio.stdin;
                tio.stdout = stdio.stdout;
                tio.stderr = stdio.stderr;
                tio.terminal = stdio.terminal;
                e.io = MessageField::some(tio);
                e.pid = pid;
                self.send(e)
            }
            TaskEvent::Start { id, pid } => {
                let mut e = TaskStart::new();
                e.container_id = id;
                e.pid = pid;
                self.send(e)
            }
            TaskEvent::ExecAdded { id, exec_id } => {
                let mut e = TaskExecAdded::new();
                e.container_id = id;
                e.exec_id = exec_id;
                self.send(e)
            }
            TaskEvent::ExecStarted { id, exec_id, pid } => {
                let mut e = TaskExecStarted::new();
                e.container_id = id;
                e.exec_id = exec_id;
                e.pid = pid;
                self.send(e)
            }
            TaskEvent::Exit {
                id,
                exec_id,
                pid,
                exit,
            } => {
                let mut e = TaskExit::new();
                // containerd's `id` is the container id for the init, else the exec id.
                e.id = if exec_id.is_empty() {
                    id.clone()
                } else {
                    exec_id
                };
                e.container_id = id;
                e.pid = pid;
                e.exit_status = exit.code;
                e.exited_at = timestamp(Some(exit.at));
                self.send(e)
            }
            TaskEvent::Paused { id } => {
                let mut e = TaskPaused::new();
                e.container_id = id;
                self.send(e)
            }
            TaskEvent::Resumed { id } => {
                let mut e = TaskResumed::new();
                e.container_id = id;
                self.send(e)
            }
            TaskEvent::Oom { id } => {
                let mut e = TaskOOM::new();
                e.container_id = id;
                self.send(e)
            }
            TaskEvent::Delete { id, pid, exit } => {
                let mut e = TaskDelete::new();
                e.container_id = id.clone();
                e.id = id;
                e.pid = pid;
                e.exit_status = exit.map(|x| x.code).unwrap_or(0);
                e.exited_at = timestamp(exit.map(|x| x.at));
                self.send(e)
            }
        }
    }
}

async fn connect(address: &str) -> Option<EventsClient> {
    let addr = if address.contains("://") {
        address.to_string()
    } else {
        format!("unix://{address}")
    };
    match Client::connect(&addr).await {
        Ok(c) => Some(EventsClient::new(c)),
        Err(e) => {
            log::warn!("connect to containerd at {addr}: {e}");
            None
        }
    }
}

async fn forward_all(address: String, namespace: String, mut rx: mpsc::UnboundedReceiver<Encoded>) {
    let mut client: Option<EventsClient> = None;
    while let Some(ev) = rx.recv().await {
        let mut req = ForwardRequest::new();
        let mut env = Envelope::new();
        env.timestamp = timestamp(Some(ev.at));
        env.namespace = namespace.clone();
        env.topic = ev.topic.clone();
        env.event = MessageField::some(ev.event);
        req.envelope = MessageField::some(env);
        let mut delay = Duration::from_millis(100);
        let mut sent = false;
        for _ in 0..ATTEMPTS {
            if client.is_none() {
                client = connect(&address).await;
            }
            if let Some(c) = &client {
                match c.forward(Context::default(), &req).await {
                    Ok(_) => {
                        sent = true;
                        break;
                    }
                    Err(e) => {
                        log::warn!("publish {}: {e}", ev.topic);
                        client = None;
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        if !sent {
            log::error!("dropped event {} after {ATTEMPTS} attempts", ev.topic);
        }
    }
}
