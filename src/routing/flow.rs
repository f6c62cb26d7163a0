//! Flows finish where they started (`session.hold.flows`): a signed flow cookie.
//!
//! A write (`write_methods`) with a session key, served by a version other than the default, sets
//! `sc_flow=<version>.<expiry>.<mac>`: the version that served it, an expiry (Unix seconds, now +
//! `drain_seconds`) and an HMAC-SHA256 (the `hmac` and `sha2` crates; compared in constant time by
//! `Mac::verify_slice`) over the service, the SHA-256 of the session key, the version and the
//! expiry, under the key read from the VM environment variable `key_env`. A request that carries a
//! valid one (MAC good for this service and this session key, not expired, expiry no further than
//! `drain_seconds` ahead, a version still in the config) goes to that version with reason `flow`,
//! whatever the weights, the bucket routes, the hold or a trip (`guard.flows: finish`). Anything
//! else gains nothing: counted `invalid` (not ours: forged, altered, another session's or
//! another service's, signed under another key) or `expired` (ours, but over: past its expiry,
//! beyond the present bound, or naming a version no longer listed), and decided as if absent.
//!
//! Pure: the filter supplies the clock and the session key's digest.

use crate::check::{check_token, ConfigError};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Bounds of `drain_seconds`: a second to an hour.
pub const MAX_DRAIN_SECONDS: u64 = 3600;
/// Shortest key accepted from `key_env`, in bytes (HMAC-SHA256's output size).
pub const MIN_KEY_BYTES: usize = 32;
/// How far beyond `drain_seconds` an expiry may lie and still be accepted: the clocks of the
/// Envoys that sign and check may differ by this much.
pub const CLOCK_SKEW_SECONDS: u64 = 30;
/// Hex digits of the MAC in the cookie.
const MAC_HEX: usize = 64;
/// Separates the message's fields; the domain tag keeps these MACs apart from any other use of
/// the key.
const DOMAIN: &[u8] = b"sticky-canary flow 1\0";

/// `session.hold.flows` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlows {
    pub cookie: String,
    pub drain_seconds: u64,
    /// The VM environment variable holding the MAC key (at least 32 bytes).
    pub key_env: String,
}

/// What a trip does to flows in progress on the tripped version (`guard.flows`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnTrip {
    /// Flows with a valid cookie finish on the tripped version until their cookie expires.
    #[default]
    Finish,
    /// Zero-kill: every request of a tripped version goes to the baseline, flows included.
    Move,
}

/// What a request's flow cookie turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    /// Not one this service signed for this session under this key.
    Invalid,
    /// Signed by us, but over: past its expiry, beyond `drain_seconds` ahead, or its version is
    /// no longer listed.
    Expired,
}

impl Outcome {
    /// Every outcome, in the order of the `canary_flow_cookies_total` series.
    pub const ALL: [Outcome; 3] = [Outcome::Valid, Outcome::Invalid, Outcome::Expired];

    pub fn index(self) -> usize {
        match self {
            Outcome::Valid => 0,
            Outcome::Invalid => 1,
            Outcome::Expired => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Valid => "valid",
            Outcome::Invalid => "invalid",
            Outcome::Expired => "expired",
        }
    }
}

/// The MAC key, keyed once at configure time. Never printed.
#[derive(Clone)]
struct Key {
    mac: Hmac<Sha256>,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.bytes.len())
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for Key {}

/// The compiled `session.hold.flows`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flows {
    /// The cookie's name (exact, case-sensitive).
    pub cookie: String,
    pub drain_seconds: u64,
    /// `; Max-Age=drain_seconds; Path=…`: the hold's attributes with this cookie's lifetime.
    attributes: String,
    /// The whole `Set-Cookie` value that ends a flow: `name=; Max-Age=0; Path=…`.
    pub clear_cookie: String,
    /// The service, bound into every MAC.
    service: String,
    /// `None` when compiled offline (tools): such a plan neither signs nor accepts a cookie.
    key: Option<Key>,
}

/// The SHA-256 of a session key: what a flow cookie binds (and, its first 8 bytes, how the
/// filter tells flows apart).
pub fn key_digest(session_key: &[u8]) -> [u8; 32] {
    Sha256::digest(session_key).into()
}

/// Where `compile` finds the key.
pub enum Secrets<'a> {
    /// The VM's environment variables: `key_env` must hold a key.
    Env(&'a dyn Fn(&str) -> Option<String>),
    /// Offline tools (the CLI, tests): no key is read; the flows neither sign nor accept.
    Offline,
}

