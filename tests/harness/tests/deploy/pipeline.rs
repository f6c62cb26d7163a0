//! The staged pipeline of `istio/argo-rollouts/rollout.yaml`, proven in a real Envoy with the built
//! module: every step's VirtualService rendered the way Argo Rollouts renders it, translated to
//! Envoy routes the way Istio translates it, delivered through file-based LDS between steps, and
//! returning sessions driven through the whole pipeline.
//!
//! What Argo does (argoproj/argo-rollouts, `rollout/trafficrouting/istio/istio.go`):
//! - `SetHeaderRoute` → `reconcileVirtualServiceHeaderRoutes`: `removeRoute(name)` first (so a
//!   later step with the same `name` replaces the route), then appends `createHeaderRoute`: one
//!   HTTP route named after the step, one `match` entry per `match` item (`createHeaderRouteMatch`:
//!   `headers: {name: {exact|regex|prefix}}`; separate entries are OR), and a single destination,
//!   the canary subset of the DestinationRule's host, weight 100 (`routeDestination`), on the port
//!   of the `virtualService.routes` route's first destination (`getVirtualServiceCanaryPort`);
//! - then `orderRoutes` → `getOrderedVirtualServiceRoutes`: the managed routes, in the order of
//!   `trafficRouting.managedRoutes`, above every route Argo does not manage (kept in order);
//! - `RemoveManagedRoutes` (abort, full promotion; `rollout/trafficrouting.go`,
//!   `reconcileTrafficRouting`) removes the route of every `setHeaderRoute` step;
//! - only the *current* step's `setHeaderRoute` is applied (`reconcileTrafficRouting`), so earlier
//!   managed routes stay until replaced or removed; after the last step the desired weight is 100:
//!   `SetWeight` puts the `virtualService.routes` route's canary destination at 100.
//!
//! What Istio does (istio/istio, `pilot/pkg/networking/core/route/route.go`):
//! - `BuildHTTPRoutesForVirtualService`: the HTTP routes in order, one Envoy route per `match`
//!   entry (`TranslateRoute`), stopping after a catch-all;
//! - `TranslateRouteMatch` / `translateHeaderMatch`: headers sorted by name, each a `string_match`
//!   from `util.ConvertToEnvoyMatch` (`pilot/pkg/networking/util/util.go`): `exact` → `exact`,
//!   `prefix` → `prefix`, `regex` → `safe_regex` (RE2; Envoy matches the WHOLE value);
//! - destinations (`processDestination` / `processWeightedDestination`): one destination →
//!   `cluster`, several → `weighted_clusters` without the weight-0 ones; the cluster name is
//!   `outbound|<port>|<subset>|<host>` (`GetDestinationCluster` → `model.BuildSubsetKey`), which
//!   the filter maps back to the version (`Plan::version_of_cluster`).

use super::carriers::{carrier, plan, Carrier};
use super::in_envoy::{bucket_text, carrier_in_envoy, seen_upstream, QA_TOKEN};
use super::manifests::{find, manifests};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use sticky_canary::plan::Plan;
use sticky_canary::routing::hash::bucket;
use sticky_canary_cli::cohort;
use sticky_canary_harness::envoy::{Envoy, EnvoyConfig};
use sticky_canary_harness::http::{Client, Request, Response, Upstream};
use sticky_canary_harness::Keys;

/// The staged pipeline the Rollout must ship, in order: (managed route, cohort in hundredths of a
/// percent). Stage zero and the test merchants move no bucket.
const PIPELINE: &[(&str, u32)] = &[
    ("stage-zero", 0),
    ("test-merchants", 0),
    ("cohort", 500),
    ("cohort", 2500),
    ("cohort", 5000),
];
/// The test merchants of the merchant stage (the header the trusted hop writes).
const MERCHANTS: &[&str] = &["m_test_1", "m_test_2", "m_test_3"];
const MERCHANT_HEADER: &str = "x-merchant-id";

/// The Rollout's routing, as Argo reads it.
struct Rollout {
    steps: Vec<Value>,
    managed: Vec<String>,
    /// `virtualService.routes`: the routes `SetWeight` edits.
    weighted_routes: Vec<String>,
    canary_subset: String,
    stable_subset: String,
    /// The DestinationRule's host (`getDestinationRuleHost`).
    host: String,
    /// The VirtualService's `spec.http` as shipped.
    http: Vec<Value>,
}

