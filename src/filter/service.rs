//! One service of the plugin instance at run time ([`Service`]): its compiled plan, the host ids
//! of its metrics, the tally that batches them, the brake's and the flows' state, and the
//! counting helpers its streams call.

use super::pool;
use super::{Host, HostError, Level, Map};
use crate::brake::Series;
use crate::counting::business::{Outcome, SkipReason};
use crate::metrics::{Catalogue, Tally};
use crate::plan::Plan;
use crate::routing::decision::Reason;
use crate::routing::flow::Draining;
use std::cell::{Cell, RefCell};

/// The bit of a version in a trip mask (versions are at most 16); `Service::new` also takes
/// a gRPC code's bit in the `grpc` block's error mask with it.
pub(super) fn bit(version: usize) -> u32 {
    1u32.checked_shl(version as u32).unwrap_or(0)
}

/// The filter-state key the served version and reason go to; Envoy prefixes it with `wasm.`,
/// so access logs and tracing custom tags read `%FILTER_STATE(wasm.sticky_canary:PLAIN)%`.
pub const FILTER_STATE_KEY: &str = "sticky_canary";

/// The filter-state value: `<served version> <reason>`, e.g. `canary hash`. Version names are
/// label values (no spaces), reasons fixed words, so the first space splits the two.
pub fn observed_value(version: &str, reason: &str) -> String {
    format!("{version} {reason}")
}

/// One service of the plugin instance: its compiled plan, its metrics, and everything its
/// streams use (the tally, the brake's state, the draining flows).
pub(super) struct Service<H: Host> {
    pub(super) host: H,
    pub(super) plan: Plan,
    /// Every series of the plan as a slot: an index into `ids` and `tally`.
    pub(super) metrics: Catalogue<usize>,
    /// The host's metric id of each slot.
    pub(super) ids: Vec<u32>,
    /// Counter increments not yet handed to the host.
    tally: Tally,
    /// True while the root context flushes `tally` on its ticks; false when
    /// `metrics_flush_ms` is 0 and once the root context is done (a stream that outlives its
    /// root context then increments the host's counters itself).
    pub(super) batching: Cell<bool>,
    /// The filter-state value of each (served version, reason), `[version][Reason::index]`,
    /// built once here so that a response writes it without formatting.
    pub(super) observed: Vec<Vec<String>>,
    /// The brake's state, when the plan has a guard.
    pub(super) guard: Option<GuardState>,
    /// The flows this VM saw draining, with `session.hold.flows`.
    pub(super) flows: Option<FlowState>,
}

/// The flows one VM tracks for `canary_flows_draining` and the trip's log line.
#[derive(Default)]
pub(super) struct FlowState {
    pub(super) draining: RefCell<Draining>,
    /// What this VM has added to each version's `canary_flows_draining` (the gauge is the sum
    /// over the VMs of this Envoy).
    published: RefCell<Vec<u64>>,
}

/// What the brake needs at run time, prepared at configure time.
pub(super) struct GuardState {
    /// The shared-data key of this service's trip record.
    pub(super) key: String,
    /// The trips' generation (salt and `guard.epoch`).
    pub(super) generation: u64,
    /// Host metric ids to sum for each series of `Guard::series`, per version:
    /// `ids[version][series]`.
    pub(super) ids: Vec<Vec<Vec<u32>>>,
    /// Bit `v` set: version `v` is tripped in this Envoy (what this VM knows).
    pub(super) tripped: Cell<u32>,
    /// The pooled brake's state, with `guard.pool`.
    pub(super) pool: Option<pool::PoolState>,
}

