//! `make simulate`: false alarms and time to evidence of the canary's rules, in pure simulation
//! (no Envoy).
//!
//! Two cohorts stream transactions: `per_minute` a minute, each one served by the canary with
//! probability `share`, else by the baseline. Every `interval` seconds a look judges the
//! cumulative counts with each rule:
//!
//! - the sequential rule of the core ([`Test`], the always-valid mSPRT), gated by `min_samples`
//!   per side;
//! - the gate's fixed rule (`--fixed`): [`fixed_proportion_rollback`] and
//!   [`fixed_mean_rollback`], which mirror `cli/src/gate/policy/rows.rs`.
//!
//! A run is *tripped* by a rule when any look rolls back. [`aa_study`] measures the trip rate at
//! the A/A pair and at the null's boundary (the canary exactly at the limit, where the bound
//! α must still hold), [`evidence_study`] the canary transactions and seconds from the first bad
//! transaction to the rollback in the seed scenarios (approvals 99.4 % → 91.2 %, the demo's tax
//! drift), beside a fixed-sample z-test and the controller path.
//!
//! Everything is seeded: a run's numbers depend only on `(seed, scenario, run)`
//! ([`stream_seed`]), never on the order the runs are made in. The generator is xoshiro256**
//! seeded by splitmix64; binomial counts by inversion of the CDF (exact), normal values by
//! Box–Muller.

use serde::Serialize;
use sticky_canary::stats::sequential::{Harm, Test, TAU_PERCENT, TAU_POINTS};
use sticky_canary::stats::{
    drift_percent, mean_and_variance, normal_cdf, two_proportion_z, welch_z,
};

use crate::checkout::{Build, Cart};

// ---- random numbers ---------------------------------------------------------------------------

/// One step of splitmix64 (Steele, Lea, Flood 2014): seeds the generator and mixes stream ids.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of one run: a function of the study's seed, the scenario and the run only.
pub fn stream_seed(seed: u64, scenario: u64, run: u64) -> u64 {
    let mut s = seed ^ scenario.wrapping_mul(0xd1b5_4a32_d192_ed03);
    let a = splitmix64(&mut s);
    let mut t = a ^ run.wrapping_mul(0x8cb9_2ba7_2f3d_8dd7);
    splitmix64(&mut t)
}

/// xoshiro256** (Blackman, Vigna 2018), seeded by splitmix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0), by the multiply-shift reduction (bias < n / 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability p.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// A standard normal value (Box–Muller; one of the pair is used).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64(); // (0, 1]
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Binomial(n, p), exact: inversion of the CDF on the rarer outcome, in chunks of at most
    /// 512 trials so that (1 − p)^n never underflows.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p.is_nan() || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        if p > 0.5 {
            return n - self.binomial(n, 1.0 - p);
        }
        let mut total = 0;
        let mut left = n;
        while left > 0 {
            let m = left.min(512);
            total += self.binomial_small(m, p);
            left -= m;
        }
        total
    }

    fn binomial_small(&mut self, n: u64, p: f64) -> u64 {
        let q = 1.0 - p;
        let r = p / q;
        let mut f = q.powi(n as i32);
        let mut cdf = f;
        let u = self.f64();
        let mut k = 0;
        while u >= cdf && k < n {
            f *= r * (n - k) as f64 / (k + 1) as f64;
            k += 1;
            cdf += f;
        }
        k
    }
}

// ---- the model: counts, metrics, rules --------------------------------------------------------

/// The counters of one side: trials `n`, successes or sum of values `x`, sum of squares `q`
/// (what the filter publishes).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Side {
    pub n: f64,
    pub x: f64,
    pub q: f64,
}

impl Side {
    fn add(&mut self, v: f64) {
        self.n += 1.0;
        self.x += v;
        self.q += v * v;
    }
}

/// How one side's transactions are made.
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    /// A success (1) with probability p, else 0.
    Bernoulli(f64),
    /// Normal values: mean, standard deviation.
    Normal(f64, f64),
    /// Values drawn uniformly, with replacement, from a pool.
    Pool(&'a [f64]),
}

impl Values<'_> {
    /// Adds `k` transactions to `side`.
    pub fn draw(&self, k: u64, side: &mut Side, rng: &mut Rng) {
        match *self {
            Values::Bernoulli(p) => {
                let x = rng.binomial(k, p) as f64;
                side.n += k as f64;
                side.x += x;
                side.q += x; // 1² = 1
            }
            Values::Normal(m, sd) => (0..k).for_each(|_| side.add(m + sd * rng.normal())),
            Values::Pool(pool) => (0..k).for_each(|_| {
                let i = rng.below(pool.len().max(1) as u64) as usize;
                side.add(pool.get(i).copied().unwrap_or(0.0));
            }),
        }
    }
}

/// Proportion or mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Kind {
    Proportion,
    Mean,
}

