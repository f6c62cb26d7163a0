//! One HTTP stream ([`Stream`]): the request's decision and headers, the response's
//! attribution, counts and tags, the body copy for JSON rules, trailers and the stream's end.

use super::instance::Instance;
use super::service::{bit, Service, FILTER_STATE_KEY};
use super::{Host, Map};
use crate::config::Attribution;
use crate::counting::business::{body_gate, Place, SkipReason};
use crate::metrics;
use crate::routing::cookies::{UpstreamCookie, ID_BYTES};
use crate::routing::decision::{Decision, Reason, RequestView};
use crate::routing::flow::OnTrip;
use crate::routing::hash::bucket_digits;
use std::rc::Rc;

/// The response header in which Envoy reports how many upstream attempts the request took.
pub const ATTEMPT_COUNT_HEADER: &str = "x-envoy-attempt-count";

/// What happens to the response body of this stream.
enum Body {
    /// Not examined.
    Off,
    /// Copying chunks for JSON rules.
    Capturing(Vec<u8>),
    /// Examined or skipped; nothing more to do.
    Done,
}

/// One HTTP stream. Every callback lets the stream continue: the filter never holds a request.
pub struct Stream<H: Host> {
    /// The service this stream is, once known (`None`: no service's, or not picked yet).
    service: Option<Rc<Service<H>>>,
    /// The plugin's services, until the request headers say whose this stream is.
    instance: Option<Rc<Instance<H>>>,
    /// The decision for this request, for the response headers and metrics.
    decision: Option<Decision>,
    /// The version whose cluster served the response (see `on_response_headers`).
    served: usize,
    /// The response status.
    status: u16,
    /// The request's method is one of `write_methods`.
    write: bool,
    body: Body,
    /// The copy's length when the JSON rules were last tried on it before its end.
    tried: usize,
    /// A gRPC response whose `grpc-status` is not counted yet (from its trailers, or as
    /// `missing` when the stream ends without).
    grpc: bool,
}

/// Request headers through the host, read on demand. A failed read counts as an absent header.
/// The flag: the request is a write (`write_methods`).
struct HostRequest<'a, H: Host>(&'a Service<H>, bool);

impl<H: Host> RequestView for HostRequest<'_, H> {
    type Value = Vec<u8>;

    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        self.0.host.header(Map::Request, name).ok().flatten()
    }

    fn get_all(&mut self, name: &str) -> Vec<Vec<u8>> {
        let map = self.0.host.header_map(Map::Request).unwrap_or_default();
        crate::formats::headers::pairs(&map)
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.to_vec())
            .collect()
    }

    fn random_id(&mut self) -> Option<[u8; ID_BYTES]> {
        let id = self.0.host.random_id();
        if id.is_none() {
            self.0.warn(format_args!(
                "no randomness for a new session id; using the default version"
            ));
        }
        id
    }

    fn write(&mut self) -> bool {
        self.1
    }

    fn now_s(&mut self) -> Option<u64> {
        Some(self.0.host.now_ms() / 1000)
    }
}

/// How much the body copy grows between two tries of the JSON rules on a prefix: a near-end
/// pointer's body is rescanned at most by a seventh (2 would be up to twice, measured 2.6–2.9×
/// the work of one pass for 1 MiB in 16 KiB chunks).
const TRY_GROWTH: usize = 8;

/// The response headers the filter reads. When rules need more than `:status`, the whole map is
/// read with one host call (a host call costs more than scanning a dozen headers in the VM);
/// otherwise, or if that read fails, each header is read on its own.
struct ResponseHeaders<'a, H: Host> {
    host: &'a H,
    map: Option<Vec<u8>>,
}

impl<'a, H: Host> ResponseHeaders<'a, H> {
    fn read(host: &'a H, whole_map: bool) -> Self {
        let map = whole_map
            .then(|| host.header_map(Map::Response).ok())
            .flatten();
        ResponseHeaders { host, map }
    }

    /// Calls `f` with the first value of `name` (lowercase), as the host's single-header read does.
    fn with<R>(&self, name: &str, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        match &self.map {
            Some(map) => f(crate::formats::headers::pairs(map)
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v)),
            None => f(self
                .host
                .header(Map::Response, name)
                .ok()
                .flatten()
                .as_deref()),
        }
    }
}

impl<H: Host> Stream<H> {
    /// A stream of `service`, or of the one `instance` picks from its request headers; with
    /// neither, it passes through untouched (see [`super::Root::stream`]).
    pub(super) fn new(service: Option<Rc<Service<H>>>, instance: Option<Rc<Instance<H>>>) -> Self {
        Stream {
            service,
            instance,
            decision: None,
            served: 0,
            status: 0,
            write: false,
            body: Body::Off,
            tried: 0,
            grpc: false,
        }
    }

