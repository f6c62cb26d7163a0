//! The mesh part of `make simulate`: a **pooled** brake, where every Envoy of a fleet judges the
//! counters of all Envoys summed by Prometheus, against the **local-only** brake, where each
//! Envoy judges only its own. Pure simulation (no Envoy, no Prometheus); the test is the core's
//! [`Test`](sticky_canary::stats::sequential::Test) through [`Rule::Sequential`], the traffic,
//! the checks and the samplers are those of [`simulate`](crate::simulate).
//!
//! **Traffic.** `R` = 1 200 transactions a minute, 20 a second, as in [`simulate`]. Each
//! transaction goes to Envoy `i` with probability `s_i` (its share of the fleet's traffic) and
//! to the canary with probability `c`, else to the baseline; its outcome is drawn from the
//! check's model of that version. So the counts of second `t` are multinomial over
//! (Envoy, version), drawn one transaction at a time (20 draws a second whatever the fleet).
//! `C_iv(t)` is Envoy `i`'s cumulative count (trials, successes or sums) of version `v` at the
//! end of second `t`. Time runs on a grid of whole seconds; within a second: traffic, local
//! ticks, scrapes, queries.
//!
//! **Local-only** (today): every Envoy judges its own `C_iv(t)` every second (its tick) with the
//! test at `alpha`, once both of its sides have `min_samples`, and trips when it is harmful.
//! Nothing is shared: a trip in one Envoy changes nothing in the others.
//!
//! **Pooled**: Prometheus scrapes Envoy `i` every `scrape` seconds at its own fixed random phase
//! `φ_i` (uniform in 0 … scrape − 1); `σ_i(t)` is its last scrape ≤ t. The pooled figure of
//! version `v` is `P_v(t) = Σ_i C_iv(σ_i(t))`. Every Envoy queries Prometheus every `interval`
//! = 5 s at its own random phase; at each query it judges `P(t)` with the test at `alpha` (the
//! `min_samples` gate on the pooled sides) and trips if harmful. It also **adopts** a trip: if
//! some Envoy was already tripped at its last scrape (its tripped gauge is a scraped series),
//! the querying Envoy trips too. Under the null every transaction is drawn alike whatever its
//! Envoy and the scrape schedule does not depend on the outcomes, so `P(t)` is the cumulative
//! count of one growing sample and every query of every Envoy is a look at that one process:
//! by Ville's inequality the chance that *any* Envoy ever trips stays ≤ `alpha`, however many
//! Envoys (adoption only follows a trip).
//!
//! **Pooled + local**: the pooled brake at `alpha` and, in every Envoy, a local test at
//! `local_alpha` (alpha/10 in the tables) on its own counts every second; a trip of either
//! kind is adopted by the others. Bound: `alpha + N · local_alpha`.
//!
//! **What is measured.** *False trips*: the share of runs in which *any* Envoy of the fleet
//! trips within the horizon (1 000 s, one tick a second), with the 95 % Wilson interval, for an
//! A/A pair and at the null's boundary (approvals 99.4 % vs 99.1 %, limit 0.3 points), alpha
//! 0.01, `min_samples` 100. *Speed*: the canary is bad from its first transaction on (approvals
//! 99.4 % → 91.2 %, the demo's tax drift); seconds from that first bad transaction to **every**
//! Envoy tripped (and, local-only, to the *first* Envoy tripped: what a controller reading one
//! proxy's trip would see), median and 90th percentile over runs; a run in which some Envoy never
//! trips within the horizon counts as beyond it (shown as a share of runs).
//!
//! **Assumptions.** Scrapes, queries and gauges take no time beyond the grid of a second (a
//! scrape or a trip at second `t` is seen by a query at `t`); Prometheus sums the last scraped
//! samples of every target, none lost. The counts of a tripped Envoy keep growing as if it had
//! not tripped (the simulation measures when each Envoy decides, on one shared stream of
//! traffic, so that the three brakes are compared on the same runs). Every run is seeded by
//! `(seed, scenario, run)` ([`stream_seed`]): same seed, same numbers.

use serde::Serialize;
use sticky_canary::stats::drift_percent;

use crate::simulate::{
    approval, demo_tax_pools, mean_sd, opt, spread, stream_seed, tax_check, wilson, Check,
    Progress, Rate, Rng, Rule, Side, Spread, PER_MINUTE, TAX_SESSIONS,
};

// ---- fleets and settings ----------------------------------------------------------------------