/// One check: what is judged, and how each cohort behaves.
#[derive(Clone, Copy, Debug)]
pub struct Check<'a> {
    pub label: &'a str,
    pub kind: Kind,
    /// Harmful direction (means: [`Harm::Either`], as in the gate).
    pub harm: Harm,
    /// Points (proportion) or percent of the baseline's mean (mean).
    pub limit: f64,
    /// The mixing sd of the sequential test, in the limit's unit.
    pub tau: f64,
    pub baseline: Values<'a>,
    pub canary: Values<'a>,
}

/// A rule that judges one look.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Rule {
    /// The always-valid test of the core, judged once both sides have `min_samples`.
    Sequential { alpha: f64, min_samples: u32 },
    /// The gate's fixed rule (`--fixed`): a fixed-alpha z-test on the cumulative counts.
    Fixed { alpha: f64, min_samples: u32 },
}

impl Rule {
    pub fn name(&self) -> String {
        match *self {
            Rule::Sequential { min_samples, .. } => format!("seq min {min_samples}"),
            Rule::Fixed { min_samples, .. } => format!("fixed min {min_samples}"),
        }
    }

    pub fn alpha(&self) -> f64 {
        match *self {
            Rule::Sequential { alpha, .. } | Rule::Fixed { alpha, .. } => alpha,
        }
    }

    /// Whether this look rolls the canary back (`c` canary, `b` baseline).
    pub fn rolls_back(&self, check: &Check, c: Side, b: Side) -> bool {
        match *self {
            Rule::Sequential { alpha, min_samples } => {
                let min = f64::from(min_samples);
                if c.n < min || b.n < min {
                    return false;
                }
                let test = Test {
                    alpha,
                    limit: check.limit,
                    tau: check.tau,
                    harm: check.harm,
                };
                let j = match check.kind {
                    Kind::Proportion => test.proportions(c.x, c.n, b.x, b.n),
                    Kind::Mean => test.means((c.x, c.q, c.n), (b.x, b.q, b.n)),
                };
                j.is_some_and(|j| j.harmful())
            }
            Rule::Fixed { alpha, min_samples } => match check.kind {
                Kind::Proportion => fixed_proportion_rollback(
                    (c.x, c.n),
                    (b.x, b.n),
                    check.limit,
                    check.harm,
                    alpha,
                    min_samples,
                ),
                Kind::Mean => fixed_mean_rollback(c, b, check.limit, alpha, min_samples),
            },
        }
    }
}

/// Within this of the limit counts as at it (the gate's `LIMIT_EPSILON`).
const LIMIT_EPSILON: f64 = 1e-9;

/// The gate's fixed rule on a proportion, as `sticky-canary gate --fixed` judges it today: it
/// mirrors `cli/src/gate/policy/rows.rs` `proportion_row` + `decide`. Both sides need `min_samples`
/// trials (at least 1); z is the pooled two-proportion statistic (canary first), p its
/// one-sided tail in the harmful direction; ROLLBACK iff the change (points) is beyond the
/// limit in the harmful direction AND p < alpha. `c` and `b` are (successes, trials).
/// [`Harm::Either`] (not a gate kind for proportions) rolls back on either side.
pub fn fixed_proportion_rollback(
    c: (f64, f64),
    b: (f64, f64),
    limit_points: f64,
    harm: Harm,
    alpha: f64,
    min_samples: u32,
) -> bool {
    let min = f64::from(min_samples).max(1.0);
    if !(c.1 >= min && b.1 >= min) {
        return false;
    }
    let d = (c.0 / c.1 - b.0 / b.1) * 100.0;
    let z = two_proportion_z(c.0, c.1, b.0, b.1);
    let lower = d < -(limit_points + LIMIT_EPSILON) && normal_cdf(z) < alpha;
    let higher = d > limit_points + LIMIT_EPSILON && normal_cdf(-z) < alpha;
    match harm {
        Harm::Lower => lower,
        Harm::Higher => higher,
        Harm::Either => lower || higher,
    }
}

/// The gate's fixed rule on a mean (`--fixed`): mirrors `cli/src/gate/policy/rows.rs` `mean_row` +
/// `decide`. Both sides need `min_samples` values (at least 2); Welch's z on the sample
/// variances, two-sided p = 2 Φ(−|z|); ROLLBACK iff |drift| (percent of the baseline's mean) is
/// beyond the limit AND p < alpha.
pub fn fixed_mean_rollback(c: Side, b: Side, limit_percent: f64, alpha: f64, min: u32) -> bool {
    let min = f64::from(min).max(2.0);
    if !(c.n >= min && b.n >= min) {
        return false;
    }
    let (Some((mc, vc)), Some((mb, vb))) = (
        mean_and_variance(c.x, c.q, c.n),
        mean_and_variance(b.x, b.q, b.n),
    ) else {
        return false;
    };
    let d = drift_percent(mb, mc);
    let p = 2.0 * normal_cdf(-welch_z(mc, vc, c.n, mb, vb, b.n).abs());
    d.abs() > limit_percent + LIMIT_EPSILON && p < alpha
}