impl Flows {
    /// Compiles `session.hold.flows`; `attributes(max_age)` serializes the hold's cookie
    /// attributes with that `Max-Age`. The name's clashes with the other cookies are
    /// [`crate::plan::Plan::compile`]'s to refuse.
    pub fn compile(
        raw: RawFlows,
        attributes: &dyn Fn(u64) -> Result<String, ConfigError>,
        service: &str,
        secrets: &Secrets<'_>,
    ) -> Result<Flows, ConfigError> {
        let p = "session.hold.flows";
        check_token(&format!("{p}.cookie"), &raw.cookie)?;
        if raw.drain_seconds == 0 || raw.drain_seconds > MAX_DRAIN_SECONDS {
            return Err(ConfigError::new(
                format!("{p}.drain_seconds"),
                format!(
                    "{} is out of range: 1 to {MAX_DRAIN_SECONDS} (an hour)",
                    raw.drain_seconds
                ),
            ));
        }
        let mut clear_cookie = raw.cookie.clone();
        clear_cookie.push('=');
        clear_cookie.push_str(&attributes(0)?);
        let key = match secrets {
            Secrets::Offline => None,
            Secrets::Env(env) => Some(read_key(&raw.key_env, *env)?),
        };
        Ok(Flows {
            attributes: attributes(raw.drain_seconds)?,
            clear_cookie,
            cookie: raw.cookie,
            drain_seconds: raw.drain_seconds,
            service: service.to_string(),
            key,
        })
    }

    /// True when this plan can sign and check cookies (not compiled offline).
    pub fn keyed(&self) -> bool {
        self.key.is_some()
    }

    /// The MAC of one cookie's fields.
    fn mac(&self, digest: &[u8; 32], version: &[u8], expiry: &[u8]) -> Option<Hmac<Sha256>> {
        let mut mac = self.key.as_ref()?.mac.clone();
        for part in [
            DOMAIN,
            self.service.as_bytes(),
            b"\0",
            digest,
            version,
            b"\0",
            expiry,
        ] {
            mac.update(part);
        }
        Some(mac)
    }

    /// The `Set-Cookie` value of a flow of `version` for the session whose key has `digest`,
    /// expiring `drain_seconds` after `now_s`; `None` without a key.
    pub fn set_cookie(&self, digest: &[u8; 32], version: &str, now_s: u64) -> Option<String> {
        let expiry = now_s.saturating_add(self.drain_seconds).to_string();
        let tag = self
            .mac(digest, version.as_bytes(), expiry.as_bytes())?
            .finalize()
            .into_bytes();
        let mut s = String::with_capacity(
            self.cookie.len() + version.len() + expiry.len() + MAC_HEX + 3 + self.attributes.len(),
        );
        for part in [&self.cookie, "=", version, ".", &expiry, "."] {
            s.push_str(part);
        }
        let mut hex = [0u8; MAC_HEX];
        crate::formats::hex::encode(&tag, &mut hex);
        s.push_str(std::str::from_utf8(&hex).unwrap_or_default());
        s.push_str(&self.attributes);
        Some(s)
    }

    /// Checks a cookie value for the session whose key has `digest` at `now_s`; `version_named`
    /// finds a version by name. The version index and the expiry when valid.
    pub fn check(
        &self,
        value: &[u8],
        digest: &[u8; 32],
        now_s: u64,
        version_named: impl Fn(&[u8]) -> Option<usize>,
    ) -> (Outcome, Option<(usize, u64)>) {
        let Some((version, expiry, tag)) = split(value) else {
            return (Outcome::Invalid, None);
        };
        let good = self
            .mac(digest, version, expiry)
            .is_some_and(|mac| mac.verify_slice(&tag).is_ok());
        if !good {
            return (Outcome::Invalid, None);
        }
        // Digits only (checked by `split`), so this parses unless it overflows.
        let expiry = std::str::from_utf8(expiry)
            .ok()
            .and_then(|e| e.parse::<u64>().ok());
        let bound = now_s.saturating_add(self.drain_seconds + CLOCK_SKEW_SECONDS);
        match (expiry, version_named(version)) {
            (Some(e), Some(v)) if e > now_s && e <= bound => (Outcome::Valid, Some((v, e))),
            _ => (Outcome::Expired, None),
        }
    }
}