/// A fleet of Envoys: the share of the traffic each one gets (summing to 1).
#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    pub label: String,
    pub shares: Vec<f64>,
}

impl Fleet {
    /// `n` Envoys with even shares.
    pub fn even(n: usize) -> Fleet {
        let n = n.max(1);
        Fleet {
            label: if n == 1 {
                "1 Envoy".to_string()
            } else {
                format!("{n} Envoys, even")
            },
            shares: vec![1.0 / n as f64; n],
        }
    }

    /// Uneven shares, in percent (80/15/5).
    pub fn uneven(percent: &[f64]) -> Fleet {
        let parts: Vec<String> = percent.iter().map(|p| format!("{p:.0}")).collect();
        Fleet {
            label: format!("{} Envoys, {}", percent.len(), parts.join("/")),
            shares: percent.iter().map(|p| p / 100.0).collect(),
        }
    }

    /// A sidecar mesh: `n` callers' sidecars with even shares.
    pub fn sidecars(n: usize) -> Fleet {
        let n = n.max(1);
        Fleet {
            label: format!("{n} sidecars × {:.0} %", 100.0 / n as f64),
            shares: vec![1.0 / n as f64; n],
        }
    }

    pub fn len(&self) -> usize {
        self.shares.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }
}

/// The fleets of the tables: 1, 3, 10 and 100 Envoys with even shares, 3 at 80/15/5, 2 at
/// 90/10, and a sidecar mesh of 50 callers with 2 % each.
pub fn fleets() -> Vec<Fleet> {
    vec![
        Fleet::even(1),
        Fleet::even(3),
        Fleet::even(10),
        Fleet::even(100),
        Fleet::uneven(&[80.0, 15.0, 5.0]),
        Fleet::uneven(&[90.0, 10.0]),
        Fleet::sidecars(50),
    ]
}

/// The brakes' settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Brakes {
    /// Alpha of the local-only brake and of the pooled test.
    pub alpha: f64,
    /// Alpha of the local test of "pooled + local".
    pub local_alpha: f64,
    /// Minimum per side (an Envoy's own sides for local tests, the pooled sides for pooled).
    pub min_samples: u32,
    /// Seconds between two queries of one Envoy to Prometheus.
    pub interval: u32,
}

/// The brakes of the tables: alpha 0.01, local alpha 0.001, `min_samples` (100 unless
/// `--min-samples`), a query every 5 s.
pub fn brakes(min_samples: u32) -> Brakes {
    Brakes {
        alpha: ALPHA,
        local_alpha: ALPHA / 10.0,
        min_samples,
        interval: INTERVAL,
    }
}

pub const ALPHA: f64 = 0.01;
/// The brake's default minimum per side.
pub const MIN_SAMPLES: u32 = 100;
/// Prometheus' scrape intervals studied (s).
pub const SCRAPES: [u32; 2] = [15, 5];
/// Seconds between two queries of one Envoy.
pub const INTERVAL: u32 = 5;
/// The canary shares studied.
pub const SHARES: [f64; 2] = [0.05, 0.20];

/// The sizes of the mesh studies.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sizes {
    /// Runs of a false-trip row, and of a row whose fleet has `large_fleet` Envoys or more.
    pub false_runs: usize,
    pub large_fleet_runs: usize,
    pub large_fleet: usize,
    /// Looks (seconds) of a false-trip run.
    pub false_looks: u32,
    /// Runs of a speed row and its horizon (s).
    pub speed_runs: usize,
    pub speed_horizon: u32,
}

impl Sizes {
    pub const FULL: Sizes = Sizes {
        false_runs: 1000,
        large_fleet_runs: 1000,
        large_fleet: 50,
        false_looks: 1000,
        speed_runs: 500,
        speed_horizon: 3600,
    };
    pub const QUICK: Sizes = Sizes {
        false_runs: 200,
        large_fleet_runs: 200,
        large_fleet: 50,
        false_looks: 1000,
        speed_runs: 100,
        speed_horizon: 3600,
    };

    fn false_runs_of(&self, fleet: &Fleet) -> usize {
        if fleet.len() >= self.large_fleet {
            self.large_fleet_runs
        } else {
            self.false_runs
        }
    }
}

// ---- one run ----------------------------------------------------------------------------------

/// When the Envoys of a fleet tripped under one brake: seconds from the first canary
/// transaction to the first Envoy tripped and to every Envoy tripped (`None`: not within the
/// horizon).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Trips {
    pub first: Option<f64>,
    pub every: Option<f64>,
}

