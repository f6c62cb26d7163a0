//! The demo's shop, served twice: `stable` and a `canary` with a classic silent money bug.
//!
//! Both compute the same carts (derived from the session id), answer with the same status codes
//! and the same latency. The canary computes sales tax per unit, rounded up, instead of once per
//! order, rounded half-up — so every cart costs a little more, and nothing but the money shows it.
//!
//! Flow (each step carries the session cookie):
//! - `GET /cart` → the cart as JSON;
//! - `POST /checkout` → `x-order-id`, `x-order-total`, `x-order-tax` headers and the order as JSON;
//! - `POST /pay` → `{"authorization": {"status": "approved" | "declined"}}`, or a 503 for a few.

use serde_json::json;
use std::sync::Arc;
use sticky_canary_harness::http::{Handler, Request, Response};

/// Sales tax rate, per 100 000 (8.875 %).
pub const TAX_RATE_PER_100K: u64 = 8_875;

/// Which tax computation a shop build uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// Tax on the order subtotal, rounded half-up once.
    Correct,
    /// Tax per unit, rounded up, times the quantity — the bug.
    TaxPerUnitRoundedUp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub unit_cents: u64,
    pub qty: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cart {
    pub lines: Vec<Line>,
}

/// FNV-1a, for deterministic per-session data (not security).
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

impl Cart {
    /// The cart of a session: 8–12 lines of items at $0.19–$1.99, 1–6 of each.
    pub fn for_session(session: &str) -> Cart {
        let mut rng = Rng(fnv(session.as_bytes()) | 1);
        let n = rng.range(8, 12);
        Cart {
            lines: (0..n)
                .map(|_| Line {
                    unit_cents: rng.range(19, 199),
                    qty: rng.range(1, 6),
                })
                .collect(),
        }
    }

    pub fn subtotal(&self) -> u64 {
        self.lines.iter().map(|l| l.unit_cents * l.qty).sum()
    }

    /// Sales tax in cents as a build computes it.
    pub fn tax(&self, build: Build) -> u64 {
        match build {
            Build::Correct => (self.subtotal() * TAX_RATE_PER_100K + 50_000) / 100_000,
            Build::TaxPerUnitRoundedUp => self
                .lines
                .iter()
                .map(|l| (l.unit_cents * TAX_RATE_PER_100K).div_ceil(100_000) * l.qty)
                .sum(),
        }
    }
}

