//! Reading Envoy's Prometheus output: the product CLI's parser (`sticky_canary_cli::prom`),
//! re-exported, and [`ScrapeExt::get`], the tests' lookup of one series, which fails the test
//! when the series is missing.

pub use sticky_canary_cli::prom::{Sample, Scrape};

/// The tests' lookups in a [`Scrape`] (bring it into scope with
/// `use sticky_canary_harness::prom::ScrapeExt`).
pub trait ScrapeExt {
    /// Like [`Scrape::value`], but a missing series fails the test, with the scrape's lines that
    /// hold the metric's name.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64;
}

impl ScrapeExt for Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            let lines: Vec<&str> = self.text.lines().filter(|l| l.contains(name)).collect();
            panic!(
                "no series {name}{labels:?}; lines with that name:\n{}",
                lines.join("\n")
            )
        })
    }
}