/// The traffic of a study: `per_minute` transactions a minute, a `share` of them on the canary,
/// a look every `interval` seconds, `looks` looks.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Traffic {
    pub per_minute: f64,
    pub share: f64,
    pub interval: f64,
    pub looks: u32,
}

/// One run: the first look (1-based) at which each rule rolls back, if any.
pub fn first_trips(
    check: &Check,
    traffic: &Traffic,
    rules: &[Rule],
    rng: &mut Rng,
) -> Vec<Option<u32>> {
    let per_look = (traffic.per_minute * traffic.interval / 60.0).round() as u64;
    let (mut c, mut b) = (Side::default(), Side::default());
    let mut trips = vec![None; rules.len()];
    let mut open = rules.len();
    for look in 1..=traffic.looks {
        let k = rng.binomial(per_look, traffic.share);
        check.canary.draw(k, &mut c, rng);
        check.baseline.draw(per_look - k, &mut b, rng);
        for (rule, trip) in rules.iter().zip(trips.iter_mut()) {
            if trip.is_none() && rule.rolls_back(check, c, b) {
                *trip = Some(look);
                open -= 1;
            }
        }
        if open == 0 {
            break;
        }
    }
    trips
}

// ---- rates ------------------------------------------------------------------------------------

/// A trip rate with its 95 % Wilson score interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rate {
    pub trips: usize,
    pub runs: usize,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

/// `k` of `n` with the 95 % Wilson score interval.
pub fn wilson(k: usize, n: usize) -> Rate {
    let (kf, nf) = (k as f64, n.max(1) as f64);
    let z = 1.959_963_984_540_054;
    let p = kf / nf;
    let den = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / den;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / den;
    Rate {
        trips: k,
        runs: n,
        rate: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:5.1} % [{:4.1}–{:4.1}]",
            self.rate * 100.0,
            self.low * 100.0,
            self.high * 100.0
        )
    }
}

/// One rule's result over the runs of a scenario.
#[derive(Clone, Debug, Serialize)]
pub struct RuleRate {
    pub rule: Rule,
    pub name: String,
    pub alpha: f64,
    pub rate: Rate,
    /// Median look (1-based) of the trips, among the tripped runs.
    pub median_trip_look: Option<f64>,
}

/// One scenario of an A/A (or boundary) study.
#[derive(Clone, Debug, Serialize)]
pub struct AaRow {
    pub check: String,
    /// "A/A" or "boundary".
    pub truth: String,
    pub traffic: Traffic,
    pub rates: Vec<RuleRate>,
}

/// Progress of a study: (what, runs done, runs in all).
pub type Progress<'p> = &'p mut dyn FnMut(&str, usize, usize);

/// Runs `runs` runs of one scenario and tallies each rule.
#[allow(clippy::too_many_arguments)]
pub fn rates(
    id: u64,
    seed: u64,
    runs: usize,
    check: &Check,
    truth: &str,
    traffic: Traffic,
    rules: &[Rule],
    progress: Progress,
) -> AaRow {
    let what = format!("{} {truth} {:.0} %", check.label, traffic.share * 100.0);
    let mut looks: Vec<Vec<u32>> = vec![Vec::new(); rules.len()];
    for run in 0..runs {
        let mut rng = Rng::new(stream_seed(seed, id, run as u64));
        for (i, t) in first_trips(check, &traffic, rules, &mut rng)
            .into_iter()
            .enumerate()
        {
            if let (Some(t), Some(v)) = (t, looks.get_mut(i)) {
                v.push(t);
            }
        }
        if (run + 1) % 100 == 0 || run + 1 == runs {
            progress(&what, run + 1, runs);
        }
    }
    let rates = rules
        .iter()
        .zip(looks)
        .map(|(rule, mut l)| {
            l.sort_unstable();
            let median = quantile_sorted(&l.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(), 0.5);
            RuleRate {
                rule: *rule,
                name: rule.name(),
                alpha: rule.alpha(),
                rate: wilson(l.len(), runs),
                median_trip_look: median,
            }
        })
        .collect();
    AaRow {
        check: check.label.to_string(),
        truth: truth.to_string(),
        traffic,
        rates,
    }
}

/// The q-quantile of sorted values (nearest rank), `None` when empty.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

// ---- the studies ------------------------------------------------------------------------------

/// The sizes of a simulation.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sizes {
    /// Runs of the issue's scenario (400 in the issue).
    pub issue_runs: usize,
    /// Runs and looks of the A/A target (1 000 × 1 000).
    pub aa_runs: usize,
    pub aa_looks: u32,
    /// Runs of each evidence scenario, and its horizon in seconds.
    pub evidence_runs: usize,
    pub evidence_horizon: u32,
}

impl Sizes {
    pub const FULL: Sizes = Sizes {
        issue_runs: 400,
        aa_runs: 1000,
        aa_looks: 1000,
        evidence_runs: 500,
        evidence_horizon: 7200,
    };
    pub const QUICK: Sizes = Sizes {
        issue_runs: 200,
        aa_runs: 200,
        aa_looks: 1000,
        evidence_runs: 100,
        evidence_horizon: 7200,
    };
}

