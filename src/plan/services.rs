//! The plugin's document: one service (without `match` it takes every
//! request), or `{"services": [ {service}, ... ]}`, several services in one plugin instance, each
//! with its own `match`. Compiled into one [`Plan`] per service and the [`Matcher`] over them.
//!
//! Every refusal in a multi-service document names the service: `services[2].versions[0].weight`.

use crate::check::ConfigError;
use crate::config::{parse, RawConfig};
use crate::formats::json::{name_matches, Scanner};
use crate::plan::Plan;
use crate::routing::matcher::{Match, Matcher};

/// Most services one plugin instance may carry. Configure time, memory and the metrics Envoy
/// keeps grow with it (the manual, "Performance"); the lookup per request does not.
pub const MAX_SERVICES: usize = 1000;

/// Every service of a plugin instance, compiled, and which request is whose.
#[derive(Debug)]
pub struct Services {
    /// In document order; `matcher` answers indexes into it.
    pub plans: Vec<Plan>,
    pub matcher: Matcher,
}

/// The top-level members of a document (raw name, value offset); `None` when it is not a
/// well-formed object (the single-service reader then says what is wrong).
fn members(bytes: &[u8]) -> Option<Vec<(&[u8], usize)>> {
    let mut s = Scanner {
        doc: bytes,
        pos: 0,
        depth: 0,
    };
    let members = s.children().ok()?;
    s.skip_ws();
    s.peek().is_none().then_some(members)
}

