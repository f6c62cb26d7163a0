//! An in-memory [`Host`] for the filter's unit tests: both header maps, the body chunk being
//! delivered, the routed cluster, metrics by id and name, log lines, and failures on demand.
//! Every call is counted, so tests can also hold the request path to its host-call budget.

use super::{Host, HostError, Level, Map};
use crate::metrics::MetricKind;
use crate::routing::cookies::ID_BYTES;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// The status a failing call returns (proxy-wasm `InternalFailure`).
pub const FAILURE: HostError = HostError(10);

#[derive(Clone, Debug)]
pub struct Metric {
    pub kind: MetricKind,
    pub name: String,
    /// Counter total or gauge value.
    pub value: i64,
    /// Histogram records.
    pub records: Vec<u64>,
}

/// An HTTP call the filter sent: token, cluster, headers, timeout (ms).
pub type HttpCall = (u32, String, Vec<(String, String)>, u32);

#[derive(Default)]
pub struct State {
    pub request: Vec<(String, Vec<u8>)>,
    pub response: Vec<(String, Vec<u8>)>,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// The response body chunk being delivered.
    pub chunk: Vec<u8>,
    pub cluster: Option<Vec<u8>>,
    /// Filter state written by the stream, by key.
    pub filter_state: BTreeMap<String, Vec<u8>>,
    pub config: Vec<u8>,
    pub env: BTreeMap<String, String>,
    pub random: Option<[u8; ID_BYTES]>,
    pub metrics: Vec<Metric>,
    pub tick_ms: Option<u32>,
    /// Shared data: value and CAS token, by key (the CAS counts writes, from 1).
    pub shared: BTreeMap<String, (Vec<u8>, u32)>,
    /// Keys whose next shared-data write loses a race (another VM wrote just before).
    pub cas_races: BTreeSet<String>,
    pub logs: Vec<(Level, String)>,
    /// Calls that fail: a method name (`set_header`) or a method and a header name
    /// (`set_header:x-canary-version`).
    pub failing: BTreeSet<String>,
    /// Host calls made, by method name.
    pub calls: BTreeMap<&'static str, usize>,
    /// The clock (ms since the epoch).
    pub now_ms: u64,
    /// HTTP calls sent: token, cluster, headers, timeout.
    pub http_calls: Vec<HttpCall>,
    /// The answer to an HTTP call being delivered: headers and body.
    pub call_response: Vec<(String, Vec<u8>)>,
    pub call_body: Vec<u8>,
}

/// A shared handle: the filter keeps clones, the test keeps one to look and to steer.
#[derive(Clone, Default)]
pub struct FakeHost(Rc<RefCell<State>>);

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl FakeHost {
    pub fn with_config(config: &str) -> FakeHost {
        let host = FakeHost::default();
        host.state().config = config.as_bytes().to_vec();
        host
    }

    pub fn state(&self) -> std::cell::RefMut<'_, State> {
        self.0.borrow_mut()
    }

    /// Makes `call` (optionally `call:header-name`) fail from now on.
    pub fn fail(&self, call: &str) {
        self.state().failing.insert(call.to_string());
    }

    fn enter(&self, call: &'static str, name: &str) -> Result<(), HostError> {
        let mut s = self.state();
        *s.calls.entry(call).or_default() += 1;
        let failing = s.failing.contains(call) || s.failing.contains(&format!("{call}:{name}"));
        if failing {
            Err(FAILURE)
        } else {
            Ok(())
        }
    }

    /// The next shared-data write of `key` loses a race with another VM.
    pub fn fail_once_cas(&self, key: &str) {
        self.state().cas_races.insert(key.to_string());
    }

    /// Host calls made so far, all methods together.
    pub fn call_count(&self) -> usize {
        self.0.borrow().calls.values().sum()
    }

    pub fn calls_of(&self, call: &str) -> usize {
        self.0.borrow().calls.get(call).copied().unwrap_or(0)
    }

    /// A new request: these headers, no response yet.
    pub fn begin(&self, request: &[(&str, &str)]) {
        let mut s = self.state();
        s.request = request
            .iter()
            .map(|(n, v)| (lower(n), v.as_bytes().to_vec()))
            .collect();
        s.response.clear();
        s.trailers.clear();
        s.cluster = None;
        s.filter_state.clear();
    }

    /// The upstream answers with these headers from `cluster`.
    pub fn respond(&self, cluster: Option<&str>, response: &[(&str, &str)]) {
        let mut s = self.state();
        s.response = response
            .iter()
            .map(|(n, v)| (lower(n), v.as_bytes().to_vec()))
            .collect();
        s.cluster = cluster.map(|c| c.as_bytes().to_vec());
    }

    /// The upstream ends its response with these trailers.
    pub fn trailers(&self, trailers: &[(&str, &str)]) {
        self.state().trailers = trailers
            .iter()
            .map(|(n, v)| (lower(n), v.as_bytes().to_vec()))
            .collect();
    }

    /// Every value of a header, as text.
    pub fn values(&self, map: Map, name: &str) -> Vec<String> {
        let s = self.0.borrow();
        let headers = match map {
            Map::Request => &s.request,
            Map::Response => &s.response,
            Map::ResponseTrailers => &s.trailers,
            Map::HttpCallResponse => &s.call_response,
        };
        headers
            .iter()
            .filter(|(n, _)| *n == lower(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// A metric's value by its encoded name; `None` when it was never defined.
    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.0
            .borrow()
            .metrics
            .iter()
            .find(|m| m.name == name)
            .cloned()
    }

    /// The log lines at `level`.
    pub fn logs(&self, level: Level) -> Vec<String> {
        self.0
            .borrow()
            .logs
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m.clone())
            .collect()
    }

    fn with_map<R>(&self, map: Map, f: impl FnOnce(&mut Vec<(String, Vec<u8>)>) -> R) -> R {
        let mut s = self.state();
        f(match map {
            Map::Request => &mut s.request,
            Map::Response => &mut s.response,
            Map::ResponseTrailers => &mut s.trailers,
            Map::HttpCallResponse => &mut s.call_response,
        })
    }
}

