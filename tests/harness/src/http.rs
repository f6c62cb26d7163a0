//! Minimal blocking HTTP/1.1 server and client for end-to-end tests.
//!
//! * [`Upstream`] is an in-process HTTP/1.1 server on loopback (one accept
//!   thread plus one thread per connection, keep-alive) that plays the role of
//!   a canary "version" behind Envoy.
//! * [`Client`] sends raw HTTP/1.1 requests (arbitrary header bytes, duplicate
//!   headers, huge values) over a keep-alive connection.
//!
//! Only `std`, `httparse` and `serde_json` are used. Header values are kept as
//! raw bytes everywhere so that non-UTF-8 input survives the round trip.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Maximum number of request headers the server accepts.
const MAX_REQUEST_HEADERS: usize = 2000;
/// Maximum size of a request head (request line + headers) on the server.
const MAX_REQUEST_HEAD: usize = 1 << 20;
/// Maximum number of response headers the client accepts.
const MAX_RESPONSE_HEADERS: usize = 200;
/// Maximum size of a response head on the client.
const MAX_RESPONSE_HEAD: usize = 1 << 20;
/// Upper bound for any body (guards against runaway allocations).
const MAX_BODY: usize = 64 << 20;
/// Maximum length of a chunk-size or trailer line.
const MAX_LINE: usize = 64 << 10;
/// Read timeout on server-side (accepted) sockets.
const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Read timeout on client sockets.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(10);

type Headers = Vec<(String, Vec<u8>)>;

fn find_first<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn find_all<'a>(headers: &'a Headers, name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// True if any `name` header contains `token` in its comma-separated list
/// (case-insensitive), e.g. `connection: keep-alive, Close`.
fn has_token(headers: &Headers, name: &str, token: &str) -> bool {
    find_all(headers, name).iter().any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// True if the last transfer coding is `chunked`.
fn is_chunked(headers: &Headers) -> bool {
    find_all(headers, "transfer-encoding")
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .rfind(|t| !t.is_empty())
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// Parses all `content-length` headers; `Ok(None)` if absent, error if invalid or conflicting.
fn content_length(headers: &Headers) -> io::Result<Option<usize>> {
    let mut result = None;
    for value in find_all(headers, "content-length") {
        for part in value.split(|&b| b == b',') {
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| invalid("invalid content-length"))?;
            if result.is_some_and(|prev| prev != n) {
                return Err(invalid("conflicting content-length headers"));
            }
            result = Some(n);
        }
    }
    match result {
        Some(n) if n > MAX_BODY => Err(invalid("content-length too large")),
        other => Ok(other),
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn eof(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg.to_string())
}

/// One HTTP request as the upstream saw it (or as a client will send it).
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names as received (the server lowercases them), raw value bytes,
    /// order and duplicates kept.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A `GET` request for `path`.
    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    /// A request with the given method and path, no headers and no body.
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            ..Request::default()
        }
    }

    /// Appends a header (duplicates allowed).
    pub fn header(self, name: &str, value: &str) -> Request {
        self.header_bytes(name, value.as_bytes())
    }

    /// Appends a header with a raw byte value. The bytes are written verbatim
    /// by the client (no validation), so tests can send hostile input.
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Request {
        self.headers.push((name.to_string(), value.to_vec()));
        self
    }

    /// Sets the body; the client adds `content-length` unless the request
    /// already carries `content-length` or `transfer-encoding`.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// First value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        find_first(&self.headers, name)
    }

    /// First value of header `name`, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header_value(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All values of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&[u8]> {
        find_all(&self.headers, name)
    }
}

/// A response (built by an upstream handler, or parsed by the client).
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with the given status, no headers and an empty body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Appends a header (duplicates allowed).
    pub fn header(self, name: &str, value: &str) -> Response {
        self.header_bytes(name, value.as_bytes())
    }

    /// Appends a header with a raw byte value.
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Response {
        self.headers.push((name.to_string(), value.to_vec()));
        self
    }

    /// Sets the body (the server always frames it with `content-length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// First value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        find_first(&self.headers, name)
    }

    /// First value of header `name`, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header_value(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All values of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&[u8]> {
        find_all(&self.headers, name)
    }

    /// The body parsed as JSON, or `Value::Null` if it is not valid JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request handler run by an [`Upstream`] for every request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// The default handler: answers 200 with `content-type: application/json`,
