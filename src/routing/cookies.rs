//! The cookies the filter sets. Anonymous sessions: a request without any session key gets a
//! fresh random id, is routed by hashing it like any other key, and the response sets it as a
//! cookie so the visitor sticks. The idle hold (`session.hold`): responses served by the default
//! version refresh a cookie that keeps the session on the default version until it has been idle
//! `idle_seconds` (so no flow splits when a ramp step moves its bucket).
//!
//! The `Set-Cookie` attributes are validated and serialized once at configure time
//! ([`Attributes`], one copy for both cookies); per request only `name=id` is prepended, and the
//! hold's whole `Set-Cookie` value is constant.

use crate::check::{check_token, ConfigError};
use serde::Deserialize;

/// Bytes of randomness in a minted id (128 bits).
pub const ID_BYTES: usize = 16;
/// Length of a minted id: lowercase hex of [`ID_BYTES`].
pub const ID_LEN: usize = ID_BYTES * 2;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// `session.assign_cookie` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssignCookie {
    pub name: String,
    /// Absent: a browser-session cookie (no `Max-Age`).
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
    #[serde(default = "yes")]
    pub secure: bool,
    #[serde(default = "yes")]
    pub http_only: bool,
    #[serde(default = "lax")]
    pub same_site: SameSite,
    #[serde(default = "root_path")]
    pub path: String,
    #[serde(default)]
    pub domain: Option<String>,
}

pub(crate) fn yes() -> bool {
    true
}
pub(crate) fn lax() -> SameSite {
    SameSite::Lax
}
pub(crate) fn root_path() -> String {
    "/".to_string()
}

/// The compiled cookie: its name and the attribute suffix of `Set-Cookie`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignCookie {
    pub name: String,
    /// `; Max-Age=…; Path=…; Domain=…; Secure; HttpOnly; SameSite=…`, precomputed.
    pub attributes: String,
}

/// Attribute values may not contain `;` or control characters (RFC 6265 `av-octet`).
fn check_attribute(path: &str, value: &str) -> Result<(), ConfigError> {
    if !value.is_empty()
        && value
            .bytes()
            .all(|c| (0x20..0x7f).contains(&c) && c != b';')
    {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("{value:?} is not a valid cookie attribute value (printable ASCII, no ';')"),
        ))
    }
}

/// The `Set-Cookie` attributes both configured cookies (`session.assign_cookie`,
/// `session.hold`) share, as written. Each raw type holds these fields itself (the JSON reader
/// has no `flatten`) and hands them here, so they are checked and serialized in one place.
pub(crate) struct Attributes<'a> {
    pub max_age: Option<u64>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
    pub path: &'a str,
    pub domain: Option<&'a str>,
}

impl Attributes<'_> {
    /// Checks the attributes (refusals under `p`, the cookie's field path) and serializes them:
    /// `; Max-Age=…; Path=…; Domain=…; Secure; HttpOnly; SameSite=…`.
    pub(crate) fn compile(&self, p: &str) -> Result<String, ConfigError> {
        check_attribute(&format!("{p}.path"), self.path)?;
        if !self.path.starts_with('/') {
            return Err(ConfigError::new(format!("{p}.path"), "must start with '/'"));
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(ConfigError::new(
                format!("{p}.same_site"),
                "SameSite=None requires \"secure\": true (browsers reject it otherwise)",
            ));
        }
        let mut attributes = String::new();
        if let Some(age) = self.max_age {
            attributes.push_str("; Max-Age=");
            attributes.push_str(&age.to_string());
        }
        attributes.push_str("; Path=");
        attributes.push_str(self.path);
        if let Some(domain) = self.domain {
            check_attribute(&format!("{p}.domain"), domain)?;
            attributes.push_str("; Domain=");
            attributes.push_str(domain);
        }
        if self.secure {
            attributes.push_str("; Secure");
        }
        if self.http_only {
            attributes.push_str("; HttpOnly");
        }
        attributes.push_str(match self.same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
        Ok(attributes)
    }
}

impl AssignCookie {
    pub fn compile(raw: RawAssignCookie) -> Result<AssignCookie, ConfigError> {
        let p = "session.assign_cookie";
        check_token(&format!("{p}.name"), &raw.name)?;
        let attributes = Attributes {
            max_age: raw.max_age_seconds,
            secure: raw.secure,
            http_only: raw.http_only,
            same_site: raw.same_site,
            path: &raw.path,
            domain: raw.domain.as_deref(),
        }
        .compile(p)?;
        Ok(AssignCookie {
            name: raw.name,
            attributes,
        })
    }

