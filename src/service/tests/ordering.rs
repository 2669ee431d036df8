//! The event-ordering rules of the README, over generated interleavings:
//! - TaskCreate comes first and TaskDelete last, once each;
//! - a process's exit follows its own start (TaskStart / TaskExecStarted), and an exec's
//!   TaskExecAdded precedes its start; nobody exits twice;
//! - the init's exit follows the exits of every exec started in the container;
//! - no pause or resume is reported after the init's exit, and they alternate.

use std::collections::HashMap;

use proptest::prelude::*;

use super::{bounded, rt, Harness};
use crate::service::model::TaskEvent;

#[derive(Debug, Clone)]
enum Op {
    StartInit,
    AddExec(u8),
    StartExec(u8),
    KillExec(u8),
    KillInit,
    Pause,
    Resume,
    Yield(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::StartInit),
        (0u8..4).prop_map(Op::AddExec),
        (0u8..4).prop_map(Op::StartExec),
        (0u8..4).prop_map(Op::KillExec),
        Just(Op::KillInit),
        Just(Op::Pause),
        Just(Op::Resume),
        (0u8..5).prop_map(Op::Yield),
    ]
}

/// Apply the ops (errors are allowed: the service refuses what the state forbids), then end
/// the container the way containerd does: kill, wait, delete the execs, delete.
async fn scenario(h: &Harness, ops: &[Op]) {
    h.create("c").await;
    for o in ops {
        let s = &h.svc;
        let _ = match o {
            Op::StartInit => s.start("c", "").await.map(|_| ()),
            Op::AddExec(i) => s.exec(h.exec_req("c", &format!("e{i}"))),
            Op::StartExec(i) => s.start("c", &format!("e{i}")).await.map(|_| ()),
            Op::KillExec(i) => s.kill("c", &format!("e{i}"), 9, false).await,
            Op::KillInit => s.kill("c", "", 9, false).await,
            Op::Pause => s.pause("c").await,
            Op::Resume => s.resume("c").await,
            Op::Yield(n) => {
                for _ in 0..*n {
                    tokio::task::yield_now().await;
                }
                Ok(())
            }
        };
    }
    let _ = h.svc.resume("c").await;
    let _ = h.svc.kill("c", "", 9, false).await;
    bounded(h.svc.wait("c", "")).await.expect("wait init");
    for i in 0..4 {
        let id = format!("e{i}");
        let Ok(st) = h.svc.state("c", &id) else {
            continue;
        };
        if st.state.status != crate::service::state::Status::Created {
            bounded(h.svc.wait("c", &id)).await.expect("wait exec");
        }
        h.svc.delete("c", &id).await.expect("delete exec");
    }
    h.svc.delete("c", "").await.expect("delete");
}

/// Checks the rules; Err names the first one broken.
fn check(evs: &[TaskEvent]) -> Result<(), String> {
    let pos = |f: &dyn Fn(&TaskEvent) -> bool| -> Vec<usize> {
        evs.iter()
            .enumerate()
            .filter(|(_, e)| f(e))
            .map(|(i, _)| i)
            .collect()
    };
    if !matches!(evs.first(), Some(TaskEvent::Create { .. })) {
        return Err("first event is not create".into());
    }
    let deletes = pos(&|e| matches!(e, TaskEvent::Delete { .. }));
    if deletes != [evs.len() - 1] {
        return Err(format!("delete at {deletes:?}, want only last"));
    }
    let init_exit = pos(&|e| matches!(e, TaskEvent::Exit { exec_id, .. } if exec_id.is_empty()));
    let [init_exit] = init_exit[..] else {
        return Err(format!("init exits at {init_exit:?}, want one"));
    };
    let starts = pos(&|e| matches!(e, TaskEvent::Start { .. }));
    if starts.len() > 1 || starts.iter().any(|s| *s > init_exit) {
        return Err(format!("starts {starts:?}, init exit {init_exit}"));
    }
    let mut per_exec: HashMap<&str, [Vec<usize>; 3]> = HashMap::new();
    for (i, e) in evs.iter().enumerate() {
        let (id, k) = match e {
            TaskEvent::ExecAdded { exec_id, .. } => (exec_id, 0),
            TaskEvent::ExecStarted { exec_id, .. } => (exec_id, 1),
            TaskEvent::Exit { exec_id, .. } if !exec_id.is_empty() => (exec_id, 2),
            _ => continue,
        };
        per_exec.entry(id.as_str()).or_default()[k].push(i);
    }
    for (id, [added, started, exited]) in &per_exec {
        if added.len() > 1 || started.len() > 1 || exited.len() > 1 {
            return Err(format!(
                "{id}: added {added:?} started {started:?} exited {exited:?}"
            ));
        }
        if started.len() != exited.len() {
            return Err(format!("{id}: started {started:?} but exited {exited:?}"));
        }
        if let (Some(s), Some(a)) = (started.first(), added.first()) {
            if s < a {
                return Err(format!("{id}: started at {s} before added at {a}"));
            }
        }
        if let (Some(x), Some(s)) = (exited.first(), started.first()) {
            if x < s {
                return Err(format!("{id}: exit at {x} before its start at {s}"));
            }
            if *x > init_exit {
                return Err(format!("{id}: exit at {x} after the init's at {init_exit}"));
            }
        }
    }
    let mut paused = false;
    for (i, e) in evs.iter().enumerate() {
        match e {
            TaskEvent::Paused { .. } | TaskEvent::Resumed { .. } if i > init_exit => {
                return Err(format!("pause/resume at {i} after the init's exit"));
            }
            TaskEvent::Paused { .. } if paused => return Err(format!("paused twice at {i}")),
            TaskEvent::Resumed { .. } if !paused => return Err(format!("resumed at {i}")),
            TaskEvent::Paused { .. } => paused = true,
            TaskEvent::Resumed { .. } => paused = false,
            _ => {}
        }
    }
    Ok(())
}