/// `x-upstream: <name>`, `x-canary-version: <name>` (an upstream that sets its
/// own version tag, which the filter under test must replace) and a JSON body
/// `{"upstream", "method", "path", "headers": [[name, value], ...], "body_len"}`.
/// Header values are converted with `String::from_utf8_lossy`, in received
/// order, duplicates kept.
pub fn echo_handler(name: &str) -> Handler {
    let name = name.to_string();
    Arc::new(move |req: &Request| {
        let headers: Vec<serde_json::Value> = req
            .headers
            .iter()
            .map(|(n, v)| serde_json::json!([n, String::from_utf8_lossy(v)]))
            .collect();
        let body = serde_json::json!({
            "upstream": name,
            "method": req.method,
            "path": req.path,
            "headers": headers,
            "body_len": req.body.len(),
        });
        Response::new(200)
            .header("content-type", "application/json")
            .header("x-upstream", &name)
            .header("x-canary-version", &name)
            .body(body.to_string())
    })
}

/// A buffered connection: bytes read from `stream` but not yet consumed live in `buf`.
struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    fn new(stream: S) -> Self {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; returns how many (0 on EOF).
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = vec![0u8; self.buf.len().clamp(16 << 10, 1 << 20)];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        self.buf.drain(..n).collect()
    }

    fn read_exact_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(eof("connection closed mid-body"));
            }
        }
        Ok(self.take(n))
    }

    /// Reads one line terminated by LF (CR before it is stripped).
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let mut line = self.take(scanned + i + 1);
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            scanned = self.buf.len();
            if scanned > MAX_LINE {
                return Err(invalid("line too long"));
            }
            if self.fill()? == 0 {
                return Err(eof("connection closed mid-line"));
            }
        }
    }

    /// Decodes a chunked body; chunk extensions and trailers are ignored.
    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size_part = line
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            let size = std::str::from_utf8(size_part)
                .ok()
                .and_then(|s| usize::from_str_radix(s, 16).ok())
                .ok_or_else(|| invalid("invalid chunk size"))?;
            if size == 0 {
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(invalid("chunked body too large"));
            }
            body.extend(self.read_exact_bytes(size)?);
            if !self.read_line()?.is_empty() {
                return Err(invalid("missing CRLF after chunk data"));
            }
        }
    }

    /// Reads and parses a message head with `parse`, which returns the head
    /// length and owned data once the head is complete. Returns `Ok(None)` if
    /// the peer closed cleanly before sending anything; a head larger than
    /// `max` is reported as `TooManyHeaders`.
    fn read_head<T>(
        &mut self,
        max: usize,
        mut parse: impl FnMut(&[u8]) -> httparse::Result<(usize, T)>,
    ) -> io::Result<Option<Result<T, httparse::Error>>> {
        loop {
            if !self.buf.is_empty() {
                match parse(&self.buf) {
                    Ok(httparse::Status::Complete((n, head))) => {
                        self.take(n);
                        return Ok(Some(Ok(head)));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => return Ok(Some(Err(e))),
                }
            }
            if self.buf.len() >= max {
                return Ok(Some(Err(httparse::Error::TooManyHeaders)));
            }
            if self.fill()? == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(eof("connection closed mid-head")),
                };
            }
        }
    }

    fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {
            if self.buf.len() > MAX_BODY {
                return Err(invalid("body too large"));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }
}

/// Request head fields: method, path, HTTP minor version, lowercased headers.
type RequestHead = (String, String, u8, Headers);

fn read_request_head<S: Read + Write>(
    conn: &mut Conn<S>,
) -> io::Result<Option<Result<RequestHead, httparse::Error>>> {
    conn.read_head(MAX_REQUEST_HEAD, |buf| {
        let mut slots = vec![httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        let httparse::Status::Complete(n) = req.parse(buf)? else {
            return Ok(httparse::Status::Partial);
        };
        let headers = req.headers.iter();
        let headers = headers.map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()));
        let method = req.method.unwrap_or_default().to_string();
        let path = req.path.unwrap_or_default().to_string();
        let version = req.version.unwrap_or(1);
        let head = (method, path, version, headers.collect());
        Ok(httparse::Status::Complete((n, head)))
    })
}

