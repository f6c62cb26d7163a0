//! End-to-end: gRPC status per served version under a real Envoy, with a real gRPC upstream.
//!
//! Two HTTP/2 upstreams (canary and stable; the `h2` crate on a tokio runtime, loopback only)
//! answer unary gRPC calls by their method: status 0 or 13 in the trailers, a trailers-only
//! response with 14, a non-numeric `grpc-status: abc`, and a stream reset (RST_STREAM) after the
//! response headers and a message but before any trailers. Envoy (`--concurrency 1`, the
//! reference config with its clusters switched to HTTP/2) is reached by an HTTP/2 client. The
//! filter's `canary_grpc_responses_total{service,version,grpc_status}` must count each response
//! exactly once under the version that served it; a non-gRPC answer with a `grpc-status`
//! trailer is not counted; the gate reads the same figures.

use bytes::Bytes;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use sticky_canary::metrics::names::GRPC_RESPONSES;
use sticky_canary::plan::Plan;
use sticky_canary_harness::envoy::{self, Envoy, EnvoyConfig};
use sticky_canary_harness::prom::{Scrape, ScrapeExt};
use sticky_canary_harness::Keys;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// One length-prefixed gRPC message (uncompressed, 2 bytes).
const MESSAGE: &[u8] = b"\0\0\0\0\x02hi";
/// Bound of every call and every wait.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream's answer to a method.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Headers, a message, then trailers with this `grpc-status`.
    Trailers(&'static str),
    /// Headers only, ending the stream, with this `grpc-status` (a trailers-only response).
    TrailersOnly(&'static str),
    /// Headers and a message, then RST_STREAM: no trailers.
    Reset,
    /// Not gRPC: `text/plain` with a `grpc-status: 13` trailer.
    Plain,
}

fn answer_of(path: &str) -> Answer {
    match path.rsplit('/').next().unwrap_or("") {
        "Ok" => Answer::Trailers("0"),
        "Internal" => Answer::Trailers("13"),
        "Abc" => Answer::Trailers("abc"),
        "Unavailable" => Answer::TrailersOnly("14"),
        "Reset" => Answer::Reset,
        _ => Answer::Plain,
    }
}

async fn serve_call(
    name: &'static str,
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) -> Result<(), h2::Error> {
    let answer = answer_of(req.uri().path());
    let mut body = req.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let content_type = match answer {
        Answer::Plain => "text/plain",
        _ => "application/grpc",
    };
    let mut head = http::Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("x-upstream", name);
    if let Answer::TrailersOnly(status) = answer {
        head = head.header("grpc-status", status);
        respond.send_response(head.body(()).unwrap(), true)?;
        return Ok(());
    }
    let mut stream = respond.send_response(head.body(()).unwrap(), false)?;
    stream.send_data(Bytes::from_static(MESSAGE), false)?;
    match answer {
        Answer::Reset => {
            // Let the headers and the message reach Envoy first: a reset before the headers
            // would be a local reply, not a stream that ends without its status.
            tokio::time::sleep(Duration::from_millis(100)).await;
            stream.send_reset(h2::Reason::INTERNAL_ERROR);
        }
        Answer::Trailers(status) | Answer::TrailersOnly(status) => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            stream.send_trailers(trailers)?;
        }
        Answer::Plain => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "13".parse().unwrap());
            stream.send_trailers(trailers)?;
        }
    }
    Ok(())
}

/// An HTTP/2 (prior knowledge) gRPC upstream on loopback, served on `rt`.
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let _ = serve_call(name, req, respond).await;
                    });
                }
            });
        }
    });
    addr
}

/// What the client saw of one call.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    /// The response tag (`x-canary-version`) and the upstream that answered.
    version: Option<String>,
    upstream: Option<String>,
    /// `grpc-status` in the response headers (trailers-only).
    header_status: Option<String>,
    /// `grpc-status` in the trailers.
    trailer_status: Option<String>,
    /// The stream was reset before it ended.
    reset: bool,
}

async fn call(envoy: SocketAddr, method: &str, session: &str) -> Seen {
    let tcp = TcpStream::connect(envoy).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{envoy}/test.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("cookie", format!("session_id={session}"))
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(req, false).unwrap();
    send.send_data(Bytes::from_static(MESSAGE), true).unwrap();
    let response = response.await.expect("response headers");
    let text = |h: &http::HeaderMap, n: &str| {
        h.get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut seen = Seen {
        version: text(response.headers(), "x-canary-version"),
        upstream: text(response.headers(), "x-upstream"),
        header_status: text(response.headers(), "grpc-status"),
        ..Seen::default()
    };
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(c) => {
                let _ = body.flow_control().release_capacity(c.len());
            }
            Err(_) => {
                seen.reset = true;
                return seen;
            }
        }
    }
    match body.trailers().await {
        Ok(t) => seen.trailer_status = t.and_then(|t| text(&t, "grpc-status")),
        Err(_) => seen.reset = true,
    }
    seen
}