    /// Decides the version, strips the override headers, hands a minted session id to the
    /// application, and writes the route header the router matches on.
    pub fn on_request_headers(&mut self) {
        if let Some(instance) = self.instance.take() {
            // No service's: the request goes on exactly as it came.
            self.service = instance.pick();
        }
        let Some(service) = self.service.as_deref() else {
            return;
        };
        let plan = &service.plan;
        if !plan.write_methods.is_empty() {
            let method = service.host.header(Map::Request, ":method").ok().flatten();
            self.write = method.is_some_and(|m| {
                plan.write_methods
                    .iter()
                    .any(|w| w.as_bytes() == m.as_slice())
            });
        }
        let mut decision = plan.decide(&mut HostRequest(service, self.write));
        if let Some(f) = decision.flow {
            service.increment(service.metrics.flow_cookies.get(f.outcome.index()), 1);
        }
        // The brake: nothing reaches a tripped version but the token-guarded override and, with
        // `guard.flows: finish`, a flow with a valid cookie; the request goes to the guard's
        // baseline, without a bucket.
        let tripped = service.tripped();
        let finishes = decision.reason == Reason::Flow
            && plan
                .guard
                .as_ref()
                .is_some_and(|g| g.flows == OnTrip::Finish);
        if tripped & bit(decision.version) != 0 && decision.reason != Reason::Override && !finishes
        {
            if let Some(g) = &plan.guard {
                decision = Decision {
                    version: g.baseline,
                    reason: Reason::Guard,
                    bucket: None,
                    ..decision
                };
            }
        } else if let (true, Some(f)) = (tripped & bit(decision.version) != 0, &mut decision.flow) {
            // A flow finishing on a tripped version drains: its writes do not extend it.
            f.draining = true;
        }
        self.decision = Some(decision);
        service.increment(
            service.metrics.request(decision.version, decision.reason),
            1,
        );
        let version = plan.version_name(decision.version);
        let host = &service.host;
        // The QA override headers never reach the upstream, whatever the outcome.
        if let Some(o) = &plan.override_ {
            let r = host.remove_header(Map::Request, &o.header);
            service.warn_on_error("remove", &o.header, r);
            let r = host.remove_header(Map::Request, &o.token_header);
            service.warn_on_error("remove", &o.token_header, r);
        }
        // The application sees the minted session id as if the client had sent it.
        if let (Some(assign), Some(id)) = (&plan.assign, &decision.minted) {
            let existing = HostRequest(service, false).get_all("cookie");
            match assign.upstream_cookie(&existing, id) {
                UpstreamCookie::Set(v) => service.set_header(Map::Request, "cookie", &v),
                UpstreamCookie::Add(v) => {
                    let r = host.add_header(Map::Request, "cookie", &v);
                    service.warn_on_error("add", "cookie", r);
                }
            }
        }
        // The session's cohort bucket, for the controller's bucket routes. Whatever the client
        // sent is never trusted: the write replaces every value, and a request without a bucket
        // (no session key, override, pin, hold) has the header removed. One host call either way.
        // While a version is tripped no request carries a bucket, so that no bucket route of a
        // controller can reach it either.
        if let Some(b) = &plan.bucket_header {
            match decision.bucket.filter(|_| tripped == 0) {
                Some(bucket) => service.set_header(Map::Request, b, &bucket_digits(bucket)),
                None => {
                    let r = host.remove_header(Map::Request, b);
                    service.warn_on_error("remove", b, r);
                }
            }
        }
        // Replaces every value the client sent; Envoy clears the route cache on this write, so
        // the router matches the routes against the chosen version.
        service.set_header(Map::Request, &plan.route_header, version.as_bytes());
    }

