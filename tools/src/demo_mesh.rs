//! `make demo`, second part: the brake across two gateway replicas.
//!
//! Two Envoys (`--concurrency 1` each, the shipped `envoy/envoy.yaml` and its plugin
//! configuration) stand in front of the same two shops: `stable` approves 99.4 % of its payment
//! authorizations, the `canary` 91.2 % (the payment-code fall-through: HTTP 200, declined). An
//! uneven balancer sends 90 % of the orders to replica A and 10 % to replica B. The same traffic
//! (same sessions, same orders, same pace) runs twice:
//!
//! 1. **local only**: the brake (`guard`, approval ratio, alpha 0.01, 100 samples a side) judges
//!    each replica's own counters. A, which sees most orders, trips; B, which sees a tenth of
//!    them, needs ten times as long to gather the same evidence, and keeps serving the canary.
//! 2. **pooled**: the same brake with `guard.pool`: a real Prometheus scrapes both replicas every
//!    second, and each replica asks it every second for the evidence of both. Both trip on the
//!    pooled evidence (or adopt the other's trip) within about a scrape and an interval.
//!
//! For each run and replica: when it tripped (its admin `/stats/prometheus` gauge
//! `canary_guard_tripped{service="checkout",version="canary"}`, polled every 100 ms) and how many
//! orders the canary served through it (counted on the client side: responses tagged
//! `x-canary-version: canary` through that replica; a run goes on two flush intervals past its
//! last trip, so that a tripped replica's count is all it served before its brake held — its
//! main-thread VM and its worker's VM both tick, and the one that did not trip learns the trip
//! on its next tick).

use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sticky_canary::brake::DEFAULT_MIN_SAMPLES;
use sticky_canary::plan::Plan;
use sticky_canary_cli::prom::Scrape;
use sticky_canary_harness::brake::{self, approval_guard, guarded_plugin};
use sticky_canary_harness::envoy::{Envoy, EnvoyConfig};
use sticky_canary_harness::http::{send_once, Request, Upstream};
use sticky_canary_harness::prometheus::Prometheus;
use sticky_canary_harness::shop::payments;
use sticky_canary_harness::Keys;

/// The plugin's counter flush (and the brake's tick).
pub const FLUSH_MS: u64 = 500;
/// `guard.pool.interval_ms`: each replica asks Prometheus every second.
pub const POOL_INTERVAL_MS: u64 = 1000;
/// `guard.pool.timeout_ms`.
pub const POOL_TIMEOUT_MS: u64 = 500;
/// Prometheus's scrape interval (the harness's).
pub const SCRAPE_MS: u64 = 1000;
/// The brake's alpha.
pub const ALPHA: f64 = 0.01;
/// Declined authorizations per mille: canary (approvals 91.2 %) and stable (99.4 %).
const CANARY_DECLINED: u64 = 88;
const STABLE_DECLINED: u64 = 6;
/// How often the demo reads each replica's trip gauge.
const POLL: Duration = Duration::from_millis(100);
/// The replicas' names, in balancer order.
const NAMES: [&str; 2] = ["A", "B"];

#[derive(Clone, Debug)]
pub struct Options {
    /// Orders per second, paced, over both replicas.
    pub orders_per_second: f64,
    /// The canary's weight (percent of sessions).
    pub canary_percent: u32,
    /// Percent of the orders the balancer sends to replica A (B gets the rest).
    pub share_a: u32,
    /// The longest each run lasts.
    pub cap: Duration,
    /// Progress on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            // Replica A sees 0.9 × 20 % × 60 ≈ 11 canary orders a second: 100 in about 10 s;
            // replica B about 1.2 a second: 100 only after ~80 s, past the cap.
            orders_per_second: 60.0,
            canary_percent: 20,
            share_a: 90,
            cap: Duration::from_secs(40),
            progress: true,
        }
    }
}

/// For tests: the same story, faster (A has its 100 canary orders within ~4 s; B not in 12 s).
pub fn quick_options() -> Options {
    Options {
        orders_per_second: 150.0,
        canary_percent: 20,
        share_a: 90,
        cap: Duration::from_secs(12),
        progress: false,
    }
}

