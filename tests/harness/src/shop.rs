//! Test shop upstreams: [`shop`] answers what the request's query string asks for, so tests and
//! demos can produce known business traffic; [`payments`] is an order endpoint whose
//! authorizations are declined (and whose answers fail) at set rates.

use crate::http::{Handler, Request, Response};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// The query parameters of a path (`%20` decoded; nothing else).
pub fn query(path: &str) -> HashMap<String, String> {
    path.split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.replace("%20", " ")))
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON body of exactly `size` bytes (padded), or the natural size when `size` is 0.
pub fn order_body(tax: Option<&str>, auth: Option<&str>, size: usize) -> Vec<u8> {
    let mut v = json!({"order": {"id": 1}});
    if let Some(t) = tax {
        v["order"]["tax"] = json!(t);
    }
    if let Some(a) = auth {
        v["authorization"] = json!({"status": a});
    }
    let natural = v.to_string();
    if size == 0 {
        return natural.into_bytes();
    }
    v["pad"] = json!("");
    let base = v.to_string().len();
    assert!(size >= base, "size {size} too small");
    v["pad"] = json!("x".repeat(size - base));
    let out = v.to_string().into_bytes();
    assert_eq!(out.len(), size);
    out
}

/// The shop: the query string says what to answer.
/// `status`, `order` (x-order-id), `total` (x-order-total), `tax`, `auth`, `ct`, `enc`, `size`,
/// `body=malformed`; `grpc=CODE`: a gRPC trailers-only answer over HTTP/1.1 (`application/grpc`,
/// `grpc-status: CODE`, no body, so the headers end the stream).
pub fn shop(name: &str) -> Handler {
    let name = name.to_string();
    Arc::new(move |req: &Request| {
        let q = query(&req.path);
        let status = q.get("status").and_then(|s| s.parse().ok()).unwrap_or(200);
        let mut r = Response::new(status).header("x-upstream", &name);
        if let Some(code) = q.get("grpc") {
            return r
                .header("content-type", "application/grpc")
                .header("grpc-status", code);
        }
        if let Some(o) = q.get("order") {
            r = r.header("x-order-id", o);
        }
        if let Some(t) = q.get("total") {
            r = r.header("x-order-total", t);
        }
        r = r.header(
            "content-type",
            q.get("ct").map_or("application/json", String::as_str),
        );
        if let Some(e) = q.get("enc") {
            r = r.header("content-encoding", e);
        }
        let size = q.get("size").and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = if q.get("body").map(String::as_str) == Some("malformed") {
            br#"{"order":{"tax":"#.to_vec()
        } else {
            order_body(
                q.get("tax").map(String::as_str),
                q.get("auth").map(String::as_str),
                size,
            )
        };
        r.body(body)
    })
}

/// An order endpoint: `x-order-id`, an order total, and an authorization that is declined for
/// `declined_per_mille` of requests (drawn per request from its path).
pub fn payments(name: &str, declined_per_mille: u64, errors_per_mille: u64) -> Handler {
    let name = name.to_string();
    Arc::new(move |req: &Request| {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in req.path.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut rng = crate::Rng::new(h);
        let roll = rng.next_u64() % 1000;
        if roll < errors_per_mille {
            return Response::new(503).header("x-upstream", &name);
        }
        let approved = rng.next_u64() % 1000 >= declined_per_mille;
        let cents = 1000 + rng.next_u64() % 3000;
        let status = if approved { "approved" } else { "declined" };
        Response::new(200)
            .header("content-type", "application/json")
            .header("x-upstream", &name)
            .header("x-order-id", &format!("o{h:x}"))
            .header(
                "x-order-total",
                &format!("{}.{:02}", cents / 100, cents % 100),
            )
            .body(json!({"authorization": {"status": status}}).to_string())
    })
}