    /// The `Set-Cookie` value for a minted id.
    pub fn set_cookie(&self, id: &[u8]) -> String {
        let mut s = String::with_capacity(self.name.len() + 1 + id.len() + self.attributes.len());
        s.push_str(&self.name);
        s.push('=');
        s.push_str(&String::from_utf8_lossy(id));
        s.push_str(&self.attributes);
        s
    }
}

/// Longest `session.hold.idle_seconds`: a day.
pub const MAX_HOLD_SECONDS: u64 = 86_400;

/// `session.hold` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHold {
    pub cookie: String,
    pub idle_seconds: u64,
    #[serde(default = "yes")]
    pub secure: bool,
    #[serde(default = "yes")]
    pub http_only: bool,
    #[serde(default = "lax")]
    pub same_site: SameSite,
    #[serde(default = "root_path")]
    pub path: String,
    #[serde(default)]
    pub domain: Option<String>,
    /// Flows finish where they started: the signed flow cookie (`crate::routing::flow`).
    #[serde(default)]
    pub flows: Option<crate::routing::flow::RawFlows>,
}

impl RawHold {
    /// The hold's `Set-Cookie` attributes with `Max-Age=max_age` (the flow cookie shares them),
    /// refused under `session.hold`.
    pub fn attributes(&self, max_age: u64) -> Result<String, ConfigError> {
        Attributes {
            max_age: Some(max_age),
            secure: self.secure,
            http_only: self.http_only,
            same_site: self.same_site,
            path: &self.path,
            domain: self.domain.as_deref(),
        }
        .compile("session.hold")
    }
}

/// The compiled hold: the cookie that keeps a session on the default version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The cookie's name (exact, case-sensitive).
    pub cookie: String,
    pub idle_seconds: u64,
    /// The whole `Set-Cookie` value, `name=1; Max-Age=idle_seconds; …`, precomputed.
    pub set_cookie: String,
}

impl Hold {
    /// Compiles `session.hold`; the cookie name's clashes with the session cookies are
    /// [`crate::plan::Plan::compile`]'s to refuse.
    pub fn compile(raw: &RawHold) -> Result<Hold, ConfigError> {
        let p = "session.hold";
        check_token(&format!("{p}.cookie"), &raw.cookie)?;
        if raw.idle_seconds == 0 || raw.idle_seconds > MAX_HOLD_SECONDS {
            return Err(ConfigError::new(
                format!("{p}.idle_seconds"),
                format!(
                    "{} is out of range: 1 to {MAX_HOLD_SECONDS} (a day)",
                    raw.idle_seconds
                ),
            ));
        }
        let attributes = raw.attributes(raw.idle_seconds)?;
        let mut set_cookie = raw.cookie.clone();
        set_cookie.push_str("=1");
        set_cookie.push_str(&attributes);
        Ok(Hold {
            cookie: raw.cookie.clone(),
            idle_seconds: raw.idle_seconds,
            set_cookie,
        })
    }
}

/// How to give the upstream the minted cookie, so the application sees the same session id.
#[derive(Debug, PartialEq, Eq)]
pub enum UpstreamCookie {
    /// Replace the `Cookie` header(s) with this single value.
    Set(Vec<u8>),
    /// Add one more `Cookie` header with this value.
    Add(Vec<u8>),
}

impl AssignCookie {
    /// `existing` are the request's `Cookie` header values. No header: set ours. One header:
    /// append ours to it (one `Cookie` header, as RFC 6265 wants). Several (HTTP/1.1 clients):
    /// add ours as one more, leaving theirs untouched.
    pub fn upstream_cookie<V: AsRef<[u8]>>(&self, existing: &[V], id: &[u8]) -> UpstreamCookie {
        let pair = [self.name.as_bytes(), b"=", id].concat();
        match existing {
            [] => UpstreamCookie::Set(pair),
            [one] => {
                let one = one.as_ref();
                if one.iter().all(|c| matches!(c, b' ' | b'\t' | b';')) {
                    UpstreamCookie::Set(pair)
                } else {
                    UpstreamCookie::Set([one, b"; ", &pair].concat())
                }
            }
            _ => UpstreamCookie::Add(pair),
        }
    }
}