/// The seed scenario's traffic: 1 200 transactions a minute.
pub const PER_MINUTE: f64 = 1200.0;
/// The canary shares studied.
pub const SHARES: [f64; 2] = [0.05, 0.20];
/// The alphas studied.
pub const ALPHAS: [f64; 2] = [0.01, 0.05];
/// The candidate `min_samples` of the brake (400 beyond the brief's four: at alpha 0.01 none of
/// 0–200 keeps the approval check's boundary rate ≤ alpha).
pub const MIN_SAMPLES: [u32; 5] = [0, 50, 100, 200, 400];
/// The gate's minimum per side (`--fixed`).
pub const GATE_MIN: u32 = 200;

/// The approval check: 99.4 % on the baseline, lower is worse, limit 0.3 points.
pub fn approval(canary: f64) -> Check<'static> {
    Check {
        label: "approval ratio",
        kind: Kind::Proportion,
        harm: Harm::Lower,
        limit: 0.3,
        tau: TAU_POINTS,
        baseline: Values::Bernoulli(0.994),
        canary: Values::Bernoulli(canary),
    }
}

/// The error ratio: 0.1 % on the baseline, higher is worse, limit 1 point.
pub fn error_ratio(canary: f64) -> Check<'static> {
    Check {
        label: "error ratio",
        kind: Kind::Proportion,
        harm: Harm::Higher,
        limit: 1.0,
        tau: TAU_POINTS,
        baseline: Values::Bernoulli(0.001),
        canary: Values::Bernoulli(canary),
    }
}

/// Order value: normal, mean 2 000 cents, sd 500; limit 1 %, τ 5 %, two-sided.
pub fn order_value(canary_mean: f64) -> Check<'static> {
    Check {
        label: "order value",
        kind: Kind::Mean,
        harm: Harm::Either,
        limit: 1.0,
        tau: TAU_PERCENT,
        baseline: Values::Normal(2000.0, 500.0),
        canary: Values::Normal(canary_mean, 500.0),
    }
}

/// Every rule of the A/A target: for each alpha, the sequential rule at each candidate
/// `min_samples` and the fixed rule at the gate's minimum.
pub fn target_rules() -> Vec<Rule> {
    ALPHAS
        .iter()
        .flat_map(|&alpha| {
            MIN_SAMPLES
                .iter()
                .map(move |&min_samples| Rule::Sequential { alpha, min_samples })
                .chain(std::iter::once(Rule::Fixed {
                    alpha,
                    min_samples: GATE_MIN,
                }))
        })
        .collect()
}

/// The issue's scenario: A/A approvals 99.4 %, 1 200 a minute, canary 5 %, a look every 30 s
/// for 2 h; the fixed rule (alpha 0.05, min 200) beside the sequential rule.
pub fn issue_study(seed: u64, runs: usize, progress: Progress) -> AaRow {
    let traffic = Traffic {
        per_minute: PER_MINUTE,
        share: 0.05,
        interval: 30.0,
        looks: 240,
    };
    let rules = [
        Rule::Fixed {
            alpha: 0.05,
            min_samples: GATE_MIN,
        },
        Rule::Sequential {
            alpha: 0.05,
            min_samples: GATE_MIN,
        },
        Rule::Sequential {
            alpha: 0.05,
            min_samples: 50,
        },
    ];
    rates(
        1,
        seed,
        runs,
        &approval(0.994),
        "A/A",
        traffic,
        &rules,
        progress,
    )
}

/// The A/A target: every check × truth (A/A, boundary) × share, every rule of
/// [`target_rules`], `runs` runs × `looks` looks every second at 1 200 a minute.
pub fn aa_study(seed: u64, runs: usize, looks: u32, progress: Progress) -> Vec<AaRow> {
    let rules = target_rules();
    let checks = [
        (approval(0.994), "A/A"),
        (approval(0.991), "boundary"),
        (error_ratio(0.001), "A/A"),
        (error_ratio(0.011), "boundary"),
        (order_value(2000.0), "A/A"),
        (order_value(2020.0), "boundary"),
    ];
    let mut rows = Vec::new();
    let mut id = 100;
    for (check, truth) in &checks {
        for &share in &SHARES {
            id += 1;
            let traffic = Traffic {
                per_minute: PER_MINUTE,
                share,
                interval: 1.0,
                looks,
            };
            rows.push(rates(
                id, seed, runs, check, truth, traffic, &rules, progress,
            ));
        }
    }
    rows
}

/// The worst boundary rate (over every check and share) of the sequential rule at `alpha` and
/// `min_samples`: the figure the bound α must hold for.
pub fn worst_boundary(rows: &[AaRow], alpha: f64, min_samples: u32) -> Option<Rate> {
    rows.iter()
        .filter(|r| r.truth == "boundary")
        .flat_map(|r| r.rates.iter())
        .filter(|rr| rr.rule == Rule::Sequential { alpha, min_samples })
        .map(|rr| rr.rate)
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
}