impl Services {
    /// Parses and compiles a document; `env` reads the VM's environment variables.
    pub fn from_json_with_env(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Services, ConfigError> {
        let members = members(bytes).unwrap_or_default();
        let services = members
            .iter()
            .find(|(name, _)| name_matches(name, b"services"));
        // The single-service document is the one service at offset 0, read by the single-service reader.
        let single = services.is_none();
        let mut starts = vec![0];
        if let Some(&(_, at)) = services {
            if let Some((name, _)) = members
                .iter()
                .find(|(name, _)| !name_matches(name, b"services"))
            {
                return Err(ConfigError::new(
                    std::str::from_utf8(name).unwrap_or("(a member)"),
                    "a document with \"services\" holds nothing else: this field belongs inside \
                     each service",
                ));
            }
            starts = Scanner {
                doc: bytes,
                pos: at,
                depth: 0,
            }
            .children()
            .ok()
            .filter(|_| bytes.get(at) == Some(&b'['))
            .ok_or_else(|| ConfigError::new("services", "expected an array of services"))?
            .into_iter()
            .map(|(_, start)| start)
            .collect();
            if starts.is_empty() || starts.len() > MAX_SERVICES {
                return Err(ConfigError::new(
                    "services",
                    "1 to 1000 services are allowed",
                ));
            }
        }
        let prefix = |i: usize| {
            if single {
                String::new()
            } else {
                format!("services[{i}].")
            }
        };
        let mut plans: Vec<Plan> = Vec::with_capacity(starts.len());
        for (i, &start) in starts.iter().enumerate() {
            let service: RawConfig = if single {
                parse(bytes)?
            } else {
                crate::config::de::from_element(bytes, start, "services", i)?
            };
            let at = |path: &str| prefix(i) + path;
            if service.match_.is_none() && !single {
                return Err(ConfigError::new(
                    at("match"),
                    "required when the document lists services: the hosts (and path prefixes) \
                     whose requests are this service's",
                ));
            }
            let plan =
                Plan::compile(service, env).map_err(|e| ConfigError::new(at(&e.path), e.reason))?;
            if let Some(j) = plans.iter().position(|p| p.service == plan.service) {
                return Err(ConfigError::new(
                    at("service"),
                    format!(
                        "duplicate service name {:?} (also services[{j}]); each service has its \
                         own metrics, salt and guard record",
                        plan.service
                    ),
                ));
            }
            plans.push(plan);
        }
        let matcher = match plans.as_slice() {
            [p] if p.match_.is_none() => Matcher::everything(),
            _ => {
                let matches: Vec<(&str, &Match)> = plans
                    .iter()
                    .filter_map(|p| Some((p.service.as_str(), p.match_.as_ref()?)))
                    .collect();
                Matcher::build(&matches, &prefix)?
            }
        };
        Ok(Services { plans, matcher })
    }

    /// The services' common tick, in ms: the smallest of their own ([`Plan::tick_ms`]); 0 when
    /// no service needs a tick.
    pub fn tick_ms(&self) -> u32 {
        self.plans
            .iter()
            .map(Plan::tick_ms)
            .filter(|&ms| ms > 0)
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn service(name: &str, hosts: &[&str]) -> Value {
        json!({
            "service": name,
            "versions": [{"name": "canary", "weight": 10}, {"name": "stable", "weight": 90}],
            "session": {"sources": [{"cookie": "session_id"}]},
            "match": {"hosts": hosts}
        })
    }

    fn compile(doc: &Value) -> Result<Services, ConfigError> {
        Services::from_json_with_env(doc.to_string().as_bytes(), &|_| None)
    }

    #[test]
    fn the_single_service_document_is_unchanged() {
        let mut single = service("shop", &[]);
        single.as_object_mut().unwrap().remove("match");
        let s = compile(&single).unwrap();
        assert_eq!(s.plans.len(), 1);
        assert_eq!(s.matcher.matches_everything(), Some(0));
        // With a match, a single service takes only its hosts.
        let s = compile(&service("shop", &["shop.example.com"])).unwrap();
        assert_eq!(s.matcher.matches_everything(), None);
        let mut a = b"other".to_vec();
        assert_eq!(s.matcher.find(&mut a, None), None);
        let e = compile(&service("shop", &["*"])).unwrap_err();
        assert_eq!(e.path, "match.hosts[0]");
    }

    #[test]
    fn many_services_each_their_own_plan() {
        let doc = json!({"services": [
            service("shop", &["shop.example.com"]),
            service("payments", &["pay.example.com", "*.pay.example.com"]),
        ]});
        let s = compile(&doc).unwrap();
        assert_eq!(s.plans.len(), 2);
        assert_eq!(s.plans[1].service, "payments");
        let mut a = b"eu.pay.example.com:443".to_vec();
        assert_eq!(s.matcher.find(&mut a, None), Some(1));
        assert_eq!(s.tick_ms(), 1000);
    }

    #[test]
    fn refusals_name_the_service() {
        let mut fast = service("a", &["a.com"]);
        fast["metrics_flush_ms"] = 250.into();
        let s = compile(&json!({"services": [service("b", &["b.com"]), fast]})).unwrap();
        assert_eq!(s.tick_ms(), 250, "the smallest interval");
        // A pool's interval bounds the tick (queries go out on ticks).
        let mut pooled = service("p", &["p.com"]);
        pooled["metrics_flush_ms"] = 60_000.into();
        pooled["guard"] = json!({"checks": [{"error_ratio": {"max_points": 1}}],
                                 "pool": {"cluster": "prometheus", "interval_ms": 5000}});
        let s = compile(&json!({"services": [pooled.clone()]})).unwrap();
        assert_eq!(s.tick_ms(), 5000);
        pooled["guard"]["pool"]["interval_ms"] = 90_000.into();
        let s = compile(&json!({"services": [pooled]})).unwrap();
        assert_eq!(s.tick_ms(), 60_000, "the flush when it is shorter");
        let mut no_match = service("b", &[]);
        no_match.as_object_mut().unwrap().remove("match");
        let mut bad_weight = service("b", &["b.com"]);
        bad_weight["versions"][0]["weight"] = json!(-1);
        let mut bad_name = service("b", &["b.com"]);
        bad_name["versions"][1]["name"] = json!("canary");
        let cases = [
            (json!({"services": []}), "services", "1 to 1000"),
            (json!({"services": {}}), "services", "expected an array"),
            (
                json!({"services": [service("a", &["a.com"])], "salt": "x"}),
                "salt",
                "holds nothing else",
            ),
            (
                json!({"services": [service("a", &["a.com"]), no_match]}),
                "services[1].match",
                "required",
            ),
            (
                json!({"services": [service("a", &["a.com"]), service("a", &["b.com"])]}),
                "services[1].service",
                "duplicate service name \"a\" (also services[0])",
            ),
            (
                json!({"services": [service("a", &["a.com"]), service("b", &["x.com", "A.com"])]}),
                "services[1].match.hosts[1]",
                "already claimed by services[0] (a)",
            ),
            (
                json!({"services": [service("a", &["a.*.com"])]}),
                "services[0].match.hosts[0]",
                "not a host",
            ),
            (
                json!({"services": [service("a", &[])]}),
                "services[0].match.hosts",
                "at least one host",
            ),
            (
                json!({"services": [service("a", &["a.com"]), bad_weight]}),
                "services[1].versions[0].weight",
                "invalid value",
            ),
            (
                json!({"services": [bad_name]}),
                "services[0].versions[1].name",
                "duplicate version name",
            ),
        ];
        for (doc, path, says) in cases {
            let e = compile(&doc).unwrap_err();
            assert_eq!(e.path, path, "{e}");
            assert!(e.reason.contains(says), "{e}");
        }
        let many: Vec<Value> = (0..=MAX_SERVICES)
            .map(|i| service(&format!("s{i}"), &[&format!("s{i}.com")]))
            .collect();
        let e = compile(&json!({ "services": many })).unwrap_err();
        assert_eq!(e.path, "services");
    }

    #[test]
    fn a_thousand_services_compile_quickly() {
        let many: Vec<Value> = (0..MAX_SERVICES)
            .map(|i| service(&format!("s{i}"), &[&format!("s{i}.example.com")]))
            .collect();
        let doc = json!({ "services": many }).to_string();
        let start = std::time::Instant::now();
        let s = Services::from_json_with_env(doc.as_bytes(), &|_| None).unwrap();
        assert_eq!(s.plans.len(), MAX_SERVICES);
        let mut a = b"s999.example.com".to_vec();
        assert_eq!(s.matcher.find(&mut a, None), Some(999));
        // Debug build, shared CI cores: a generous bound (it takes a few ms in release).
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    }
}
