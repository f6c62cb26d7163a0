//! Reading Envoy's `/stats/prometheus` (Prometheus text format 0.0.4): what `sticky-canary gate
//! --envoy` sums, and what the end-to-end tests assert on.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// All samples of one scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// The raw text.
    pub text: String,
}

/// The labels between the braces of a series (`a="1",b="x\"y"`), escapes undone; `None`
/// when they do not parse.
fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = rest[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => return None,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        labels.insert(key, value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

impl Scrape {
    /// Every sample of `text`; comments, blank lines and lines that do not parse are skipped.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let value = value.parse::<f64>().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n.to_string(), parse_labels(rest.strip_suffix('}')?)?),
                    None => (series.to_string(), BTreeMap::new()),
                };
                Some(Sample {
                    name,
                    labels,
                    value,
                })
            })
            .collect();
        Scrape {
            samples,
            text: text.to_string(),
        }
    }

    /// The value of the series with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Every sample whose name starts with `prefix`.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name.starts_with(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_output() {
        let text = "# TYPE canary_requests_total counter\n\
                    canary_requests_total{service=\"checkout\",version=\"canary\",reason=\"hash\"} 2\n\
                    canary_business_tax_bucket{service=\"c\",version=\"v1.2\",le=\"+Inf\"} 3\n\
                    envoy_server_live{} 1\n\
                    plain 4.5\n";
        let s = Scrape::parse(text);
        assert_eq!(s.samples.len(), 4);
        assert_eq!(
            s.value(
                "canary_requests_total",
                &[
                    ("reason", "hash"),
                    ("service", "checkout"),
                    ("version", "canary")
                ]
            ),
            Some(2.0)
        );
        assert_eq!(
            s.value(
                "canary_business_tax_bucket",
                &[("service", "c"), ("version", "v1.2"), ("le", "+Inf")]
            ),
            Some(3.0)
        );
        assert_eq!(s.value("envoy_server_live", &[]), Some(1.0));
        assert_eq!(s.value("plain", &[]), Some(4.5));
        assert_eq!(
            s.value("canary_requests_total", &[("service", "checkout")]),
            None,
            "labels must match exactly"
        );
    }
}