/// One run of a fleet under the three brakes (the pooled ones once per scrape interval).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeshRun {
    pub local: Trips,
    /// Per scrape interval, in the order given.
    pub pooled: Vec<Trips>,
    pub pooled_local: Vec<Trips>,
}

/// How long a run goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Until every brake has tripped some Envoy (false trips), or the horizon.
    FirstTrip,
    /// Until every brake has tripped every Envoy (speed), or the horizon.
    EveryTrip,
}

/// The trips of one brake in one run.
struct Mode {
    tripped: Vec<bool>,
    count: usize,
    first: Option<u32>,
    every: Option<u32>,
    /// Some Envoy's tripped gauge, as last scraped, is 1.
    gauge: bool,
}

impl Mode {
    fn new(n: usize) -> Mode {
        Mode {
            tripped: vec![false; n],
            count: 0,
            first: None,
            every: None,
            gauge: false,
        }
    }

    fn is_tripped(&self, e: usize) -> bool {
        self.tripped.get(e).copied().unwrap_or(true)
    }

    fn trip(&mut self, e: usize, t: u32) {
        if let Some(x) = self.tripped.get_mut(e) {
            if !*x {
                *x = true;
                self.count += 1;
                self.first.get_or_insert(t);
                if self.count == self.tripped.len() {
                    self.every = Some(t);
                }
            }
        }
    }

    fn done(&self, until: Until) -> bool {
        match until {
            Until::FirstTrip => self.first.is_some(),
            Until::EveryTrip => self.every.is_some(),
        }
    }

    fn trips(&self, t0: f64) -> Trips {
        let s = |t: Option<u32>| t.map(|t| f64::from(t) - t0);
        Trips {
            first: s(self.first),
            every: s(self.every),
        }
    }
}

/// Envoys `0..n` bucketed by a random phase in `0..period`.
fn phases(n: usize, period: u32, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut buckets = vec![Vec::new(); period.max(1) as usize];
    for e in 0..n {
        let phase = rng.below(u64::from(period.max(1))) as usize;
        if let Some(b) = buckets.get_mut(phase) {
            b.push(e);
        }
    }
    buckets
}

fn add_delta(sum: &mut Side, new: Side, old: Side) {
    sum.n += new.n - old.n;
    sum.x += new.x - old.x;
    sum.q += new.q - old.q;
}

/// Prometheus at one scrape interval, and the two pooled brakes that query it.
struct Pool {
    scrape: u32,
    /// Envoys by scrape phase.
    buckets: Vec<Vec<usize>>,
    /// Each Envoy's (canary, baseline) counts at its last scrape.
    scraped: Vec<(Side, Side)>,
    /// Their sums: the pooled figure.
    sum: (Side, Side),
    /// Bumped when the pooled figure changes; the verdict of the pooled test on it, cached.
    version: u64,
    verdict: Option<(u64, bool)>,
    pooled: Mode,
    pooled_local: Mode,
}

impl Pool {
    fn harmful(&mut self, check: &Check, rule: &Rule) -> bool {
        match self.verdict {
            Some((v, h)) if v == self.version => h,
            _ => {
                let h = rule.rolls_back(check, self.sum.0, self.sum.1);
                self.verdict = Some((self.version, h));
                h
            }
        }
    }
}

