//! The rollback guard: with a ROLLBACK verdict, what each rolled-back canary wrote
//! (`canary_writes_total`), the kind of rollback that follows (zero-kill, gradual, or unknown),
//! and its steps, in words and as JSON.

use super::numbers::fmt_n;
use super::{num, opt, Report};
use serde_json::{json, Value};
use sticky_canary::metrics::names;

/// The rollback guard's reading of one rolled-back canary: what it wrote, from
/// `canary_writes_total` (requests whose method changes state, per served version).
#[derive(Clone, Debug, PartialEq)]
pub struct Writes {
    pub version: String,
    /// `None`: the data has no `canary_writes_total` at all (a filter that counts no writes).
    /// A version without a series while others have one counts 0.
    pub writes: Option<f64>,
    /// Per method, when the series carry a `method` label (Envoy scrapes only).
    pub methods: Vec<(String, f64)>,
}

/// How to roll a canary back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RollbackKind {
    /// It wrote nothing: every session may move to the baseline at once.
    ZeroKill,
    /// Whether it wrote is unknown: roll back as if it had.
    Unknown,
    /// It wrote: stop new sessions, reconcile, then move the rest.
    Gradual,
}

impl RollbackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackKind::ZeroKill => "zero-kill",
            RollbackKind::Gradual => "gradual",
            RollbackKind::Unknown => "unknown",
        }
    }
}

impl Writes {
    pub fn kind(&self) -> RollbackKind {
        match self.writes {
            None => RollbackKind::Unknown,
            Some(w) if w > 0.0 => RollbackKind::Gradual,
            Some(_) => RollbackKind::ZeroKill,
        }
    }

    /// One line: the kind of rollback and why. `window` as in [`Report::window`].
    pub fn summary(&self, baseline: &str, window: Option<&str>) -> String {
        let when = window_words(window);
        match (self.kind(), self.writes) {
            (RollbackKind::Gradual, Some(n)) => format!(
                "gradual rollback: the canary served {} writes {when}",
                fmt_n(n)
            ),
            (RollbackKind::ZeroKill, _) => format!(
                "zero-kill rollback: route every session to {baseline} now (the canary changed no \
                 state {when})"
            ),
            _ => format!(
                "unknown: the filter publishes no {} (a filter that counts no writes); roll back \
                 gradually, as if the canary had written",
                names::WRITES
            ),
        }
    }

    /// The steps of the rollback, in order.
    pub fn steps(&self, baseline: &str, window: Option<&str>) -> Vec<String> {
        let v = &self.version;
        let when = window_words(window);
        match (self.kind(), self.writes) {
            (RollbackKind::ZeroKill, _) => {
                let mut steps = Vec::new();
                if let Some(w) = window {
                    steps.push(format!(
                        "make sure {v} served only within the last {w}: writes before it are not \
                         counted (the gate without --window counts them all)"
                    ));
                }
                steps.push(format!(
                    "route every session to {baseline} now (weight 0 / cohort 0 %, pins \
                     dropped): {v} served no state-changing request {when}, so no flow cookie \
                     keeps anyone on it"
                ));
                steps.push(format!("scale {v} down"));
                steps
            }
            (kind, writes) => {
                let reconcile = match (kind, writes) {
                    (RollbackKind::Gradual, Some(n)) => format!(
                        "reconcile what {v} wrote: {} requests ({}) {when}, before {baseline} \
                         reads that state",
                        fmt_n(n),
                        self.methods_text()
                    ),
                    _ => format!(
                        "find out what {v} wrote (the filter counts no writes: look for POST, PUT, \
                         PATCH and DELETE requests it served) and reconcile it"
                    ),
                };
                vec![
                    format!(
                        "stop new sessions reaching {v} (weight 0 / cohort 0 %): sessions without \
                         a write move to {baseline} at once; with session.hold.flows, flows that \
                         wrote on {v} finish there until their flow cookies expire \
                         (drain_seconds), so none is split between the versions"
                    ),
                    reconcile,
                    format!(
                        "once no flow drains on {v} (canary_flows_draining{{version=\"{v}\"}} at \
                         0 in every Envoy, or drain_seconds after step 1), drop the pins and \
                         overrides to {v}: it serves no session"
                    ),
                    format!("scale {v} down"),
                ]
            }
        }
    }

    fn methods_text(&self) -> String {
        if self.methods.is_empty() {
            "state-changing methods: POST, PUT, PATCH, DELETE unless the plugin config names \
             others"
                .into()
        } else {
            self.methods
                .iter()
                .map(|(m, n)| format!("{m} {}", fmt_n(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// When the writes were counted: `in the last 30m`, or `since the counters started`.
fn window_words(window: Option<&str>) -> String {
    match window {
        Some(w) => format!("in the last {w}"),
        None => "since the counters started".into(),
    }
}

impl Report {
    /// The rollback guard as JSON: null unless ROLLBACK; else the kind, writes and steps (of the
    /// one rolled-back canary; with several, the most cautious kind, the writes summed and each
    /// one's steps prefixed with its version), and `versions`, one entry per canary.
    pub(super) fn rollback_json(&self) -> Value {
        if self.rollbacks.is_empty() {
            return Value::Null;
        }
        let window = self.window.as_deref();
        let b = self.baseline.as_str();
        let versions: Vec<Value> = self
            .rollbacks
            .iter()
            .map(|w| {
                let methods: serde_json::Map<String, Value> = w
                    .methods
                    .iter()
                    .map(|(m, n)| (m.clone(), num(*n)))
                    .collect();
                json!({
                    "version": w.version,
                    "kind": w.kind().as_str(),
                    "writes": opt(w.writes),
                    "methods": methods,
                    "summary": w.summary(b, window),
                    "steps": w.steps(b, window),
                })
            })
            .collect();
        let kind = self
            .rollbacks
            .iter()
            .map(Writes::kind)
            .max()
            .unwrap_or(RollbackKind::Unknown);
        let writes: Option<f64> = self.rollbacks.iter().map(|w| w.writes).sum();
        let steps: Vec<String> = match self.rollbacks.as_slice() {
            [one] => one.steps(b, window),
            all => all
                .iter()
                .flat_map(|w| {
                    w.steps(b, window)
                        .into_iter()
                        .map(move |s| format!("{}: {s}", w.version))
                })
                .collect(),
        };
        json!({
            "kind": kind.as_str(),
            "writes": opt(writes),
            "steps": steps,
            "versions": versions,
        })
    }
}