fn rollout() -> Rollout {
    let all = manifests();
    let ro = find(&all, "Rollout", "checkout");
    let canary = &ro.doc["spec"]["strategy"]["canary"];
    let istio = &canary["trafficRouting"]["istio"];
    // istio/routing/ ships a VirtualService and a DestinationRule of the same names: the
    // Rollout's are those next to it.
    let next_to_it = |kind: &str, name: &Value| {
        all.iter()
            .find(|m| m.kind() == kind && m.file == ro.file && m.doc["metadata"]["name"] == *name)
            .unwrap_or_else(|| panic!("{kind} {name} in {}", ro.file))
    };
    let vs = next_to_it("VirtualService", &istio["virtualService"]["name"]);
    let dr = next_to_it("DestinationRule", &istio["destinationRule"]["name"]);
    let strings = |v: &Value, field: Option<&str>| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| field.map_or(x, |f| &x[f]).as_str().unwrap().to_string())
            .collect()
    };
    Rollout {
        steps: canary["steps"].as_array().unwrap().clone(),
        managed: strings(&canary["trafficRouting"]["managedRoutes"], Some("name")),
        weighted_routes: strings(&istio["virtualService"]["routes"], None),
        canary_subset: istio["destinationRule"]["canarySubsetName"]
            .as_str()
            .unwrap()
            .to_string(),
        stable_subset: istio["destinationRule"]["stableSubsetName"]
            .as_str()
            .unwrap()
            .to_string(),
        host: dr.doc["spec"]["host"].as_str().unwrap().to_string(),
        http: vs.doc["spec"]["http"].as_array().unwrap().clone(),
    }
}

impl Rollout {
    /// `getVirtualServiceCanaryPort`: the port of the first destination of the first
    /// `virtualService.routes` route.
    fn canary_port(&self, http: &[Value]) -> Option<u64> {
        let r = http
            .iter()
            .find(|r| r["name"].as_str() == Some(self.weighted_routes[0].as_str()))?;
        r["route"][0]["destination"]["port"]["number"].as_u64()
    }

    /// `SetHeaderRoute`: remove the route of that name, append the new one (if it has a match),
    /// order the managed routes above the others.
    fn set_header_route(&self, http: &mut Vec<Value>, step: &Value) {
        let name = step["name"].as_str().unwrap();
        http.retain(|r| r["name"].as_str() != Some(name));
        if let Some(matches) = step["match"].as_array() {
            let mut dest = json!({"host": self.host, "subset": self.canary_subset});
            if let Some(port) = self.canary_port(http) {
                dest["port"] = json!({"number": port});
            }
            let matches: Vec<Value> = matches
                .iter()
                .map(|m| {
                    let value: serde_json::Map<String, Value> = ["exact", "regex", "prefix"]
                        .iter()
                        .filter_map(|k| {
                            let v = m["headerValue"][*k].as_str().filter(|v| !v.is_empty())?;
                            Some((k.to_string(), json!(v)))
                        })
                        .collect();
                    json!({"headers": {m["headerName"].as_str().unwrap(): value}})
                })
                .collect();
            http.push(json!({
                "name": name,
                "match": matches,
                "route": [{"destination": dest, "weight": 100}],
            }));
        }
        self.order_routes(http);
    }

    /// `orderRoutes` / `getOrderedVirtualServiceRoutes`.
    fn order_routes(&self, http: &mut Vec<Value>) {
        let is_managed = |r: &Value| {
            r["name"]
                .as_str()
                .is_some_and(|n| self.managed.iter().any(|m| m == n))
        };
        let mut out: Vec<Value> = self
            .managed
            .iter()
            .flat_map(|m| http.iter().filter(move |r| r["name"].as_str() == Some(m)))
            .cloned()
            .collect();
        out.extend(http.iter().filter(|r| !is_managed(r)).cloned());
        *http = out;
    }

    /// `RemoveManagedRoutes`: the route of every `setHeaderRoute` step goes.
    fn remove_managed_routes(&self, http: &mut Vec<Value>) {
        for s in self.steps.iter().filter_map(|s| s.get("setHeaderRoute")) {
            http.retain(|r| r["name"] != s["name"]);
        }
    }