/// (version, method, calls): canary and stable get different mixes, so that attribution shows.
const TRAFFIC: &[(&str, &str, usize)] = &[
    ("canary", "Ok", 3),
    ("canary", "Internal", 2),
    ("canary", "Unavailable", 1),
    ("canary", "Abc", 1),
    ("canary", "Reset", 1),
    ("canary", "Plain", 2),
    ("stable", "Ok", 5),
    ("stable", "Internal", 1),
    ("stable", "Unavailable", 2),
    ("stable", "Reset", 1),
    ("stable", "Plain", 1),
];

fn grpc_counts(s: &Scrape, version: &str) -> Vec<(&'static str, u64)> {
    sticky_canary::counting::grpc::LABELS
        .iter()
        .map(|status| {
            let l = [
                ("service", "checkout"),
                ("version", version),
                ("grpc_status", status),
            ];
            (*status, s.get(GRPC_RESPONSES, &l) as u64)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn grpc_statuses_are_counted_per_served_version() {
    envoy::check_prerequisites();
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap();
    let (canary, stable) =
        rt.block_on(async { (upstream("canary").await, upstream("stable").await) });

    let mut reference = EnvoyConfig::reference();
    let mut plugin: serde_json::Value = serde_json::from_str(&reference.plugin_config()).unwrap();
    plugin["versions"] =
        json!([{"name": "canary", "weight": 50}, {"name": "stable", "weight": 50}]);
    plugin["grpc"] = json!({});
    let plugin = plugin.to_string();
    let plan = Plan::from_json(plugin.as_bytes()).unwrap();
    let mut cfg =
        EnvoyConfig::for_test(&plugin, &[("canary", canary), ("stable", stable)], "stable");
    cfg.set_http2_upstreams();
    let envoy = Envoy::start(&cfg).unwrap_or_else(|f| panic!("Envoy did not start:\n{}", f.log));

    let mut keys: HashMap<String, String> = HashMap::new();
    for k in Keys::new(16) {
        keys.entry(plan.version_name(plan.bucket(k.as_bytes())).to_string())
            .or_insert(k);
        if keys.len() == 2 {
            break;
        }
    }
    let listener = envoy.listener();
    for (version, method, n) in TRAFFIC {
        for _ in 0..*n {
            let seen = rt
                .block_on(async {
                    tokio::time::timeout(TIMEOUT, call(listener, method, &keys[*version])).await
                })
                .unwrap_or_else(|_| panic!("{version} {method}: no answer in {TIMEOUT:?}"));
            assert_eq!(
                seen.version.as_deref(),
                Some(*version),
                "{method}: {seen:?}"
            );
            assert_eq!(
                seen.upstream.as_deref(),
                Some(*version),
                "{method}: {seen:?}"
            );
            let want = match answer_of(method) {
                Answer::Trailers(s) => (None, Some(s), false),
                Answer::TrailersOnly(s) => (Some(s), None, false),
                Answer::Reset => (None, None, true),
                Answer::Plain => (None, Some("13"), false),
            };
            assert_eq!(
                (
                    seen.header_status.as_deref(),
                    seen.trailer_status.as_deref(),
                    seen.reset
                ),
                want,
                "{version} {method}"
            );
        }
    }

    let s = envoy.scrape();
    let canary_counts = grpc_counts(&s, "canary");
    let stable_counts = grpc_counts(&s, "stable");
    for line in s.text.lines().filter(|l| l.starts_with(GRPC_RESPONSES)) {
        if line.contains("version=\"canary\"") {
            eprintln!("{line}");
        }
    }
    // Each gRPC response once, under the version that served it; the text/plain answers with a
    // grpc-status trailer are not gRPC and count nothing.
    assert_eq!(
        canary_counts,
        [
            ("0", 3),
            ("13", 2),
            ("14", 1),
            ("invalid", 1),
            ("missing", 1)
        ]
    );
    assert_eq!(
        stable_counts,
        [("0", 5), ("13", 1), ("14", 2), ("missing", 1)]
    );
    // Every response, gRPC or not, is still one canary_responses_total.
    let responses = |v: &str| -> u64 {
        ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .map(|c| {
                s.get(
                    "canary_responses_total",
                    &[("service", "checkout"), ("version", v), ("code_class", c)],
                ) as u64
            })
            .sum()
    };
    assert_eq!((responses("canary"), responses("stable")), (10, 10));

    // The gate reads the same figures: errors (2, 4, 12, 13, 14, 15) over every gRPC response.
    use sticky_canary_cli::gate::{evaluate, Check, Policy, Totals};
    let totals = Totals::from_scrapes("checkout", std::slice::from_ref(&s));
    let policy = Policy {
        checks: vec![Check::GrpcErrorRatio {
            max_points: 1.0,
            codes: sticky_canary::counting::grpc::DEFAULT_ERROR_CODES.to_vec(),
        }],
        min_samples: 1,
        ..Policy::default_for("stable")
    };
    let report = evaluate(&totals, &policy).unwrap();
    let row = &report.rows[0];
    assert_eq!(
        (
            row.candidate.x,
            row.candidate.n,
            row.baseline.x,
            row.baseline.n
        ),
        (3.0, 8.0, 3.0, 9.0)
    );
    envoy.stop();
    drop(rt);
}
