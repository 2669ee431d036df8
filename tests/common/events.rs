//! `ctr events` in the background: subscribe (probed, bounded), then read the events of the env's
//! namespace in order, wait for one, or assert an order.

use super::{poll_until, wait_until, BgProcess, TestEnv};
use std::time::Duration;

impl TestEnv {
    /// Start `ctr events` in the background and wait until it is subscribed.
    pub fn events(&self) -> EventWatcher {
        let proc = self.ctr_spawn(&["events"]);
        let w = EventWatcher {
            proc,
            ns: self.ns.clone(),
        };
        // Probe: namespace label updates publish /namespaces/update in our namespace.
        let mut n = 0u32;
        wait_until("ctr events to subscribe", Duration::from_secs(20), || {
            n += 1;
            let label = format!("pvelxc.test.probe={n}");
            self.ctr(&["namespaces", "label", &self.ns, &label]);
            poll_until(Duration::from_millis(300), || {
                w.proc
                    .stdout_now()
                    .contains("/namespaces/update")
                    .then_some(())
            })
        });
        w
    }
}

/// `ctr events` running in the background.
pub struct EventWatcher {
    proc: BgProcess,
    ns: String,
}

/// One event line: topic and JSON payload.
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: String,
    pub payload: String,
}

impl EventWatcher {
    /// Events of our namespace seen so far, in order.
    pub fn events(&self) -> Vec<Event> {
        // "2026-11-26 00:22:34.29 +0000 UTC <ns> <topic> <json>"
        self.proc
            .stdout_now()
            .lines()
            .filter_map(|l| {
                let toks: Vec<&str> = l.splitn(7, ' ').collect();
                let utc = toks.iter().position(|t| *t == "UTC")?;
                let ns = toks.get(utc + 1)?;
                let topic = toks.get(utc + 2)?;
                if *ns != self.ns {
                    return None;
                }
                let payload = l
                    .split_once(&format!(" {topic} "))
                    .map(|(_, p)| p.to_string())
                    .unwrap_or_default();
                Some(Event {
                    topic: topic.to_string(),
                    payload,
                })
            })
            .collect()
    }

    pub fn topics(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.topic).collect()
    }

    /// Wait (bounded) until an event with `topic` whose payload contains `payload_has` shows up.
    pub fn wait_for(&self, topic: &str, payload_has: &str, timeout: Duration) -> Event {
        poll_until(timeout, || {
            self.events()
                .into_iter()
                .find(|e| e.topic == topic && e.payload.contains(payload_has))
        })
        .unwrap_or_else(|| {
            panic!(
                "no event {topic} (payload containing {payload_has:?}) within {timeout:?}; seen: {:#?}",
                self.topics()
            )
        })
    }

    /// Assert that `expected` topics appear in this order (as a subsequence) among events whose
    /// payload contains `payload_has`, waiting (bounded) for the last ones to arrive.
    pub fn assert_order(&self, expected: &[&str], payload_has: &str, timeout: Duration) {
        let check = || {
            let evs: Vec<Event> = self
                .events()
                .into_iter()
                .filter(|e| e.payload.contains(payload_has))
                .collect();
            let mut i = 0;
            for e in &evs {
                if i < expected.len() && e.topic == expected[i] {
                    i += 1;
                }
            }
            (i == expected.len()).then_some(())
        };
        if poll_until(timeout, check).is_none() {
            let seen: Vec<String> = self
                .events()
                .into_iter()
                .filter(|e| e.payload.contains(payload_has))
                .map(|e| e.topic)
                .collect();
            panic!("events not in the expected order\nexpected (subsequence): {expected:?}\nseen: {seen:#?}");
        }
    }
}