/// Lowercase hex of 16 random bytes: the minted session id.
pub fn id_hex(random: &[u8; ID_BYTES]) -> [u8; ID_LEN] {
    let mut out = [0u8; ID_LEN];
    crate::formats::hex::encode(random, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawAssignCookie {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn serializes_exactly_the_configured_attributes() {
        let cases = [
            (
                r#"{"name":"sc_session","max_age_seconds":2592000,"secure":true,"http_only":true,"same_site":"Lax","path":"/","domain":null}"#,
                "sc_session=ID; Max-Age=2592000; Path=/; Secure; HttpOnly; SameSite=Lax",
            ),
            (
                r#"{"name":"sid","max_age_seconds":60,"secure":false,"http_only":false,"same_site":"Strict","path":"/shop","domain":"example.com"}"#,
                "sid=ID; Max-Age=60; Path=/shop; Domain=example.com; SameSite=Strict",
            ),
            (
                r#"{"name":"sid"}"#,
                "sid=ID; Path=/; Secure; HttpOnly; SameSite=Lax",
            ),
            (
                r#"{"name":"sid","same_site":"None"}"#,
                "sid=ID; Path=/; Secure; HttpOnly; SameSite=None",
            ),
        ];
        for (json, want) in cases {
            let c = AssignCookie::compile(raw(json)).unwrap();
            assert_eq!(c.set_cookie(b"ID"), want, "{json}");
        }
    }

    #[test]
    fn refusals() {
        let cases = [
            (r#"{"name":""}"#, "session.assign_cookie.name"),
            (r#"{"name":"a b"}"#, "session.assign_cookie.name"),
            (
                r#"{"name":"sid","path":"shop"}"#,
                "session.assign_cookie.path",
            ),
            (
                r#"{"name":"sid","path":"/a;b"}"#,
                "session.assign_cookie.path",
            ),
            (
                r#"{"name":"sid","domain":"x;Secure"}"#,
                "session.assign_cookie.domain",
            ),
            (
                r#"{"name":"sid","domain":""}"#,
                "session.assign_cookie.domain",
            ),
            (
                r#"{"name":"sid","same_site":"None","secure":false}"#,
                "session.assign_cookie.same_site",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(
                AssignCookie::compile(raw(json)).unwrap_err().path,
                path,
                "{json}"
            );
        }
        assert!(
            serde_json::from_str::<RawAssignCookie>(r#"{"name":"s","same_site":"lax"}"#).is_err()
        );
    }

    #[test]
    fn hold_sets_its_cookie_with_max_age_and_the_shared_attributes() {
        let hold = |json: &str| Hold::compile(&serde_json::from_str(json).unwrap());
        let h = hold(r#"{"cookie":"sc_hold","idle_seconds":900}"#).unwrap();
        assert_eq!(
            h.set_cookie,
            "sc_hold=1; Max-Age=900; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        let h = hold(
            r#"{"cookie":"h","idle_seconds":86400,"secure":false,"http_only":false,
                "same_site":"Strict","path":"/pay","domain":"example.com"}"#,
        )
        .unwrap();
        assert_eq!(
            h.set_cookie,
            "h=1; Max-Age=86400; Path=/pay; Domain=example.com; SameSite=Strict"
        );
        let cases = [
            (
                r#"{"cookie":"h","idle_seconds":0}"#,
                "session.hold.idle_seconds",
            ),
            (
                r#"{"cookie":"h","idle_seconds":86401}"#,
                "session.hold.idle_seconds",
            ),
            (r#"{"cookie":"","idle_seconds":60}"#, "session.hold.cookie"),
            (
                r#"{"cookie":"a;b","idle_seconds":60}"#,
                "session.hold.cookie",
            ),
            (
                r#"{"cookie":"h","idle_seconds":60,"path":"x"}"#,
                "session.hold.path",
            ),
            (
                r#"{"cookie":"h","idle_seconds":60,"domain":""}"#,
                "session.hold.domain",
            ),
            (
                r#"{"cookie":"h","idle_seconds":60,"same_site":"None","secure":false}"#,
                "session.hold.same_site",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(hold(json).unwrap_err().path, path, "{json}");
        }
    }

    #[test]
    fn upstream_cookie_joins_or_adds() {
        let c = AssignCookie::compile(raw(r#"{"name":"sc"}"#)).unwrap();
        let none: [&[u8]; 0] = [];
        assert_eq!(
            c.upstream_cookie(&none, b"ID"),
            UpstreamCookie::Set(b"sc=ID".to_vec())
        );
        assert_eq!(
            c.upstream_cookie(&[b"a=1; b=2"], b"ID"),
            UpstreamCookie::Set(b"a=1; b=2; sc=ID".to_vec())
        );
        assert_eq!(
            c.upstream_cookie(&[b" ; "], b"ID"),
            UpstreamCookie::Set(b"sc=ID".to_vec())
        );
        assert_eq!(
            c.upstream_cookie(&[b"a=1", b"b=2"], b"ID"),
            UpstreamCookie::Add(b"sc=ID".to_vec())
        );
    }

    #[test]
    fn id_is_lowercase_hex() {
        let id = id_hex(&[
            0x00, 0x01, 0x7f, 0x80, 0xff, 0xab, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ]);
        assert_eq!(&id, b"00017f80ffab00000000000000000010");
    }
}
