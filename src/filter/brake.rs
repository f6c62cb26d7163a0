//! The brake's look on a service, every tick ([`Service::guard_tick`]): the trips other VMs
//! recorded, the local test on this Envoy's counters, the trips it records; and the trip mask
//! and its gauges. The pooled brake's side is `pool.rs`.

use super::service::{bit, GuardState, Service};
use super::{Host, CAS_MISMATCH};
use crate::brake::record;
use crate::metrics;
use crate::routing::flow::OnTrip;

/// Why a version is tripped on this look.
pub(super) enum Found {
    /// This Envoy's counters crossed the bound.
    Local(crate::brake::Trip),
    /// The pooled counters of every Envoy crossed it.
    Pooled(crate::brake::Trip),
    /// Another Envoy of the generation reports the version tripped (how many do).
    Adopted(f64),
}

impl<H: Host> Service<H> {
    /// The versions tripped in this Envoy, as far as this VM knows (0 without a guard).
    pub(super) fn tripped(&self) -> u32 {
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
    pub(super) fn restore_guard(&self) {
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
    pub(super) fn guard_tick(&self) {
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

    /// Learns the trips another root of this Envoy recorded, and judges nothing (a follower:
    /// the native build's worker threads, whose brake the main thread's root runs).
    pub(super) fn learn_guard(&self) {
        let Some(g) = &self.guard else { return };
        let mask = g.tripped.get() | self.learn_trips(g);
        if mask != g.tripped.get() {
            self.set_tripped(g, mask, false);
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
    pub(super) fn commit_trips(
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
}
