//! The pooled brake in the filter (`guard.pool`): the lease that elects one worker VM per Envoy,
//! the evidence gauges it publishes, the one query per interval, and what an answer does.
//!
//! Per tick, in every worker VM: one shared-data read of the lease (and one write while this VM
//! holds it). The holder also reads the counters of every version, publishes this Envoy's
//! evidence (counters minus their values when this Envoy joined the generation) where it
//! changed, and sends the query when it is due. Nothing here runs on the request path.
//!
//! An answer only ever adds trips: judged harmful on the pooled figures, or reported tripped by
//! another Envoy of the same generation (adoption). Every failure — no cluster, no connection,
//! a timeout, an HTTP error, a body that is not an answer — is counted by outcome, warned once
//! per change of outcome, and changes nothing else.

use super::brake::Found;
use super::service::{bit, GuardState, Service};
use super::{Host, Level, Map};
use crate::brake::pool::answer::AnswerError;
use crate::brake::pool::lease::{self, Lease};
use crate::brake::pool::{Outcome, Pool, Pooled, MAX_ANSWER_BYTES};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, Ordering};

/// Plugin instances created in this VM so far (a part of each instance's lease id).
static INSTANCES: AtomicU32 = AtomicU32::new(0);

/// A query still unanswered after its timeout and this much longer is forgotten (the host
/// always answers a call, at the latest with its timeout; this only guards against a lost one).
const LOST_AFTER_MS: u64 = 10_000;

/// The run-time state of `guard.pool` in one worker VM.
pub(super) struct PoolState {
    lease_key: String,
    start_key: String,
    /// This plugin instance's id in the lease.
    me: u64,
    /// How long a lease lasts without renewal: three ticks.
    ttl_ms: u64,
    /// This VM holds the lease (as of its last tick).
    leader: Cell<bool>,
    /// When the next query may go out; 0 until this VM first holds the lease.
    next_ms: Cell<u64>,
    /// The query in flight: host token and when it was sent.
    in_flight: Cell<Option<(u32, u64)>>,
    /// The counters of every (version, series) when this Envoy joined the generation.
    start: RefCell<Vec<u64>>,
    /// The evidence last published, per (version, series) (`u64::MAX`: not yet).
    published: RefCell<Vec<u64>>,
    /// The previous answer's figures, to see a figure go down.
    previous: RefCell<Option<Pooled>>,
    /// The outcome of the last query, for one warn line per change.
    outcome: Cell<Option<Outcome>>,
    /// Whether the last answer's figures went down (one info line per change).
    went_down: Cell<bool>,
    /// Random draws for the jitter.
    seed: Cell<u64>,
}