/// One run: `fleet` serves 20 transactions a second, a `share` of them on the canary, for at
/// most `horizon` seconds; the local-only brake, and the pooled and pooled + local brakes at
/// each of `scrapes`, judge the same transactions. Draws, in order: the query phases, the
/// scrape phases of each scrape interval, then the traffic.
#[allow(clippy::too_many_arguments)]
pub fn mesh_run(
    check: &Check,
    fleet: &Fleet,
    share: f64,
    brakes: &Brakes,
    scrapes: &[u32],
    horizon: u32,
    until: Until,
    rng: &mut Rng,
) -> MeshRun {
    let n = fleet.len();
    let per_second = (PER_MINUTE / 60.0).round() as u32;
    let dt = 1.0 / f64::from(per_second);
    let rule = Rule::Sequential {
        alpha: brakes.alpha,
        min_samples: brakes.min_samples,
    };
    let local_rule = Rule::Sequential {
        alpha: brakes.local_alpha,
        min_samples: brakes.min_samples,
    };
    let interval = brakes.interval.max(1);
    let queries = phases(n, interval, rng);
    let mut pools: Vec<Pool> = scrapes
        .iter()
        .map(|&s| Pool {
            scrape: s.max(1),
            buckets: phases(n, s, rng),
            scraped: vec![(Side::default(), Side::default()); n],
            sum: (Side::default(), Side::default()),
            version: 0,
            verdict: None,
            pooled: Mode::new(n),
            pooled_local: Mode::new(n),
        })
        .collect();
    let even = fleet.shares.windows(2).all(|w| w[0] == w[1]);
    let cumulative: Vec<f64> = fleet
        .shares
        .iter()
        .scan(0.0, |acc, s| {
            *acc += s;
            Some(*acc)
        })
        .collect();
    let pick = |rng: &mut Rng| -> usize {
        if even {
            rng.below(n as u64) as usize
        } else {
            let u = rng.f64() * cumulative.last().copied().unwrap_or(1.0);
            cumulative.iter().position(|&c| u < c).unwrap_or(n - 1)
        }
    };
    // Each Envoy's (canary, baseline) counts; local tests: `local` at alpha (local-only),
    // `small` at local_alpha (the local part of pooled + local).
    let mut counts = vec![(Side::default(), Side::default()); n];
    let mut local = Mode::new(n);
    let mut small = vec![false; n];
    let mut touched = vec![false; n];
    let mut dirty: Vec<usize> = Vec::with_capacity(per_second as usize);
    let mut first_bad: Option<f64> = None;
    for t in 1..=horizon {
        for i in 0..per_second {
            let e = pick(rng);
            let Some((c, b)) = counts.get_mut(e) else {
                continue;
            };
            if rng.bernoulli(share) {
                check.canary.draw(1, c, rng);
                first_bad.get_or_insert(f64::from(t - 1) + f64::from(i + 1) * dt);
            } else {
                check.baseline.draw(1, b, rng);
            }
            if !touched[e] {
                touched[e] = true;
                dirty.push(e);
            }
        }
        // Local ticks: the judgement of unchanged counts is unchanged, so only the Envoys that
        // got transactions this second are judged again. Harmful at local_alpha implies
        // harmful at alpha (local_alpha < alpha), so the second test runs only after the first.
        for e in dirty.drain(..) {
            touched[e] = false;
            if local.is_tripped(e) && small[e] {
                continue;
            }
            let (c, b) = counts[e];
            if rule.rolls_back(check, c, b) {
                local.trip(e, t);
                if !small[e] && local_rule.rolls_back(check, c, b) {
                    small[e] = true;
                    pools.iter_mut().for_each(|p| p.pooled_local.trip(e, t));
                }
            }
        }
        for p in pools.iter_mut() {
            let Some(due) = p.buckets.get((t % p.scrape) as usize) else {
                continue;
            };
            for &e in due {
                let (c, b) = counts[e];
                let (oc, ob) = p.scraped[e];
                if c != oc || b != ob {
                    add_delta(&mut p.sum.0, c, oc);
                    add_delta(&mut p.sum.1, b, ob);
                    p.scraped[e] = (c, b);
                    p.version += 1;
                }
                p.pooled.gauge |= p.pooled.is_tripped(e);
                p.pooled_local.gauge |= p.pooled_local.is_tripped(e);
            }
        }
        if let Some(due) = queries.get((t % interval) as usize) {
            for &e in due {
                for p in pools.iter_mut() {
                    if p.pooled.is_tripped(e) && p.pooled_local.is_tripped(e) {
                        continue;
                    }
                    let harmful = p.harmful(check, &rule);
                    if !p.pooled.is_tripped(e) && (p.pooled.gauge || harmful) {
                        p.pooled.trip(e, t);
                    }
                    if !p.pooled_local.is_tripped(e) && (p.pooled_local.gauge || harmful) {
                        p.pooled_local.trip(e, t);
                    }
                }
            }
        }
        if local.done(until)
            && pools
                .iter()
                .all(|p| p.pooled.done(until) && p.pooled_local.done(until))
        {
            break;
        }
    }
    let t0 = first_bad.unwrap_or(0.0);
    MeshRun {
        local: local.trips(t0),
        pooled: pools.iter().map(|p| p.pooled.trips(t0)).collect(),
        pooled_local: pools.iter().map(|p| p.pooled_local.trips(t0)).collect(),
    }
}

// ---- false trips ------------------------------------------------------------------------------

/// A rate of a pooled brake at one scrape interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ScrapeRate {
    pub scrape: u32,
    pub rate: Rate,
}