    /// Attributes the response to the version that served it, counts it, runs the header rules,
    /// decides whether to copy the body, and tags the response.
    pub fn on_response_headers(&mut self, end_of_stream: bool) {
        let Some(service) = self.service.clone() else {
            return;
        };
        let Some(decision) = self.decision else {
            return;
        };
        let plan = &service.plan;
        let host = &service.host;
        // Attribute the response to the version whose cluster served it. It is the decision's
        // version unless the route table sent the cohort elsewhere (e.g. a rollout controller
        // dropping the canary header match sends it to stable).
        // With `attribution: response_header` the route already named the serving version in
        // `response_header` (one header read, free when the whole map is read, and no write).
        let headers = ResponseHeaders::read(host, plan.business.reads_headers());
        let routed = match plan.attribution {
            Attribution::ResponseHeader => {
                headers.with(&plan.response_header, |h| plan.version_named(h?))
            }
            Attribution::Cluster => None,
        };
        let v = routed.unwrap_or_else(|| {
            host.cluster_name()
                .ok()
                .flatten()
                .and_then(|c| plan.version_of_cluster(&c))
                .unwrap_or(decision.version)
        });
        self.served = v;
        self.status = headers
            .with(":status", |s| std::str::from_utf8(s?).ok()?.parse().ok())
            .unwrap_or(0);
        service.increment(service.metrics.response(v, self.status), 1);
        if self.write {
            service.increment(service.metrics.writes.get(v), 1);
        }
        // Upstream retries (the manual, "Retries per version"): Envoy's attempt count, sent on the
        // response when the route or virtual host sets `include_attempt_count_in_response`.
        // Absent = not counted; anything but a positive integer is counted as invalid.
        headers.with(ATTEMPT_COUNT_HEADER, |a| {
            match a.map(metrics::attempt_count) {
                Some(Some(n)) if n > 1 => {
                    service.increment(service.metrics.retries.get(v), u64::from(n - 1));
                    service.increment(service.metrics.retried.get(v), 1);
                }
                Some(None) => service.increment(service.metrics.attempts_invalid.get(v), 1),
                // Absent, or a single attempt.
                None | Some(Some(_)) => {}
            }
        });
        // gRPC status (the manual, "gRPC status per version"), with a `grpc` block only: a
        // trailers-only response (headers ending the stream) carries `grpc-status` here;
        // otherwise it is awaited in the trailers, and counted `missing` if the stream ends first.
        // Both reads go through one `fn` type: one instance of `with`, not two (module size).
        type Read = fn(Option<&[u8]>) -> usize;
        let (is_grpc, status_of): (Read, Read) = (
            crate::counting::grpc::content_type_index,
            crate::counting::grpc::status_of,
        );
        if plan.grpc.is_some() && headers.with("content-type", is_grpc) == 1 {
            if end_of_stream {
                let status = headers.with("grpc-status", status_of);
                service.increment(service.metrics.grpc(v, status), 1);
            } else {
                self.grpc = true;
            }
        }

        for (i, rule) in plan.business.rules.iter().enumerate() {
            if let Place::Header(name) = &rule.place {
                if rule.status.matches(self.status) {
                    service.apply(v, i, headers.with(name, |h| rule.evaluate(h)));
                }
            }
        }
        // Body rules: copy the body only when one applies, it is JSON, uncompressed, bounded.
        if !end_of_stream && plan.business.wants_body(self.status) {
            let max = plan.business.max_body_bytes;
            let gate = headers.with("content-type", |t| {
                headers.with("content-encoding", |e| {
                    headers.with("content-length", |l| body_gate(t, e, l, max))
                })
            });
            self.body = match gate {
                Ok(()) => Body::Capturing(Vec::new()),
                Err(reason) => {
                    service.skipped(v, reason);
                    Body::Done
                }
            };
        }

        if routed.is_none() {
            service.set_header(
                Map::Response,
                &plan.response_header,
                plan.version_name(v).as_bytes(),
            );
        }
        if let Some(h) = &plan.reason_header {
            service.set_header(Map::Response, h, decision.reason.as_str().as_bytes());
        }
        // Observability: the served version and the reason, in one filter-state write, for
        // Envoy's access logs and tracers (the manual, "Traces and access logs").
        let observed = service
            .observed
            .get(v)
            .and_then(|row| row.get(decision.reason.index()))
            .map_or("", String::as_str);
        let r = host.set_filter_state(FILTER_STATE_KEY, observed.as_bytes());
        service.warn_on_error("set filter state", FILTER_STATE_KEY, r);
        if let (Some(assign), Some(id)) = (&plan.assign, &decision.minted) {
            let cookie = assign.set_cookie(id);
            let r = host.add_header(Map::Response, "set-cookie", cookie.as_bytes());
            service.warn_on_error("add", "set-cookie", r);
        }
        // The idle hold: a session served by the default version stays there until it has been
        // idle `idle_seconds`. Never set for a response from any other version, so the hold
        // never keeps anyone on a canary.
        if let Some(hold) = &plan.hold {
            if decision.session && v == plan.default_version {
                let r = host.add_header(Map::Response, "set-cookie", hold.set_cookie.as_bytes());
                service.warn_on_error("add", "set-cookie", r);
            }
        }
        if plan.flows.is_some() {
            self.flow_cookie(&service, &decision, v);
        }
    }