/// Reason phrase for the status line (informational only; clients ignore it).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Serializes a response. `content-length` is always the handler's body length
/// (handler-supplied `content-length`/`transfer-encoding` are dropped), except
/// for 1xx/204 where it is forbidden; HEAD, 1xx, 204 and 304 carry no body.
fn encode_response(resp: &Response, head_only: bool, close: bool) -> Vec<u8> {
    let no_body_status = (100..200).contains(&resp.status) || resp.status == 204;
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status)).into_bytes();
    for (name, value) in &resp.headers {
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !no_body_status {
        out.extend_from_slice(format!("content-length: {}\r\n", resp.body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !no_body_status && resp.status != 304 {
        out.extend_from_slice(&resp.body);
    }
    out
}

/// Serves requests on one accepted connection until the peer closes, an
/// error occurs, the client asks to close, or the upstream is stopped.
fn serve_connection(
    stream: TcpStream,
    handler: &Handler,
    served: &AtomicU64,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut conn = Conn::new(stream);
    while !stop.load(Ordering::SeqCst) {
        let reject = |conn: &mut Conn<TcpStream>, status| {
            let response = encode_response(&Response::new(status), false, true);
            conn.stream.write_all(&response)
        };
        let (method, path, version, headers) = match read_request_head(&mut conn)? {
            None => return Ok(()),
            Some(Err(httparse::Error::TooManyHeaders)) => return reject(&mut conn, 431),
            Some(Err(_)) => return reject(&mut conn, 400),
            Some(Ok(head)) => head,
        };
        if has_token(&headers, "expect", "100-continue") {
            conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body = if is_chunked(&headers) {
            conn.read_chunked()?
        } else {
            match content_length(&headers) {
                Ok(n) => conn.read_exact_bytes(n.unwrap_or(0))?,
                Err(_) => return reject(&mut conn, 400),
            }
        };
        let close = if version == 0 {
            !has_token(&headers, "connection", "keep-alive")
        } else {
            has_token(&headers, "connection", "close")
        };
        let request = Request {
            method,
            path,
            headers,
            body,
        };
        let response = catch_unwind(AssertUnwindSafe(|| handler(&request)))
            .unwrap_or_else(|_| Response::new(500).body("handler panicked"));
        // Count before writing so a test that has received the response
        // always observes the incremented counter.
        served.fetch_add(1, Ordering::SeqCst);
        conn.stream
            .write_all(&encode_response(&response, request.method == "HEAD", close))?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// In-process HTTP/1.1 upstream on loopback. One accept thread plus one thread
/// per connection; keep-alive. Dropping it stops accepting and shuts down all
/// open connections (so a dropped upstream really looks "down" to Envoy).
pub struct Upstream {
    name: String,
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Binds `127.0.0.1:0` and serves [`echo_handler`]`(name)`.
    pub fn start(name: &str) -> io::Result<Upstream> {
        Upstream::start_with(name, None, echo_handler(name))
    }

    /// Binds the given address (fixed ports) and serves [`echo_handler`]`(name)`.
    pub fn start_on(name: &str, addr: SocketAddr) -> io::Result<Upstream> {
        Upstream::start_with(name, Some(addr), echo_handler(name))
    }

    /// Binds `127.0.0.1:0` (or `addr` if given) and serves `handler`.
    pub fn start_with(
        name: &str,
        addr: Option<SocketAddr>,
        handler: Handler,
    ) -> io::Result<Upstream> {
        let listener = TcpListener::bind(addr.unwrap_or_else(|| (Ipv4Addr::LOCALHOST, 0).into()))?;
        let addr = listener.local_addr()?;
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let accept_thread = {
            let (served, stop, conns) = (served.clone(), stop.clone(), conns.clone());
            std::thread::Builder::new()
                .name(format!("upstream-{name}-accept"))
                .spawn(move || accept_loop(listener, handler, served, stop, conns))?
        };
        Ok(Upstream {
            name: name.to_string(),
            addr,
            served,
            stop,
            conns,
            accept_thread: Some(accept_thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The upstream's name (its canary version).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of requests this upstream has answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

fn accept_loop(
    listener: TcpListener,
    handler: Handler,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
) {
    let mut next_id = 0u64;
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((stream, _)) = accepted else {
            // e.g. EMFILE; back off briefly instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = stream.set_read_timeout(Some(SERVER_READ_TIMEOUT));
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        if let Ok(clone) = stream.try_clone() {
            conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, clone);
        }
        let (handler, served, stop, registry) =
            (handler.clone(), served.clone(), stop.clone(), conns.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("upstream-conn-{id}"))
            .spawn(move || {
                let _ = serve_connection(stream, &handler, &served, &stop);
                registry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            });
        if spawned.is_err() {
            conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept() by connecting to ourselves.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let woke = TcpStream::connect_timeout(&wake, Duration::from_secs(2)).is_ok();
        if let Some(thread) = self.accept_thread.take() {
            // If the wake-up connection failed, detach rather than risk hanging.
            if woke {
                let _ = thread.join();
            }
        }
        // Unblock connection threads (they exit on EOF and see `stop`).
        for (_, stream) in self.conns.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Keep-alive HTTP/1.1 client on one TCP connection. Reconnects transparently
/// if the server closed the connection between requests.
pub struct Client {
    addr: SocketAddr,
    conn: Option<Conn<TcpStream>>,
    /// Whether the current connection has completed at least one exchange.
    reused: bool,
    /// Requests sent again on a new connection because the server had closed the old one.
    retries: u64,
}

fn open(addr: SocketAddr) -> io::Result<Conn<TcpStream>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(CLIENT_READ_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(Conn::new(stream))
}

/// Errors that mean "the server had closed the idle connection".
fn is_closed_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

impl Client {
    /// Opens a connection to `addr`.
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        Ok(Client {
            addr,
            conn: Some(open(addr)?),
            reused: false,
            retries: 0,
        })
    }

    /// How many requests were sent twice because the server closed or reset the connection
    /// before answering (the first attempt may have reached the server).
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `req` and reads the full response.
    ///
    /// Adds `host: <addr>` unless present, and `content-length` when the body
    /// is non-empty or the method is POST/PUT/PATCH (unless `content-length`
    /// or `transfer-encoding` is already set; with `transfer-encoding` the body
    /// is sent verbatim, so it must already be encoded). Header bytes are
    /// written verbatim. Interim 1xx responses (except 101) are skipped.
    pub fn send(&mut self, req: &Request) -> io::Result<Response> {
        let wire = self.encode(req);
        // Like real HTTP clients: resend once when the connection was closed or reset before any
        // response byte, if it was a reused connection or the request is idempotent.
        let idempotent = matches!(req.method.as_str(), "GET" | "HEAD");
        match self.exchange(&wire, &req.method) {
            Err((true, _)) if self.reused || idempotent => {
                self.conn = Some(open(self.addr)?);
                self.reused = false;
                self.retries += 1;
                self.exchange(&wire, &req.method).map_err(|(_, e)| e)
            }
            other => other.map_err(|(_, e)| e),
        }
    }

    fn encode(&self, req: &Request) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.path).into_bytes();
        let mut push = |name: &str, value: &[u8]| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        if req.header_value("host").is_none() {
            push("host", self.addr.to_string().as_bytes());
        }
        for (name, value) in &req.headers {
            push(name, value);
        }
        let framed = req.header_value("content-length").is_some()
            || req.header_value("transfer-encoding").is_some();
        let needs_length =
            !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH");
        if !framed && needs_length {
            push("content-length", req.body.len().to_string().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&req.body);
        out
    }

    /// One request/response exchange. On error, the flag says whether the
    /// failure happened before any response byte arrived because the
    /// connection was closed (i.e. a retry on a new connection is sensible).
    fn exchange(&mut self, wire: &[u8], method: &str) -> Result<Response, (bool, io::Error)> {
        if self.conn.is_none() {
            self.conn = Some(open(self.addr).map_err(|e| (false, e))?);
            self.reused = false;
        }
        let conn = self.conn.as_mut().expect("connection present");
        let result = (|| {
            conn.stream
                .write_all(wire)
                .map_err(|e| (is_closed_error(&e), e))?;
            if conn.buf.is_empty() {
                match conn.fill() {
                    Ok(0) => return Err((true, eof("connection closed"))),
                    Ok(_) => {}
                    Err(e) => return Err((is_closed_error(&e), e)),
                }
            }
            read_response(conn, method).map_err(|e| (false, e))
        })();
        match result {
            Ok((response, keep)) => {
                if keep {
                    self.reused = true;
                } else {
                    self.conn = None;
                }
                Ok(response)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// Reads one final response; returns it and whether the connection can be reused.
fn read_response(conn: &mut Conn<TcpStream>, method: &str) -> io::Result<(Response, bool)> {
    loop {
        let (status, version, headers) = read_response_head(conn)?;
        if (100..200).contains(&status) && status != 101 {
            continue; // interim response
        }
        let mut keep = if version == 0 {
            has_token(&headers, "connection", "keep-alive")
        } else {
            !has_token(&headers, "connection", "close")
        };
        let body = if method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            Vec::new()
        } else if is_chunked(&headers) {
            conn.read_chunked()?
        } else if let Some(n) = content_length(&headers)? {
            conn.read_exact_bytes(n)?
        } else {
            keep = false;
            conn.read_to_close()?
        };
        return Ok((
            Response {
                status,
                headers,
                body,
            },
            keep && status != 101,
        ));
    }
}

fn read_response_head(conn: &mut Conn<TcpStream>) -> io::Result<(u16, u8, Headers)> {
    let head = conn.read_head(MAX_RESPONSE_HEAD, |buf| {
        let mut slots = vec![httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut resp = httparse::Response::new(&mut slots);
        let httparse::Status::Complete(n) = resp.parse(buf)? else {
            return Ok(httparse::Status::Partial);
        };
        let headers = resp.headers.iter();
        let headers = headers.map(|h| (h.name.to_string(), h.value.to_vec()));
        let (code, version) = (resp.code.unwrap_or_default(), resp.version.unwrap_or(1));
        Ok(httparse::Status::Complete((
            n,
            (code, version, headers.collect()),
        )))
    })?;
    match head {
        None => Err(eof("connection closed before response head")),
        Some(Ok(head)) => Ok(head),
        Some(Err(e)) => Err(invalid(&format!("invalid response head: {e}"))),
    }
}

/// A loopback port that was free a moment ago, for a program that cannot be told to pick one
/// itself (Envoy can: the harness gives it port 0).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Sends one request on a fresh connection with `connection: close`
/// (unless the request already has a `connection` header).
pub fn send_once(addr: SocketAddr, req: &Request) -> io::Result<Response> {
    let mut req = req.clone();
    if req.header_value("connection").is_none() {
        req = req.header("connection", "close");
    }
    Client::connect(addr)?.send(&req)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot raw server: for each canned reply, accepts a connection (or
    /// reuses it), reads one request head and writes the reply bytes.
    fn raw_server(replies: Vec<Vec<u8>>, close_after_each: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut conn: Option<Conn<TcpStream>> = None;
            for reply in replies {
                let c = conn.get_or_insert_with(|| Conn::new(listener.accept().unwrap().0));
                assert!(matches!(read_request_head(c).unwrap(), Some(Ok(_))));
                c.stream.write_all(&reply).unwrap();
                if close_after_each {
                    conn = None;
                }
            }
        });
        addr
    }

    #[test]
    fn round_trip_keep_alive() {
        let up = Upstream::start("v1").unwrap();
        let mut client = Client::connect(up.addr()).unwrap();
        let resp = client
            .send(&Request::get("/a?b=1").header("X-Test", "yes"))
            .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header_str("X-Upstream"), Some("v1"));
        assert_eq!(resp.header_str("x-canary-version"), Some("v1"));
        let json = resp.json();
        assert_eq!(json["upstream"], "v1");
        assert_eq!(json["method"], "GET");
        assert_eq!(json["path"], "/a?b=1");
        assert!(json["headers"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["x-test", "yes"])));
        let resp = client
            .send(&Request::new("POST", "/p").body("hello"))
            .unwrap();
        assert_eq!(resp.json()["body_len"], 5);
        let resp = client.send(&Request::new("POST", "/empty")).unwrap();
        assert_eq!(resp.json()["body_len"], 0);
        assert_eq!(up.served(), 3);
        let resp = send_once(up.addr(), &Request::get("/once")).unwrap();
        assert_eq!(resp.header_str("connection"), Some("close"));
        assert_eq!(up.served(), 4);
    }

    #[test]
    fn chunked_response_and_request() {
        let reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                      5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
            .to_vec();
        let addr = raw_server(vec![reply.clone(), reply], false);
        let mut client = Client::connect(addr).unwrap();
        for _ in 0..2 {
            let resp = client.send(&Request::get("/")).unwrap();
            assert_eq!(resp.body, b"hello world");
        }
        // Chunked request body decoded by the upstream.
        let up = Upstream::start("v2").unwrap();
        let req = Request::new("POST", "/c")
            .header("transfer-encoding", "chunked")
            .body("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        let mut client = Client::connect(up.addr()).unwrap();
        assert_eq!(client.send(&req).unwrap().json()["body_len"], 5);
        assert_eq!(client.send(&Request::get("/after")).unwrap().status, 200);
    }

    #[test]
    fn head_has_no_body() {
        let up = Upstream::start("v1").unwrap();
        let mut client = Client::connect(up.addr()).unwrap();
        let resp = client.send(&Request::new("HEAD", "/h")).unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp.body.is_empty());
        let len: usize = resp.header_str("content-length").unwrap().parse().unwrap();
        assert!(len > 0);
        // The connection must still be in sync (no stray body bytes).
        let resp = client.send(&Request::get("/next")).unwrap();
        assert_eq!(resp.json()["path"], "/next");
        assert_eq!(up.served(), 2);
    }

    #[test]
    fn duplicate_and_many_headers() {
        let up = Upstream::start("v1").unwrap();
        let mut req = Request::get("/")
            .header("Cookie", "a=1")
            .header("cookie", "b=2");
        let many: Vec<String> = (0..500).map(|i| format!("c{i}=v{i}")).collect();
        req = req
            .header("cookie", &many.join("; "))
            .header("x-big", &"x".repeat(64 * 1024));
        assert_eq!(req.header_values("COOKIE").len(), 3);
        let resp = send_once(up.addr(), &req).unwrap();
        let headers = resp.json()["headers"].as_array().unwrap().clone();
        let cookies: Vec<&str> = headers
            .iter()
            .filter(|h| h[0] == "cookie")
            .map(|h| h[1].as_str().unwrap())
            .collect();
        assert_eq!(cookies, vec!["a=1", "b=2", many.join("; ").as_str()]);
        let big = headers.iter().find(|h| h[0] == "x-big").unwrap();
        assert_eq!(big[1].as_str().unwrap().len(), 64 * 1024);
        // Hundreds of separate headers are fine; more than the limit gets 431.
        let mut client = Client::connect(up.addr()).unwrap();
        let mut req = Request::get("/many");
        for i in 0..1500 {
            req = req.header("cookie", &format!("k{i}=v"));
        }
        let headers = client.send(&req).unwrap().json()["headers"].clone();
        assert_eq!(headers.as_array().unwrap().len(), 1501); // + host
        for i in 0..600 {
            req = req.header("x-extra", &i.to_string());
        }
        assert_eq!(client.send(&req).unwrap().status, 431);
    }

    #[test]
    fn non_utf8_header_bytes() {
        let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
        let seen2 = seen.clone();
        let handler: Handler = Arc::new(move |req: &Request| {
            *seen2.lock().unwrap() = req.header_value("x-raw").unwrap().to_vec();
            Response::new(200).header_bytes("x-back", req.header_value("x-raw").unwrap())
        });
        let up = Upstream::start_with("raw", None, handler).unwrap();
        let raw = b"a\xff\x80b";
        let resp = send_once(up.addr(), &Request::get("/").header_bytes("X-Raw", raw)).unwrap();
        assert_eq!(*seen.lock().unwrap(), raw);
        assert_eq!(resp.header_value("x-back"), Some(&raw[..]));
        assert_eq!(resp.header_str("x-back"), None);
        // The echo handler converts lossily.
        let echo = Upstream::start("v1").unwrap();
        let json = send_once(echo.addr(), &Request::get("/").header_bytes("x-raw", raw))
            .unwrap()
            .json();
        let h = json["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "x-raw")
            .unwrap()
            .clone();
        assert_eq!(h[1], "a\u{fffd}\u{fffd}b");
    }

    #[test]
    fn reconnects_when_server_closed_idle_connection() {
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
        let addr = raw_server(vec![reply.clone(), reply.clone(), reply], true);
        let mut client = Client::connect(addr).unwrap();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(client.send(&Request::get("/")).unwrap().body, b"ok");
        }
    }

    #[test]
    fn drop_closes_listener_and_connections() {
        let up = Upstream::start("v1").unwrap();
        let addr = up.addr();
        let mut client = Client::connect(addr).unwrap();
        assert_eq!(client.send(&Request::get("/")).unwrap().status, 200);
        drop(up);
        assert!(client.send(&Request::get("/")).is_err());
        assert!(TcpStream::connect(addr).is_err());
    }
}
