//! `sticky-canary gate --prometheus` against Prometheus answers it must not take as data, and
//! against a Prometheus behind a private CA (`--ca-file`). Loopback only; every server thread
//! is stopped and joined when its test ends.
//!
//! - an answer above `--max-answer-bytes` (a 96 MB vector, streamed): refused as a bad answer
//!   within `--timeout`, and the gate stops reading at the bound;
//! - a body that trickles: cut at `--timeout`, headers and body together;
//! - values that cannot be counts (NaN, negative, +Inf) and a body that is not JSON: a bad
//!   answer, never a verdict;
//! - HTTPS with a certificate from a CA the test makes: read with `--ca-file`, refused without.
#![cfg(test)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sticky_canary_harness::http::{Handler, Request, Response, Upstream};

mod common;
use common::{approval_answers, gate, percent_decode, Ran, TempFile};

// ---- the binary ---------------------------------------------------------------------------

/// A bad answer: exit 1, the message, and no verdict.
fn assert_bad_answer(r: &Ran, says: &str) {
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("sticky-canary gate: bad answer from Prometheus "),
        "{r:?}"
    );
    assert!(r.stderr.contains(says), "{says:?}: {r:?}");
    assert!(r.stderr.contains("query sum by (version)"), "{r:?}");
    assert!(r.stdout.is_empty(), "no verdict: {r:?}");
}

// ---- answers ------------------------------------------------------------------------------

/// A vector answer with these elements.
fn vector(elements: &str) -> String {
    format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{elements}]}}}}"#)
}

const APPROVAL: &str = "--ratio approval=auth_approved/payments:0.3";

/// The answer to the request for `path`: the elements of the selector the query holds (none
/// for an unknown one), plus `padding` elements without a `version` label.
fn answer_for(path: &str, padding: usize) -> Option<String> {
    let q = percent_decode(path.strip_prefix("/api/v1/query?query=")?);
    let mut elements = approval_answers(1939.0)
        .into_iter()
        .find(|(selector, _)| q.contains(selector.as_str()))
        .map_or(String::new(), |(_, e)| e);
    for i in 0..padding {
        if !elements.is_empty() {
            elements.push(',');
        }
        elements.push_str(&format!(r#"{{"metric":{{"pod":"p{i}"}},"value":[1,"1"]}}"#));
    }
    Some(vector(&elements))
}

/// A fake Prometheus (the harness's upstream) answering every query with `body`.
fn answering(body: &'static str) -> Upstream {
    let handler: Handler = Arc::new(move |_: &Request| Response::new(200).body(body));
    Upstream::start_with("prometheus", None, handler).unwrap()
}

// ---- a server of the test's own: streamed bodies and TLS ------------------------------------

/// A loopback server: one thread accepting and serving connections one after the other, each
/// by `serve`. Stopped and joined on drop.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(serve: impl Fn(TcpStream) + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                // Never a hung test: every read and write of the server has a limit.
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                conn.set_write_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                serve(conn);
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a request's head; its target (`/api/v1/query?query=…`), or `None` when the
/// connection ends first.
fn request_target(conn: &mut impl Read) -> Option<String> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_string();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        if header == "\r\n" || header == "\n" {
            return Some(target);
        }
    }
}

const MB: u64 = 1_000_000;

/// A Prometheus whose every answer is a valid vector of `total` bytes of elements without a
/// `version` label, written 64 KiB at a time, chunked (no length said) or with a
/// Content-Length. `written` counts the body bytes the client took before it hung up.
fn huge_answers(total: u64, chunked: bool, written: Arc<AtomicU64>) -> Server {
    Server::start(move |mut conn| {
        if request_target(&mut conn).is_none() {
            return;
        }
        let head = br#"{"status":"success","data":{"resultType":"vector","result":["#;
        let tail = b"]}}";
        let element = br#"{"metric":{"pod":"p"},"value":[1,"1"]},"#;
        let block: Vec<u8> = element
            .iter()
            .copied()
            .cycle()
            .take(element.len() * (65536 / element.len()))
            .collect();
        let blocks = (total - head.len() as u64 - tail.len() as u64) / block.len() as u64;
        let last = br#"{"metric":{"pod":"p"},"value":[1,"1"]}"#;
        let length = head.len() as u64 + blocks * block.len() as u64 + last.len() as u64 + 3;
        let mut response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_vec();
        if chunked {
            response.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        } else {
            response.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes());
        }
        response.extend_from_slice(b"Connection: close\r\n\r\n");
        if conn.write_all(&response).is_err() {
            return;
        }
        let mut send = |part: &[u8]| -> bool {
            let ok = if chunked {
                let mut framed = format!("{:x}\r\n", part.len()).into_bytes();
                framed.extend_from_slice(part);
                framed.extend_from_slice(b"\r\n");
                conn.write_all(&framed).is_ok()
            } else {
                conn.write_all(part).is_ok()
            };
            if ok {
                written.fetch_add(part.len() as u64, Ordering::SeqCst);
            }
            ok
        };
        if !send(head) {
            return;
        }
        for _ in 0..blocks {
            if !send(&block) {
                return;
            }
        }
        let _ = send(last) && send(tail) && (!chunked || conn.write_all(b"0\r\n\r\n").is_ok());
    })
}

