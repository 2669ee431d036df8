//! Proptest scaffolding shared by the protocol fuzz tests of pvelxc-init and pvelxc-agent
//! (feature `testutil`, enabled from their `[dev-dependencies]` only).
//!
//! * [`Counting`]: a global allocator that records the largest single allocation made
//!   while [`armed`] runs a decoder, so "a huge declared length allocates nothing" is
//!   checked, not assumed. A test binary installs it with
//!   `#[global_allocator] static A: Counting = Counting;`.
//! * [`fuzz`]: a bounded proptest run that prints `fuzz: <name>: <N> cases` to fd 2;
//!   `FUZZ_CASES=<n>` overrides the number of cases.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Counting allocator (see the module doc).
pub struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}
static LARGEST_EVER: AtomicUsize = AtomicUsize::new(0);

fn record(size: usize) {
    if ARMED.with(Cell::get) {
        LARGEST.with(|l| l.set(l.get().max(size)));
        LARGEST_EVER.fetch_max(size, Ordering::Relaxed);
    }
}

/// Run `f` (a decoder call); returns its result and its largest single allocation.
pub fn armed<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, LARGEST.with(Cell::get))
}

/// The largest single allocation of every [`armed`] call so far, on any thread.
pub fn largest_ever() -> usize {
    LARGEST_EVER.load(Ordering::Relaxed)
}

// SAFETY: forwards to the system allocator; only records sizes in thread-locals that
// need no allocation (const-initialised Cells) and an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        record(l.size());
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        record(new);
        System.realloc(p, l, new)
    }
}

/// `FUZZ_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run `test` on [`cases`]`(n)` inputs from `strat`; print the number run; panic with the
/// minimal failing case.
pub fn fuzz<S: Strategy>(
    name: &str,
    n: u32,
    strat: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let count = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(n),
        failure_persistence: None,
        ..Config::default()
    });
    let r = runner.run(&strat, |v| {
        count.fetch_add(1, Ordering::Relaxed);
        test(v)
    });
    // Straight to fd 2: libtest captures eprintln!, and CI logs should show the figures.
    let _ = writeln!(
        std::io::stderr(),
        "fuzz: {name}: {} cases",
        count.load(Ordering::Relaxed)
    );
    if let Err(e) = r {
        panic!("{name}: {e}");
    }
}