impl<H: Host> Service<H> {
    /// Defines every metric of the plan (created at zero) and sets the weight gauges.
    pub(super) fn new(host: H, plan: Plan) -> Result<Service<H>, String> {
        let mut ids = Vec::new();
        let metrics = Catalogue::for_plan(&plan).try_map(|m| {
            let id = host
                .define_metric(m.kind, &m.name)
                .map_err(|e| format!("cannot define {}: {e:?}", m.name))?;
            ids.push(id);
            Ok::<usize, String>(ids.len() - 1)
        })?;
        for (slot, v) in metrics.weight.iter().zip(&plan.versions) {
            let id = ids.get(*slot).copied().unwrap_or_default();
            host.record_metric(id, u64::from(v.weight))
                .map_err(|e| format!("cannot set the weight of {}: {e:?}", v.name))?;
        }
        let observed = plan
            .versions
            .iter()
            .map(|v| {
                Reason::ALL
                    .iter()
                    .map(|r| observed_value(&v.name, r.as_str()))
                    .collect()
            })
            .collect();
        let guard = plan.guard.as_ref().map(|g| {
            // The host ids of the slots each series sums, per version.
            let per_version = (0..plan.versions.len())
                .map(|v| {
                    g.series
                        .iter()
                        .map(|s| {
                            let mut out = Vec::new();
                            let mut add = |slot: Option<&usize>| {
                                out.extend(slot.and_then(|s| ids.get(*s)).copied());
                            };
                            match *s {
                                Series::Errors => add(metrics.response(v, 500)),
                                Series::Responses => {
                                    metrics
                                        .responses
                                        .get(v)
                                        .into_iter()
                                        .flatten()
                                        .for_each(|s| add(Some(s)));
                                }
                                Series::Retried => add(metrics.retried.get(v)),
                                // The error codes' series, or every series of the version.
                                Series::GrpcErrors | Series::GrpcResponses => {
                                    let mask = match (s, &plan.grpc) {
                                        (Series::GrpcErrors, Some(g)) => g.error_mask,
                                        (_, Some(_)) => u32::MAX,
                                        (_, None) => 0,
                                    };
                                    let row = metrics.grpc.get(v).map_or(&[][..], Vec::as_slice);
                                    for (c, slot) in row.iter().enumerate() {
                                        if mask & bit(c) != 0 {
                                            add(Some(slot));
                                        }
                                    }
                                }
                                Series::Business(r) => add(metrics.business(v, r)),
                                Series::Squares(r) => add(metrics.squares(v, r)),
                            }
                            out
                        })
                        .collect()
                })
                .collect();
            let tick = plan.tick_ms();
            GuardState {
                key: format!("{}{}", crate::brake::SHARED_KEY_PREFIX, plan.service),
                generation: g.generation,
                ids: per_version,
                tripped: Cell::new(0),
                pool: g.pool.as_ref().map(|_| {
                    pool::PoolState::new(
                        &plan.service,
                        host.random_id(),
                        host.now_ms(),
                        u64::from(tick),
                    )
                }),
            }
        });
        let flows = plan.flows.as_ref().map(|_| FlowState::default());
        Ok(Service {
            flows,
            guard,
            observed,
            batching: Cell::new(plan.metrics_flush_ms > 0),
            tally: Tally::new(ids.len()),
            host,
            plan,
            metrics,
            ids,
        })
    }

    /// Hands every pending increment to the host.
    pub(super) fn flush(&self) {
        for (slot, n) in self.tally.drain() {
            if let Some(&id) = self.ids.get(slot) {
                self.increment_now(id, n);
            }
        }
    }

    /// Flushes, sends every later increment straight to the host, and gives up the pool's
    /// lease.
    pub(super) fn retire(&self) {
        self.batching.set(false);
        self.flush();
        if let Some(p) = self.guard.as_ref().and_then(|g| g.pool.as_ref()) {
            self.release_pool(p);
        }
        if let Some(f) = &self.flows {
            let versions = self.plan.versions.len();
            self.publish_flows(f, vec![0; versions]);
        }
    }

    /// Hands this VM's count of draining flows per version to `canary_flows_draining` (every
    /// tick): the gauge moves by the change since the last time.
    pub(super) fn publish_draining(&self) {
        if let Some(f) = &self.flows {
            let now_s = self.host.now_ms() / 1000;
            let counts = f
                .draining
                .borrow_mut()
                .count(now_s, self.plan.versions.len());
            self.publish_flows(f, counts);
        }
    }

