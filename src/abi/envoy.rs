//! [`Envoy`]: the filter's [`Host`], one ABI binding per method.

use super::imports::*;
use crate::filter::{Host, HostError, Level, Map};
use crate::metrics::MetricKind;
use crate::routing::cookies::ID_BYTES;

/// Envoy's `xds.cluster_name` attribute (the routed cluster), in the property ABI's encoding.
const CLUSTER_NAME: &[u8] = b"xds\0cluster_name\0";

/// The filter's host: the ABI calls below.
#[derive(Clone, Copy)]
pub struct Envoy;

fn map_type(map: Map) -> MapType {
    match map {
        Map::Request => 0,
        Map::Response => 2,
        Map::ResponseTrailers => 3,
        Map::HttpCallResponse => 6,
    }
}

const HTTP_RESPONSE_BODY: BufferType = 1;
const HTTP_CALL_RESPONSE_BODY: BufferType = 4;
const PLUGIN_CONFIGURATION: BufferType = 7;

impl Host for Envoy {
    fn header(&self, map: Map, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        header(map_type(map), name)
    }
    fn header_map(&self, map: Map) -> Result<Vec<u8>, HostError> {
        header_map(map_type(map))
    }
    fn set_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
        set_header(map_type(map), name, value)
    }
    fn add_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
        add_header(map_type(map), name, value)
    }
    fn remove_header(&self, map: Map, name: &str) -> Result<(), HostError> {
        remove_header(map_type(map), name)
    }
    fn cluster_name(&self) -> Result<Option<Vec<u8>>, HostError> {
        property(CLUSTER_NAME)
    }
    fn set_filter_state(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        set_property(key.as_bytes(), value)
    }
    fn response_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        buffer_range(HTTP_RESPONSE_BODY, 0, size)
    }
    fn plugin_configuration(&self) -> Result<Vec<u8>, HostError> {
        buffer_range(PLUGIN_CONFIGURATION, 0, usize::MAX)
    }
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn random_id(&self) -> Option<[u8; ID_BYTES]> {
        random_id()
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, offset: i64) -> Result<(), HostError> {
        increment_metric(id, offset)
    }
    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        record_metric(id, value)
    }
    fn metric(&self, id: u32) -> Result<u64, HostError> {
        get_metric(id)
    }
    fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        shared_data(key)
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        set_shared_data(key, value, cas)
    }
    fn set_tick_period(&self, period_ms: u32) -> Result<(), HostError> {
        set_tick_period(period_ms)
    }
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        http_call(cluster, headers, timeout_ms)
    }
    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        buffer_range(HTTP_CALL_RESPONSE_BODY, 0, size)
    }
    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Info => 2,
            Level::Warn => 3,
            Level::Error => 4,
        };
        // SAFETY: the message outlives the call. A failed log has nowhere to be reported.
        unsafe { proxy_log(level, message.as_ptr(), message.len()) };
    }
}
