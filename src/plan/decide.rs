//! The routing decision a plan makes for a request ([`Plan::decide`]). Precedence, first match
//! wins: override (valid token) → pin → flow (a valid flow cookie) → hold (the idle-hold cookie:
//! default version) → session key hash → assigned (a freshly minted anonymous id, hashed the
//! same way) → default version. One hash of salt ‖ key gives both the version and the cohort
//! bucket ([`crate::routing::hash`]).

use super::{Plan, Source};
use crate::formats::cookie;
use crate::routing::cookies::{id_hex, ID_LEN};
use crate::routing::decision::{Decision, FlowSeen, Reason, RequestView};
use crate::routing::hash::{murmur3_32_concat, position, BUCKETS};

impl Plan {
    /// Steps 1–4 for one session key.
    pub fn bucket(&self, session_key: &[u8]) -> usize {
        let h = murmur3_32_concat(&self.salt, session_key, 0);
        self.pick(position(h, self.total_weight))
    }

    /// The version a cluster serves: a cluster named like a version (plain Envoy, one cluster per
    /// version), or an Istio subset cluster `outbound|<port>|<subset>|<host>` whose subset is a
    /// version. `None` for anything else (e.g. no cluster on a local reply).
    pub fn version_of_cluster(&self, cluster: &[u8]) -> Option<usize> {
        let find = |name: &[u8]| self.version_named(name);
        find(cluster).or_else(|| {
            let mut parts = cluster.split(|&c| c == b'|');
            match (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) {
                (Some(b"outbound"), Some(_port), Some(subset), Some(_host), None) => find(subset),
                _ => None,
            }
        })
    }

    /// Decides the version for a request.
    pub fn decide<R: RequestView>(&self, request: &mut R) -> Decision {
        if let Some(version) = self.override_version(request) {
            return Decision::new(version, Reason::Override);
        }
        if let Some(version) = self.pinned_version(request) {
            return Decision::new(version, Reason::Pin);
        }
        let mut cookies = Cookies {
            first: None,
            all: None,
        };
        // The flow cookie, copied when present (keyed plans only) to be checked against the
        // session key. Looked for like the hold: no host call of its own.
        let flows = self.flows.as_ref().filter(|f| f.keyed());
        let flow_cookie = flows.and_then(|f| {
            cookies
                .find(request, &f.cookie, false)
                .filter(|v| !v.is_empty())
                .map(<[u8]>::to_vec)
        });
        let want_key = flows.is_some() && (flow_cookie.is_some() || request.write());
        let (hash, key) = match self.session_hash(request, &mut cookies, want_key) {
            Some((h, k)) => (Some(h), k),
            None => (None, None),
        };
        let mut flow = None;
        if let (Some(f), Some(value)) = (flows, &flow_cookie) {
            // A cookie without a session key binds nothing: invalid. No clock: not checked.
            let seen = match (&key, request.now_s()) {
                (Some(digest), Some(now)) => {
                    Some(f.check(value, digest, now, |n| self.version_named(n)))
                }
                (None, _) => Some((crate::routing::flow::Outcome::Invalid, None)),
                (Some(_), None) => None,
            };
            flow = seen.map(|(outcome, valid)| FlowSeen {
                outcome,
                version: valid.map(|(v, _)| v),
                expiry: valid.map_or(0, |(_, e)| e),
                draining: false,
            });
        }
        let by_key = self.decide_by_key(request, &mut cookies, hash);
        let decision = match flow.as_mut().filter(|f| f.version.is_some()) {
            Some(f) => {
                let version = f.version.unwrap_or(by_key.version);
                // Draining: without the cookie the session would be elsewhere.
                f.draining = by_key.version != version;
                Decision {
                    session: true,
                    ..Decision::new(version, Reason::Flow)
                }
            }
            None => by_key,
        };
        Decision {
            flow,
            key,
            ..decision
        }
    }

    /// Hold → hash → assigned → default, for a request whose session key hashed to `hash`.
    fn decide_by_key<R: RequestView>(
        &self,
        request: &mut R,
        cookies: &mut Cookies<R::Value>,
        hash: Option<u32>,
    ) -> Decision {
        if let Some(hold) = &self.hold {
            // Looked for without reading the other `Cookie` headers unless the session lookup
            // already did (browsers send one; HTTP/2 joins them): no host call for the hold alone.
            if cookies
                .find(request, &hold.cookie, false)
                .is_some_and(|v| !v.is_empty())
            {
                // A held visitor without a key still gets one (the application sees a session
                // id as usual); the hold, not its hash, decides.
                let minted = hash.is_none().then(|| self.mint(request)).flatten();
                return Decision {
                    session: hash.is_some() || minted.is_some(),
                    minted,
                    ..Decision::new(self.default_version, Reason::Hold)
                };
            }
        }
        if let Some(h) = hash {
            return self.hashed(h, Reason::Hash, None);
        }
        if let Some(id) = self.mint(request) {
            let h = murmur3_32_concat(&self.salt, &id, 0);
            return self.hashed(h, Reason::Assigned, Some(id));
        }
        Decision::new(self.default_version, Reason::Default)
    }