/// One false-trip row: runs in which any Envoy of the fleet tripped.
#[derive(Clone, Debug, Serialize)]
pub struct FalseRow {
    pub check: String,
    /// "A/A" or "boundary".
    pub truth: String,
    pub share: f64,
    pub fleet: Fleet,
    pub runs: usize,
    pub looks: u32,
    pub brakes: Brakes,
    pub local: Rate,
    /// The union bound of the local-only brake, N · alpha (capped at 1).
    pub local_bound: f64,
    pub pooled: Vec<ScrapeRate>,
    pub pooled_local: Vec<ScrapeRate>,
    /// alpha + N · local_alpha (capped at 1).
    pub pooled_local_bound: f64,
}

/// The false-trip rates of one (check, truth, share, fleet): `runs` runs of `looks` seconds.
#[allow(clippy::too_many_arguments)]
pub fn false_trips(
    id: u64,
    seed: u64,
    runs: usize,
    looks: u32,
    check: &Check,
    truth: &str,
    share: f64,
    fleet: &Fleet,
    brakes: &Brakes,
    scrapes: &[u32],
    progress: Progress,
) -> FalseRow {
    let what = format!(
        "mesh false trips {truth} {:.0} % {}",
        share * 100.0,
        fleet.label
    );
    let mut local = 0;
    let mut pooled = vec![0; scrapes.len()];
    let mut pooled_local = vec![0; scrapes.len()];
    for run in 0..runs {
        let mut rng = Rng::new(stream_seed(seed, id, run as u64));
        let r = mesh_run(
            check,
            fleet,
            share,
            brakes,
            scrapes,
            looks,
            Until::FirstTrip,
            &mut rng,
        );
        local += usize::from(r.local.first.is_some());
        for (k, tr) in pooled.iter_mut().zip(&r.pooled) {
            *k += usize::from(tr.first.is_some());
        }
        for (k, tr) in pooled_local.iter_mut().zip(&r.pooled_local) {
            *k += usize::from(tr.first.is_some());
        }
        if (run + 1) % 100 == 0 || run + 1 == runs {
            progress(&what, run + 1, runs);
        }
    }
    let rates = |v: Vec<usize>| -> Vec<ScrapeRate> {
        scrapes
            .iter()
            .zip(v)
            .map(|(&scrape, k)| ScrapeRate {
                scrape,
                rate: wilson(k, runs),
            })
            .collect()
    };
    let n = fleet.len() as f64;
    FalseRow {
        check: check.label.to_string(),
        truth: truth.to_string(),
        share,
        fleet: fleet.clone(),
        runs,
        looks,
        brakes: *brakes,
        local: wilson(local, runs),
        local_bound: (n * brakes.alpha).min(1.0),
        pooled: rates(pooled),
        pooled_local: rates(pooled_local),
        pooled_local_bound: (brakes.alpha + n * brakes.local_alpha).min(1.0),
    }
}

/// Every false-trip row: the approval ratio's A/A pair (99.4 % both) and boundary (99.1 %
/// against 99.4 %, limit 0.3 points) × canary 5 % and 20 % × every fleet of [`fleets`].
pub fn false_trip_study(
    seed: u64,
    sizes: &Sizes,
    brakes: &Brakes,
    progress: Progress,
) -> Vec<FalseRow> {
    let mut rows = Vec::new();
    let mut id = 5000;
    for (check, truth) in [(approval(0.994), "A/A"), (approval(0.991), "boundary")] {
        for share in SHARES {
            for fleet in fleets() {
                id += 1;
                rows.push(false_trips(
                    id,
                    seed,
                    sizes.false_runs_of(&fleet),
                    sizes.false_looks,
                    &check,
                    truth,
                    share,
                    &fleet,
                    brakes,
                    &SCRAPES,
                    progress,
                ));
            }
        }
    }
    rows
}

// ---- speed ------------------------------------------------------------------------------------

/// Seconds to every Envoy tripped by a pooled brake at one scrape interval.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ScrapeSpread {
    pub scrape: u32,
    pub every: Spread,
}

/// One speed row: seconds from the first bad canary transaction.
#[derive(Clone, Debug, Serialize)]
pub struct SpeedRow {
    pub check: String,
    pub change: String,
    pub share: f64,
    pub fleet: Fleet,
    pub runs: usize,
    pub horizon: u32,
    pub brakes: Brakes,
    /// Local-only: the first Envoy tripped (what a controller reading one proxy sees), and
    /// every Envoy tripped.
    pub local_first: Spread,
    pub local_every: Spread,
    pub pooled_every: Vec<ScrapeSpread>,
    pub pooled_local_every: Vec<ScrapeSpread>,
}