/// The brake's `min_samples` the A/A figures support at `alpha`: the smallest candidate at
/// which every boundary rate (every check and share) stays ≤ alpha. `None` if none does.
pub fn recommend_min_samples(rows: &[AaRow], alpha: f64) -> Option<u32> {
    MIN_SAMPLES
        .iter()
        .copied()
        .find(|&m| worst_boundary(rows, alpha, m).is_some_and(|r| r.rate <= alpha))
}

// ---- evidence ---------------------------------------------------------------------------------

/// The demo's tax per order, in cents, for the demo's own sessions (`user-0` …): the stable
/// build's and the canary's (tax per unit, rounded up) on the same carts.
pub fn demo_tax_pools(sessions: usize) -> (Vec<f64>, Vec<f64>) {
    (0..sessions)
        .map(|i| {
            let cart = Cart::for_session(&format!("user-{i}"));
            (
                cart.tax(Build::Correct) as f64,
                cart.tax(Build::TaxPerUnitRoundedUp) as f64,
            )
        })
        .unzip()
}

/// Mean and population standard deviation of values.
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// The standard normal quantile Φ⁻¹(p), 0 < p < 1, by bisection on the core's Φ.
pub fn normal_quantile(p: f64) -> f64 {
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The classic fixed-sample size (canary side) of the gate's fixed z-test at `alpha` with 80 %
/// power against the check's true change, with the baseline getting (1 − share)/share as many:
/// proportions, one-sided pooled z against no change,
/// n = (z₁₋α √(p̄q̄(1 + 1/k)) + z₀.₈ √(pc qc + pb qb / k))² / δ²;
/// means, two-sided Welch z, n = (z₁₋α/₂ + z₀.₈)² (σc² + σb²/k) / δ².
/// (The gate also needs its 200 per side; the point estimate beyond the limit is near certain
/// at these effects.) `(mean, sd)` of each side for means, `(p, _)` for proportions.
pub fn classic_fixed_size(
    kind: Kind,
    base: (f64, f64),
    canary: (f64, f64),
    share: f64,
    alpha: f64,
) -> f64 {
    let k = (1.0 - share) / share;
    let zb = normal_quantile(0.8);
    let n = match kind {
        Kind::Proportion => {
            let (pb, pc) = (base.0, canary.0);
            let pbar = (pc + k * pb) / (1.0 + k);
            let za = normal_quantile(1.0 - alpha);
            let a = za * (pbar * (1.0 - pbar) * (1.0 + 1.0 / k)).sqrt();
            let b = zb * (pc * (1.0 - pc) + pb * (1.0 - pb) / k).sqrt();
            (a + b).powi(2) / (pc - pb).powi(2)
        }
        Kind::Mean => {
            let za = normal_quantile(1.0 - alpha / 2.0);
            (za + zb).powi(2) * (canary.1.powi(2) + base.1.powi(2) / k)
                / (canary.0 - base.0).powi(2)
        }
    };
    n.ceil()
}

/// When a rule rolled back: seconds from the first bad (canary) transaction, and canary
/// transactions by then.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Caught {
    pub seconds: f64,
    pub canary: f64,
}

/// One run of an evidence scenario.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct EvidenceRun {
    /// The brake: the sequential rule at every 1 s look.
    pub brake: Option<Caught>,
    /// The controller path: the same rule on counts scraped every 15 s, judged every 30 s
    /// (random phases; the route push not included).
    pub controller: Option<Caught>,
    /// The gate's fixed rule judged once, at the first second both sides have 200.
    pub fixed_look: Option<Caught>,
    pub fixed_look_rolled_back: bool,
}

/// One evidence run: transactions arrive every 60/`per_minute` s, each on the canary with
/// probability `share`; the canary is bad from its first transaction on (time 0 of the
/// figures). Simulates until every observer has concluded or `horizon` seconds.
pub fn evidence_run(
    check: &Check,
    share: f64,
    rule: Rule,
    fixed: Rule,
    horizon: u32,
    rng: &mut Rng,
) -> EvidenceRun {
    let per_second = (PER_MINUTE / 60.0).round() as u32;
    let dt = 1.0 / f64::from(per_second);
    let scrape_phase = rng.below(15) as u32;
    let analysis_phase = rng.below(30) as u32;
    let (mut c, mut b) = (Side::default(), Side::default());
    let mut first_bad: Option<f64> = None;
    let mut scraped: Option<(Side, Side)> = None;
    let mut out = EvidenceRun {
        brake: None,
        controller: None,
        fixed_look: None,
        fixed_look_rolled_back: false,
    };
    for t in 1..=horizon {
        for i in 0..per_second {
            if rng.bernoulli(share) {
                check.canary.draw(1, &mut c, rng);
                if first_bad.is_none() {
                    first_bad = Some(f64::from(t - 1) + f64::from(i + 1) * dt);
                }
            } else {
                check.baseline.draw(1, &mut b, rng);
            }
        }
        let Some(t0) = first_bad else { continue };
        let caught = |c: &Side| Caught {
            seconds: f64::from(t) - t0,
            canary: c.n,
        };
        if out.brake.is_none() && rule.rolls_back(check, c, b) {
            out.brake = Some(caught(&c));
        }
        if t % 15 == scrape_phase {
            scraped = Some((c, b));
        }
        if out.controller.is_none() && t % 30 == analysis_phase {
            if let Some((sc, sb)) = scraped {
                if rule.rolls_back(check, sc, sb) {
                    out.controller = Some(caught(&sc));
                }
            }
        }
        if out.fixed_look.is_none() && c.n >= f64::from(GATE_MIN) && b.n >= f64::from(GATE_MIN) {
            out.fixed_look = Some(caught(&c));
            out.fixed_look_rolled_back = fixed.rolls_back(check, c, b);
        }
        if out.brake.is_some() && out.controller.is_some() && out.fixed_look.is_some() {
            break;
        }
    }
    out
}

