//! The filter's request and response logic, against the [`Host`] trait.
//!
//! `crate::abi` implements [`Host`] with the proxy-wasm ABI and forwards Envoy's callbacks to
//! [`Root`] and [`Stream`]; the unit tests (`fake.rs`, `tests.rs`) run the same code against an
//! in-memory host. Nothing here touches the proxy-wasm ABI.
//!
//! [`Root::on_configure`] compiles the configuration and defines every metric once; per request,
//! [`Stream`] asks the plan for a decision, writes headers and counts. A plugin carrying several
//! services (`{"services": [...]}`, or one service with `match`) keeps one `Active` per service
//! and the [`crate::routing::matcher::Matcher`]; a stream picks its service at `on_request_headers` (one
//! `:authority` read, one `:path` read only when some service has path prefixes), and a request
//! no service claims goes on exactly as it came, counted once in `canary_unmatched_total`. Failure policy on the
//! request path: a header that cannot be read counts as absent (the request falls through to the
//! next source, then to the default version); a header or metric that cannot be written is logged
//! and the request continues.
//!
//! Counter increments are batched in the VM ([`Tally`]) and handed to the host every
//! `metrics_flush_ms` (the root's tick), when the root is done, and when a new configuration
//! replaces the plan; a stream that outlives its root then counts straight into the host.
//!
//! Response bodies are observed, never held: each chunk is copied (up to `max_body_bytes`) while
//! Envoy streams it on unchanged, and JSON rules run on the copy once the body is complete, or
//! as soon as every rule's value is in the copy (tried on the first chunk, then each time the copy
//! has grown eightfold; the copy stops).

use crate::brake::{record, Series};
use crate::config::Attribution;
use crate::counting::business::{body_gate, Outcome, Place, SkipReason};
use crate::metrics::{self, Catalogue, MetricKind, Tally};
use crate::routing::cookies::{UpstreamCookie, ID_BYTES};
use crate::routing::decision::{Decision, Reason, RequestView};
use crate::routing::flow::{Draining, OnTrip};
use crate::routing::hash::bucket_digits;
use crate::routing::matcher::Matcher;

/// The response header in which Envoy reports how many upstream attempts the request took.
pub const ATTEMPT_COUNT_HEADER: &str = "x-envoy-attempt-count";
use crate::plan::services::Services;
use crate::plan::Plan;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

mod pool;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod services_tests;
#[cfg(test)]
mod tests;

/// A host call did not succeed; the raw proxy-wasm status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub u32);

/// proxy-wasm `CasMismatch`: a shared-data write lost the race.
pub const CAS_MISMATCH: HostError = HostError(8);