impl Host for FakeHost {
    fn header(&self, map: Map, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.enter("header", name)?;
        Ok(self.with_map(map, |h| {
            h.iter()
                .find(|(n, _)| *n == lower(name))
                .map(|(_, v)| v.clone())
        }))
    }

    fn header_map(&self, map: Map) -> Result<Vec<u8>, HostError> {
        self.enter("header_map", "")?;
        Ok(self.with_map(map, |h| {
            let pairs: Vec<(&[u8], &[u8])> = h
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_slice()))
                .collect();
            crate::formats::headers::serialize(&pairs)
        }))
    }

    fn set_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.enter("set_header", name)?;
        self.with_map(map, |h| {
            h.retain(|(n, _)| *n != lower(name));
            h.push((lower(name), value.to_vec()));
        });
        Ok(())
    }

    fn add_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.enter("add_header", name)?;
        self.with_map(map, |h| h.push((lower(name), value.to_vec())));
        Ok(())
    }

    fn remove_header(&self, map: Map, name: &str) -> Result<(), HostError> {
        self.enter("remove_header", name)?;
        self.with_map(map, |h| h.retain(|(n, _)| *n != lower(name)));
        Ok(())
    }

    fn cluster_name(&self) -> Result<Option<Vec<u8>>, HostError> {
        self.enter("cluster_name", "")?;
        Ok(self.0.borrow().cluster.clone())
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.enter("set_filter_state", key)?;
        self.state()
            .filter_state
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn response_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        self.enter("response_body", "")?;
        let s = self.0.borrow();
        Ok(s.chunk[..size.min(s.chunk.len())].to_vec())
    }

    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError> {
        self.enter("plugin_configuration", "")?;
        Ok(self.0.borrow().config.clone())
    }

    fn env(&self, name: &str) -> Option<String> {
        self.0.borrow().env.get(name).cloned()
    }

    fn random_id(&self) -> Option<[u8; ID_BYTES]> {
        self.enter("random_id", "").ok()?;
        self.0.borrow().random
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        self.enter("define_metric", name)?;
        let mut s = self.state();
        if let Some(i) = s.metrics.iter().position(|m| m.name == name) {
            return Ok(i as u32);
        }
        s.metrics.push(Metric {
            kind,
            name: name.to_string(),
            value: 0,
            records: Vec::new(),
        });
        Ok(s.metrics.len() as u32 - 1)
    }

    fn increment_metric(&self, id: u32, offset: i64) -> Result<(), HostError> {
        self.enter("increment_metric", "")?;
        let mut s = self.state();
        let m = s.metrics.get_mut(id as usize).ok_or(HostError(2))?;
        // Envoy adds to a counter (a positive offset) or a gauge (either sign).
        assert!(
            m.kind == MetricKind::Gauge || (m.kind == MetricKind::Counter && offset > 0),
            "{} cannot be incremented by {offset}",
            m.name
        );
        m.value = m.value.saturating_add(offset);
        Ok(())
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        self.enter("record_metric", "")?;
        let mut s = self.state();
        let m = s.metrics.get_mut(id as usize).ok_or(HostError(2))?;
        match m.kind {
            MetricKind::Gauge => m.value = value as i64,
            MetricKind::Histogram => m.records.push(value),
            MetricKind::Counter => panic!("record on the counter {}", m.name),
        }
        Ok(())
    }

    fn metric(&self, id: u32) -> Result<u64, HostError> {
        self.enter("metric", "")?;
        let s = self.0.borrow();
        let m = s.metrics.get(id as usize).ok_or(HostError(2))?;
        Ok(u64::try_from(m.value).unwrap_or(0))
    }

    fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        self.enter("shared_data", key)?;
        Ok(self.0.borrow().shared.get(key).cloned())
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        self.enter("set_shared_data", key)?;
        let mut s = self.state();
        if s.cas_races.remove(key) {
            if let Some(entry) = s.shared.get_mut(key) {
                entry.1 += 1;
            }
            return Err(super::CAS_MISMATCH);
        }
        let current = s.shared.get(key).map_or(0, |(_, c)| *c);
        if cas != 0 && cas != current {
            return Err(super::CAS_MISMATCH);
        }
        s.shared
            .insert(key.to_string(), (value.to_vec(), current + 1));
        Ok(())
    }

    fn set_tick_period(&self, period_ms: u32) -> Result<(), HostError> {
        self.enter("set_tick_period", "")?;
        self.state().tick_ms = Some(period_ms);
        Ok(())
    }

    fn log(&self, level: Level, message: &str) {
        self.state().logs.push((level, message.to_string()));
    }

    fn now_ms(&self) -> u64 {
        let mut s = self.state();
        *s.calls.entry("now_ms").or_default() += 1;
        s.now_ms
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        self.enter("http_call", cluster)?;
        let mut s = self.state();
        let token = s.http_calls.len() as u32 + 1;
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        s.http_calls
            .push((token, cluster.to_string(), headers, timeout_ms));
        Ok(token)
    }

    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        self.enter("http_call_body", "")?;
        let s = self.0.borrow();
        Ok(s.call_body[..size.min(s.call_body.len())].to_vec())
    }
}