/// Most flows one VM keeps track of; beyond, new flows are not counted (the gauge saturates).
pub const MAX_TRACKED: usize = 65_536;

/// The flows one VM has seen draining: a flow cookie it set (or refreshed) that has not
/// expired, by session (the first 8 bytes of the key's digest), with its version and expiry.
/// What `canary_flows_draining` and the trip's log line count.
#[derive(Debug, Default)]
pub struct Draining {
    /// (fingerprint, version, expiry), sorted by fingerprint (a sorted vector: smaller in the
    /// module than a map, and as fast at these sizes).
    flows: Vec<(u64, usize, u64)>,
}

/// The part of a key digest that tells flows apart.
pub fn fingerprint(digest: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(b)
}

impl Draining {
    /// A flow cookie set for `version`, expiring at `expiry`.
    pub fn started(&mut self, digest: &[u8; 32], version: usize, expiry: u64) {
        let fp = fingerprint(digest);
        match self.flows.binary_search_by_key(&fp, |f| f.0) {
            Ok(i) => {
                if let Some(f) = self.flows.get_mut(i) {
                    *f = (fp, version, expiry);
                }
            }
            Err(i) if self.flows.len() < MAX_TRACKED => self.flows.insert(i, (fp, version, expiry)),
            Err(_) => {}
        }
    }

    /// A flow that ended: its cookie was cleared.
    pub fn ended(&mut self, digest: &[u8; 32]) {
        if let Ok(i) = self
            .flows
            .binary_search_by_key(&fingerprint(digest), |f| f.0)
        {
            self.flows.remove(i);
        }
    }

    /// The same flows with their versions renumbered (a new plan); a version `to` finds no
    /// more is dropped.
    pub fn remap(mut self, to: impl Fn(usize) -> Option<usize>) -> Draining {
        self.flows.retain_mut(|f| match to(f.1) {
            Some(v) => {
                f.1 = v;
                true
            }
            None => false,
        });
        self
    }

    /// Forgets the flows expired at `now_s` and counts the others per version (`versions`
    /// entries).
    pub fn count(&mut self, now_s: u64, versions: usize) -> Vec<u64> {
        self.flows.retain(|f| f.2 > now_s);
        let mut out = vec![0; versions];
        for (_, version, _) in &self.flows {
            if let Some(n) = out.get_mut(*version) {
                *n += 1;
            }
        }
        out
    }
}

/// `version.expiry.mac` → (version, expiry digits, the MAC's 32 bytes); `None` unless the shape
/// is exact (a non-empty version, 1–20 digits, 64 lowercase hex digits).
pub fn split(value: &[u8]) -> Option<(&[u8], &[u8], [u8; 32])> {
    let mut parts = value.rsplitn(3, |&c| c == b'.');
    let (hex, expiry, version) = (parts.next()?, parts.next()?, parts.next()?);
    if version.is_empty()
        || expiry.is_empty()
        || expiry.len() > 20
        || !expiry.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    Some((version, expiry, crate::formats::hex::decode(hex)?))
}