/// The speed of one (bad canary, share, fleet): `runs` runs of at most `horizon` seconds.
#[allow(clippy::too_many_arguments)]
pub fn speed(
    id: u64,
    seed: u64,
    runs: usize,
    horizon: u32,
    (check, change): (&Check, &str),
    share: f64,
    fleet: &Fleet,
    brakes: &Brakes,
    scrapes: &[u32],
    progress: Progress,
) -> SpeedRow {
    let what = format!(
        "mesh speed {} {:.0} % {}",
        check.label,
        share * 100.0,
        fleet.label
    );
    let mut results = Vec::with_capacity(runs);
    for run in 0..runs {
        let mut rng = Rng::new(stream_seed(seed, id, run as u64));
        results.push(mesh_run(
            check,
            fleet,
            share,
            brakes,
            scrapes,
            horizon,
            Until::EveryTrip,
            &mut rng,
        ));
        if (run + 1) % 100 == 0 || run + 1 == runs {
            progress(&what, run + 1, runs);
        }
    }
    let per_scrape = |get: fn(&MeshRun) -> &[Trips]| -> Vec<ScrapeSpread> {
        scrapes
            .iter()
            .enumerate()
            .map(|(k, &scrape)| ScrapeSpread {
                scrape,
                every: spread(
                    results
                        .iter()
                        .map(|r| get(r).get(k).and_then(|tr| tr.every)),
                ),
            })
            .collect()
    };
    SpeedRow {
        check: check.label.to_string(),
        change: change.to_string(),
        share,
        fleet: fleet.clone(),
        runs,
        horizon,
        brakes: *brakes,
        local_first: spread(results.iter().map(|r| r.local.first)),
        local_every: spread(results.iter().map(|r| r.local.every)),
        pooled_every: per_scrape(|r| &r.pooled),
        pooled_local_every: per_scrape(|r| &r.pooled_local),
    }
}

/// Every speed row: approvals 99.4 % → 91.2 % and the demo's tax drift (`tax`: the stable and
/// canary pools of [`demo_tax_pools`]) × canary 5 % and 20 % × every fleet of [`fleets`].
pub fn speed_study(
    seed: u64,
    sizes: &Sizes,
    brakes: &Brakes,
    tax: (&[f64], &[f64]),
    progress: Progress,
) -> Vec<SpeedRow> {
    let (tb, tc) = (mean_sd(tax.0), mean_sd(tax.1));
    let scenarios = [
        (approval(0.912), "99.4 % → 91.2 %".to_string()),
        (
            tax_check(tax),
            format!("{:+.2} %", drift_percent(tb.0, tc.0)),
        ),
    ];
    let mut rows = Vec::new();
    let mut id = 6000;
    for (check, change) in &scenarios {
        for share in SHARES {
            for fleet in fleets() {
                id += 1;
                rows.push(speed(
                    id,
                    seed,
                    sizes.speed_runs,
                    sizes.speed_horizon,
                    (check, change),
                    share,
                    &fleet,
                    brakes,
                    &SCRAPES,
                    progress,
                ));
            }
        }
    }
    rows
}

// ---- the report -------------------------------------------------------------------------------

/// Everything the mesh part of `make simulate` computes.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub sizes: Sizes,
    pub brakes: Brakes,
    pub scrapes: Vec<u32>,
    pub false_trips: Vec<FalseRow>,
    pub speed: Vec<SpeedRow>,
}

/// Runs both mesh studies; `min_samples` overrides [`MIN_SAMPLES`].
pub fn run(seed: u64, sizes: Sizes, min_samples: Option<u32>, progress: Progress) -> Report {
    let brakes = brakes(min_samples.unwrap_or(MIN_SAMPLES));
    let false_trips = false_trip_study(seed, &sizes, &brakes, progress);
    let (tb, tc) = demo_tax_pools(TAX_SESSIONS);
    let speed = speed_study(seed, &sizes, &brakes, (&tb, &tc), progress);
    Report {
        seed,
        sizes,
        brakes,
        scrapes: SCRAPES.to_vec(),
        false_trips,
        speed,
    }
}

fn percent(p: f64) -> String {
    let s = format!("{:.1}", p * 100.0);
    format!("{} %", s.trim_end_matches(".0"))
}

fn rate_cell(r: &Rate) -> String {
    rate_cell_to(r, 1)
}

