//! One configuration as Envoy loaded it ([`Compiled`], shared by every thread) and its copy in
//! each worker thread ([`Worker`]: the same `Root` the wasm build runs in each worker's VM).
//!
//! The filter's state (`Rc`, `Cell`) is per thread by design, as it is per VM in the wasm build:
//! a worker compiles the configuration the main thread accepted on its first stream and keeps it
//! for that configuration's lifetime. What the wasm build shares through the host (shared data,
//! metric totals) is process memory here (`process.rs`).
//!
//! Ticks: the ABI has no timer for a worker (its schedulers post to a stream, or to the main
//! thread), so the brake is judged on the main thread (`judge.rs`) and a worker follows: before
//! each decision it learns a trip recorded since its last look (one atomic load tells it whether
//! anything was written), and at a request's start or end, once a tick period has passed, it
//! publishes its draining flows. A worker without requests publishes nothing: its share of
//! `canary_flows_draining` keeps its last value until its next request.

use crate::host::{Catalogue, Native, State, Tick};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Weak};
use sticky_canary::filter::{Host, Root};

/// A configuration Envoy accepted: its document and the metrics the main thread defined.
pub struct Compiled {
    /// Envoy's `DynamicModuleHttpFilterConfig` (an address: the pointer is Envoy's).
    pub config: usize,
    pub json: Arc<[u8]>,
    pub catalogue: Catalogue,
}

// Envoy hands the configuration to every worker thread: it must be shareable (checked here, as
// the raw pointer Envoy carries is not).
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Compiled>()
};

/// One worker thread's copy of a configuration.
pub struct Worker {
    pub host: Native,
    pub root: Root<Native>,
    /// The shared-data writes this worker has learned from (`process::writes`).
    seen: Cell<u64>,
}

impl Worker {
    /// Learns what the judge recorded since the last look (a trip), if anything was written.
    pub fn learn_if_written(&self) {
        let writes = crate::process::writes();
        if writes != self.seen.get() {
            self.seen.set(writes);
            self.root.on_follower_tick();
        }
    }

    /// Runs the follower's tick when it is due.
    pub fn tick_if_due(&self) {
        let tick = &self.host.0.tick;
        let period = tick.period_ms.get();
        if period == 0 {
            return;
        }
        let now = self.host.now_ms();
        if now < tick.next_ms.get() {
            return;
        }
        tick.next_ms.set(now.saturating_add(u64::from(period)));
        self.seen.set(crate::process::writes());
        self.root.on_follower_tick();
    }
}

thread_local! {
    /// This thread's workers, one per live configuration (a listener update makes a new one;
    /// the old is dropped here once Envoy destroyed it and this thread starts a stream).
    static WORKERS: RefCell<Vec<(Weak<Compiled>, Rc<Worker>)>> = const { RefCell::new(Vec::new()) };
}

/// This thread's worker for `compiled`, compiled on first use; `None` when the configuration
/// does not compile here (it did on the main thread: nothing but a missing environment
/// variable between the two could change that).
pub fn worker(compiled: &Arc<Compiled>) -> Option<Rc<Worker>> {
    WORKERS.with(|w| {
        let mut workers = w.try_borrow_mut().ok()?;
        if let Some((_, found)) = workers
            .iter()
            .find(|(c, _)| std::ptr::eq(c.as_ptr(), Arc::as_ptr(compiled)))
        {
            return Some(found.clone());
        }
        // Workers of configurations Envoy destroyed retire now, as a wasm plugin instance does
        // when Envoy is done with it (their draining flows leave the gauge), through the live
        // configuration's metrics (the destroyed one's pointer is gone).
        let live = compiled.config as crate::abi::ConfigEnvoyPtr;
        let (gone, kept): (Vec<_>, Vec<_>) =
            workers.drain(..).partition(|(c, _)| c.strong_count() == 0);
        *workers = kept;
        for (_, w) in gone {
            w.host.rebind(live, &compiled.catalogue);
            w.root.on_done();
        }
        let host = Native(Rc::new(State {
            config: Cell::new(live),
            json: compiled.json.clone(),
            catalogue: RefCell::new(compiled.catalogue.clone()),
            main: false,
            tick: Tick::default(),
            answer: RefCell::new(None),
        }));
        let mut root = Root::new(host.clone());
        if !root.on_configure() {
            host.log(
                sticky_canary::filter::Level::Error,
                "sticky-canary: a worker could not compile the configuration the main thread accepted; its requests pass through",
            );
            return None;
        }
        let worker = Rc::new(Worker {
            host,
            root,
            seen: Cell::new(crate::process::writes()),
        });
        workers.push((Arc::downgrade(compiled), worker.clone()));
        Some(worker)
    })
}
