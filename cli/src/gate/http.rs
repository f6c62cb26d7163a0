//! HTTP GETs to Envoy admin endpoints and Prometheus, through `ureq`.
//!
//! - URLs are `http://` or `https://` (rustls, Mozilla's root certificates, or instead the CA
//!   certificates of `--ca-file`), with an optional path prefix and optional `USER:PASSWORD@`
//!   credentials, sent as basic auth;
//! - a bearer token may be given instead (`--prometheus-token-file`);
//! - the connect timeout and the time limit of each request are real (`ureq` timeouts: the
//!   limit is `timeout_global`, from resolving the host to the last byte of the body);
//! - a body is read up to a bound and no further: [`Client::get_bounded`] (Prometheus answers,
//!   `--max-answer-bytes`), [`Client::get`] (Envoy scrapes, [`MAX_SCRAPE_BYTES`]);
//! - `ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (or lower case) are honoured;
//! - redirects are not followed and any non-2xx answer is an error.
//!
//! No message ever holds a password or a token: URLs are shown without their credentials.

use std::fmt;
use std::time::Duration;

/// The connect timeout unless `--connect-timeout` says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The time limit of one request (connect, send, answer and body) unless `--timeout` says
/// otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest Envoy scrape read (a big mesh's `/stats/prometheus` runs to tens of MB).
pub const MAX_SCRAPE_BYTES: u64 = 512 << 20;
/// The largest Prometheus answer read unless `--max-answer-bytes` says otherwise. The gate's
/// queries are `sum by (version)`: one element per version, a few hundred bytes.
pub const MAX_ANSWER_BYTES: u64 = 4 << 20;
/// The smallest `--max-answer-bytes`: room for an answer with a few versions.
pub const MIN_ANSWER_BYTES: u64 = 1 << 10;

/// `http[s]://[USER[:PASSWORD]@]host[:port][/prefix]`.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Empty, or starting with `/` and without a trailing `/`.
    pub prefix: String,
    /// Basic-auth credentials from the URL (percent-decoded).
    pub user: Option<Credentials>,
    /// The URL as given, without its credentials.
    shown: String,
}

/// A user and password, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.user)
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpUrl({})", self.shown)
    }
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        // The URL as it may be shown: without what follows `://` up to an `@`.
        let redacted = redact(url);
        let bad = |why: &str| {
            format!(
                "URL {redacted:?}: {why} (expected http[s]://[USER:PASSWORD@]host[:port][/prefix])"
            )
        };
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad("only http:// and https:// are supported"));
        };
        if rest.contains(['?', '#']) || rest.contains(char::is_whitespace) {
            return Err(bad("no query, fragment or spaces"));
        }
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let mut shown = url.to_string();
        let (user, authority) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let (user, password) = (percent_decode(u), percent_decode(p));
                match (user, password) {
                    (Some(user), Some(password)) if !user.is_empty() => {
                        let scheme = if https { "https://" } else { "http://" };
                        shown = format!("{scheme}{hostport}{}", &rest[authority.len()..]);
                        (Some(Credentials { user, password }), hostport)
                    }
                    _ => return Err(bad("unreadable credentials")),
                }
            }
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after {
                "" => (h, None),
                a => (h, Some(a.strip_prefix(':').ok_or_else(|| bad("bad port"))?)),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None if https => 443,
            None => 80,
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
        };
        Ok(HttpUrl {
            https,
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
            user,
            shown,
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL of `prefix + path`, without credentials.
    pub fn join(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}{path}", self.authority(), self.prefix)
    }

    /// The base URL with its port: `http://host:port/prefix`, without credentials.
    pub fn display(&self) -> String {
        self.join("")
    }

    /// The URL as given, without its credentials (what reports name as a source).
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// `url` with any credentials replaced by `***`, for messages about URLs that do not parse.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Standard base64 with padding (RFC 4648 §4), for basic auth.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A bearer token, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads a token file once: the whole file, trimmed. Its content is never part of an error.
    pub fn from_file(path: &std::path::Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("token file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("token file {} is empty", path.display()));
        }
        if token.contains(|c: char| c.is_control() || c == ' ') {
            return Err(format!(
                "token file {}: the token must be one line without spaces",
                path.display()
            ));
        }
        Ok(Token(token.to_string()))
    }
}

/// Connect timeout and time limit of each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            request: REQUEST_TIMEOUT,
        }
    }
}

/// The CA certificates of `--ca-file`: the only roots trusted for `https://` sources when given
/// (as `curl --cacert`), instead of Mozilla's.
#[derive(Clone)]
pub struct CaFile {
    certs: Vec<ureq::tls::Certificate<'static>>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaFile({} certificates)", self.certs.len())
    }
}

impl CaFile {
    /// Reads a PEM bundle: every `CERTIFICATE` in it (other sections, such as keys, are
    /// skipped). An unreadable file, a damaged PEM section or no certificate is an error naming
    /// the file.
    pub fn from_file(path: &std::path::Path) -> Result<CaFile, String> {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        CaFile::from_pem(&pem).map_err(|e| format!("--ca-file {}: {e}", path.display()))
    }