    /// `SetWeight(desired)` on the `virtualService.routes` routes: canary subset `desired`, stable
    /// subset `100 - desired`.
    fn set_weight(&self, http: &mut [Value], desired: u64) {
        for r in http.iter_mut().filter(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| self.weighted_routes.iter().any(|w| w == n))
        }) {
            for d in r["route"].as_array_mut().unwrap() {
                let subset = d["destination"]["subset"].as_str().unwrap().to_string();
                if subset == self.canary_subset {
                    d["weight"] = json!(desired);
                } else if subset == self.stable_subset {
                    d["weight"] = json!(100 - desired);
                }
            }
        }
    }
}

/// Istio's cluster name for a VirtualService destination (`model.BuildSubsetKey`).
fn istio_cluster(dest: &Value) -> String {
    format!(
        "outbound|{}|{}|{}",
        dest["port"]["number"].as_u64().expect("a destination port"),
        dest["subset"].as_str().unwrap_or(""),
        dest["host"].as_str().unwrap()
    )
}

/// `ConvertToEnvoyMatch`.
fn envoy_string_match(m: &Value) -> Value {
    if let Some(v) = m["exact"].as_str() {
        json!({"exact": v})
    } else if let Some(v) = m["prefix"].as_str() {
        json!({"prefix": v})
    } else if let Some(v) = m["regex"].as_str() {
        json!({"safe_regex": {"regex": v}})
    } else {
        panic!("unsupported string match {m}")
    }
}

/// `BuildHTTPRoutesForVirtualService` for one VirtualService's `spec.http`.
fn envoy_routes(http: &[Value]) -> Vec<Value> {
    let translate = |r: &Value, m: Option<&Value>| {
        let mut headers: Vec<Value> = m
            .and_then(|m| m["headers"].as_object())
            .into_iter()
            .flatten()
            .map(|(name, sm)| json!({"name": name, "string_match": envoy_string_match(sm)}))
            .collect();
        headers.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let mut matcher = json!({"prefix": "/"});
        if !headers.is_empty() {
            matcher["headers"] = Value::Array(headers);
        }
        let dests = r["route"].as_array().unwrap();
        let action = if dests.len() == 1 {
            json!({"cluster": istio_cluster(&dests[0]["destination"])})
        } else {
            let clusters: Vec<Value> = dests
                .iter()
                .filter(|d| d["weight"].as_u64().unwrap_or(0) > 0)
                .map(|d| json!({"name": istio_cluster(&d["destination"]), "weight": d["weight"]}))
                .collect();
            json!({"weighted_clusters": {"clusters": clusters}})
        };
        json!({"match": matcher, "route": action})
    };
    let mut out = Vec::new();
    for r in http {
        match r["match"].as_array().filter(|m| !m.is_empty()) {
            None => {
                out.push(translate(r, None));
                break; // a catch-all: nothing after it can match
            }
            Some(ms) => out.extend(ms.iter().map(|m| translate(r, Some(m)))),
        }
    }
    out
}

/// One state of the VirtualService during the rollout, and who must reach the canary in it.
#[derive(Clone)]
struct Stage {
    label: String,
    http: Vec<Value>,
    /// Sessions whose bucket is below this reach the canary (hundredths of a percent).
    cohort: u32,
    qa: bool,
    merchants: bool,
    /// A ramp-up state (sessions only ever move stable → canary from the previous one).
    ramp: bool,
}

/// The states the shipped Rollout goes through: before, after each `setHeaderRoute`, at the end of
/// the steps (promotion), and an abort from the last bucket step.
fn stages(ro: &Rollout) -> (Vec<Stage>, Stage) {
    let mut http = ro.http.clone();
    let mut out = vec![Stage {
        label: "before".into(),
        http: http.clone(),
        cohort: 0,
        qa: false,
        merchants: false,
        ramp: true,
    }];
    let mut pipeline = PIPELINE.iter();
    for s in ro.steps.iter().filter_map(|s| s.get("setHeaderRoute")) {
        let &(name, cohort) = pipeline
            .next()
            .expect("more setHeaderRoute steps than stages");
        assert_eq!(s["name"], name);
        ro.set_header_route(&mut http, s);
        let prev = out.last().unwrap();
        out.push(Stage {
            label: if cohort > 0 {
                format!("{name} {}%", cohort as f64 / 100.0)
            } else {
                name.to_string()
            },
            http: http.clone(),
            cohort,
            qa: true,
            merchants: prev.merchants || name == "test-merchants",
            ramp: true,
        });
    }
    assert!(
        pipeline.next().is_none(),
        "fewer setHeaderRoute steps than stages"
    );
    let mut abort = http.clone();
    ro.remove_managed_routes(&mut abort);
    ro.set_weight(&mut http, 100);
    out.push(Stage {
        label: "end of steps (100 %)".into(),
        http,
        cohort: 10_000,
        qa: true,
        merchants: true,
        ramp: true,
    });
    let abort = Stage {
        label: "abort".into(),
        http: abort,
        cohort: 0,
        qa: false,
        merchants: false,
        ramp: false,
    };
    (out, abort)
}