/// Which header map a call reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Map {
    Request,
    Response,
    /// The response trailers (read for gRPC's `grpc-status`).
    ResponseTrailers,
    /// The headers of the answer to an HTTP call (the pool's query), while it is delivered.
    HttpCallResponse,
}

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// What the filter needs from its host: every call it makes, one method each. Envoy's
/// implementation is `crate::abi::Envoy` (one ABI call per method); the unit tests use an
/// in-memory fake. Methods take `&self`: host state lives outside the VM.
pub trait Host {
    /// The first value of a header, `Ok(None)` when absent.
    fn header(&self, map: Map, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// The whole header map in the proxy-wasm wire format (decode with [`crate::formats::headers::pairs`]).
    fn header_map(&self, map: Map) -> Result<Vec<u8>, HostError>;
    /// Replaces every value of a header with one value.
    fn set_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Adds one more value to a header.
    fn add_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Removes every value of a header (absent is not an error).
    fn remove_header(&self, map: Map, name: &str) -> Result<(), HostError>;
    /// The cluster the router sent the request to (Envoy's `xds.cluster_name`), `Ok(None)` when
    /// there is none (e.g. a local reply).
    fn cluster_name(&self) -> Result<Option<Vec<u8>>, HostError>;
    /// Writes this stream's filter state `key` (Envoy stores it as `wasm.<key>`, readable by
    /// access logs and tracing custom tags as `%FILTER_STATE(wasm.<key>:PLAIN)%`).
    fn set_filter_state(&self, key: &str, value: &[u8]) -> Result<(), HostError>;
    /// The first `size` bytes of the response body chunk being delivered.
    fn response_body(&self, size: usize) -> Result<Vec<u8>, HostError>;
    /// The plugin configuration, whole.
    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError>;
    /// A VM environment variable (for `override.tokens_env`).
    fn env(&self, name: &str) -> Option<String>;
    /// 128 unpredictable bits, `None` when the host has no randomness.
    fn random_id(&self) -> Option<[u8; ID_BYTES]>;
    /// Defines (or finds) a metric; returns its id.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    /// Adds to a counter.
    fn increment_metric(&self, id: u32, offset: i64) -> Result<(), HostError>;
    /// Sets a gauge or records a histogram value.
    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError>;
    /// A metric's current value: for a counter, its total over every worker VM of this Envoy
    /// (what they have flushed).
    fn metric(&self, id: u32) -> Result<u64, HostError>;
    /// A shared-data entry (shared by the worker VMs of this Envoy with the same `vm_id`) and its
    /// CAS token; `Ok(None)` when absent.
    fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError>;
    /// Writes a shared-data entry if its CAS token is still `cas` (0: whatever it is);
    /// `Err(CAS_MISMATCH)` when another VM wrote it in between.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError>;
    /// Calls the root's `on_tick` every `period_ms` (0 stops the ticks).
    fn set_tick_period(&self, period_ms: u32) -> Result<(), HostError>;
    /// The host's clock: milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Sends an HTTP request (no body) to `cluster`, answered within `timeout_ms`; the answer
    /// reaches the root's [`Root::on_http_call_response`] with the returned token.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, HostError>;
    /// Up to `size` bytes of the body of the HTTP call's answer being delivered.
    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError>;
    /// Writes one log line.
    fn log(&self, level: Level, message: &str);
}

/// A compiled plan and its metrics.
struct Active<H: Host> {
    host: H,
    plan: Plan,
    /// Every series of the plan as a slot: an index into `ids` and `tally`.
    metrics: Catalogue<usize>,
    /// The host's metric id of each slot.
    ids: Vec<u32>,
    /// Counter increments not yet handed to the host.
    tally: Tally,
    /// True while the root context flushes `tally` on its ticks; false when
    /// `metrics_flush_ms` is 0 and once the root context is done (a stream that outlives its
    /// root context then increments the host's counters itself).
    batching: Cell<bool>,
    /// The filter-state value of each (served version, reason), `[version][Reason::index]`,
    /// built once here so that a response writes it without formatting.
    observed: Vec<Vec<String>>,
    /// The brake's state, when the plan has a guard.
    guard: Option<GuardState>,
    /// The flows this VM saw draining, with `session.hold.flows`.
    flows: Option<FlowState>,
}

/// The flows one VM tracks for `canary_flows_draining` and the trip's log line.
#[derive(Default)]
struct FlowState {
    draining: RefCell<Draining>,
    /// What this VM has added to each version's `canary_flows_draining` (the gauge is the sum
    /// over the VMs of this Envoy).
    published: RefCell<Vec<u64>>,
}

/// What the brake needs at run time, prepared at configure time.
struct GuardState {
    /// The shared-data key of this service's trip record.
    key: String,
    /// The trips' generation (salt and `guard.epoch`).
    generation: u64,
    /// Host metric ids to sum for each series of `Guard::series`, per version:
    /// `ids[version][series]`.
    ids: Vec<Vec<Vec<u32>>>,
    /// Bit `v` set: version `v` is tripped in this Envoy (what this VM knows).
    tripped: Cell<u32>,
    /// The pooled brake's state, with `guard.pool`.
    pool: Option<pool::PoolState>,
}

/// Why a version is tripped on this look.
enum Found {
    /// This Envoy's counters crossed the bound.
    Local(crate::brake::Trip),
    /// The pooled counters of every Envoy crossed it.
    Pooled(crate::brake::Trip),
    /// Another Envoy of the generation reports the version tripped (how many do).
    Adopted(f64),
}

/// The bit of a version in a trip mask (versions are at most 16).
fn bit(version: usize) -> u32 {
    1u32.checked_shl(version as u32).unwrap_or(0)
}

impl<H: Host> Active<H> {
    /// Defines every metric of the plan (created at zero) and sets the weight gauges.
    fn new(host: H, plan: Plan) -> Result<Active<H>, String> {
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
        Ok(Active {
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
    fn flush(&self) {
        for (slot, n) in self.tally.drain() {
            if let Some(&id) = self.ids.get(slot) {
                self.increment_now(id, n);
            }
        }
    }

    /// Flushes, sends every later increment straight to the host, and gives up the pool's
    /// lease.
    fn retire(&self) {
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
    fn publish_draining(&self) {
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
    fn draining(&self, version: usize) -> u64 {
        self.metrics
            .flows_draining
            .get(version)
            .and_then(|s| self.ids.get(*s))
            .and_then(|id| self.host.metric(*id).ok())
            .unwrap_or(0)
    }

    /// Takes over the flows a previous plan of the same service tracked (a reconfiguration
    /// keeps the count), by version name.
    fn adopt_flows(&self, previous: &Active<H>) {
        if let (Some(mine), Some(theirs)) = (&self.flows, &previous.flows) {
            let taken = std::mem::take(&mut *theirs.draining.borrow_mut());
            let plan = &self.plan;
            *mine.draining.borrow_mut() =
                taken.remap(|v| plan.version_named(previous.plan.version_name(v).as_bytes()));
        }
    }

    /// Adds to a counter: in the tally while batching, else at once.
    fn increment(&self, slot: Option<&usize>, by: u64) {
        let Some(&slot) = slot else { return };
        if by == 0 || (self.batching.get() && self.tally.add(slot, by)) {
            return;
        }
        if let Some(&id) = self.ids.get(slot) {
            self.increment_now(id, by);
        }
    }

    fn increment_now(&self, id: u32, by: u64) {
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
    fn apply(&self, version: usize, rule: usize, outcome: Outcome) {
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

    /// The versions tripped in this Envoy, as far as this VM knows (0 without a guard).
    fn tripped(&self) -> u32 {
        self.guard.as_ref().map_or(0, |g| g.tripped.get())
    }

    /// The trip mask in a shared-data record of this generation.
    fn mask_of(&self, g: &GuardState, bytes: &[u8]) -> u32 {
        record::decode(bytes, g.generation)
            .into_iter()
            .filter_map(|name| self.plan.version_named(name.as_bytes()))
            .fold(0, |m, v| m | bit(v))
    }

    /// Sets this VM's trip mask and the `canary_guard_tripped` gauges of what changed.
    fn set_tripped(&self, g: &GuardState, mask: u32, force_gauges: bool) {
        let before = g.tripped.replace(mask);
        for (v, slot) in self.metrics.guard_tripped.iter().enumerate() {
            if force_gauges || (before ^ mask) & bit(v) != 0 {
                if let Some(&id) = self.ids.get(*slot) {
                    let r = self.host.record_metric(id, u64::from(mask & bit(v) != 0));
                    self.warn_on_error("set", metrics::names::GUARD_TRIPPED, r);
                }
            }
        }
    }

    /// At configure time: the trips this Envoy recorded for this generation survive the new
    /// configuration; a record of another generation (new salt or epoch) is cleared.
    fn restore_guard(&self) {
        let Some(g) = &self.guard else { return };
        let mask = match self.host.shared_data(&g.key) {
            Ok(Some((bytes, cas))) => {
                if record::read(&bytes, g.generation).is_none() {
                    // Another generation's trips (a new salt or epoch): start this one clean.
                    let empty = record::encode(g.generation, std::iter::empty());
                    let _ = self.host.set_shared_data(&g.key, empty.as_bytes(), cas);
                }
                self.mask_of(g, &bytes)
            }
            Ok(None) => 0,
            Err(e) => {
                self.warn(format_args!("guard: cannot read {}: {e:?}", g.key));
                0
            }
        };
        self.set_tripped(g, mask, true);
        if mask != 0 {
            self.warn(format_args!(
                "guard: {} still tripped in this Envoy (same salt and epoch)",
                self.names_of(mask)
            ));
        }
        if let (Some(p), Some(pool)) = (
            &g.pool,
            self.plan.guard.as_ref().and_then(|x| x.pool.as_ref()),
        ) {
            self.restore_pool(g, p, pool);
        }
    }

    fn names_of(&self, mask: u32) -> String {
        let mut s = String::new();
        for (v, version) in self.plan.versions.iter().enumerate() {
            if mask & bit(v) != 0 {
                if !s.is_empty() {
                    s.push_str(", ");
                }
                s.push_str(&version.name);
            }
        }
        s
    }

    /// One look of the brake (every tick, after the flush): learns the trips other VMs
    /// recorded, judges every other canary on the Envoy-wide counters (without a pool, or at
    /// `pool.local_alpha` beside it), and records new trips. With a pool, the lease holder also
    /// publishes the evidence and sends the pool's query (see `pool.rs`).
    fn guard_tick(&self) {
        let (Some(guard), Some(g)) = (&self.plan.guard, &self.guard) else {
            return;
        };
        let recorded = self.learn_trips(g);
        let mask = g.tripped.get() | recorded;
        if mask != g.tripped.get() {
            self.set_tripped(g, mask, false);
        }
        let (alpha, counts) = match (&g.pool, &guard.pool) {
            (Some(p), Some(pool)) => (pool.local_alpha, self.pool_tick(g, p, pool)),
            _ => (Some(guard.alpha), None),
        };
        // The local test: off with a pool unless `local_alpha` is set.
        let Some(alpha) = alpha else { return };
        // The counters of the baseline and of every untripped canary, read once.
        let wanted = |v: usize| v == guard.baseline || mask & bit(v) == 0;
        let values = counts.unwrap_or_else(|| self.read_counts(g, &wanted));
        let read = |v: usize, i: usize| -> f64 {
            values
                .get(v)
                .and_then(|row| row.get(i))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let mut found = Vec::new();
        guard.judge_canaries(
            self.plan.versions.len(),
            alpha,
            &|c| mask & bit(c) != 0,
            &read,
            &mut |c, trip| found.push((c, Found::Local(trip))),
        );
        if !found.is_empty() {
            self.commit_trips(g, guard, found);
        }
    }

    /// The trips of this generation other VMs of this Envoy recorded (0 when unreadable).
    fn learn_trips(&self, g: &GuardState) -> u32 {
        match self.host.shared_data(&g.key) {
            Ok(found) => found.as_ref().map_or(0, |(b, _)| self.mask_of(g, b)),
            Err(e) => {
                self.warn(format_args!("guard: cannot read {}: {e:?}", g.key));
                0
            }
        }
    }

    /// Trips versions: records them for the other VMs, counts them, sets the gauges and writes
    /// one warn line each.
    fn commit_trips(
        &self,
        g: &GuardState,
        guard: &crate::brake::Guard,
        found: Vec<(usize, Found)>,
    ) {
        let shared = self.host.shared_data(&g.key).ok().flatten();
        let recorded = shared.as_ref().map_or(0, |(b, _)| self.mask_of(g, b));
        let mask = found
            .iter()
            .fold(g.tripped.get() | recorded, |m, (c, _)| m | bit(*c));
        if mask & !recorded != 0 {
            self.record_trips(g, mask, shared.map(|(_, cas)| cas));
        }
        for (c, why) in &found {
            // Straight to the host: the tick's flush is already done.
            if let Some(&id) = self
                .metrics
                .guard_trips
                .get(*c)
                .and_then(|s| self.ids.get(*s))
            {
                self.increment_now(id, 1);
            }
            let canary = self.plan.version_name(*c);
            let baseline = self.plan.version_name(guard.baseline);
            let line = match why {
                Found::Local(trip) => {
                    let alpha = guard
                        .pool
                        .as_ref()
                        .and_then(|p| p.local_alpha)
                        .unwrap_or(guard.alpha);
                    guard.describe_at(trip, canary, baseline, alpha, "")
                }
                Found::Pooled(trip) => guard.describe_at(
                    trip,
                    canary,
                    baseline,
                    guard.alpha,
                    " on the pooled evidence of every Envoy",
                ),
                Found::Adopted(n) => format!(
                    "guard tripped {canary}: adopted from the pool ({} Envoy(s) of this \
                     generation report it tripped); no new request is routed to {canary} \
                     (override excepted) until the salt or guard.epoch changes",
                    *n as u64
                ),
            };
            let flows = self.plan.flows.as_ref().map(|f| {
                let n = self.draining(*c);
                match guard.flows {
                    OnTrip::Finish => format!(
                        "; {n} flow(s) draining on {canary} in this Envoy finish there \
                         (guard.flows finish: their cookies expire within {} s)",
                        f.drain_seconds
                    ),
                    OnTrip::Move => format!(
                        "; {n} flow(s) draining on {canary} in this Envoy move to {baseline} \
                         at once (guard.flows move)"
                    ),
                }
            });
            self.warn(format_args!("{line}{}", flows.unwrap_or_default()));
        }
        if mask != g.tripped.get() {
            self.set_tripped(g, mask, false);
        }
    }

    /// Adds this VM's trips to the shared record (compare-and-swap, a few attempts: other VMs
    /// may be writing the same trip at the same moment).
    fn record_trips(&self, g: &GuardState, mut mask: u32, mut cas: Option<u32>) {
        for _ in 0..4 {
            let names: Vec<&str> = self
                .plan
                .versions
                .iter()
                .enumerate()
                .filter(|(v, _)| mask & bit(*v) != 0)
                .map(|(_, v)| v.name.as_str())
                .collect();
            let value = record::encode(g.generation, names.into_iter());
            match self
                .host
                .set_shared_data(&g.key, value.as_bytes(), cas.unwrap_or(0))
            {
                Ok(()) => return,
                Err(e) if e == CAS_MISMATCH => match self.host.shared_data(&g.key) {
                    Ok(found) => {
                        mask |= found.as_ref().map_or(0, |(b, _)| self.mask_of(g, b));
                        cas = found.map(|(_, c)| c);
                    }
                    Err(_) => return,
                },
                Err(e) => {
                    self.warn(format_args!(
                        "guard: cannot record the trip in {} ({e:?}); this VM brakes alone",
                        g.key
                    ));
                    return;
                }
            }
        }
    }

    fn skipped(&self, version: usize, reason: SkipReason) {
        self.increment(self.metrics.skipped(version, reason), 1);
    }

    fn warn(&self, message: std::fmt::Arguments<'_>) {
        self.host
            .log(Level::Warn, &format!("sticky-canary: {message}"));
    }

    fn warn_on_error(&self, what: &str, name: &str, result: Result<(), HostError>) {
        if let Err(e) = result {
            self.warn(format_args!("could not {what} {name}: {e:?}"));
        }
    }

    fn set_header(&self, map: Map, name: &str, value: &[u8]) {
        self.warn_on_error("set", name, self.host.set_header(map, name, value));
    }
}

/// The filter-state key the served version and reason go to; Envoy prefixes it with `wasm.`,
/// so access logs and tracing custom tags read `%FILTER_STATE(wasm.sticky_canary:PLAIN)%`.
pub const FILTER_STATE_KEY: &str = "sticky_canary";

/// The filter-state value: `<served version> <reason>`, e.g. `canary hash`. Version names are
/// label values (no spaces), reasons fixed words, so the first space splits the two.
pub fn observed_value(version: &str, reason: &str) -> String {
    format!("{version} {reason}")
}

/// The plugin instance: its configuration and the metrics it defined.
pub struct Root<H: Host> {
    host: H,
    services: Option<Rc<Deployed<H>>>,
}

/// Every service of the plugin instance, and which request is whose.
struct Deployed<H: Host> {
    host: H,
    /// One per service, in document order (the matcher's indexes).
    actives: Vec<Rc<Active<H>>>,
    matcher: Matcher,
    /// The host's id of `canary_unmatched_total`; defined only when a request can miss.
    unmatched: Option<u32>,
    /// Unmatched requests not yet handed to the host.
    pending: Cell<u64>,
    /// True while the root's ticks flush `pending`.
    batching: Cell<bool>,
}

impl<H: Host> Deployed<H> {
    /// The service of the request whose headers are being read: one `:authority` read (and a
    /// `:path` read when some service has path prefixes), none for a plugin that takes every
    /// request. `None`: the request is no service's; it is counted and left as it came.
    fn pick(&self) -> Option<Rc<Active<H>>> {
        let index = self.matcher.matches_everything().or_else(|| {
            let read = |name: &str| self.host.header(Map::Request, name).ok().flatten();
            let mut authority = read(":authority").unwrap_or_default();
            let path = if self.matcher.reads_path() {
                read(":path")
            } else {
                None
            };
            self.matcher.find(&mut authority, path.as_deref())
        });
        let found = index.and_then(|i| self.actives.get(i)).cloned();
        if found.is_none() {
            if self.batching.get() {
                self.pending.set(self.pending.get().saturating_add(1));
            } else {
                self.count_unmatched(1);
            }
        }
        found
    }

    fn count_unmatched(&self, n: u64) {
        if let (Some(id), Ok(n)) = (self.unmatched, i64::try_from(n)) {
            if n > 0 && self.host.increment_metric(id, n).is_err() {
                self.host.log(
                    Level::Warn,
                    "sticky-canary: could not count an unmatched request",
                );
            }
        }
    }

    fn flush(&self) {
        self.count_unmatched(self.pending.replace(0));
        for a in &self.actives {
            a.flush();
        }
    }

    fn retire(&self) {
        self.batching.set(false);
        self.count_unmatched(self.pending.replace(0));
        for a in &self.actives {
            a.retire();
        }
    }
}

impl<H: Host + Clone> Root<H> {
    pub fn new(host: H) -> Root<H> {
        Root {
            host,
            services: None,
        }
    }

    pub fn on_vm_start(&self) -> bool {
        self.host.log(
            Level::Info,
            &format!("sticky-canary {} VM started", crate::VERSION),
        );
        true
    }

    /// Compiles the plugin configuration and defines its metrics; `false` refuses it (Envoy then
    /// refuses the filter), with one log line naming the field path and the reason.
    pub fn on_configure(&mut self) -> bool {
        let host = &self.host;
        let error = |message: String| {
            host.log(Level::Error, &format!("sticky-canary: {message}"));
            false
        };
        let bytes = match host.plugin_configuration() {
            Ok(bytes) => bytes,
            Err(e) => return error(format!("cannot read the plugin configuration: {e:?}")),
        };
        let compiled = match Services::from_json_with_env(&bytes, &|name| host.env(name)) {
            Ok(services) => services,
            Err(e) => return error(format!("invalid configuration: {e}")),
        };
        // The brake looks on every tick; without batching it still needs one. One tick for
        // every service: the smallest interval.
        let tick_ms = compiled.tick_ms();
        let mut actives = Vec::with_capacity(compiled.plans.len());
        for plan in compiled.plans {
            match Active::new(host.clone(), plan) {
                Ok(a) => actives.push(Rc::new(a)),
                Err(e) => return error(e),
            }
        }
        let unmatched = match compiled.matcher.matches_everything() {
            Some(_) => None,
            None => match host.define_metric(MetricKind::Counter, metrics::names::UNMATCHED) {
                Ok(id) => Some(id),
                Err(e) => {
                    return error(format!(
                        "cannot define {}: {e:?}",
                        metrics::names::UNMATCHED
                    ))
                }
            },
        };
        let timer = host.set_tick_period(tick_ms);
        for active in &actives {
            active.restore_guard();
            if let Err(e) = timer {
                // Without ticks nothing would flush: count straight into the host instead.
                active.warn(format_args!(
                    "no timer ({e:?}); counters are updated per request"
                ));
                active.batching.set(false);
            }
            host.log(
                Level::Info,
                &format!(
                    "sticky-canary {}: {}",
                    crate::VERSION,
                    active.plan.summary()
                ),
            );
            for w in &active.plan.warnings {
                active.warn(format_args!("{w}"));
            }
        }
        let deployed = Deployed {
            host: host.clone(),
            actives,
            matcher: compiled.matcher,
            unmatched,
            pending: Cell::new(0),
            batching: Cell::new(tick_ms > 0 && timer.is_ok()),
        };
        // A reconfigured root context hands over what the previous plan counted.
        if let Some(previous) = self.services.replace(Rc::new(deployed)) {
            if let Some(now) = &self.services {
                for a in &now.actives {
                    let same = previous
                        .actives
                        .iter()
                        .find(|p| p.plan.service == a.plan.service);
                    if let Some(p) = same {
                        a.adopt_flows(p);
                    }
                }
            }
            previous.retire();
        }
        true
    }

    /// The flush interval elapsed.
    pub fn on_tick(&self) {
        if let Some(d) = &self.services {
            d.flush();
            for a in &d.actives {
                a.publish_draining();
                a.guard_tick();
            }
        }
    }

    /// The answer to an HTTP call this root sent (the pool's query of one service): `headers`
    /// pairs (0 when the call failed) and `body_size` bytes of body. An unknown token is
    /// ignored.
    pub fn on_http_call_response(&self, token: u32, headers: usize, body_size: usize) {
        let Some(d) = &self.services else { return };
        for a in &d.actives {
            if let (Some(g), Some(guard)) = (&a.guard, &a.plan.guard) {
                if let (Some(p), Some(pool)) = (&g.pool, &guard.pool) {
                    if p.awaits(token) {
                        return a.pool_answer(g, p, pool, headers, body_size);
                    }
                }
            }
        }
    }

    /// The host is done with this plugin instance (a new configuration replaced it, or the VM
    /// stops): nothing pending may be lost, and streams still draining count on their own.
    pub fn on_done(&self) -> bool {
        if let Some(d) = &self.services {
            d.retire();
        }
        true
    }

    /// A new HTTP stream on the current plan. A plugin that takes every request hands it its
    /// one service now; otherwise the stream picks its service from its request headers.
    /// Without a plan (cannot happen after a successful configure) the stream passes through
    /// untouched.
    pub fn stream(&self) -> Stream<H> {
        let everything = self
            .services
            .as_ref()
            .and_then(|d| d.actives.get(d.matcher.matches_everything()?));
        Stream {
            active: everything.cloned(),
            services: self.services.clone().filter(|_| everything.is_none()),
            decision: None,
            served: 0,
            status: 0,
            write: false,
            body: Body::Off,
            tried: 0,
            grpc: false,
        }
    }
}

/// What happens to the response body of this stream.
enum Body {
    /// Not examined.
    Off,
    /// Copying chunks for JSON rules.
    Capturing(Vec<u8>),
    /// Examined or skipped; nothing more to do.
    Done,
}

/// One HTTP stream. Every callback lets the stream continue: the filter never holds a request.
pub struct Stream<H: Host> {
    active: Option<Rc<Active<H>>>,
    /// The plugin's services, until the request headers say whose this stream is.
    services: Option<Rc<Deployed<H>>>,
    /// The decision for this request, for the response headers and metrics.
    decision: Option<Decision>,
    /// The version whose cluster served the response (see `on_response_headers`).
    served: usize,
    /// The response status.
    status: u16,
    /// The request's method is one of `write_methods`.
    write: bool,
    body: Body,
    /// The copy's length when the JSON rules were last tried on it before its end.
    tried: usize,
    /// A gRPC response whose `grpc-status` is not counted yet (from its trailers, or as
    /// `missing` when the stream ends without).
    grpc: bool,
}

/// Request headers through the host, read on demand. A failed read counts as an absent header.
/// The flag: the request is a write (`write_methods`).
struct HostRequest<'a, H: Host>(&'a Active<H>, bool);

impl<H: Host> RequestView for HostRequest<'_, H> {
    type Value = Vec<u8>;

    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        self.0.host.header(Map::Request, name).ok().flatten()
    }

    fn get_all(&mut self, name: &str) -> Vec<Vec<u8>> {
        let map = self.0.host.header_map(Map::Request).unwrap_or_default();
        crate::formats::headers::pairs(&map)
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.to_vec())
            .collect()
    }

    fn random_id(&mut self) -> Option<[u8; ID_BYTES]> {
        let id = self.0.host.random_id();
        if id.is_none() {
            self.0.warn(format_args!(
                "no randomness for a new session id; using the default version"
            ));
        }
        id
    }

    fn write(&mut self) -> bool {
        self.1
    }

    fn now_s(&mut self) -> Option<u64> {
        Some(self.0.host.now_ms() / 1000)
    }
}

/// How much the body copy grows between two tries of the JSON rules on a prefix: a near-end
/// pointer's body is rescanned at most by a seventh (2 would be up to twice, measured 2.6–2.9×
/// the work of one pass for 1 MiB in 16 KiB chunks).
const TRY_GROWTH: usize = 8;

/// The response headers the filter reads. When rules need more than `:status`, the whole map is
/// read with one host call (a host call costs more than scanning a dozen headers in the VM);
/// otherwise, or if that read fails, each header is read on its own.
struct ResponseHeaders<'a, H: Host> {
    host: &'a H,
    map: Option<Vec<u8>>,
}

impl<'a, H: Host> ResponseHeaders<'a, H> {
    fn read(host: &'a H, whole_map: bool) -> Self {
        let map = whole_map
            .then(|| host.header_map(Map::Response).ok())
            .flatten();
        ResponseHeaders { host, map }
    }

    /// Calls `f` with the first value of `name` (lowercase), as the host's single-header read does.
    fn with<R>(&self, name: &str, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        match &self.map {
            Some(map) => f(crate::formats::headers::pairs(map)
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v)),
            None => f(self
                .host
                .header(Map::Response, name)
                .ok()
                .flatten()
                .as_deref()),
        }
    }
}

impl<H: Host> Stream<H> {
    /// Decides the version, strips the override headers, hands a minted session id to the
    /// application, and writes the route header the router matches on.
    pub fn on_request_headers(&mut self) {
        if let Some(services) = self.services.take() {
            // No service's: the request goes on exactly as it came.
            self.active = services.pick();
        }
        let Some(active) = self.active.as_deref() else {
            return;
        };
        let plan = &active.plan;
        if !plan.write_methods.is_empty() {
            let method = active.host.header(Map::Request, ":method").ok().flatten();
            self.write = method.is_some_and(|m| {
                plan.write_methods
                    .iter()
                    .any(|w| w.as_bytes() == m.as_slice())
            });
        }
        let mut decision = plan.decide(&mut HostRequest(active, self.write));
        if let Some(f) = decision.flow {
            active.increment(active.metrics.flow_cookies.get(f.outcome.index()), 1);
        }
        // The brake: nothing reaches a tripped version but the token-guarded override and, with
        // `guard.flows: finish`, a flow with a valid cookie; the request goes to the guard's
        // baseline, without a bucket.
        let tripped = active.tripped();
        let finishes = decision.reason == Reason::Flow
            && plan
                .guard
                .as_ref()
                .is_some_and(|g| g.flows == OnTrip::Finish);
        if tripped & bit(decision.version) != 0 && decision.reason != Reason::Override && !finishes
        {
            if let Some(g) = &plan.guard {
                decision = Decision {
                    version: g.baseline,
                    reason: Reason::Guard,
                    bucket: None,
                    ..decision
                };
            }
        } else if let (true, Some(f)) = (tripped & bit(decision.version) != 0, &mut decision.flow) {
            // A flow finishing on a tripped version drains: its writes do not extend it.
            f.draining = true;
        }
        self.decision = Some(decision);
        active.increment(active.metrics.request(decision.version, decision.reason), 1);
        let version = plan.version_name(decision.version);
        let host = &active.host;
        // The QA override headers never reach the upstream, whatever the outcome.
        if let Some(o) = &plan.override_ {
            let r = host.remove_header(Map::Request, &o.header);
            active.warn_on_error("remove", &o.header, r);
            let r = host.remove_header(Map::Request, &o.token_header);
            active.warn_on_error("remove", &o.token_header, r);
        }
        // The application sees the minted session id as if the client had sent it.
        if let (Some(assign), Some(id)) = (&plan.assign, &decision.minted) {
            let existing = HostRequest(active, false).get_all("cookie");
            match assign.upstream_cookie(&existing, id) {
                UpstreamCookie::Set(v) => active.set_header(Map::Request, "cookie", &v),
                UpstreamCookie::Add(v) => {
                    let r = host.add_header(Map::Request, "cookie", &v);
                    active.warn_on_error("add", "cookie", r);
                }
            }
        }
        // The session's cohort bucket, for the controller's bucket routes. Whatever the client
        // sent is never trusted: the write replaces every value, and a request without a bucket
        // (no session key, override, pin, hold) has the header removed. One host call either way.
        // While a version is tripped no request carries a bucket, so that no bucket route of a
        // controller can reach it either.
        if let Some(b) = &plan.bucket_header {
            match decision.bucket.filter(|_| tripped == 0) {
                Some(bucket) => active.set_header(Map::Request, b, &bucket_digits(bucket)),
                None => {
                    let r = host.remove_header(Map::Request, b);
                    active.warn_on_error("remove", b, r);
                }
            }
        }
        // Replaces every value the client sent; Envoy clears the route cache on this write, so
        // the router matches the routes against the chosen version.
        active.set_header(Map::Request, &plan.route_header, version.as_bytes());
    }

    /// Attributes the response to the version that served it, counts it, runs the header rules,
    /// decides whether to copy the body, and tags the response.
    pub fn on_response_headers(&mut self, end_of_stream: bool) {
        let Some(active) = self.active.clone() else {
            return;
        };
        let Some(decision) = self.decision else {
            return;
        };
        let plan = &active.plan;
        let host = &active.host;
        // Attribute the response to the version whose cluster served it. It is the decision's
        // version unless the route table sent the cohort elsewhere (e.g. a rollout controller
        // dropping the canary header match sends it to stable).
        // With `attribution: response_header` the route already named the serving version in
        // `response_header` (one header read, free when the whole map is read, and no write).
        let headers = ResponseHeaders::read(host, plan.business.reads_headers());
        let routed = match plan.attribution {
            Attribution::ResponseHeader => {
                headers.with(&plan.response_header, |h| plan.version_named(h?))
            }
            Attribution::Cluster => None,
        };
        let v = routed.unwrap_or_else(|| {
            host.cluster_name()
                .ok()
                .flatten()
                .and_then(|c| plan.version_of_cluster(&c))
                .unwrap_or(decision.version)
        });
        self.served = v;
        self.status = headers
            .with(":status", |s| std::str::from_utf8(s?).ok()?.parse().ok())
            .unwrap_or(0);
        active.increment(active.metrics.response(v, self.status), 1);
        if self.write {
            active.increment(active.metrics.writes.get(v), 1);
        }
        // Upstream retries (README "Retries per version"): Envoy's attempt count, sent on the
        // response when the route or virtual host sets `include_attempt_count_in_response`.
        // Absent = not counted; anything but a positive integer is counted as invalid.
        headers.with(ATTEMPT_COUNT_HEADER, |a| {
            match a.map(metrics::attempt_count) {
                Some(Some(n)) if n > 1 => {
                    active.increment(active.metrics.retries.get(v), u64::from(n - 1));
                    active.increment(active.metrics.retried.get(v), 1);
                }
                Some(None) => active.increment(active.metrics.attempts_invalid.get(v), 1),
                // Absent, or a single attempt.
                None | Some(Some(_)) => {}
            }
        });
        // gRPC status (README "gRPC status per version"), with a `grpc` block only: a
        // trailers-only response (headers ending the stream) carries `grpc-status` here;
        // otherwise it is awaited in the trailers, and counted `missing` if the stream ends first.
        // Both reads go through one `fn` type: one instance of `with`, not two (module size).
        type Read = fn(Option<&[u8]>) -> usize;
        let (is_grpc, status_of): (Read, Read) = (
            crate::counting::grpc::content_type_index,
            crate::counting::grpc::status_of,
        );
        if plan.grpc.is_some() && headers.with("content-type", is_grpc) == 1 {
            if end_of_stream {
                let status = headers.with("grpc-status", status_of);
                active.increment(active.metrics.grpc(v, status), 1);
            } else {
                self.grpc = true;
            }
        }

        for (i, rule) in plan.business.rules.iter().enumerate() {
            if let Place::Header(name) = &rule.place {
                if rule.status.matches(self.status) {
                    active.apply(v, i, headers.with(name, |h| rule.evaluate(h)));
                }
            }
        }
        // Body rules: copy the body only when one applies, it is JSON, uncompressed, bounded.
        if !end_of_stream && plan.business.wants_body(self.status) {
            let max = plan.business.max_body_bytes;
            let gate = headers.with("content-type", |t| {
                headers.with("content-encoding", |e| {
                    headers.with("content-length", |l| body_gate(t, e, l, max))
                })
            });
            self.body = match gate {
                Ok(()) => Body::Capturing(Vec::new()),
                Err(reason) => {
                    active.skipped(v, reason);
                    Body::Done
                }
            };
        }

        if routed.is_none() {
            active.set_header(
                Map::Response,
                &plan.response_header,
                plan.version_name(v).as_bytes(),
            );
        }
        if let Some(h) = &plan.reason_header {
            active.set_header(Map::Response, h, decision.reason.as_str().as_bytes());
        }
        // Observability: the served version and the reason, in one filter-state write, for
        // Envoy's access logs and tracers (README "Traces and access logs").
        let observed = active
            .observed
            .get(v)
            .and_then(|row| row.get(decision.reason.index()))
            .map_or("", String::as_str);
        let r = host.set_filter_state(FILTER_STATE_KEY, observed.as_bytes());
        active.warn_on_error("set filter state", FILTER_STATE_KEY, r);
        if let (Some(assign), Some(id)) = (&plan.assign, &decision.minted) {
            let cookie = assign.set_cookie(id);
            let r = host.add_header(Map::Response, "set-cookie", cookie.as_bytes());
            active.warn_on_error("add", "set-cookie", r);
        }
        // The idle hold: a session served by the default version stays there until it has been
        // idle `idle_seconds`. Never set for a response from any other version, so the hold
        // never keeps anyone on a canary.
        if let Some(hold) = &plan.hold {
            if decision.session && v == plan.default_version {
                let r = host.add_header(Map::Response, "set-cookie", hold.set_cookie.as_bytes());
                active.warn_on_error("add", "set-cookie", r);
            }
        }
        if plan.flows.is_some() {
            self.flow_cookie(&active, &decision, v);
        }
    }

    /// The flow cookie: a write with a session key served by a version other than the default
    /// sets (or refreshes) it, for the serving version, unless the request is a draining flow's
    /// (routed there by its cookie alone: refreshing it would let a flow outlive
    /// `drain_seconds`); a valid flow served by another version (the trip moved it, or the routes
    /// sent it elsewhere) is over, and its cookie is cleared. Valid flows served by their version
    /// are tracked for `canary_flows_draining` (a new plan or another worker learns them so).
    fn flow_cookie(&self, active: &Active<H>, decision: &Decision, v: usize) {
        let (Some(flows), Some(state)) = (&active.plan.flows, &active.flows) else {
            return;
        };
        let host = &active.host;
        let valid = decision
            .flow
            .and_then(|f| Some((f.version?, f.expiry, f.draining)));
        let draining = valid.is_some_and(|(_, _, d)| d);
        let starts = self.write
            && !draining
            && v != active.plan.default_version
            && (100..500).contains(&self.status);
        let mut tracker = state.draining.borrow_mut();
        let cookie = match (decision.key, valid) {
            (Some(digest), _) if starts => {
                let now_s = host.now_ms() / 1000;
                let cookie = flows.set_cookie(&digest, active.plan.version_name(v), now_s);
                if cookie.is_some() {
                    tracker.started(&digest, v, now_s.saturating_add(flows.drain_seconds));
                }
                cookie
            }
            (Some(digest), Some((fv, expiry, _))) if fv == v => {
                tracker.started(&digest, fv, expiry);
                None
            }
            (Some(digest), Some(_)) => {
                tracker.ended(&digest);
                Some(flows.clear_cookie.clone())
            }
            _ => None,
        };
        drop(tracker);
        if let Some(c) = cookie {
            let r = host.add_header(Map::Response, "set-cookie", c.as_bytes());
            active.warn_on_error("add", "set-cookie", r);
        }
    }

    /// A response body chunk of `body_size` bytes; copied while a JSON rule wants the body.
    pub fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) {
        let v = self.served;
        if let (Body::Capturing(buf), Some(active)) = (&mut self.body, &self.active) {
            if buf.len().saturating_add(body_size) > active.plan.business.max_body_bytes {
                active.skipped(v, SkipReason::TooLarge);
                self.body = Body::Done;
            } else if body_size > 0 {
                match active.host.response_body(body_size) {
                    // The first chunk (often the whole body) is kept as the host handed it.
                    Ok(chunk) if buf.is_empty() => *buf = chunk,
                    Ok(chunk) => buf.extend_from_slice(&chunk),
                    Err(_) => {
                        active.skipped(v, SkipReason::Incomplete);
                        self.body = Body::Done;
                    }
                }
            }
        }
        if end_of_stream {
            self.finish_body();
        } else if let Body::Capturing(buf) = &self.body {
            // On the first chunk, then each time the copy has grown eightfold (so the tries
            // together rescan at most the first chunk and a seventh of the body): once every
            // rule has its value, the copy stops. What follows is never examined.
            if buf.len() >= self.tried.saturating_mul(TRY_GROWTH) && !buf.is_empty() {
                self.tried = buf.len();
                self.run_json_rules(false);
            }
        }
    }

    /// Trailers end the body; a gRPC response's status is in them.
    pub fn on_response_trailers(&mut self) {
        self.finish_body();
        if std::mem::take(&mut self.grpc) {
            if let Some(active) = &self.active {
                let status = active.host.header(Map::ResponseTrailers, "grpc-status");
                let status = crate::counting::grpc::status_of(status.ok().flatten().as_deref());
                active.increment(active.metrics.grpc(self.served, status), 1);
            }
        }
    }

    /// The stream is over. A body still being copied never completed (reset, client abort); a
    /// gRPC response without trailers has no status.
    pub fn on_log(&mut self) {
        if let (Body::Capturing(_), Some(active)) = (&self.body, &self.active) {
            active.skipped(self.served, SkipReason::Incomplete);
            self.body = Body::Done;
        }
        if std::mem::take(&mut self.grpc) {
            if let Some(active) = &self.active {
                active.increment(
                    active
                        .metrics
                        .grpc(self.served, crate::counting::grpc::MISSING),
                    1,
                );
            }
        }
    }

    /// Runs the JSON rules on a complete body copy.
    fn finish_body(&mut self) {
        self.run_json_rules(true);
    }

    /// Runs the JSON rules that apply to this response on the copy and ends it: on the complete
    /// body, or on a prefix only when every rule has its value there (else nothing happens).
    /// One walk of the copy finds every rule's value; each rule is applied once.
    fn run_json_rules(&mut self, complete: bool) {
        let (Body::Capturing(body), Some(active)) = (&self.body, &self.active) else {
            return;
        };
        let v = self.served;
        let mut malformed = false;
        let settled =
            active
                .plan
                .business
                .evaluate_json_rules(self.status, body, complete, |i, outcome| match outcome {
                    Some(outcome) => active.apply(v, i, outcome),
                    None => malformed = true,
                });
        if !settled {
            return;
        }
        if malformed {
            active.skipped(v, SkipReason::Malformed);
        }
        self.body = Body::Done;
    }
}
