//! A test shop upstream: what it answers is driven by the request's query string, so tests and
//! demos can produce known business traffic.

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