fn rate_cell_to(r: &Rate, decimals: usize) -> String {
    format!(
        "{:.d$} % [{:.d$}–{:.d$}]",
        r.rate * 100.0,
        r.low * 100.0,
        r.high * 100.0,
        d = decimals
    )
}

/// "p50 / p90" in seconds, and the share of runs beyond the horizon when there are any.
fn spread_cell(s: &Spread, runs: usize, horizon: u32) -> String {
    let beyond = runs.saturating_sub(s.concluded);
    let unit = format!(" {horizon} s");
    let v = |x: Option<f64>| x.map_or_else(|| format!(">{unit}"), |_| opt(x, ""));
    let mut cell = format!("{} / {}", v(s.median), v(s.p90));
    if beyond > 0 {
        cell.push_str(&format!(
            " ({} beyond)",
            percent(beyond as f64 / runs.max(1) as f64)
        ));
    }
    cell
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

/// Under the false-trip table: each pooled brake over all fleets together (one process
/// whatever the fleet, so the rows share one rate), and the rows where "pooled + local" is
/// above its nominal bound.
fn summarise_false_trips(out: &mut String, r: &Report) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "\nPooled, all fleets of a row group together (whatever the fleet, the pooled figure is one \
         growing sample of the same transactions):"
    );
    for truth in ["A/A", "boundary"] {
        for share in SHARES {
            let rows: Vec<&FalseRow> = r
                .false_trips
                .iter()
                .filter(|x| x.truth == truth && x.share == share)
                .collect();
            let cells: Vec<String> = r
                .scrapes
                .iter()
                .enumerate()
                .map(|(k, scrape)| {
                    let (trips, runs) = rows
                        .iter()
                        .filter_map(|x| x.pooled.get(k))
                        .fold((0, 0), |(t, n), p| (t + p.rate.trips, n + p.rate.runs));
                    format!(
                        "scrape {scrape} s {trips}/{} = {}",
                        thousands(runs),
                        rate_cell_to(&wilson(trips, runs), 2)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "- {truth}, canary {}: {}",
                percent(share),
                cells.join("; ")
            );
        }
    }
    // Where "pooled + local" is above its bound: what the local tests added to the pooled
    // brake's rate, per Envoy (at the first scrape interval).
    let above: Vec<String> = r
        .false_trips
        .iter()
        .filter(|x| {
            x.pooled_local
                .iter()
                .any(|p| p.rate.rate > x.pooled_local_bound)
        })
        .map(|x| {
            let added = match (x.pooled_local.first(), x.pooled.first()) {
                (Some(pl), Some(p)) => pl.rate.rate - p.rate.rate,
                _ => 0.0,
            };
            format!(
                "{} at {}, canary {}: +{:.1} points, {:.2} % an Envoy",
                x.fleet.label,
                x.truth,
                percent(x.share),
                added * 100.0,
                added * 100.0 / x.fleet.len().max(1) as f64
            )
        })
        .collect();
    if !above.is_empty() {
        let _ = writeln!(
            out,
            "\nPooled + local is above its nominal bound α + N·α/10 (point estimate) in {} of {} \
             rows. What its local tests add to the pooled rate there: {}; more than alpha {} an \
             Envoy. The local test at alpha/10 on an Envoy's own 100-odd transactions a side runs \
             above its nominal rate (a skewed count of a few failures: the plug-in normal \
             approximation is worse the smaller alpha), so that bound is nominal.",
            above.len(),
            r.false_trips.len(),
            above.join("; "),
            r.brakes.local_alpha
        );
    }
    let _ = writeln!(
        out,
        "\nLocal-only rates far below N·α (large fleets, canary 5 %) come from min_samples: an \
         Envoy of a large fleet rarely gets {} transactions a side within the horizon, and never \
         judges.",
        r.brakes.min_samples
    );
}

/// The mesh section as text: two markdown tables (false trips, speed) under a heading.
pub fn format_report(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let b = &r.brakes;
    let scrapes: Vec<String> = r.scrapes.iter().map(|s| format!("{s} s")).collect();
    let _ = writeln!(
        out,
        "\n4. The mesh: a pooled brake against the local-only one. {:.0} transactions a minute \
         over the fleet, each to Envoy i with probability s_i and to the canary with probability c. \
         Local-only: every Envoy judges its own counts every 1 s at alpha {}. Pooled: Prometheus \
         scrapes every Envoy every {} (own random phase) and sums the scraped counts; every Envoy \
         queries that sum every {} s (own random phase), judges it at alpha {} and adopts any trip \
         a scrape has shown. Pooled + local: also a local test at alpha {} in every Envoy, its \
         trips adopted too. min_samples {} per side (an Envoy's own sides, or the pooled ones). \
         See tools/src/mesh.rs.",
        PER_MINUTE,
        b.alpha,
        scrapes.join(" or "),
        b.interval,
        b.alpha,
        b.local_alpha,
        b.min_samples
    );
    let looks = r.false_trips.first().map_or(0, |x| x.looks);
    let _ = writeln!(
        out,
        "\n4a. False trips: runs in which ANY Envoy of the fleet tripped within {looks} s (a tick a \
         second), approval ratio 99.4 % on the baseline, limit 0.3 points; A/A: canary 99.4 %, \
         boundary: canary 99.1 % (exactly at the limit). Rate [95 % Wilson interval]; the bounds \
         are N·alpha (local-only) and alpha + N·alpha/10 (pooled + local); pooled must stay ≤ \
         alpha = {}.\n",
        b.alpha
    );
    let mut head = "| truth | canary | fleet | runs | local-only | bound N·α |".to_string();
    let mut rule = "|---|---|---|---|---|---|".to_string();
    for s in &scrapes {
        head.push_str(&format!(" pooled, scrape {s} |"));
        rule.push_str("---|");
    }
    for s in &scrapes {
        head.push_str(&format!(" pooled + local, scrape {s} |"));
        rule.push_str("---|");
    }
    head.push_str(" bound α + N·α/10 |");
    rule.push_str("---|");
    let _ = writeln!(out, "{head}\n{rule}");
    for row in &r.false_trips {
        let _ = write!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.truth,
            percent(row.share),
            row.fleet.label,
            thousands(row.runs),
            rate_cell(&row.local),
            percent(row.local_bound)
        );
        for x in row.pooled.iter().chain(&row.pooled_local) {
            let _ = write!(out, " {} |", rate_cell(&x.rate));
        }
        let _ = writeln!(out, " {} |", percent(row.pooled_local_bound));
    }
    summarise_false_trips(&mut out, r);
    let reduced: Vec<&FalseRow> = r
        .false_trips
        .iter()
        .filter(|x| x.runs < r.sizes.false_runs)
        .collect();
    if !reduced.is_empty() {
        let _ = writeln!(
            out,
            "\n(Fleets of {} Envoys or more: {} runs a row instead of {}, to keep `make simulate` \
             short.)",
            r.sizes.large_fleet, r.sizes.large_fleet_runs, r.sizes.false_runs
        );
    }
    let (runs, horizon) = r.speed.first().map_or((0, 0), |x| (x.runs, x.horizon));
    let _ = writeln!(
        out,
        "\n4b. Speed: the canary bad from its first transaction on; seconds from that transaction \
         to the FIRST Envoy tripped (local-only: what a controller reading one proxy's trip sees) \
         and to EVERY Envoy tripped (until then some Envoy keeps serving the canary). Median / \
         90th percentile over {runs} runs, horizon {horizon} s; \"beyond\": runs in which no \
         Envoy (first) or some Envoy (every) had not tripped by the horizon. alpha {}, \
         min_samples {}.\n",
        b.alpha, b.min_samples
    );
    let mut head =
        "| harm | canary | fleet | local-only: first Envoy | local-only: every Envoy |".to_string();
    let mut rule = "|---|---|---|---|---|".to_string();
    for s in &scrapes {
        head.push_str(&format!(" pooled, scrape {s}: every Envoy |"));
        rule.push_str("---|");
    }
    for s in &scrapes {
        head.push_str(&format!(" pooled + local, scrape {s}: every Envoy |"));
        rule.push_str("---|");
    }
    let _ = writeln!(out, "{head}\n{rule}");
    for row in &r.speed {
        let harm = if row.check.starts_with("tax") {
            format!("tax per order {}", row.change)
        } else {
            format!("approvals {}", row.change)
        };
        let _ = write!(
            out,
            "| {harm} | {} | {} | {} | {} |",
            percent(row.share),
            row.fleet.label,
            spread_cell(&row.local_first, row.runs, row.horizon),
            spread_cell(&row.local_every, row.runs, row.horizon),
        );
        for x in row.pooled_every.iter().chain(&row.pooled_local_every) {
            let _ = write!(out, " {} |", spread_cell(&x.every, row.runs, row.horizon));
        }
        out.push('\n');
    }
    out
}