/// Cents as a plain decimal string: 1999 → "19.99".
pub fn dollars(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The session id a request carries (cookie `session_id`, else `sc_session`).
pub fn session_of(req: &Request) -> String {
    req.header_values("cookie")
        .iter()
        .flat_map(|h| {
            String::from_utf8_lossy(h)
                .split(';')
                .map(|p| p.trim().to_string())
                .collect::<Vec<_>>()
        })
        .find_map(|pair| {
            pair.strip_prefix("session_id=")
                .or_else(|| pair.strip_prefix("sc_session="))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Payment outcome of a session: same in every build. 3 % declined, 0.3 % fail with 503.
pub fn payment_of(session: &str) -> (u16, &'static str) {
    match fnv(format!("pay:{session}").as_bytes()) % 1000 {
        0..=2 => (503, "error"),
        3..=32 => (200, "declined"),
        _ => (200, "approved"),
    }
}

/// The shop's HTTP handler for one build, answering as `version`.
pub fn handler(version: &str, build: Build) -> Handler {
    let version = version.to_string();
    Arc::new(move |req: &Request| {
        let session = session_of(req);
        let cart = Cart::for_session(&session);
        let base = |status| {
            Response::new(status)
                .header("x-upstream", &version)
                .header("content-type", "application/json")
        };
        let path = req.path.split('?').next().unwrap_or("/");
        match path {
            "/cart" => base(200).body(
                json!({
                    "lines": cart.lines.iter().map(|l| json!({"unit": dollars(l.unit_cents), "qty": l.qty})).collect::<Vec<_>>(),
                    "subtotal": dollars(cart.subtotal()),
                })
                .to_string(),
            ),
            "/checkout" => {
                let (subtotal, tax) = (cart.subtotal(), cart.tax(build));
                let id = format!("o-{:x}", fnv(session.as_bytes()));
                base(200)
                    .header("x-order-id", &id)
                    .header("x-order-total", &dollars(subtotal + tax))
                    .header("x-order-tax", &dollars(tax))
                    .body(
                        json!({"order": {"id": id, "subtotal": dollars(subtotal), "tax": dollars(tax),
                                         "total": dollars(subtotal + tax)}})
                        .to_string(),
                    )
            }
            "/pay" => {
                let (status, outcome) = payment_of(&session);
                if status != 200 {
                    return base(status).body(r#"{"error":"payment provider unavailable"}"#);
                }
                base(200).body(json!({"authorization": {"status": outcome}}).to_string())
            }
            _ => base(404).body(r#"{"error":"not found"}"#),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bug is real: carts differ by a cent or more, always upwards, and only a little.
    #[test]
    fn the_canary_overcharges_tax_a_little_on_every_cart() {
        let n = 5_000;
        let (mut differ, mut correct_sum, mut buggy_sum, mut total_sum) = (0, 0u64, 0u64, 0u64);
        for i in 0..n {
            let cart = Cart::for_session(&format!("s-{i}"));
            let (ok, bug) = (
                cart.tax(Build::Correct),
                cart.tax(Build::TaxPerUnitRoundedUp),
            );
            assert!(bug >= ok, "per-unit round-up never undercharges");
            if bug > ok {
                differ += 1;
            }
            correct_sum += ok;
            buggy_sum += bug;
            total_sum += cart.subtotal() + ok;
        }
        assert!(
            differ > n * 9 / 10,
            "most carts differ by a cent or more: {differ}/{n}"
        );
        let tax_drift = (buggy_sum - correct_sum) as f64 / correct_sum as f64;
        let aov_drift = (buggy_sum - correct_sum) as f64 / total_sum as f64;
        assert!(
            (0.03..0.08).contains(&tax_drift),
            "tax per order drifts a few percent: {tax_drift}"
        );
        assert!(
            aov_drift < 0.01,
            "the order value barely moves: {aov_drift}"
        );
    }

    #[test]
    fn worked_example() {
        let cart = Cart {
            lines: vec![
                Line {
                    unit_cents: 99,
                    qty: 3,
                },
                Line {
                    unit_cents: 19,
                    qty: 1,
                },
            ],
        };
        assert_eq!(cart.subtotal(), 316);
        // 316 × 8.875 % = 28.045 → 28
        assert_eq!(cart.tax(Build::Correct), 28);
        // 99 × 8.875 % = 8.786 → 9 per unit × 3 = 27; 19 × 8.875 % = 1.686 → 2; 29
        assert_eq!(cart.tax(Build::TaxPerUnitRoundedUp), 29);
        assert_eq!(dollars(29), "0.29");
        assert_eq!(dollars(12345), "123.45");
    }

    #[test]
    fn carts_and_payments_are_deterministic_per_session() {
        assert_eq!(Cart::for_session("abc"), Cart::for_session("abc"));
        assert_ne!(Cart::for_session("abc"), Cart::for_session("abd"));
        let outcomes: Vec<_> = (0..10_000)
            .map(|i| payment_of(&format!("s{i}")).1)
            .collect();
        let approved = outcomes.iter().filter(|o| **o == "approved").count();
        assert!((9_500..9_800).contains(&approved), "{approved}");
    }

    #[test]
    fn session_from_cookies() {
        let req = Request::get("/cart").header("cookie", "a=1; session_id=xyz; b=2");
        assert_eq!(session_of(&req), "xyz");
        let req = Request::get("/cart").header("cookie", "sc_session=minted");
        assert_eq!(session_of(&req), "minted");
    }
}
