//! The checks the gate runs: what each compares, the metrics and keys it reads, and the
//! business checks used when the command line names none.

use crate::gate::sources::{grpc_status, responses_5xx};
use sticky_canary::metrics::names::{self, business_squares, business_total};

/// One comparison of a canary with the baseline. The tests named are the sequential ones (the
/// default) and, after "fixed:", those of [`Mode::Fixed`](super::Mode::Fixed).
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// 5xx / responses; rollback when the canary's is more than `max_points` percentage points
    /// higher (one-sided mSPRT; fixed: one-sided pooled two-proportion z-test).
    ErrorRatio { max_points: f64 },
    /// Retried responses / responses (`canary_retried_responses_total` over
    /// `canary_responses_total`); rollback when the canary's is more than `max_points`
    /// percentage points higher (as `ErrorRatio`).
    RetryRatio { max_points: f64 },
    /// gRPC responses whose `grpc_status` is one of `codes` / every gRPC response
    /// (`canary_grpc_responses_total`); rollback when the canary's is more than `max_points`
    /// percentage points higher (as `ErrorRatio`).
    GrpcErrorRatio { max_points: f64, codes: Vec<u8> },
    /// NUM / DEN of two business counters, higher is better; rollback when the canary's drops by
    /// more than `max_drop_points` percentage points (one-sided mSPRT; fixed: one-sided pooled
    /// two-proportion z-test).
    Ratio {
        label: String,
        num: String,
        den: String,
        max_drop_points: f64,
    },
    /// SUM / COUNT (a `sum` rule per counted item); rollback when the canary's mean differs by
    /// more than `max_drift_percent` percent, either way (two-sided mSPRT with Welch's variance,
    /// each side at alpha/2; fixed: two-sided Welch test, normal approximation).
    Mean {
        label: String,
        sum: String,
        count: String,
        max_drift_percent: f64,
    },
}

impl Check {
    /// The name of the check in reports.
    pub fn label(&self) -> &str {
        match self {
            Check::ErrorRatio { .. } => "error_ratio",
            Check::RetryRatio { .. } => "retry_ratio",
            Check::GrpcErrorRatio { .. } => "grpc_error_ratio",
            Check::Ratio { label, .. } | Check::Mean { label, .. } => label,
        }
    }

    /// The metric names this check reads.
    pub fn metrics(&self) -> Vec<String> {
        match self {
            Check::ErrorRatio { .. } => vec![names::RESPONSES.to_string()],
            Check::RetryRatio { .. } => vec![
                names::RETRIED_RESPONSES.to_string(),
                names::RESPONSES.to_string(),
            ],
            Check::GrpcErrorRatio { .. } => vec![names::GRPC_RESPONSES.to_string()],
            Check::Ratio { num, den, .. } => vec![business_total(num), business_total(den)],
            Check::Mean { sum, count, .. } => vec![
                business_total(sum),
                business_squares(sum),
                business_total(count),
            ],
        }
    }

    /// The keys this check reads (what [`Totals::from_prometheus`](crate::gate::Totals::from_prometheus) must query).
    pub fn keys(&self) -> Vec<String> {
        match self {
            Check::ErrorRatio { .. } => vec![names::RESPONSES.to_string(), responses_5xx()],
            Check::GrpcErrorRatio { codes, .. } => std::iter::once(names::GRPC_RESPONSES.into())
                .chain(codes.iter().map(|c| grpc_status(*c)))
                .collect(),
            _ => self.metrics(),
        }
    }
}

/// The business checks without any `--ratio` or `--mean`: approval ratio and average order
/// value.
pub fn default_business_checks() -> Vec<Check> {
    vec![
        Check::Ratio {
            label: "approval".into(),
            num: "auth_approved".into(),
            den: "payments".into(),
            max_drop_points: 0.3,
        },
        Check::Mean {
            label: "aov".into(),
            sum: "order_value".into(),
            count: "orders".into(),
            max_drift_percent: 1.0,
        },
    ]
}
