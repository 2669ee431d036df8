//! One ordered stream of events to containerd: every event goes through a single forwarder.

use containerd_shim::event::Event;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Box<dyn Event + Send + Sync>>,
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: String) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Box<dyn Event + Send + Sync>>();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let topic = ev.topic();
                if let Err(e) = publisher
                    .publish(Context::default(), &topic, &namespace, ev)
                    .await
                {
                    log::warn!("publish {topic}: {e}");
                }
            }
        });
        Events { tx }
    }

    /// A sink that drops everything (for tests and for the `delete` action).
    pub fn discard() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Box<dyn Event + Send + Sync>>();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Events { tx }
    }

    pub fn send(&self, ev: impl Event + Send + Sync + 'static) {
        if self.tx.send(Box::new(ev)).is_err() {
            log::warn!("event forwarder is gone");
        }
    }
}
