//! One ordered stream of events to containerd.
//!
//! Every event goes through a single forwarder task, so containerd sees them in the order the
//! service emitted them. Events are encoded with their generated code and a static type URL
//! (`containerd.events.<Name>`), without protobuf reflection: that keeps descriptor tables out
//! of an idle shim's memory. A failed forward reconnects and retries with backoff, so events
//! emitted while containerd restarts still arrive once it is back.

use std::time::Duration;

use containerd_shim::event::Event;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Client, EventsClient};
use containerd_shim_protos::ttrpc::context::Context;
use tokio::sync::mpsc;

/// How many times one event is tried before it is dropped (with a log line).
const ATTEMPTS: u32 = 8;

/// The task events this shim emits.
pub trait TaskEvent: Event + Message {}

macro_rules! task_events {
    ($($t:ty),*) => { $(impl TaskEvent for $t {})* };
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

    pub fn send<E: TaskEvent>(&self, ev: E) {
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
        env.timestamp = super::convert::timestamp(Some(ev.at));
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