#[test]
fn a_96_mb_answer_is_refused_at_the_bound_within_the_timeout() {
    for chunked in [true, false] {
        let written = Arc::new(AtomicU64::new(0));
        let prom = huge_answers(96 * MB, chunked, written.clone());
        let r = gate(&format!(
            "--service checkout --prometheus http://{} --timeout 5s {APPROVAL}",
            prom.addr
        ));
        assert_bad_answer(&r, "(--max-answer-bytes)");
        assert!(r.took < Duration::from_secs(5), "took {:?}", r.took);
        drop(prom); // joined: `written` is final
        let written = written.load(Ordering::SeqCst);
        if chunked {
            // No length said: read up to the bound (4 MiB) and not on; what the server got
            // out beyond it sits in loopback socket buffers.
            assert!(
                r.stderr
                    .contains("answer longer than the limit of 4194304 bytes, not read further"),
                "{r:?}"
            );
            assert!(written < 24 * MB, "the server wrote {written} bytes: {r:?}");
        } else {
            // Refused on its Content-Length, before the body is read.
            let said: u64 = r
                .stderr
                .split_once("answer of ")
                .and_then(|(_, rest)| rest.split_once(" bytes, above the limit of 4194304"))
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or_else(|| panic!("{r:?}"));
            assert!(said > 95 * MB, "{r:?}");
            assert!(written < 24 * MB, "the server wrote {written} bytes: {r:?}");
        }
        eprintln!(
            "chunked {chunked}: refused in {:?}, the server wrote {written} bytes",
            r.took
        );
    }
}