    /// The certificates of a PEM bundle.
    pub fn from_pem(pem: &[u8]) -> Result<CaFile, String> {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(format!("not a readable PEM file ({e})")),
            }
        }
        if certs.is_empty() {
            return Err("no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)".into());
        }
        Ok(CaFile { certs })
    }
}

/// An answer longer than the bound of [`Client::get_bounded`]; nothing past the bound was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    /// The answer's length when it announced one (`Content-Length`).
    pub length: Option<u64>,
    /// The bound.
    pub limit: u64,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.length {
            Some(n) => write!(f, "answer of {n} bytes, above the limit of {}", self.limit),
            None => write!(
                f,
                "answer longer than the limit of {} bytes, not read further",
                self.limit
            ),
        }
    }
}

/// An HTTP client: one `ureq` agent (connections kept alive across the gate's queries).
pub struct Client {
    agent: ureq::Agent,
    token: Option<Token>,
    timeouts: Timeouts,
    custom_roots: bool,
}

impl Client {
    /// A client with these timeouts; proxies from the environment. `token`, when given, is sent
    /// as `Authorization: Bearer` on every request (the gate gives one only for Prometheus).
    /// `roots`, when given, are the only CA certificates trusted for `https://`.
    pub fn new(timeouts: Timeouts, token: Option<Token>, roots: Option<&CaFile>) -> Client {
        let mut config = ureq::Agent::config_builder()
            .timeout_connect(Some(timeouts.connect))
            // The whole exchange: resolving, connecting, the request, the answer's head and
            // every byte of its body (`timeout_per_call` is the same without redirects).
            .timeout_global(Some(timeouts.request))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("sticky-canary/", env!("CARGO_PKG_VERSION")))
            .proxy(ureq::Proxy::try_from_env());
        if let Some(ca) = roots {
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&ca.certs))
                    .build(),
            );
        }
        Client {
            agent: config.build().into(),
            token,
            timeouts,
            custom_roots: roots.is_some(),
        }
    }

    /// GET `prefix + path` of `url`; the body of a 2xx answer, at most [`MAX_SCRAPE_BYTES`]
    /// (bytes that are not UTF-8 are replaced). Errors name the URL (without credentials) and
    /// never hold a password or a token.
    pub fn get(&self, url: &HttpUrl, path: &str) -> Result<String, String> {
        let target = url.join(path);
        match self.get_bounded(url, path, MAX_SCRAPE_BYTES)? {
            Ok(body) => Ok(match String::from_utf8(body) {
                Ok(text) => text,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
            Err(too_large) => Err(format!("{target}: {too_large}")),
        }
    }

    /// GET `prefix + path` of `url`; the body of a 2xx answer, or [`TooLarge`] when it is longer
    /// than `limit` bytes: refused on its `Content-Length` before any of the body is read, or
    /// as soon as the byte after `limit` arrives. Errors (the outer `Err`) name the URL (without
    /// credentials) and never hold a password or a token.
    pub fn get_bounded(
        &self,
        url: &HttpUrl,
        path: &str,
        limit: u64,
    ) -> Result<Result<Vec<u8>, TooLarge>, String> {
        let target = url.join(path);
        let mut req = self
            .agent
            .get(&target)
            .header("accept", "application/json, text/plain");
        if let Some(Token(token)) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        } else if let Some(c) = &url.user {
            let pair = format!("{}:{}", c.user, c.password);
            req = req.header(
                "authorization",
                format!("Basic {}", base64(pair.as_bytes())),
            );
        }
        let mut response = req.call().map_err(|e| self.describe(&target, e))?;
        let status = response.status();
        if !status.is_success() {
            // The start of an error page, for the message; the rest is not read.
            let mut start = Vec::new();
            let _ = std::io::Read::read_to_end(
                &mut std::io::Read::take(response.body_mut().as_reader(), 4096),
                &mut start,
            );
            let head: String = String::from_utf8_lossy(&start).chars().take(300).collect();
            return Err(format!(
                "{target}: HTTP {}: {}",
                status.as_u16(),
                head.trim()
            ));
        }
        let length = response.body().content_length();
        if let Some(n) = length.filter(|n| *n > limit) {
            return Ok(Err(TooLarge {
                length: Some(n),
                limit,
            }));
        }
        match response.body_mut().with_config().limit(limit).read_to_vec() {
            Ok(body) => Ok(Ok(body)),
            Err(ureq::Error::BodyExceedsLimit(_)) => Ok(Err(TooLarge {
                length: None,
                limit,
            })),
            Err(e) => Err(self.describe(&format!("{target}: reading the answer"), e)),
        }
    }

    /// A TLS error of a request to `what` (rustls's, during the handshake or after), with the
    /// roots it was checked against.
    fn tls_error(&self, what: &str, e: &rustls::Error) -> String {
        let trusted = if self.custom_roots {
            "the certificates of --ca-file"
        } else {
            "Mozilla's root certificates; for a private CA, give its certificate with --ca-file"
        };
        match e {
            rustls::Error::InvalidCertificate(_) => {
                format!(
                    "{what}: TLS: the server's certificate is refused: {e} (trusted: {trusted})"
                )
            }
            e => format!("{what}: TLS: {e} (trusted: {trusted})"),
        }
    }

    /// An error of a request to `what`, in words.
    fn describe(&self, what: &str, e: ureq::Error) -> String {
        match e {
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                format!("{what}: unreachable: {io}")
            }
            ureq::Error::Timeout(ureq::Timeout::Connect) => format!(
                "{what}: timed out: no connection within {:?} (--connect-timeout)",
                self.timeouts.connect
            ),
            ureq::Error::Timeout(_) => format!(
                "{what}: timed out: no complete answer within {:?} (--timeout)",
                self.timeouts.request
            ),
            ureq::Error::Rustls(e) => self.tls_error(what, &e),
            ureq::Error::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref()) {
                Some(e) => self.tls_error(what, e),
                None => format!("{what}: {io}"),
            },
            e => format!("{what}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:9901").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 9901, "")
        );
        let u = HttpUrl::parse("http://prom.example:9090/prometheus/").unwrap();
        assert_eq!((u.port, u.prefix.as_str()), (9090, "/prometheus"));
        assert_eq!(u.join("/api"), "http://prom.example:9090/prometheus/api");
        let u = HttpUrl::parse("http://[::1]:9901").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority()),
            ("::1", "[::1]:9901".to_string())
        );
        assert_eq!(HttpUrl::parse("http://[::1]").unwrap().port, 80);
        assert_eq!(HttpUrl::parse("http://envoy").unwrap().port, 80);
        let u = HttpUrl::parse("https://prom.example").unwrap();
        assert_eq!((u.https, u.port), (true, 443));
        assert_eq!(u.display(), "https://prom.example:443");
        for bad in [
            "ftp://x:1",
            "127.0.0.1:9901",
            "http://:9901",
            "http://x:port",
            "http://x:70000",
            "http://x:1/?q=1",
            "http://[::1]x",
            "http://:pw@x:1",
            "http://u:%zz@x:1",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_read_and_never_shown() {
        let u = HttpUrl::parse("https://gate:s%40cret:x@prom.example:9090/p").unwrap();
        let c = u.user.clone().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("gate", "s@cret:x"));
        assert_eq!(u.display(), "https://prom.example:9090/p");
        assert_eq!(u.shown(), "https://prom.example:9090/p");
        assert!(!format!("{u:?}").contains("s@cret"));
        assert_eq!(
            HttpUrl::parse("http://envoy/").unwrap().shown(),
            "http://envoy/"
        );
        assert_eq!(
            HttpUrl::parse("http://u@x:1")
                .unwrap()
                .user
                .unwrap()
                .password,
            ""
        );
        let e = HttpUrl::parse("https://u:hunter2@x:port").unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("***@x:port"), "{e}");
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn token_files() {
        let dir = std::env::temp_dir().join(format!("sc-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  abc.def-ghi\n\n").unwrap();
        let t = Token::from_file(&file).unwrap();
        assert_eq!(t, Token("abc.def-ghi".into()));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        std::fs::write(&file, "\n").unwrap();
        assert!(Token::from_file(&file).unwrap_err().contains("empty"));
        std::fs::write(&file, "two words-secret\n").unwrap();
        let e = Token::from_file(&file).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(Token::from_file(&dir.join("absent")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ca_files() {
        // Not a certificate anyone should trust: only its PEM framing matters here.
        let pem = "junk before\n-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";
        assert_eq!(CaFile::from_pem(pem.as_bytes()).unwrap().certs.len(), 1);
        let two =
            format!("{pem}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{pem}");
        assert_eq!(CaFile::from_pem(two.as_bytes()).unwrap().certs.len(), 2);
        for bad in [
            "",
            "not PEM at all",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let e = CaFile::from_pem(bad.as_bytes()).unwrap_err();
            assert!(e.contains("no PEM certificate"), "{bad:?}: {e}");
        }
        let dir = std::env::temp_dir().join(format!("sc-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        let e = CaFile::from_file(&file).unwrap_err();
        assert!(
            e.starts_with(&format!("--ca-file {}: ", file.display())),
            "{e}"
        );
        std::fs::write(&file, "hello\n").unwrap();
        let e = CaFile::from_file(&file).unwrap_err();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("no PEM certificate"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn too_large_in_words() {
        let t = TooLarge {
            length: Some(96_000_000),
            limit: 4 << 20,
        };
        assert_eq!(
            t.to_string(),
            "answer of 96000000 bytes, above the limit of 4194304"
        );
        let t = TooLarge {
            length: None,
            limit: 1024,
        };
        assert_eq!(
            t.to_string(),
            "answer longer than the limit of 1024 bytes, not read further"
        );
    }
}