#[test]
fn the_rollout_ships_the_staged_pipeline_with_the_cohort_regexes() {
    let ro = rollout();
    let plan = plan(&carrier("WasmPlugin sticky-canary)"));
    let bucket_header = plan.bucket_header.clone().expect("bucket_header is set");
    // The controller drives the cohort: the plugin tags nobody canary by weight.
    assert_eq!(
        (plan.versions[0].name.as_str(), plan.versions[0].weight),
        ("canary", 0)
    );
    let header_steps: Vec<&Value> = ro
        .steps
        .iter()
        .filter_map(|s| s.get("setHeaderRoute"))
        .collect();
    assert_eq!(header_steps.len(), PIPELINE.len());
    for (s, &(name, cohort)) in header_steps.iter().zip(PIPELINE) {
        let m = s["match"].as_array().unwrap();
        assert_eq!(s["name"], name);
        assert_eq!(m.len(), 1, "{name}: one match");
        let value = &m[0]["headerValue"];
        match name {
            "stage-zero" => {
                assert_eq!(m[0]["headerName"], plan.route_header.as_str());
                assert_eq!(value["exact"], "canary");
            }
            "test-merchants" => {
                assert_eq!(m[0]["headerName"], MERCHANT_HEADER);
                assert_eq!(value["regex"], MERCHANTS.join("|"));
            }
            _ => {
                assert_eq!(m[0]["headerName"], bucket_header.as_str());
                assert_eq!(
                    value["regex"].as_str(),
                    Some(cohort::regex(cohort).as_str()),
                    "{name} {cohort}: the regex `sticky-canary cohort` prints"
                );
            }
        }
    }
    // Every stage is followed by its analysis before the next stage (or the promotion).
    let mut analysed = true;
    for s in &ro.steps {
        if s.get("setHeaderRoute").is_some() {
            assert!(analysed, "a stage without analysis before {s}");
            analysed = false;
        }
        analysed |= s.get("analysis").is_some();
    }
    assert!(analysed, "the last stage has its analysis");
    // The merchant stage routes on the header the trusted hop writes from a verified claim.
    let all = manifests();
    let ra = find(&all, "RequestAuthentication", "merchant-auth");
    assert_eq!(
        ra.doc["spec"]["jwtRules"][0]["outputClaimToHeaders"][0]["header"],
        MERCHANT_HEADER
    );
    // Flagger's cohort is the 5 % regex, its merchants the Rollout's.
    let fc = find(&all, "Canary", "checkout");
    let m = &fc.doc["spec"]["analysis"]["match"];
    assert_eq!(
        m[1]["headers"][MERCHANT_HEADER]["regex"],
        MERCHANTS.join("|")
    );
    assert_eq!(
        m[2]["headers"][bucket_header.as_str()]["regex"].as_str(),
        Some(cohort::regex(500).as_str())
    );
}

#[test]
fn argo_rendering_follows_the_reconciler() {
    let ro = rollout();
    let (stages, abort) = stages(&ro);
    let names = |s: &Stage| -> Vec<String> {
        s.http
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&stages[0]), ["primary"]);
    assert_eq!(names(&stages[1]), ["stage-zero", "primary"]);
    // Managed routes in managedRoutes order, above primary; a same-named step replaces.
    for s in &stages[3..6] {
        assert_eq!(
            names(s),
            ["stage-zero", "test-merchants", "cohort", "primary"],
            "{}",
            s.label
        );
        let r = envoy_routes(&s.http);
        assert_eq!(r.len(), 4, "{}: one Envoy route per match", s.label);
        assert_eq!(
            r[2]["match"]["headers"][0]["string_match"]["safe_regex"]["regex"]
                .as_str()
                .unwrap(),
            cohort::regex(s.cohort)
        );
        assert_eq!(
            r[0]["route"]["cluster"],
            "outbound|8080|canary|checkout.shop.svc.cluster.local"
        );
        assert_eq!(
            r[3]["route"]["weighted_clusters"]["clusters"],
            json!([{"name": "outbound|8080|stable|checkout.shop.svc.cluster.local", "weight": 100}])
        );
    }
    assert_eq!(names(&abort), ["primary"]);
    assert_eq!(abort.http, ro.http, "abort restores the shipped routes");
    let end = envoy_routes(&stages.last().unwrap().http);
    assert_eq!(
        end.last().unwrap()["route"]["weighted_clusters"]["clusters"],
        json!([{"name": "outbound|8080|canary|checkout.shop.svc.cluster.local", "weight": 100}])
    );
}