    /// The flow cookie: a write with a session key served by a version other than the default
    /// sets (or refreshes) it, for the serving version, unless the request is a draining flow's
    /// (routed there by its cookie alone: refreshing it would let a flow outlive
    /// `drain_seconds`); a valid flow served by another version (the trip moved it, or the routes
    /// sent it elsewhere) is over, and its cookie is cleared. Valid flows served by their version
    /// are tracked for `canary_flows_draining` (a new plan or another worker learns them so).
    fn flow_cookie(&self, service: &Service<H>, decision: &Decision, v: usize) {
        let (Some(flows), Some(state)) = (&service.plan.flows, &service.flows) else {
            return;
        };
        let host = &service.host;
        let valid = decision
            .flow
            .and_then(|f| Some((f.version?, f.expiry, f.draining)));
        let draining = valid.is_some_and(|(_, _, d)| d);
        let starts = self.write
            && !draining
            && v != service.plan.default_version
            && (100..500).contains(&self.status);
        let mut tracker = state.draining.borrow_mut();
        let cookie = match (decision.key, valid) {
            (Some(digest), _) if starts => {
                let now_s = host.now_ms() / 1000;
                let cookie = flows.set_cookie(&digest, service.plan.version_name(v), now_s);
                if cookie.is_some() {
                    tracker.started(&digest, v, now_s.saturating_add(flows.drain_seconds));
                }
                cookie
            }
            (Some(digest), Some((fv, expiry, _))) if fv == v => {
                tracker.started(&digest, fv, expiry);
                None
            }
            (Some(digest), Some(_)) => {
                tracker.ended(&digest);
                Some(flows.clear_cookie.clone())
            }
            _ => None,
        };
        drop(tracker);
        if let Some(c) = cookie {
            let r = host.add_header(Map::Response, "set-cookie", c.as_bytes());
            service.warn_on_error("add", "set-cookie", r);
        }
        // A host that does not batch has no tick on this thread to rely on (the native build's
        // workers): the gauge follows the tracker at once.
        if decision.key.is_some() && (starts || valid.is_some()) && !host.batches() {
            service.publish_draining();
        }
    }

    /// A response body chunk of `body_size` bytes; copied while a JSON rule wants the body.
    pub fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) {
        let v = self.served;
        if let (Body::Capturing(buf), Some(service)) = (&mut self.body, &self.service) {
            if buf.len().saturating_add(body_size) > service.plan.business.max_body_bytes {
                service.skipped(v, SkipReason::TooLarge);
                self.body = Body::Done;
            } else if body_size > 0 {
                match service.host.response_body(body_size) {
                    // The first chunk (often the whole body) is kept as the host handed it.
                    Ok(chunk) if buf.is_empty() => *buf = chunk,
                    Ok(chunk) => buf.extend_from_slice(&chunk),
                    Err(_) => {
                        service.skipped(v, SkipReason::Incomplete);
                        self.body = Body::Done;
                    }
                }
            }
        }
        if end_of_stream {
            self.finish_body();
        } else if let Body::Capturing(buf) = &self.body {
            // On the first chunk, then each time the copy has grown eightfold (so the tries
            // together rescan at most the first chunk and a seventh of the body): once every
            // rule has its value, the copy stops. What follows is never examined.
            if buf.len() >= self.tried.saturating_mul(TRY_GROWTH) && !buf.is_empty() {
                self.tried = buf.len();
                self.run_json_rules(false);
            }
        }
    }

    /// Trailers end the body; a gRPC response's status is in them.
    pub fn on_response_trailers(&mut self) {
        self.finish_body();
        if std::mem::take(&mut self.grpc) {
            if let Some(service) = &self.service {
                let status = service.host.header(Map::ResponseTrailers, "grpc-status");
                let status = crate::counting::grpc::status_of(status.ok().flatten().as_deref());
                service.increment(service.metrics.grpc(self.served, status), 1);
            }
        }
    }

    /// The stream is over. A body still being copied never completed (reset, client abort); a
    /// gRPC response without trailers has no status.
    pub fn on_log(&mut self) {
        if let (Body::Capturing(_), Some(service)) = (&self.body, &self.service) {
            service.skipped(self.served, SkipReason::Incomplete);
            self.body = Body::Done;
        }
        if std::mem::take(&mut self.grpc) {
            if let Some(service) = &self.service {
                service.increment(
                    service
                        .metrics
                        .grpc(self.served, crate::counting::grpc::MISSING),
                    1,
                );
            }
        }
    }

    /// Runs the JSON rules on a complete body copy.
    fn finish_body(&mut self) {
        self.run_json_rules(true);
    }

    /// Runs the JSON rules that apply to this response on the copy and ends it: on the complete
    /// body, or on a prefix only when every rule has its value there (else nothing happens).
    /// One walk of the copy finds every rule's value; each rule is applied once.
    fn run_json_rules(&mut self, complete: bool) {
        let (Body::Capturing(body), Some(service)) = (&self.body, &self.service) else {
            return;
        };
        let v = self.served;
        let mut malformed = false;
        let settled =
            service
                .plan
                .business
                .evaluate_json_rules(self.status, body, complete, |i, outcome| match outcome {
                    Some(outcome) => service.apply(v, i, outcome),
                    None => malformed = true,
                });
        if !settled {
            return;
        }
        if malformed {
            service.skipped(v, SkipReason::Malformed);
        }
        self.body = Body::Done;
    }
}