/// The key from the environment variable `var`: present and at least [`MIN_KEY_BYTES`] long.
/// The refusal names the variable, never its value.
fn read_key(var: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Key, ConfigError> {
    let p = "session.hold.flows.key_env";
    if var.is_empty() {
        return Err(ConfigError::new(p, "must name an environment variable"));
    }
    let Some(value) = env(var) else {
        return Err(ConfigError::new(
            p,
            format!(
                "environment variable {var} is not set in the filter's environment (wasm: Envoy \
                 vm_config.environment_variables, Istio vmConfig.env; native: the Envoy \
                 process's); the flow cookie's MAC key is required"
            ),
        ));
    };
    let bytes = value.into_bytes();
    if bytes.len() < MIN_KEY_BYTES {
        return Err(ConfigError::new(
            p,
            format!(
                "the key in {var} is {} bytes long; at least {MIN_KEY_BYTES} are required \
                 (e.g. `openssl rand -base64 48`)",
                bytes.len()
            ),
        ));
    }
    let mac = Hmac::<Sha256>::new_from_slice(&bytes)
        .map_err(|_| ConfigError::new(p, "the key cannot key HMAC-SHA256"))?;
    Ok(Key { mac, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef-flows";

    /// The hold's default attributes.
    fn attributes(max_age: u64) -> Result<String, ConfigError> {
        Ok(format!(
            "; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Lax"
        ))
    }

    fn raw(json: &str) -> RawFlows {
        serde_json::from_str(json).unwrap()
    }

    fn flows_with(key: Option<&'static str>) -> Result<Flows, ConfigError> {
        let raw = raw(r#"{"cookie":"sc_flow","drain_seconds":120,"key_env":"K"}"#);
        let env = move |n: &str| (n == "K").then(|| key.map(String::from)).flatten();
        Flows::compile(raw, &attributes, "checkout", &Secrets::Env(&env))
    }

    fn flows() -> Flows {
        flows_with(Some(KEY)).unwrap()
    }

    /// A check's outcome and version, without the expiry.
    fn ov(r: (Outcome, Option<(usize, u64)>)) -> (Outcome, Option<usize>) {
        (r.0, r.1.map(|(v, _)| v))
    }

    fn versions(name: &[u8]) -> Option<usize> {
        [&b"canary"[..], b"stable"].iter().position(|v| *v == name)
    }

    /// The cookie value of a `Set-Cookie` line.
    fn value(set_cookie: &str) -> String {
        let first = set_cookie.split(';').next().unwrap();
        first.split_once('=').unwrap().1.to_string()
    }

    #[test]
    fn sets_the_cookie_with_the_holds_attributes() {
        let f = flows();
        let c = f
            .set_cookie(&key_digest(b"alice"), "canary", 1_000)
            .unwrap();
        assert!(c.starts_with("sc_flow=canary.1120."), "{c}");
        assert!(
            c.ends_with("; Max-Age=120; Path=/; Secure; HttpOnly; SameSite=Lax"),
            "{c}"
        );
        assert_eq!(value(&c).len(), "canary.1120.".len() + 64);
        assert_eq!(
            f.clear_cookie,
            "sc_flow=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
    }

    /// RFC 4231 test case 2 (a short key is fine for the vector; the config needs 32 bytes),
    /// through the same crates the cookie uses.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let tag = mac.finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn checks_each_way_a_cookie_can_be_wrong() {
        let f = flows();
        let alice = key_digest(b"alice");
        let now = 1_000;
        let good = value(&f.set_cookie(&alice, "canary", now).unwrap());
        let check = |v: &str, d: &[u8; 32], t: u64| ov(f.check(v.as_bytes(), d, t, versions));
        assert_eq!(check(&good, &alice, now), (Outcome::Valid, Some(0)));
        assert_eq!(check(&good, &alice, now + 119), (Outcome::Valid, Some(0)));
        // Expired at its expiry.
        assert_eq!(check(&good, &alice, now + 120), (Outcome::Expired, None));
        // Another session's.
        assert_eq!(
            check(&good, &key_digest(b"bob"), now),
            (Outcome::Invalid, None)
        );
        // Another version named with the same MAC.
        let other = good.replacen("canary", "stable", 1);
        assert_eq!(check(&other, &alice, now), (Outcome::Invalid, None));
        // A later expiry with the same MAC.
        let later = good.replacen("1120", "9120", 1);
        assert_eq!(check(&later, &alice, now), (Outcome::Invalid, None));
        // Another service's.
        let mut billing = f.clone();
        billing.service = "billing".into();
        assert_eq!(
            ov(billing.check(good.as_bytes(), &alice, now, versions)),
            (Outcome::Invalid, None)
        );
        // Another key's.
        let other_key = flows_with(Some("another key of thirty-two bytes or more")).unwrap();
        assert_eq!(
            ov(other_key.check(good.as_bytes(), &alice, now, versions)),
            (Outcome::Invalid, None)
        );
        // A version no longer listed: ours, but over.
        let retired = value(&f.set_cookie(&alice, "v1", now).unwrap());
        assert_eq!(check(&retired, &alice, now), (Outcome::Expired, None));
        // Signed under a longer drain than the plan's: beyond the bound (and the clock skew).
        let mut long = f.clone();
        long.drain_seconds = 3600;
        let long_cookie = value(&long.set_cookie(&alice, "canary", now).unwrap());
        assert_eq!(check(&long_cookie, &alice, now), (Outcome::Expired, None));
        assert_eq!(
            check(&long_cookie, &alice, now + 3600 - 150),
            (Outcome::Valid, Some(0))
        );
        // Malformed shapes.
        for bad in [
            "",
            "canary",
            "canary.1120",
            ".1120.00",
            &good[..good.len() - 1],
            &good.to_uppercase(),
            &format!("{good}0"),
            &good.replacen("1120", "11a0", 1),
            &good.replacen("1120", "", 1),
        ] {
            assert_eq!(check(bad, &alice, now), (Outcome::Invalid, None), "{bad}");
        }
    }

    #[test]
    fn refusals_name_the_field_and_never_the_key() {
        let err = flows_with(None).unwrap_err();
        assert_eq!(err.path, "session.hold.flows.key_env");
        let short = "x".repeat(31);
        let err = flows_with(Some(Box::leak(short.into_boxed_str()))).unwrap_err();
        assert_eq!(err.path, "session.hold.flows.key_env");
        assert!(err.to_string().contains("31 bytes"), "{err}");
        assert!(!err.to_string().contains("xxxx"), "{err}");
        assert!(!format!("{:?}", flows()).contains("0123456789abcdef"));
        let compile =
            |flows: &str| Flows::compile(raw(flows), &attributes, "checkout", &Secrets::Offline);
        for (json, path) in [
            (
                r#"{"cookie":"sc_flow","drain_seconds":0,"key_env":"K"}"#,
                "session.hold.flows.drain_seconds",
            ),
            (
                r#"{"cookie":"sc_flow","drain_seconds":3601,"key_env":"K"}"#,
                "session.hold.flows.drain_seconds",
            ),
            (
                r#"{"cookie":"a b","drain_seconds":60,"key_env":"K"}"#,
                "session.hold.flows.cookie",
            ),
        ] {
            assert_eq!(compile(json).unwrap_err().path, path, "{json}");
        }
        // Offline: compiles without a key, and neither signs nor accepts.
        let offline = compile(r#"{"cookie":"sc_flow","drain_seconds":60,"key_env":"K"}"#).unwrap();
        assert!(!offline.keyed());
        assert_eq!(offline.set_cookie(&key_digest(b"a"), "canary", 1), None);
        let good = value(&flows().set_cookie(&key_digest(b"a"), "canary", 1).unwrap());
        assert_eq!(
            ov(offline.check(good.as_bytes(), &key_digest(b"a"), 1, versions)),
            (Outcome::Invalid, None)
        );
    }

    #[test]
    fn draining_counts_each_session_once_until_it_expires() {
        let mut d = Draining::default();
        let (a, b) = (key_digest(b"a"), key_digest(b"b"));
        d.started(&a, 0, 100);
        d.started(&a, 0, 150);
        d.started(&b, 1, 120);
        assert_eq!(d.count(99, 2), [1, 1]);
        assert_eq!(d.count(120, 2), [1, 0]);
        d.ended(&a);
        assert_eq!(d.count(120, 2), [0, 0]);
        // A full tracker takes no new flow but still refreshes the ones it has.
        d.flows = (0..MAX_TRACKED as u64).map(|i| (i, 0, 500)).collect();
        d.started(&a, 0, 500);
        assert_eq!(d.count(0, 1), [MAX_TRACKED as u64]);
        d.started(&[0; 32], 0, 900);
        assert_eq!(d.count(500, 1), [1]);
    }

    proptest::proptest! {
        /// A cookie checks as valid for its own session, and any one byte changed makes it
        /// invalid or malformed (never valid for another version).
        #[test]
        fn any_flipped_byte_gains_nothing(
            key in "[a-zA-Z0-9]{1,40}",
            at in 0usize..200,
            flip in 1u8..=255,
            now in 0u64..4_000_000_000,
        ) {
            let f = flows();
            let d = key_digest(key.as_bytes());
            let good = value(&f.set_cookie(&d, "canary", now).unwrap()).into_bytes();
            proptest::prop_assert_eq!(ov(f.check(&good, &d, now, versions)), (Outcome::Valid, Some(0)));
            let mut bad = good.clone();
            let i = at % bad.len();
            bad[i] ^= flip;
            proptest::prop_assert_eq!(ov(f.check(&bad, &d, now, versions)), (Outcome::Invalid, None));
        }

        /// The parser never panics and only accepts the exact shape.
        #[test]
        fn split_takes_only_the_exact_shape(value in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            if let Some((version, expiry, _)) = split(&value) {
                proptest::prop_assert!(!version.is_empty());
                proptest::prop_assert!(expiry.iter().all(u8::is_ascii_digit));
            }
        }
    }
}