/// How a replica's brake tripped, from its own log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// On its own counters (`guard tripped canary: check …`).
    Local,
    /// On the pooled evidence of every replica.
    Pooled,
    /// Adopted from the pool: another replica reported it tripped.
    Adopted,
}

/// One replica in one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Replica {
    /// `A` or `B`.
    pub name: String,
    /// Percent of the orders the balancer sent it.
    pub share: u32,
    /// Orders sent through it.
    pub orders: u64,
    /// Orders the canary served through it in the run: responses tagged
    /// `x-canary-version: canary`. The run goes on for two flush intervals after the last trip,
    /// so for a tripped replica these are all it served before its brake held.
    pub canary_orders: u64,
    /// Seconds from the run's first order to its trip gauge reading 1 (100 ms resolution).
    pub tripped_after: Option<f64>,
    /// Of `canary_orders`, those answered after its trip gauge showed: Envoy's main-thread VM
    /// and its worker's VM both tick, and the one that did not trip learns it from shared data
    /// on its next tick (one flush interval).
    pub canary_after_trip: u64,
    /// Seconds from the run's first order to the last canary response through it.
    pub last_canary: Option<f64>,
    pub how: Option<How>,
    /// For a trip on the pooled evidence: the canary orders the pool had counted (both replicas).
    pub pooled_canary_orders: Option<u64>,
    /// Its log line of the trip (after `sticky-canary: `).
    pub line: Option<String>,
}

/// One run of the traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub pooled: bool,
    pub replicas: Vec<Replica>,
    /// Orders sent, over both replicas.
    pub orders: u64,
    /// Requests that failed or did not answer 200.
    pub failed: u64,
    /// From the first order to the end of the run (every replica tripped, or the cap).
    pub seconds: f64,
    /// The cap, in seconds.
    pub cap: f64,
}