#[test]
fn max_answer_bytes_sets_the_bound() {
    // Every answer padded with 200 elements without a version label: about 10 KB.
    let prom = Server::start(|mut conn| {
        let Some(target) = request_target(&mut conn) else {
            return;
        };
        let (status, body) = match answer_for(&target, 200) {
            Some(body) => ("200 OK", body),
            None => ("404 Not Found", String::new()),
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let cli = format!(
        "--service checkout --prometheus http://{} {APPROVAL}",
        prom.addr
    );
    let r = gate(&format!("{cli} --max-answer-bytes 4096"));
    assert_bad_answer(&r, "above the limit of 4096 (--max-answer-bytes)");
    // Raised, the same answers read: the padding has no version label and is skipped.
    let r = gate(&format!("{cli} --max-answer-bytes 65536"));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("PROMOTE"), "{r:?}");
    // The default, 4 MiB, holds them too.
    let r = gate(&cli);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_trickling_answer_is_cut_at_the_timeout() {
    // Headers at once, then one byte of the body every 50 ms: never too large, never done.
    let prom = Server::start(|mut conn| {
        if request_target(&mut conn).is_none() {
            return;
        }
        if conn
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n{")
            .is_err()
        {
            return;
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
            if conn.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let r = gate(&format!(
        "--service checkout --prometheus http://{} --timeout 800ms {APPROVAL}",
        prom.addr
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("timed out: no complete answer within 800ms (--timeout)"),
        "{r:?}"
    );
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(r.took < Duration::from_secs(3), "took {:?}", r.took);
}

#[test]
fn values_that_cannot_be_counts_are_a_bad_answer_never_a_verdict() {
    let element = |v: &str| {
        format!(
            r#"{{"metric":{{"version":"stable"}},"value":[1,"3000"]}},{{"metric":{{"version":"canary"}},"value":[1,"{v}"]}}"#
        )
    };
    for v in ["NaN", "-5", "+Inf", "-Inf", "12abc"] {
        let body: &'static str = Box::leak(vector(&element(v)).into_boxed_str());
        let prom = answering(body);
        let r = gate(&format!(
            "--service checkout --prometheus http://{} {APPROVAL}",
            prom.addr()
        ));
        assert_bad_answer(&r, &format!("sample value {v:?} cannot be a count"));
        // --json too: no document, the error alone.
        let r = gate(&format!(
            "--service checkout --prometheus http://{} {APPROVAL} --json",
            prom.addr()
        ));
        assert_bad_answer(&r, "cannot be a count");
    }
    for (body, says) in [
        ("<html>502 Bad Gateway</html>", "not a JSON answer"),
        ("", "not a JSON answer"),
        (
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            "not an instant-vector answer",
        ),
        (
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"version":"canary"},"value":[1,5]}]}}"#,
            "not an instant-vector answer",
        ),
    ] {
        let prom = answering(body);
        let r = gate(&format!(
            "--service checkout --prometheus http://{} {APPROVAL}",
            prom.addr()
        ));
        assert_bad_answer(&r, says);
    }
    // Prometheus's own error keeps saying what Prometheus said.
    let prom = answering(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#);
    let r = gate(&format!(
        "--service checkout --prometheus http://{} {APPROVAL}",
        prom.addr()
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with(&format!(
            "sticky-canary gate: Prometheus http://{}, query sum by (version)",
            prom.addr()
        )),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("status \"error\": bad_data: parse error"),
        "{r:?}"
    );
}

// ---- HTTPS behind a private CA --------------------------------------------------------------

/// A CA of the test's own, named `name`, and a server certificate it issued for 127.0.0.1 and localhost:
/// (the CA's PEM, the server's TLS configuration).
fn private_ca(name: &str) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    leaf.distinguished_name
        .push(DnType::CommonName, "prometheus.test");
    let leaf_cert = leaf.signed_by(&key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

/// A Prometheus speaking HTTPS with `config`, answering the approval queries; records the
/// outcome of each TLS handshake.
fn https_prometheus(config: Arc<rustls::ServerConfig>) -> (Server, Arc<AtomicU64>) {
    let handshakes = Arc::new(AtomicU64::new(0));
    let done = handshakes.clone();
    let server = Server::start(move |tcp| {
        let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
            return;
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // The handshake happens on the first read; a client that refuses the certificate ends
        // it here.
        let Some(target) = request_target(&mut tls) else {
            return;
        };
        done.fetch_add(1, Ordering::SeqCst);
        let (status, body) = match answer_for(&target, 0) {
            Some(body) => ("200 OK", body),
            None => ("404 Not Found", String::new()),
        };
        let _ = write!(
            tls,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tls.flush();
        tls.conn.send_close_notify();
        let _ = tls.flush();
    });
    (server, handshakes)
}

#[test]
fn https_prometheus_behind_a_private_ca_needs_ca_file() {
    let (ca_pem, config) = private_ca("sticky-canary test CA");
    let (prom, handshakes) = https_prometheus(config);
    let ca = TempFile::new("ca.pem", ca_pem.as_bytes());
    let port = prom.addr.port();

    // With the CA: the data is read (four keys and canary_writes_total), PROMOTE.
    for host in ["127.0.0.1", "localhost"] {
        let r = gate(&format!(
            "--service checkout --prometheus https://{host}:{port} --ca-file {} {APPROVAL}",
            ca.0.display()
        ));
        assert_eq!(r.code, 0, "{host}: {r:?}");
        assert!(r.stdout.contains("PROMOTE"), "{r:?}");
        assert!(
            r.stdout
                .contains(&format!("from prometheus https://{host}:{port}")),
            "{r:?}"
        );
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 10);

    // Without it, Mozilla's roots: the certificate is refused, the query never sent.
    let r = gate(&format!(
        "--service checkout --prometheus https://127.0.0.1:{port} {APPROVAL}"
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("certificate"), "{r:?}");
    assert!(r.stderr.contains("UnknownIssuer"), "{r:?}");
    assert!(r.stderr.contains("--ca-file"), "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("https://127.0.0.1:{port}/api/v1/query?query=")),
        "{r:?}"
    );
    assert!(r.stdout.is_empty(), "{r:?}");
    assert_eq!(handshakes.load(Ordering::SeqCst), 10);

    // Another CA's file: refused just the same.
    let (other_pem, _) = private_ca("another test CA");
    let other = TempFile::new("other-ca.pem", other_pem.as_bytes());
    let r = gate(&format!(
        "--service checkout --prometheus https://127.0.0.1:{port} --ca-file {} {APPROVAL}",
        other.0.display()
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("UnknownIssuer"), "{r:?}");
    assert!(r.stderr.contains("the certificates of --ca-file"), "{r:?}");
    assert_eq!(handshakes.load(Ordering::SeqCst), 10);

    // A file without a certificate, or none at all: an error naming it, before any request.
    let key_only = TempFile::new(
        "key.pem",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let missing = ca.0.with_file_name("absent.pem");
    for (file, says) in [
        (key_only.0.clone(), "no PEM certificate"),
        (missing.clone(), "No such file"),
    ] {
        let r = gate(&format!(
            "--service checkout --prometheus https://127.0.0.1:{port} --ca-file {} {APPROVAL}",
            file.display()
        ));
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.starts_with(&format!(
                "sticky-canary gate: --ca-file {}: ",
                file.display()
            )),
            "{r:?}"
        );
        assert!(r.stderr.contains(says), "{says}: {r:?}");
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 10);
}