    fn publish_flows(&self, f: &FlowState, counts: Vec<u64>) {
        let mut published = f.published.borrow_mut();
        published.resize(counts.len(), 0);
        for (v, (now, before)) in counts.iter().zip(published.iter_mut()).enumerate() {
            let delta = *now as i64 - *before as i64;
            let id = self
                .metrics
                .flows_draining
                .get(v)
                .and_then(|s| self.ids.get(*s));
            if let (Some(&id), true) = (id, delta != 0) {
                match self.host.increment_metric(id, delta) {
                    Ok(()) => *before = *now,
                    Err(e) => self.warn(format_args!("cannot update the draining flows: {e:?}")),
                }
            }
        }
    }

    /// The flows draining on `version` in this Envoy (every VM's count at its last tick).
    pub(super) fn draining(&self, version: usize) -> u64 {
        self.metrics
            .flows_draining
            .get(version)
            .and_then(|s| self.ids.get(*s))
            .and_then(|id| self.host.metric(*id).ok())
            .unwrap_or(0)
    }

    /// Takes over the flows a previous plan of the same service tracked (a reconfiguration
    /// keeps the count), by version name.
    pub(super) fn adopt_flows(&self, previous: &Service<H>) {
        if let (Some(mine), Some(theirs)) = (&self.flows, &previous.flows) {
            let taken = std::mem::take(&mut *theirs.draining.borrow_mut());
            let plan = &self.plan;
            *mine.draining.borrow_mut() =
                taken.remap(|v| plan.version_named(previous.plan.version_name(v).as_bytes()));
        }
    }

    /// Adds to a counter: in the tally while batching, else at once.
    pub(super) fn increment(&self, slot: Option<&usize>, by: u64) {
        let Some(&slot) = slot else { return };
        if by == 0 || (self.batching.get() && self.tally.add(slot, by)) {
            return;
        }
        if let Some(&id) = self.ids.get(slot) {
            self.increment_now(id, by);
        }
    }

    pub(super) fn increment_now(&self, id: u32, by: u64) {
        // The host takes an i64 offset; a u64 sum above i64::MAX is added in two steps.
        let mut left = by;
        while left > 0 {
            let step = left.min(i64::MAX as u64);
            if let Err(e) = self.host.increment_metric(id, step as i64) {
                self.warn(format_args!("could not increment metric {id}: {e:?}"));
                return;
            }
            left -= step;
        }
    }

    /// Applies a rule's outcome to the version's metrics.
    pub(super) fn apply(&self, version: usize, rule: usize, outcome: Outcome) {
        let m = &self.metrics;
        match outcome {
            Outcome::Nothing => {}
            Outcome::Count => self.increment(m.business(version, rule), 1),
            Outcome::Add(n) => {
                self.increment(m.business(version, rule), n);
                // Saturating: a wrapped sum of squares would be a wrong variance.
                let square = u64::try_from(u128::from(n) * u128::from(n)).unwrap_or(u64::MAX);
                self.increment(m.squares(version, rule), square);
            }
            Outcome::Record(n) => {
                if let Some(&id) = m.business(version, rule).and_then(|s| self.ids.get(*s)) {
                    let r = self.host.record_metric(id, n);
                    self.warn_on_error("record", "histogram", r);
                }
            }
            Outcome::Invalid => self.increment(m.invalid(version, rule), 1),
        }
    }

    pub(super) fn skipped(&self, version: usize, reason: SkipReason) {
        self.increment(self.metrics.skipped(version, reason), 1);
    }

    pub(super) fn warn(&self, message: std::fmt::Arguments<'_>) {
        self.host
            .log(Level::Warn, &format!("sticky-canary: {message}"));
    }

    pub(super) fn warn_on_error(&self, what: &str, name: &str, result: Result<(), HostError>) {
        if let Err(e) = result {
            self.warn(format_args!("could not {what} {name}: {e:?}"));
        }
    }

    pub(super) fn set_header(&self, map: Map, name: &str, value: &[u8]) {
        self.warn_on_error("set", name, self.host.set_header(map, name, value));
    }
}