/// A returning session: its key, and its cookie jar's hold cookie (value, expiry).
struct Session {
    key: String,
    hold: Option<Instant>,
}

/// What one request showed.
struct Seen {
    served: String,
    bucket: Vec<String>,
}

struct Rig {
    plan: Plan,
    cfg: EnvoyConfig,
    envoy: Envoy,
    _upstreams: Vec<Upstream>,
    client: Client,
    bucket_header: String,
    hold_cookie: Option<String>,
}

impl Rig {
    /// Envoy with `c`'s plugin configuration (edited by `edit`), clusters named as Istio names
    /// them, the listener delivered by LDS so that each step is a reload.
    fn start(c: &Carrier, edit: impl FnOnce(&mut Value), first: &Stage) -> Rig {
        let mut c = c.clone();
        let mut json: Value = serde_json::from_str(&c.json).unwrap();
        edit(&mut json);
        c.json = json.to_string();
        let (plan, upstreams, mut cfg) = carrier_in_envoy(&c);
        for v in &plan.versions {
            cfg.rename_cluster(
                &v.name,
                &format!("outbound|8080|{}|checkout.shop.svc.cluster.local", v.name),
            );
        }
        set_routes(&mut cfg, first);
        let envoy = Envoy::start_dynamic(&cfg)
            .unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));
        let client = Client::connect(envoy.listener()).unwrap();
        Rig {
            bucket_header: plan.bucket_header.clone().unwrap(),
            hold_cookie: plan.hold.as_ref().map(|h| h.cookie.clone()),
            plan,
            cfg,
            envoy,
            _upstreams: upstreams,
            client,
        }
    }

    /// The step lands: Envoy gets the stage's routes (LDS), the old listener drained.
    fn apply(&mut self, stage: &Stage) {
        set_routes(&mut self.cfg, stage);
        self.envoy.reload(&self.cfg).unwrap();
        self.client = Client::connect(self.envoy.listener()).unwrap();
    }

    fn send(&mut self, req: Request) -> (Seen, Response) {
        let r = self.client.send(&req).expect("request through Envoy");
        assert_eq!(r.status, 200, "{}", r.text());
        let served = r.header_str("x-upstream").unwrap().to_string();
        // The response is tagged with (and counted under) the version that served it.
        assert_eq!(
            r.header_values(&self.plan.response_header),
            [served.as_bytes()]
        );
        let seen = Seen {
            served,
            bucket: seen_upstream(&r, &self.bucket_header),
        };
        (seen, r)
    }

    /// One request of a session, with its cookies; keeps the hold cookie the response sets.
    fn session(&mut self, s: &mut Session, path: &str) -> Seen {
        let now = Instant::now();
        let mut cookie = format!("session_id={}", s.key);
        if let (Some(name), Some(until)) = (&self.hold_cookie, s.hold) {
            if now < until {
                cookie.push_str(&format!("; {name}=1"));
            }
        }
        let (seen, r) = self.send(Request::new("POST", path).header("cookie", &cookie));
        let received = Instant::now();
        if let Some(name) = &self.hold_cookie {
            for v in r.header_values("set-cookie") {
                let v = String::from_utf8_lossy(v);
                if let Some(rest) = v.strip_prefix(&format!("{name}=")) {
                    let age: u64 = rest
                        .split("; ")
                        .find_map(|a| a.strip_prefix("Max-Age="))
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_else(|| panic!("hold cookie without Max-Age: {v}"));
                    s.hold = Some(received + Duration::from_secs(age));
                }
            }
        }
        seen
    }
}