/// Median and 90th percentile of a figure over runs; runs that never concluded count as
/// beyond the horizon (`None` when the quantile falls among them).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    pub median: Option<f64>,
    pub p90: Option<f64>,
    /// Runs that concluded.
    pub concluded: usize,
}

pub fn spread(values: impl Iterator<Item = Option<f64>>) -> Spread {
    let all: Vec<Option<f64>> = values.collect();
    let mut v: Vec<f64> = all.iter().flatten().copied().collect();
    v.sort_by(f64::total_cmp);
    let n = all.len();
    let q = |p: f64| {
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        v.get(rank - 1).copied()
    };
    Spread {
        median: q(0.5),
        p90: q(0.9),
        concluded: v.len(),
    }
}

/// One evidence scenario's figures.
#[derive(Clone, Debug, Serialize)]
pub struct EvidenceRow {
    pub check: String,
    pub change: String,
    pub share: f64,
    pub alpha: f64,
    pub min_samples: u32,
    pub runs: usize,
    pub brake_canary: Spread,
    pub brake_seconds: Spread,
    pub controller_canary: Spread,
    pub controller_seconds: Spread,
    /// The classic fixed-sample size (canary side) at 80 % power, and its seconds.
    pub classic_canary: f64,
    pub classic_seconds: f64,
    /// The gate's fixed rule at its first possible look (200 per side): when, and how often
    /// it rolled back there.
    pub fixed_look_canary: Spread,
    pub fixed_look_seconds: Spread,
    pub fixed_look_power: Rate,
}

/// The demo's tax drift: tax per order, the stable build's pool against the canary's
/// ([`demo_tax_pools`]), limit 1 %, τ 5 %, two-sided.
pub fn tax_check<'a>(tax: (&'a [f64], &'a [f64])) -> Check<'a> {
    Check {
        label: "tax per order (make demo)",
        kind: Kind::Mean,
        harm: Harm::Either,
        limit: 1.0,
        tau: TAU_PERCENT,
        baseline: Values::Pool(tax.0),
        canary: Values::Pool(tax.1),
    }
}

/// The evidence scenarios: approvals 99.4 % → 91.2 % and the demo's tax drift, canary 5 % and
/// 20 %, alpha 0.01 and 0.05, the brake at `min_samples`.
pub fn evidence_study(
    seed: u64,
    runs: usize,
    horizon: u32,
    min_samples: u32,
    tax: (&[f64], &[f64]),
    progress: Progress,
) -> Vec<EvidenceRow> {
    let (tb, tc) = (mean_sd(tax.0), mean_sd(tax.1));
    let scenarios = [
        (
            approval(0.912),
            "99.4 % → 91.2 %".to_string(),
            Kind::Proportion,
            (0.994, 0.0),
            (0.912, 0.0),
        ),
        (
            tax_check(tax),
            format!("{:+.2} %", drift_percent(tb.0, tc.0)),
            Kind::Mean,
            tb,
            tc,
        ),
    ];
    let mut rows = Vec::new();
    let mut id = 1000;
    for (check, change, kind, base, canary) in &scenarios {
        for &share in &SHARES {
            for &alpha in &ALPHAS {
                id += 1;
                let rule = Rule::Sequential { alpha, min_samples };
                let fixed = Rule::Fixed {
                    alpha,
                    min_samples: GATE_MIN,
                };
                let what = format!("evidence {} {:.0} % α {alpha}", check.label, share * 100.0);
                let mut results = Vec::with_capacity(runs);
                for run in 0..runs {
                    let mut rng = Rng::new(stream_seed(seed, id, run as u64));
                    results.push(evidence_run(check, share, rule, fixed, horizon, &mut rng));
                    if (run + 1) % 100 == 0 || run + 1 == runs {
                        progress(&what, run + 1, runs);
                    }
                }
                let classic = classic_fixed_size(*kind, *base, *canary, share, alpha);
                let canary_per_second = PER_MINUTE / 60.0 * share;
                let power = results
                    .iter()
                    .filter(|r| r.fixed_look.is_some() && r.fixed_look_rolled_back)
                    .count();
                rows.push(EvidenceRow {
                    check: check.label.to_string(),
                    change: change.clone(),
                    share,
                    alpha,
                    min_samples,
                    runs,
                    brake_canary: spread(results.iter().map(|r| r.brake.map(|c| c.canary))),
                    brake_seconds: spread(results.iter().map(|r| r.brake.map(|c| c.seconds))),
                    controller_canary: spread(
                        results.iter().map(|r| r.controller.map(|c| c.canary)),
                    ),
                    controller_seconds: spread(
                        results.iter().map(|r| r.controller.map(|c| c.seconds)),
                    ),
                    classic_canary: classic,
                    classic_seconds: classic / canary_per_second,
                    fixed_look_canary: spread(
                        results.iter().map(|r| r.fixed_look.map(|c| c.canary)),
                    ),
                    fixed_look_seconds: spread(
                        results.iter().map(|r| r.fixed_look.map(|c| c.seconds)),
                    ),
                    fixed_look_power: wilson(power, runs),
                });
            }
        }
    }
    rows
}