/// splitmix64: one draw from `state`.
fn draw(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl PoolState {
    pub(super) fn new(service: &str, random: Option<[u8; 16]>, now_ms: u64, tick_ms: u64) -> Self {
        // Without randomness (never under Envoy) the clock still tells VMs apart well enough
        // for a lease whose writes are compare-and-swap anyway.
        let r = random.unwrap_or_default();
        let mut a = [0u8; 8];
        a.copy_from_slice(&r[..8]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&r[8..]);
        // The plugin instances of one VM differ by their number (and VMs by their randomness).
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let me = (u64::from_le_bytes(a) ^ now_ms.rotate_left(17) ^ u64::from(n) << 48) | 1;
        PoolState {
            lease_key: lease::lease_key(service),
            start_key: lease::start_key(service),
            me,
            ttl_ms: tick_ms.saturating_mul(3).max(1000),
            leader: Cell::new(false),
            next_ms: Cell::new(0),
            in_flight: Cell::new(None),
            start: RefCell::new(Vec::new()),
            published: RefCell::new(Vec::new()),
            previous: RefCell::new(None),
            outcome: Cell::new(None),
            went_down: Cell::new(false),
            seed: Cell::new(u64::from_le_bytes(b) ^ me),
        }
    }

    /// The token of the query in flight.
    pub(super) fn awaits(&self, token: u32) -> bool {
        self.in_flight.get().is_some_and(|(t, _)| t == token)
    }

    /// Whether this VM holds the lease (as of its last tick).
    pub(super) fn leads(&self) -> bool {
        self.leader.get()
    }
}

impl<H: Host> Service<H> {
    /// Every counter a check reads, for every version, Envoy-wide (`NaN` where unreadable):
    /// `[version][series]`; versions `wanted` says no to are left empty.
    pub(super) fn read_counts(
        &self,
        g: &GuardState,
        wanted: &dyn Fn(usize) -> bool,
    ) -> Vec<Vec<f64>> {
        g.ids
            .iter()
            .enumerate()
            .map(|(v, row)| {
                if !wanted(v) {
                    return Vec::new();
                }
                row.iter()
                    .map(|ids| {
                        ids.iter()
                            .try_fold(0u64, |sum, id| {
                                self.host.metric(*id).ok().map(|n| sum.saturating_add(n))
                            })
                            // A counter that cannot be read judges nothing.
                            .map_or(f64::NAN, |n| n as f64)
                    })
                    .collect()
            })
            .collect()
    }

    /// At configure time: the zero of this Envoy's evidence for the generation (kept in shared
    /// data, so that every worker and every reconfiguration of one generation agree), and the
    /// generation gauge.
    pub(super) fn restore_pool(&self, g: &GuardState, p: &PoolState, pool: &Pool) {
        if let Some(&id) = self
            .metrics
            .guard_generation
            .first()
            .and_then(|s| self.ids.get(*s))
        {
            let r = self.host.record_metric(id, u64::from(pool.generation));
            self.warn_on_error("set", crate::brake::pool::GENERATION, r);
        }
        let len = g.ids.iter().map(Vec::len).sum::<usize>();
        let stored = self.host.shared_data(&p.start_key).ok().flatten();
        let start = match stored
            .as_ref()
            .and_then(|(b, _)| lease::decode_start(b, g.generation, len))
        {
            Some(start) => start,
            None => {
                let now: Vec<u64> = self
                    .read_counts(g, &|_| true)
                    .into_iter()
                    .flatten()
                    .map(|x| if x.is_finite() { x as u64 } else { 0 })
                    .collect();
                let record = lease::encode_start(g.generation, &now);
                let cas = stored.map_or(0, |(_, c)| c);
                match self.host.set_shared_data(&p.start_key, &record, cas) {
                    Ok(()) => now,
                    // Another worker joined first: its zero is the Envoy's.
                    Err(_) => self
                        .host
                        .shared_data(&p.start_key)
                        .ok()
                        .flatten()
                        .and_then(|(b, _)| lease::decode_start(&b, g.generation, len))
                        .unwrap_or(now),
                }
            }
        };
        *p.start.borrow_mut() = start;
        *p.published.borrow_mut() = vec![u64::MAX; len];
    }

    /// The pool's part of a tick: the lease, the evidence gauges and the query. Returns this
    /// Envoy's counters when it read them (the holder does), for the local test.
    pub(super) fn pool_tick(
        &self,
        g: &GuardState,
        p: &PoolState,
        pool: &Pool,
    ) -> Option<Vec<Vec<f64>>> {
        let now = self.host.now_ms();
        let stored = self.host.shared_data(&p.lease_key).ok().flatten();
        let current = stored.as_ref().and_then(|(b, _)| Lease::decode(b));
        let mut leader = false;
        if Lease::may_take(current.as_ref(), p.me, now) {
            let last = current.map_or(0, |l| l.last_query_ms);
            let renewed = Lease {
                holder: p.me,
                expires_ms: now.saturating_add(p.ttl_ms),
                last_query_ms: last,
            };
            let cas = stored.as_ref().map_or(0, |(_, c)| *c);
            leader = self
                .host
                .set_shared_data(&p.lease_key, &renewed.encode(), cas)
                .is_ok();
            if leader && !p.leader.get() {
                // Newly elected: keep the interval since the last query of any holder, and
                // start at a random phase so that a fleet does not query in lock-step.
                let interval = u64::from(pool.interval_ms);
                let phase = draw(&p.seed) % interval;
                p.next_ms
                    .set(last.saturating_add(interval).max(now.saturating_add(phase)));
            }
        }
        p.leader.set(leader);
        if !leader {
            return None;
        }
        let counts = self.read_counts(g, &|_| true);
        self.publish_evidence(p, &counts);
        if let Some((_, sent)) = p.in_flight.get() {
            if now.saturating_sub(sent) > u64::from(pool.timeout_ms).saturating_add(LOST_AFTER_MS) {
                p.in_flight.set(None);
            }
        }
        if p.in_flight.get().is_none() && now >= p.next_ms.get() {
            self.send_query(p, pool, now);
        }
        Some(counts)
    }

    /// This Envoy's evidence: each counter minus its value when the Envoy joined the generation,
    /// written where it changed.
    fn publish_evidence(&self, p: &PoolState, counts: &[Vec<f64>]) {
        let start = p.start.borrow();
        let mut published = p.published.borrow_mut();
        let slots = self.metrics.guard_evidence.iter().flatten();
        for (i, (count, slot)) in counts.iter().flatten().zip(slots).enumerate() {
            if !count.is_finite() {
                continue;
            }
            let evidence = (*count as u64).saturating_sub(start.get(i).copied().unwrap_or(0));
            if published.get(i) == Some(&evidence) {
                continue;
            }
            if let Some(&id) = self.ids.get(*slot) {
                if self.host.record_metric(id, evidence).is_ok() {
                    if let Some(x) = published.get_mut(i) {
                        *x = evidence;
                    }
                }
            }
        }
    }

    fn send_query(&self, p: &PoolState, pool: &Pool, now: u64) {
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "GET"),
            (":path", &pool.path),
            (":authority", &pool.authority),
            ("accept", "application/json"),
            ("user-agent", "sticky-canary"),
        ];
        if let Some(t) = &pool.token {
            headers.push(("authorization", t));
        }
        let interval = u64::from(pool.interval_ms);
        // The next one: a full interval later, plus up to a tenth of it.
        let jitter = draw(&p.seed) % (interval / 10).max(1);
        p.next_ms
            .set(now.saturating_add(interval).saturating_add(jitter));
        // The lease carries the time of the last query, for the next holder (this VM renewed
        // it a moment ago in this tick, so the write needs no compare-and-swap).
        let renewed = Lease {
            holder: p.me,
            expires_ms: now.saturating_add(p.ttl_ms),
            last_query_ms: now,
        };
        let _ = self
            .host
            .set_shared_data(&p.lease_key, &renewed.encode(), 0);
        match self
            .host
            .http_call(&pool.cluster, &headers, pool.timeout_ms)
        {
            Ok(token) => p.in_flight.set(Some((token, now))),
            Err(e) => self.pool_outcome(p, Outcome::Unreachable, &|| {
                format!("cannot send to cluster {:?} ({e:?})", pool.cluster)
            }),
        }
    }

    /// Counts an outcome; one warn line when it differs from the previous one.
    fn pool_outcome(&self, p: &PoolState, outcome: Outcome, detail: &dyn Fn() -> String) {
        if let Some(&id) = self
            .metrics
            .pool_queries
            .get(outcome.index())
            .and_then(|s| self.ids.get(*s))
        {
            self.increment_now(id, 1);
        }
        let before = p.outcome.replace(Some(outcome));
        if before != Some(outcome) && (before.is_some() || outcome != Outcome::Ok) {
            let level = if outcome == Outcome::Ok {
                Level::Info
            } else {
                Level::Warn
            };
            let what = if outcome == Outcome::Ok {
                "answers again; pooled judging resumes".to_string()
            } else {
                format!(
                    "{}: {}; no pooled judging until it answers",
                    outcome.as_str(),
                    detail()
                )
            };
            self.host.log(
                level,
                &format!("sticky-canary: guard pool of {}: {what}", self.plan.service),
            );
        }
    }

    /// The answer to the query in flight: `headers` pairs (0: the call failed) and a body of
    /// `body_size` bytes. Judges the pooled figures and adopts other Envoys' trips.
    pub(super) fn pool_answer(
        &self,
        g: &GuardState,
        p: &PoolState,
        pool: &Pool,
        headers: usize,
        body_size: usize,
    ) {
        let sent = p.in_flight.take().map_or(0, |(_, at)| at);
        let now = self.host.now_ms();
        let late = now.saturating_sub(sent) >= u64::from(pool.timeout_ms);
        let Some(guard) = &self.plan.guard else {
            return;
        };
        let versions: Vec<&str> = self.plan.versions.iter().map(|v| v.name.as_str()).collect();
        let pooled = self.classify(headers, body_size, late).and_then(|body| {
            match Pooled::read(&body, &versions, &guard.labels) {
                Ok(pooled) => Ok(pooled),
                Err(e @ AnswerError::Status(_)) => Err((Outcome::HttpError, e.to_string())),
                Err(e) => Err((Outcome::BadAnswer, e.to_string())),
            }
        });
        let pooled = match pooled {
            Ok(pooled) => pooled,
            Err((outcome, detail)) => return self.pool_outcome(p, outcome, &|| detail.clone()),
        };
        self.pool_outcome(p, Outcome::Ok, &String::new);
        let down = p
            .previous
            .borrow()
            .as_ref()
            .is_some_and(|before| pooled.went_down_from(before));
        if down != p.went_down.replace(down) && down {
            self.host.log(
                Level::Info,
                &format!(
                    "sticky-canary: guard pool of {}: a pooled figure went down (an Envoy left \
                     or restarted?); such answers judge nothing",
                    self.plan.service
                ),
            );
        }
        // Adoption first: another Envoy of this generation reports the version tripped. Then
        // the pooled figures judge the other canaries, unless a figure went down.
        let mask = g.tripped.get();
        let adopt = |c: usize| pooled.tripped.get(c).copied().filter(|n| *n >= 1.0);
        let mut found = Vec::new();
        for c in 0..versions.len() {
            if let Some(n) = adopt(c).filter(|_| c != guard.baseline && mask & bit(c) == 0) {
                found.push((c, Found::Adopted(n)));
            }
        }
        if !down {
            let skip = |c: usize| mask & bit(c) != 0 || adopt(c).is_some();
            let read = |v: usize, i: usize| pooled.get(v, i);
            guard.judge_canaries(versions.len(), guard.alpha, &skip, &read, &mut |c, trip| {
                found.push((c, Found::Pooled(trip)))
            });
        }
        *p.previous.borrow_mut() = Some(pooled);
        if !found.is_empty() {
            self.commit_trips(g, guard, found);
        }
    }

    /// A 200's body, or what else the answer is: its outcome and a detail for the log.
    fn classify(
        &self,
        headers: usize,
        body_size: usize,
        late: bool,
    ) -> Result<Vec<u8>, (Outcome, String)> {
        if headers == 0 {
            let o = if late {
                Outcome::Timeout
            } else {
                Outcome::Unreachable
            };
            return Err((o, "no answer (connection failed or reset)".into()));
        }
        let map = self
            .host
            .header_map(Map::HttpCallResponse)
            .unwrap_or_default();
        let status = crate::formats::headers::pairs(&map)
            .find(|(n, _)| *n == b":status")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u16>().ok())
            .unwrap_or(0);
        if status != 200 {
            // Envoy's own replies: the router's timeout, no host, a failed connection.
            let head = self
                .host
                .http_call_body(body_size.min(64))
                .unwrap_or_default();
            let envoy_said = |p: &[u8]| head.starts_with(p);
            let o = if status == 504 && (late || envoy_said(b"upstream request timeout")) {
                Outcome::Timeout
            } else if status == 503
                && (envoy_said(b"upstream connect error") || envoy_said(b"no healthy upstream"))
            {
                Outcome::Unreachable
            } else {
                Outcome::HttpError
            };
            return Err((o, format!("HTTP status {status}")));
        }
        if body_size > MAX_ANSWER_BYTES {
            let e = AnswerError::TooLarge(body_size, MAX_ANSWER_BYTES);
            return Err((Outcome::BadAnswer, e.to_string()));
        }
        self.host
            .http_call_body(body_size)
            .map_err(|e| (Outcome::BadAnswer, format!("cannot read the body ({e:?})")))
    }
}

impl<H: Host> Service<H> {
    /// The plugin instance is done: a lease it holds is released, so that the next instance (a
    /// new configuration) takes over at its first tick rather than after the lease's time.
    pub(super) fn release_pool(&self, p: &PoolState) {
        if !p.leads() {
            return;
        }
        p.leader.set(false);
        if let Ok(Some((bytes, cas))) = self.host.shared_data(&p.lease_key) {
            if let Some(l) = Lease::decode(&bytes).filter(|l| l.holder == p.me) {
                let released = Lease { expires_ms: 0, ..l };
                let _ = self
                    .host
                    .set_shared_data(&p.lease_key, &released.encode(), cas);
            }
        }
    }
}