impl Run {
    /// Seconds between the first and the last trip, when every replica tripped.
    pub fn spread(&self) -> Option<f64> {
        let times: Option<Vec<f64>> = self.replicas.iter().map(|r| r.tripped_after).collect();
        let times = times?;
        let first = times.iter().copied().fold(f64::INFINITY, f64::min);
        let last = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (first.is_finite() && last.is_finite()).then_some(last - first)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub canary_percent: u32,
    pub share_a: u32,
    pub orders_per_second: f64,
    pub local: Run,
    pub pooled: Run,
    pub elapsed: Duration,
}

/// The plugin configuration of both runs: the shipped one (`envoy/envoy.yaml`), the canary at
/// `canary_percent`, counters flushed every 500 ms, and the brake on the approval ratio; with a
/// pool when `pooled` (its cluster `prometheus`; the local test off, the default with a pool).
pub fn plugin_config(canary_percent: u32, pooled: bool) -> Result<String, String> {
    // min_samples: the default (100 orders a side).
    let mut guard = approval_guard(None);
    if pooled {
        guard["pool"] = json!({"cluster": "prometheus", "interval_ms": POOL_INTERVAL_MS,
                               "timeout_ms": POOL_TIMEOUT_MS});
    }
    let text = guarded_plugin(canary_percent, FLUSH_MS, guard).to_string();
    Plan::from_json(text.as_bytes()).map_err(|e| format!("the demo's plugin config: {e}"))?;
    Ok(text)
}

/// Which replica order `i` goes to: a smooth weighted round robin (B gets every
/// `100 / (100 - share_a)`-th order).
fn replica_of(i: u64, share_a: u32) -> usize {
    let b = u64::from(100 - share_a.min(100));
    usize::from((i + 1) * b / 100 > i * b / 100)
}

fn tripped(envoy: &Envoy) -> bool {
    envoy
        .try_admin_get("/stats/prometheus?filter=canary_guard_tripped")
        .is_ok_and(|r| brake::tripped(&Scrape::parse(&r.text()), "canary") == 1.0)
}

/// The replica's trip line, and how it tripped.
fn trip_line(envoy: &Envoy) -> Option<(How, String, Option<u64>)> {
    let log = envoy.log();
    let line = log.lines().find_map(|l| {
        l.split_once("sticky-canary: guard tripped canary")
            .map(|(_, r)| format!("guard tripped canary{r}"))
    })?;
    let how = if line.contains("adopted from the pool") {
        How::Adopted
    } else if line.contains("on the pooled evidence") {
        How::Pooled
    } else {
        How::Local
    };
    // "(canary 83/91, stable …": the canary's approvals / orders the test judged.
    let pooled = (how == How::Pooled)
        .then(|| {
            let (_, rest) = line.split_once("(canary ")?;
            let figures = rest.split([',', ' ']).next()?;
            let (_, n) = figures.split_once('/')?;
            n.parse().ok()
        })
        .flatten();
    Some((how, line, pooled))
}

/// Both replicas, in front of `upstreams`; with a `prometheus` cluster at `pool` if given.
fn replicas(
    plugin: &str,
    upstreams: &[(&str, SocketAddr)],
    pool: Option<SocketAddr>,
) -> Result<Vec<Envoy>, String> {
    NAMES
        .iter()
        .map(|name| {
            let mut cfg = EnvoyConfig::for_test(plugin, upstreams, "stable");
            if let Some(addr) = pool {
                cfg.add_module_cluster("prometheus", addr);
            }
            // `Envoy::start`: `--concurrency 1`.
            Envoy::start(&cfg).map_err(|f| format!("replica {name}: {f}"))
        })
        .collect()
}

/// Waits until Prometheus has scraped every replica once (`up == 1`), so that the pooled run
/// measures the pool rather than Prometheus's target discovery.
fn await_scraped(prom: &Prometheus, n: usize, deadline: Instant) -> Result<(), String> {
    loop {
        let up = prom
            .api("/api/v1/query?query=up")
            .ok()
            .and_then(|d| d["result"].as_array().cloned())
            .map_or(0, |r| {
                r.iter()
                    .filter(|s| s["value"][1].as_str() == Some("1"))
                    .count()
            });
        if up >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "Prometheus did not scrape the {n} replicas in time ({up} up); its log:\n{}",
                prom.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends the paced orders over both replicas until both tripped or the cap, watching the trips.
fn drive(envoys: &[Envoy], opts: &Options, pooled: bool) -> Run {
    let mut replicas: Vec<Replica> = NAMES
        .iter()
        .enumerate()
        .map(|(k, name)| Replica {
            name: (*name).to_string(),
            share: if k == 0 {
                opts.share_a.min(100)
            } else {
                100 - opts.share_a.min(100)
            },
            orders: 0,
            canary_orders: 0,
            tripped_after: None,
            canary_after_trip: 0,
            last_canary: None,
            how: None,
            pooled_canary_orders: None,
            line: None,
        })
        .collect();
    let label = if pooled { "pooled" } else { "local only" };
    let mut keys = Keys::new(2026);
    let mut failed = 0u64;
    let pace = Duration::from_secs_f64(1.0 / opts.orders_per_second.max(1.0));
    let started = Instant::now();
    let mut last_poll = started;
    let mut last_report = started;
    let mut i = 0u64;
    // Once every replica tripped, two more flush intervals, for every VM to hold the brake.
    let settle = Duration::from_millis(2 * FLUSH_MS);
    let mut all_tripped: Option<Instant> = None;
    while started.elapsed() < opts.cap && all_tripped.is_none_or(|t| t.elapsed() < settle) {
        // The order's slot: orders go out at a steady pace (catching up after a slow one).
        let due = started + pace * u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let k = replica_of(i, opts.share_a);
        let key = keys.next().unwrap_or_default();
        let req = Request::new("POST", &format!("/checkout/{i}"))
            .header("cookie", &format!("session_id={key}"));
        let r = &mut replicas[k];
        r.orders += 1;
        match send_once(envoys[k].listener(), &req) {
            Ok(resp) if resp.status == 200 => {
                if resp.header_str("x-canary-version") == Some("canary") {
                    r.canary_orders += 1;
                    r.last_canary = Some(started.elapsed().as_secs_f64());
                    if r.tripped_after.is_some() {
                        r.canary_after_trip += 1;
                    }
                }
            }
            _ => failed += 1,
        }
        i += 1;
        if last_poll.elapsed() >= POLL {
            last_poll = Instant::now();
            for (r, envoy) in replicas.iter_mut().zip(envoys) {
                if r.tripped_after.is_none() && tripped(envoy) {
                    let t = started.elapsed().as_secs_f64();
                    r.tripped_after = Some(t);
                    if opts.progress {
                        eprintln!(
                            "  {label}: replica {} tripped at {t:.1} s after {} canary orders",
                            r.name, r.canary_orders
                        );
                    }
                }
            }
            if all_tripped.is_none() && replicas.iter().all(|r| r.tripped_after.is_some()) {
                all_tripped = Some(Instant::now());
            }
        }
        if opts.progress && last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "  {label}: {:.0} s, {i} orders, canary orders A {} / B {}",
                started.elapsed().as_secs_f64(),
                replicas[0].canary_orders,
                replicas[1].canary_orders
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for (r, envoy) in replicas.iter_mut().zip(envoys) {
        if let Some((how, line, pooled_n)) = trip_line(envoy) {
            r.how = Some(how);
            r.line = Some(line);
            r.pooled_canary_orders = pooled_n;
        }
    }
    Run {
        pooled,
        replicas,
        orders: i,
        failed,
        seconds,
        cap: opts.cap.as_secs_f64(),
    }
}

/// Runs both parts. Every process (Envoys, Prometheus, shops) stops when this returns.
pub fn run(opts: &Options) -> Result<Outcome, String> {
    let started = Instant::now();
    let canary = Upstream::start_with("canary", None, payments("canary", CANARY_DECLINED, 0))
        .map_err(|e| format!("start the canary shop: {e}"))?;
    let stable = Upstream::start_with("stable", None, payments("stable", STABLE_DECLINED, 0))
        .map_err(|e| format!("start the stable shop: {e}"))?;
    let upstreams = [("canary", canary.addr()), ("stable", stable.addr())];

    if opts.progress {
        eprintln!("  local only: two replicas, each judging its own counters");
    }
    let local = {
        let envoys = replicas(
            &plugin_config(opts.canary_percent, false)?,
            &upstreams,
            None,
        )?;
        drive(&envoys, opts, false)
    };

    if opts.progress {
        eprintln!(
            "  pooled: Prometheus scraping both replicas every second, each asking it every second"
        );
    }
    let pooled = {
        let deadline = Instant::now() + Duration::from_secs(30);
        let prom = Prometheus::start(&[], None, deadline);
        let envoys = replicas(
            &plugin_config(opts.canary_percent, true)?,
            &upstreams,
            Some(prom.addr()),
        )?;
        let admins: Vec<SocketAddr> = envoys.iter().map(Envoy::admin).collect();
        prom.set_targets(&admins);
        await_scraped(&prom, admins.len(), deadline)?;
        drive(&envoys, opts, true)
    };
    Ok(Outcome {
        canary_percent: opts.canary_percent,
        share_a: opts.share_a,
        orders_per_second: opts.orders_per_second,
        local,
        pooled,
        elapsed: started.elapsed(),
    })
}

/// Approvals in percent of a shop declining `declined` per mille.
fn approval_percent(declined: u64) -> f64 {
    (1000 - declined.min(1000)) as f64 / 10.0
}

/// A replica's cell of the table.
pub fn cell(r: &Replica, cap: f64) -> String {
    match r.tripped_after {
        Some(t) => format!("tripped at {t:.1} s, {} canary orders", r.canary_orders),
        None => format!(
            "not tripped in {cap:.0} s: {} canary orders and counting",
            r.canary_orders
        ),
    }
}

fn how_text(r: &Replica) -> String {
    match (r.how, r.pooled_canary_orders) {
        (Some(How::Pooled), Some(n)) => format!(
            "replica {} on the pooled evidence ({n} canary orders of both)",
            r.name
        ),
        (Some(How::Pooled), None) => format!("replica {} on the pooled evidence", r.name),
        (Some(How::Adopted), _) => format!("replica {} adopted the trip from the pool", r.name),
        (Some(How::Local), _) => format!("replica {} on its own counters", r.name),
        (None, _) => format!("replica {} did not trip", r.name),
    }
}

/// What the two runs show, in a sentence or two, from the figures.
pub fn meaning(o: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    let (la, lb) = (&o.local.replicas[0], &o.local.replicas[1]);
    let local = match (la.tripped_after, lb.tripped_after) {
        (Some(a), None) => format!(
            "Local only, the quiet replica B ({} % of the orders) never gathers enough evidence: \
             A stopped the canary at {a:.1} s, B was still serving it at {:.0} s ({} canary \
             orders).",
            lb.share, o.local.cap, lb.canary_orders
        ),
        (Some(a), Some(b)) => format!(
            "Local only, each replica waits for its own evidence: A tripped at {a:.1} s, B at \
             {b:.1} s ({:.1} s later).",
            b - a
        ),
        (None, _) => format!(
            "Local only, replica A did not trip in {:.0} s.",
            o.local.cap
        ),
    };
    out.push(local);
    let (pa, pb) = (&o.pooled.replicas[0], &o.pooled.replicas[1]);
    let and_counting = if lb.tripped_after.is_none() {
        " and counting"
    } else {
        ""
    };
    let pooled = match o.pooled.spread() {
        Some(spread) => format!(
            "Pooled, both stop within {spread:.1} s of each other (about a scrape, {:.0} s, + a \
             pool interval, {:.0} s, at most): B served the canary {} times instead of {}{and_counting}; \
             A {} times ({} local only){}.",
            SCRAPE_MS as f64 / 1000.0,
            POOL_INTERVAL_MS as f64 / 1000.0,
            pb.canary_orders,
            lb.canary_orders,
            pa.canary_orders,
            la.canary_orders,
            if pa.canary_orders > la.canary_orders {
                ": the pool judges Prometheus's copy, a scrape behind"
            } else {
                ""
            }
        ),
        None => format!(
            "Pooled, not every replica tripped in {:.0} s.",
            o.pooled.cap
        ),
    };
    out.push(pooled);
    out
}

/// Prints the mesh part as `make demo` shows it.
pub fn print(o: &Outcome, out: &mut dyn Write) -> std::io::Result<()> {
    let (a, b) = (o.share_a.min(100), 100 - o.share_a.min(100));
    writeln!(
        out,
        "\nBrake across two gateway replicas ({a} % / {b} % of the orders), payment approvals {:.1} % → {:.1} %",
        approval_percent(STABLE_DECLINED),
        approval_percent(CANARY_DECLINED)
    )?;
    writeln!(
        out,
        "(canary {} % of sessions, {:.0} orders/s, alpha {ALPHA}, min_samples {DEFAULT_MIN_SAMPLES}; \
         canary orders: responses tagged x-canary-version: canary, per replica)\n",
        o.canary_percent, o.orders_per_second
    )?;
    let col = [&o.local, &o.pooled]
        .iter()
        .map(|run| cell(&run.replicas[0], run.cap).chars().count())
        .max()
        .unwrap_or(0)
        .max(40)
        + 4;
    let head_a = format!("replica A ({a} %)");
    writeln!(out, "{:<13}{head_a:<col$}replica B ({b} %)", "")?;
    for (label, run) in [("local only", &o.local), ("pooled", &o.pooled)] {
        writeln!(
            out,
            "{label:<13}{:<col$}{}",
            cell(&run.replicas[0], run.cap),
            cell(&run.replicas[1], run.cap)
        )?;
    }
    let how: Vec<String> = o.pooled.replicas.iter().map(how_text).collect();
    writeln!(out, "\nPooled trips: {}.", how.join("; "))?;
    for line in meaning(o) {
        writeln!(out, "{line}")?;
    }
    let failed = o.local.failed + o.pooled.failed;
    writeln!(
        out,
        "Orders: {} local only, {} pooled ({failed} failed). Finished in {:.1} s; both replicas, \
         Prometheus and both shops stopped.",
        o.local.orders,
        o.pooled.orders,
        o.elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balancer_sends_a_tenth_to_b() {
        let b: usize = (0..1000).map(|i| replica_of(i, 90)).sum();
        assert_eq!(b, 100);
        assert_eq!((0..10).map(|i| replica_of(i, 90)).sum::<usize>(), 1);
    }
}