// ---- the whole report -------------------------------------------------------------------------

/// Everything `make simulate` computes.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub sizes: Sizes,
    pub issue: AaRow,
    pub aa: Vec<AaRow>,
    /// Per alpha of [`ALPHAS`]: the recommended `min_samples` ([`recommend_min_samples`]).
    pub recommended_min_samples: Vec<(f64, Option<u32>)>,
    /// The `min_samples` the evidence used (the recommendation, or the largest candidate).
    pub evidence_min_samples: u32,
    pub tax_baseline_mean_sd: (f64, f64),
    pub tax_canary_mean_sd: (f64, f64),
    pub evidence: Vec<EvidenceRow>,
}

/// Sessions of the demo's cart generator the tax pools are made of.
pub const TAX_SESSIONS: usize = 20_000;

/// Runs every study. `min_samples` overrides the recommendation for the evidence.
pub fn run(seed: u64, sizes: Sizes, min_samples: Option<u32>, progress: Progress) -> Report {
    let issue = issue_study(seed, sizes.issue_runs, progress);
    let aa = aa_study(seed, sizes.aa_runs, sizes.aa_looks, progress);
    let recommended: Vec<(f64, Option<u32>)> = ALPHAS
        .iter()
        .map(|&a| (a, recommend_min_samples(&aa, a)))
        .collect();
    // The evidence runs at the largest recommendation (or the largest candidate): one
    // `min_samples` for every alpha, as a brake default would be.
    let m = min_samples.unwrap_or_else(|| {
        recommended
            .iter()
            .map(|(_, m)| m.unwrap_or(MIN_SAMPLES[MIN_SAMPLES.len() - 1]))
            .max()
            .unwrap_or(MIN_SAMPLES[MIN_SAMPLES.len() - 1])
    });
    let (tb, tc) = demo_tax_pools(TAX_SESSIONS);
    let evidence = evidence_study(
        seed,
        sizes.evidence_runs,
        sizes.evidence_horizon,
        m,
        (&tb, &tc),
        progress,
    );
    Report {
        seed,
        sizes,
        issue,
        aa,
        recommended_min_samples: recommended,
        evidence_min_samples: m,
        tax_baseline_mean_sd: mean_sd(&tb),
        tax_canary_mean_sd: mean_sd(&tc),
        evidence,
    }
}

/// A figure with its unit, or "> horizon" when it never concluded.
pub fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "> horizon".to_string(), |x| format!("{x:.0}{unit}"))
}

fn aa_table(out: &mut String, rows: &[AaRow], rules: &[Rule]) {
    use std::fmt::Write;
    let _ = write!(out, "  {:<16} {:<9} {:>5} ", "check", "truth", "share");
    for r in rules {
        let _ = write!(out, " {:>21}", r.name());
    }
    out.push('\n');
    for row in rows {
        let _ = write!(
            out,
            "  {:<16} {:<9} {:>4.0}% ",
            row.check,
            row.truth,
            row.traffic.share * 100.0
        );
        for r in rules {
            match row.rates.iter().find(|rr| rr.rule == *r) {
                Some(rr) => {
                    let _ = write!(out, " {:>21}", rr.rate.to_string());
                }
                None => {
                    let _ = write!(out, " {:>21}", "-");
                }
            }
        }
        out.push('\n');
    }
}