    /// A new anonymous session id, when `assign_cookie` is on and the host has randomness.
    fn mint<R: RequestView>(&self, request: &mut R) -> Option<[u8; ID_LEN]> {
        self.assign.as_ref()?;
        request.random_id().map(|random| id_hex(&random))
    }

    /// Steps 3–4 for the hash `h` of salt ‖ key, and the key's cohort bucket from the same hash
    /// (equal to [`crate::routing::hash::bucket`]).
    fn hashed(&self, h: u32, reason: Reason, minted: Option<[u8; ID_LEN]>) -> Decision {
        Decision {
            version: self.pick(position(h, self.total_weight)),
            reason,
            minted,
            // Below 10 000 by construction.
            bucket: Some(position(h, BUCKETS) as u16),
            session: true,
            flow: None,
            key: None,
        }
    }

    /// The version a stage-zero override asks for, if its token is accepted and the version is
    /// listed. Anything else (no token, wrong token, unknown version) is ignored silently.
    fn override_version<R: RequestView>(&self, request: &mut R) -> Option<usize> {
        let o = self.override_.as_ref().filter(|o| o.enabled())?;
        let wanted = request.get(&o.header)?;
        let version = self.version_named(wanted.as_ref())?;
        let token = request.get(&o.token_header)?;
        o.accepts(token.as_ref()).then_some(version)
    }

    /// The version of the first pin whose header value is allowlisted.
    fn pinned_version<R: RequestView>(&self, request: &mut R) -> Option<usize> {
        self.pins.iter().find_map(|pin| {
            let value = request.get(&pin.header)?;
            pin.values.contains(value.as_ref()).then_some(pin.version)
        })
    }

    /// Sources are tried in config order; the first with a non-empty value gives the session
    /// key, and this returns its hash (salt ‖ key, step 2) and, when `digest`, its SHA-256.
    fn session_hash<R: RequestView>(
        &self,
        lookup: &mut R,
        cookies: &mut Cookies<R::Value>,
        digest: bool,
    ) -> Option<(u32, Option<[u8; 32]>)> {
        let hash = |k: &[u8]| {
            (
                murmur3_32_concat(&self.salt, k, 0),
                digest.then(|| crate::routing::flow::key_digest(k)),
            )
        };
        self.sources.iter().find_map(|source| match source {
            Source::Cookie(name) => cookies
                .find(lookup, name, true)
                .filter(|k| !k.is_empty())
                .map(hash),
            Source::Header(name) => lookup
                .get(name)
                .and_then(|v| trimmed_non_empty(v.as_ref()).map(hash)),
        })
    }
}

/// A request's `Cookie` headers, read on demand and at most once each way: the first `Cookie`
/// header is read once, whatever the number of cookies looked up. Only when a `Cookie` header
/// exists but lacks a wanted cookie are the other `Cookie` headers read (HTTP/1.1 clients may
/// send several; Envoy joins them only for HTTP/2).
struct Cookies<V> {
    first: Option<Option<V>>,
    all: Option<Vec<V>>,
}

impl<V: AsRef<[u8]>> Cookies<V> {
    /// The value of the first cookie called `name`. The other `Cookie` headers are read when
    /// the first lacks it and `read_all` is set; otherwise only if they were already read.
    fn find<R: RequestView<Value = V>>(
        &mut self,
        lookup: &mut R,
        name: &str,
        read_all: bool,
    ) -> Option<&[u8]> {
        let first = self.first.get_or_insert_with(|| lookup.get("cookie"));
        let header = first.as_ref()?;
        match cookie::find(header.as_ref(), name.as_bytes()) {
            Some(v) => Some(v),
            None => {
                if read_all && self.all.is_none() {
                    self.all = Some(lookup.get_all("cookie"));
                }
                let all = self.all.as_deref().unwrap_or_default();
                cookie::find_in(all.iter().skip(1).map(AsRef::as_ref), name.as_bytes())
            }
        }
    }
}

fn trimmed_non_empty(v: &[u8]) -> Option<&[u8]> {
    let start = v.iter().position(|c| !matches!(c, b' ' | b'\t'))?;
    let end = v.iter().rposition(|c| !matches!(c, b' ' | b'\t'))?;
    v.get(start..=end)
}