fn set_routes(cfg: &mut EnvoyConfig, stage: &Stage) {
    let rc = json!({
        "name": "checkout",
        "virtual_hosts": [{"name": "checkout", "domains": ["*"], "routes": envoy_routes(&stage.http)}],
    });
    cfg.set_hcm_field("route_config", serde_yaml::to_value(&rc).unwrap());
}

fn sessions(n: usize) -> Vec<Session> {
    Keys::new(2026)
        .take(n)
        .map(|key| Session { key, hold: None })
        .collect()
}

/// The keys the published algorithm puts below `cohort`, computed offline.
fn expected_canary(plan: &Plan, sessions: &[Session], cohort: u32) -> BTreeSet<String> {
    sessions
        .iter()
        .filter(|s| u32::from(bucket(&plan.salt, s.key.as_bytes())) < cohort)
        .map(|s| s.key.clone())
        .collect()
}

/// QA (valid token) and the test merchants, each with a session outside every cohort: on the
/// canary exactly when the stage says so; a merchant id the regex must not match never is
/// (before the full promotion).
fn check_probes(rig: &mut Rig, stage: &Stage, outsider: &str) {
    let with = |r: Request| r.header("cookie", &format!("session_id={outsider}"));
    let expect = |on: bool| if on { "canary" } else { "stable" };
    let (qa, _) = rig.send(with(
        Request::get("/")
            .header("x-canary-override", "canary")
            .header("x-canary-token", QA_TOKEN),
    ));
    assert_eq!(qa.served, expect(stage.qa), "{}: QA", stage.label);
    assert!(qa.bucket.is_empty(), "an override carries no bucket");
    for m in MERCHANTS {
        let (seen, _) = rig.send(with(Request::get("/").header(MERCHANT_HEADER, m)));
        assert_eq!(seen.served, expect(stage.merchants), "{}: {m}", stage.label);
    }
    // RE2 full match: neither a longer id nor a near one.
    for m in ["m_test_10", "xm_test_1", "m_test_4"] {
        let (seen, _) = rig.send(with(Request::get("/").header(MERCHANT_HEADER, m)));
        assert_eq!(
            seen.served,
            expect(stage.cohort == 10_000),
            "{}: {m}",
            stage.label
        );
    }
}

/// A key outside the largest bucket cohort of the ramp (50 %).
fn outsider(plan: &Plan) -> String {
    Keys::new(7)
        .find(|k| bucket(&plan.salt, k.as_bytes()) >= 5000)
        .unwrap()
}

#[test]
fn sessions_ramp_through_the_argo_pipeline_in_envoy() {
    let ro = rollout();
    let (stages, abort) = stages(&ro);
    let c = carrier("WasmPlugin sticky-canary)");
    // Without the hold: a step moves its new cohort at once (and splits flows in progress).
    let mut rig = Rig::start(
        &c,
        |j| {
            j["session"].as_object_mut().unwrap().remove("hold");
        },
        &stages[0],
    );
    let outsider = outsider(&rig.plan);
    let mut all = sessions(2000);
    let n = all.len();
    let mut before: BTreeMap<String, String> = BTreeMap::new();
    let mut report = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        if i > 0 {
            rig.apply(stage);
        }
        let mut canary = BTreeSet::new();
        let mut split = 0;
        let mut now = BTreeMap::new();
        for s in all.iter_mut() {
            // The flow that started before the step (create) finishes after it.
            let authorize = rig.session(s, "/payments/authorize");
            let capture = rig.session(s, "/payments/capture");
            assert_eq!(
                authorize.served, capture.served,
                "{}: {}",
                stage.label, s.key
            );
            assert_eq!(
                authorize.bucket,
                [bucket_text(&rig.plan, &s.key)],
                "the session's bucket, upstream"
            );
            if before
                .get(&s.key)
                .is_some_and(|created| *created != authorize.served)
            {
                split += 1;
            }
            if stage.ramp && before.get(&s.key).is_some_and(|v| v == "canary") {
                assert_eq!(
                    authorize.served, "canary",
                    "{}: {} moved canary -> stable while ramping up",
                    stage.label, s.key
                );
            }
            if authorize.served == "canary" {
                canary.insert(s.key.clone());
            }
            // The next flow starts before the next step.
            let create = rig.session(s, "/payments");
            now.insert(s.key.clone(), create.served);
        }
        let expected = expected_canary(&rig.plan, &all, stage.cohort);
        assert_eq!(
            canary, expected,
            "{}: the canary sessions are exactly the buckets below {}",
            stage.label, stage.cohort
        );
        check_probes(&mut rig, stage, &outsider);
        report.push(format!(
            "{:<22} canary {:>4} / {n} = {:>5.1} % (step {:>5.2} %), flows split at the step: {split}",
            stage.label,
            canary.len(),
            100.0 * canary.len() as f64 / n as f64,
            stage.cohort as f64 / 100.0
        ));
        before = now;
    }
    // Abort from the last bucket step: every session on stable on its next request.
    let last_bucket = &stages[stages.len() - 2];
    rig.apply(last_bucket);
    rig.apply(&abort);
    let mut on_canary = 0;
    for s in all.iter_mut() {
        if rig.session(s, "/payments/authorize").served == "canary" {
            on_canary += 1;
        }
    }
    assert_eq!(on_canary, 0, "abort: everyone on stable at once");
    check_probes(&mut rig, &abort, &outsider);
    report.push(format!("abort (from 50 %)       canary {on_canary} / {n}"));
    eprintln!("Argo pipeline, no hold:\n  {}", report.join("\n  "));
}