/// The report as text (the tables `make simulate` prints).
pub fn format_report(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sticky-canary simulate (seed {}): pure simulation, no Envoy. Rates: runs ever rolled back, \
         with the 95 % Wilson interval.\n",
        r.seed
    );
    let i = &r.issue;
    let _ = writeln!(
        out,
        "1. The issue's scenario: A/A approvals 99.4 % both sides, {:.0} a minute, canary {:.0} %, a look \
         every {:.0} s for {:.0} h ({} looks), limit 0.3 points, {} runs:",
        i.traffic.per_minute,
        i.traffic.share * 100.0,
        i.traffic.interval,
        i.traffic.interval * f64::from(i.traffic.looks) / 3600.0,
        i.traffic.looks,
        i.rates.first().map_or(0, |x| x.rate.runs)
    );
    for rr in &i.rates {
        let kind = match rr.rule {
            Rule::Fixed { .. } => "the gate's fixed rule (--fixed)",
            Rule::Sequential { .. } => "the sequential rule",
        };
        let _ = writeln!(
            out,
            "   {kind:<32} alpha {:<5} {:<14} {}  (median trip at look {})",
            rr.alpha,
            rr.name,
            rr.rate,
            rr.median_trip_look
                .map_or("-".into(), |x| format!("{x:.0}"))
        );
    }
    let looks = r.aa.first().map_or(0, |x| x.traffic.looks);
    let runs =
        r.aa.first()
            .and_then(|x| x.rates.first())
            .map_or(0, |x| x.rate.runs);
    let _ = writeln!(
        out,
        "\n2. The A/A target: {runs} runs × {looks} looks, a look every 1 s ({:.1} min) at {PER_MINUTE:.0} a minute. \
         A/A: both sides equal; boundary: the canary exactly at the limit (approval 99.1 % vs 99.4 %, \
         limit 0.3; errors 1.1 % vs 0.1 %, limit 1 point; order value 2 020 vs 2 000 cents, sd 500, \
         limit 1 %, two-sided). seq = the core's sequential rule (τ 2 points / 5 %) at min_samples per \
         side; fixed = the gate's --fixed rule, min 200.",
        f64::from(looks) / 60.0
    );
    let rules = target_rules();
    for alpha in ALPHAS {
        let _ = writeln!(out, "\n   alpha {alpha}:");
        let these: Vec<Rule> = rules
            .iter()
            .copied()
            .filter(|x| x.alpha() == alpha)
            .collect();
        aa_table(&mut out, &r.aa, &these);
    }
    let _ = writeln!(
        out,
        "\n   worst boundary rate of the sequential rule over the checks and shares (must be ≤ alpha):"
    );
    for alpha in ALPHAS {
        let _ = write!(out, "   alpha {alpha:<5}");
        for m in MIN_SAMPLES {
            let w = worst_boundary(&r.aa, alpha, m).map_or("-".to_string(), |x| x.to_string());
            let _ = write!(out, "  min {m}: {w}");
        }
        let rec = r
            .recommended_min_samples
            .iter()
            .find(|(a, _)| *a == alpha)
            .and_then(|(_, m)| *m);
        let _ = writeln!(
            out,
            "\n     → recommended min_samples: {}",
            rec.map_or(
                "no candidate keeps every boundary rate ≤ alpha".to_string(),
                |m| m.to_string()
            )
        );
    }
    let _ = writeln!(
        out,
        "\n3. Evidence: canary bad from its first transaction on; figures from that transaction. \
         Brake = sequential rule every 1 s, min_samples {}; controller = the same rule on counts scraped \
         every 15 s, judged every 30 s (random phases; route push not included). Classic = fixed-sample \
         size of the gate's z-test at that alpha for 80 % power (canary side; one-sided pooled z for \
         approvals, two-sided Welch for tax); fixed@200 = the gate's fixed rule judged once, at the first \
         second both sides have 200 (power = share of runs it rolled back there). Median / 90th \
         percentile over {} runs.",
        r.evidence_min_samples,
        r.evidence.first().map_or(0, |x| x.runs)
    );
    let _ = writeln!(
        out,
        "   tax per order of the demo's carts ({TAX_SESSIONS} sessions of its generator): stable {:.1} ± {:.1} cents, \
         canary {:.1} ± {:.1} cents (mean ± sd).",
        r.tax_baseline_mean_sd.0, r.tax_baseline_mean_sd.1, r.tax_canary_mean_sd.0, r.tax_canary_mean_sd.1
    );
    let _ = writeln!(
        out,
        "\n  {:<26} {:>15} {:>5} {:>5}  {:>21} {:>21} {:>14} {:>29}",
        "check",
        "change",
        "share",
        "alpha",
        "brake tx / s (p50,p90)",
        "controller s (p50,p90)",
        "classic tx / s",
        "fixed@200 tx / s, power"
    );
    for e in &r.evidence {
        let _ = writeln!(
            out,
            "  {:<26} {:>15} {:>4.0}% {:>5}  {:>21} {:>21} {:>14} {:>29}",
            e.check,
            e.change,
            e.share * 100.0,
            e.alpha,
            format!(
                "{},{} / {},{}",
                opt(e.brake_canary.median, ""),
                opt(e.brake_canary.p90, ""),
                opt(e.brake_seconds.median, ""),
                opt(e.brake_seconds.p90, "")
            ),
            format!(
                "{},{}",
                opt(e.controller_seconds.median, ""),
                opt(e.controller_seconds.p90, "")
            ),
            format!("{:.0} / {:.0}", e.classic_canary, e.classic_seconds),
            format!(
                "{} / {}, {:.0} %",
                opt(e.fixed_look_canary.median, ""),
                opt(e.fixed_look_seconds.median, ""),
                e.fixed_look_power.rate * 100.0
            )
        );
    }
    out
}
