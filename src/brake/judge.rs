//! The brake's judgement: whether a canary's counters are harmful against the baseline's, by
//! the always-valid test (`crate::stats::sequential`).

use super::{Guard, Kind, Series, Trip};
use crate::stats::sequential::{Judgement, Test};

impl Guard {
    /// Judges one canary against the baseline: the first harmful check, if any. `read(version,
    /// series)` returns the counter's current value; counts are taken as they are (a counter that
    /// went down after a reload is simply a smaller count), a numerator above its denominator is
    /// capped at it (the two are read a moment apart while other workers flush), and any
    /// non-finite figure judges nothing.
    pub fn judge(&self, canary: usize, read: &dyn Fn(usize, Series) -> f64) -> Option<Trip> {
        self.judge_at(canary, read, self.alpha)
    }

    /// [`Guard::judge`] at another alpha (the local test beside a pool: `pool.local_alpha`).
    pub fn judge_at(
        &self,
        canary: usize,
        read: &dyn Fn(usize, Series) -> f64,
        alpha: f64,
    ) -> Option<Trip> {
        let min = self.min_samples as f64;
        let (b, c) = (self.baseline, canary);
        for (i, check) in self.checks.iter().enumerate() {
            let (j, cv, bv) = match check.kind {
                Kind::Proportion { num, den } => {
                    let (nc, nb) = (read(c, den), read(b, den));
                    let (xc, xb) = (read(c, num).min(nc), read(b, num).min(nb));
                    if !(nc >= min && nb >= min && nc.is_finite() && nb.is_finite()) {
                        continue;
                    }
                    let test = Test {
                        alpha,
                        ..check.test
                    };
                    (test.proportions(xc, nc, xb, nb), (xc, nc), (xb, nb))
                }
                Kind::Mean {
                    sum,
                    squares,
                    count,
                } => {
                    let side = |v: usize| (read(v, sum), read(v, squares), read(v, count));
                    let (sc, sb) = (side(c), side(b));
                    let finite = [sc.0, sc.1, sc.2, sb.0, sb.1, sb.2]
                        .iter()
                        .all(|x| x.is_finite());
                    if !(sc.2 >= min && sb.2 >= min && finite) {
                        continue;
                    }
                    let test = Test {
                        alpha,
                        ..check.test
                    };
                    (test.means(sc, sb), (sc.0, sc.2), (sb.0, sb.2))
                }
            };
            if let Some(j) = j.filter(Judgement::harmful) {
                return Some(Trip {
                    check: i,
                    judgement: j,
                    canary: cv,
                    baseline: bv,
                });
            }
        }
        None
    }

    /// Judges every canary (every version but the baseline) that `skip` leaves, at `alpha`, and
    /// hands each harmful one and its trip to `found`. `read(version, i)` is the value of
    /// `self.series[i]`.
    pub fn judge_canaries(
        &self,
        versions: usize,
        alpha: f64,
        skip: &dyn Fn(usize) -> bool,
        read: &dyn Fn(usize, usize) -> f64,
        found: &mut dyn FnMut(usize, Trip),
    ) {
        let by_series = |v: usize, s: Series| match self.series.iter().position(|x| *x == s) {
            Some(i) => read(v, i),
            None => f64::NAN,
        };
        for c in 0..versions {
            if c == self.baseline || skip(c) {
                continue;
            }
            if let Some(trip) = self.judge_at(c, &by_series, alpha) {
                found(c, trip);
            }
        }
    }
}