/// One generated case on `rt`: the scenario, then the rules; Err names the broken rule with
/// the ops and the events.
fn run_case(rt: tokio::runtime::Runtime, delay: u32, ops: &[Op]) -> Result<(), String> {
    let evs = rt.block_on(async {
        let h = Harness::new(delay);
        scenario(&h, ops).await;
        h.events.events()
    });
    check(&evs).map_err(|why| {
        let names: Vec<_> = evs.iter().map(super::name).collect();
        format!("{why}\nops {ops:?}\nevents {names:?}")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// One thread (as the shim runs), interleavings chosen by the generated yields and exit
    /// delays: a failure replays exactly.
    #[test]
    fn events_keep_their_order(delay in 0u32..6, ops in prop::collection::vec(op(), 0..16)) {
        if let Err(e) = run_case(rt(), delay, &ops) {
            prop_assert!(false, "{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    /// Worker threads: exits race the calls for real, so the rules do not depend on the
    /// shim's single-threaded runtime.
    #[test]
    fn events_keep_their_order_on_threads(delay in 0u32..6, ops in prop::collection::vec(op(), 0..16)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        if let Err(e) = run_case(rt, delay, &ops) {
            prop_assert!(false, "{e}");
        }
    }
}

#[test]
fn the_checker_catches_each_broken_rule() {
    let c = |id: &str| TaskEvent::Create {
        id: id.into(),
        bundle: "/b".into(),
        rootfs: Vec::new(),
        stdio: Default::default(),
        pid: 1,
    };
    let exit = |x: &str| TaskEvent::Exit {
        id: "c".into(),
        exec_id: x.into(),
        pid: 1,
        exit: crate::sys::reaper::Exit::new(0),
    };
    let del = TaskEvent::Delete {
        id: "c".into(),
        pid: 1,
        exit: None,
    };
    let start = TaskEvent::Start {
        id: "c".into(),
        pid: 1,
    };
    let added = TaskEvent::ExecAdded {
        id: "c".into(),
        exec_id: "e0".into(),
    };
    let est = TaskEvent::ExecStarted {
        id: "c".into(),
        exec_id: "e0".into(),
        pid: 2,
    };
    let good = vec![
        c("c"),
        start.clone(),
        added.clone(),
        est.clone(),
        exit("e0"),
        exit(""),
        del.clone(),
    ];
    check(&good).expect("good");
    let bad: Vec<Vec<TaskEvent>> = vec![
        vec![start.clone(), c("c"), exit(""), del.clone()],
        vec![c("c"), exit(""), start.clone(), del.clone()],
        vec![
            c("c"),
            start.clone(),
            added.clone(),
            est.clone(),
            exit(""),
            exit("e0"),
            del.clone(),
        ],
        vec![
            c("c"),
            start.clone(),
            added.clone(),
            exit("e0"),
            est.clone(),
            exit(""),
            del.clone(),
        ],
        vec![
            c("c"),
            start.clone(),
            est.clone(),
            added.clone(),
            exit("e0"),
            exit(""),
            del.clone(),
        ],
        vec![
            c("c"),
            start.clone(),
            added.clone(),
            est.clone(),
            exit(""),
            del.clone(),
        ],
        vec![c("c"), start.clone(), exit(""), exit(""), del.clone()],
        vec![c("c"), start.clone(), exit(""), del.clone(), del.clone()],
        vec![
            c("c"),
            start.clone(),
            exit(""),
            TaskEvent::Paused { id: "c".into() },
            del.clone(),
        ],
        vec![
            c("c"),
            start,
            TaskEvent::Resumed { id: "c".into() },
            exit(""),
            del,
        ],
    ];
    for (i, b) in bad.iter().enumerate() {
        assert!(check(b).is_err(), "case {i} passed the checker");
    }
}