#[test]
fn with_the_hold_a_flow_in_progress_finishes_on_stable_and_moves_only_when_idle() {
    const IDLE: u64 = 5;
    let ro = rollout();
    let (stages, abort) = stages(&ro);
    let c = carrier("WasmPlugin sticky-canary)");
    let mut rig = Rig::start(
        &c,
        |j| j["session"]["hold"]["idle_seconds"] = json!(IDLE),
        &stages[0],
    );
    assert_eq!(rig.plan.hold.as_ref().unwrap().idle_seconds, IDLE);
    let mut all = sessions(300);
    let n = all.len();
    // Every session active (and held) before the rollout.
    for s in all.iter_mut() {
        assert_eq!(rig.session(s, "/payments").served, "stable");
    }
    let mut report = Vec::new();
    // The bucket steps (the promotion itself moves everyone left: the primary route goes 100 % to
    // the new version, whatever the hold).
    let mut last = 0;
    let ramp: Vec<&Stage> = stages
        .iter()
        .filter(|s| {
            let moves = s.cohort != last && s.cohort < 10_000;
            last = if moves { s.cohort } else { last };
            moves
        })
        .collect();
    let mut previous = BTreeSet::new();
    for stage in ramp {
        // A flow starts just before the step...
        let started = Instant::now();
        for s in all.iter_mut() {
            rig.session(s, "/payments");
        }
        rig.apply(stage);
        // ...and finishes after it: on the version it started on.
        let mut split = 0;
        for s in all.iter_mut() {
            let was = if previous.contains(&s.key) {
                "canary"
            } else {
                "stable"
            };
            for step in ["/payments/authorize", "/payments/capture"] {
                if rig.session(s, step).served != was {
                    split += 1;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(IDLE),
            "the flows took longer than the hold ({:?}): the test cannot tell",
            started.elapsed()
        );
        assert_eq!(split, 0, "{}: flows split under the hold", stage.label);
        // Active sessions stay where they are; once idle for the hold, the cohort moves.
        std::thread::sleep(Duration::from_millis(IDLE * 1000 + 300));
        let expected = expected_canary(&rig.plan, &all, stage.cohort);
        let mut canary = BTreeSet::new();
        for s in all.iter_mut() {
            let seen = rig.session(s, "/cart");
            if seen.served == "canary" {
                canary.insert(s.key.clone());
            }
        }
        assert_eq!(canary, expected, "{}: after {IDLE} s idle", stage.label);
        let moved = expected.len() - previous.len();
        previous = expected;
        report.push(format!(
            "{:<22} flows split at the step: {split}; {moved} sessions moved after {IDLE} s idle; canary {} / {n} = {:.1} %",
            stage.label,
            canary.len(),
            100.0 * canary.len() as f64 / n as f64
        ));
    }
    // The hold never keeps anyone on the canary: an abort is immediate.
    rig.apply(&abort);
    for s in all.iter_mut() {
        assert_eq!(
            rig.session(s, "/cart").served,
            "stable",
            "abort under the hold"
        );
    }
    eprintln!("Argo pipeline, hold {IDLE} s:\n  {}", report.join("\n  "));
}
