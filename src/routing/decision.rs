//! The routing decision: session key → version, deterministic and stateless.
//!
//! The algorithm (published in the manual, identical to OpenFeature flagd's `fractional` bucketing with
//! flag key = salt and targeting key = session key):
//!
//! 1. input = the bytes of `salt` immediately followed by the bytes of the session key;
//! 2. h = MurmurHash3 x86_32(input, seed 0);
//! 3. position = (h as u64 × total_weight) >> 32;
//! 4. the chosen version is the first, in config order, whose cumulative weight is > position.
//!
//! Steps 1–3 are [`crate::routing::hash`]'s; step 4 and the precedence between override, pin,
//! flow, hold, session key, assigned id and default are [`crate::plan::Plan::decide`]'s. Here:
//! what a decision is ([`Decision`], [`Reason`]) and what it may read of a request
//! ([`RequestView`]).

use crate::routing::cookies::{ID_BYTES, ID_LEN};

/// Why a version was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A stage-zero override with a valid token.
    Override,
    /// A pin matched.
    Pin,
    /// The request carries the idle-hold cookie: the default version.
    Hold,
    /// Bucketed from the session key.
    Hash,
    /// Bucketed from a freshly minted anonymous session id.
    Assigned,
    /// No session key: the default version.
    Default,
    /// The decision picked a version the guard has tripped: the guard's baseline instead.
    Guard,
    /// The request carries a valid flow cookie (`session.hold.flows`): the version its flow
    /// started on.
    Flow,
}

impl Reason {
    /// Every reason: in precedence order, then `Guard` (it replaces a decision after the fact),
    /// then `Flow` (it comes between pin and hold, but only plans with `session.hold.flows` ever
    /// decide it, so it is last: the other plans' tables stop before it).
    pub const ALL: [Reason; 8] = [
        Reason::Override,
        Reason::Pin,
        Reason::Hold,
        Reason::Hash,
        Reason::Assigned,
        Reason::Default,
        Reason::Guard,
        Reason::Flow,
    ];

    /// The reasons a plan can decide, in [`Reason::ALL`] order: all of them with flows
    /// (`session.hold.flows`), all but `Flow` without (it is last, so indexes do not move).
    pub fn decided(with_flows: bool) -> &'static [Reason] {
        let n = if with_flows { 0 } else { 1 };
        Reason::ALL
            .get(..Reason::ALL.len() - n)
            .unwrap_or(&Reason::ALL)
    }

    /// The reason's position in [`Reason::ALL`], for tables laid out in that order.
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|x| *x == self).unwrap_or(0)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Override => "override",
            Reason::Pin => "pin",
            Reason::Hold => "hold",
            Reason::Hash => "hash",
            Reason::Assigned => "assigned",
            Reason::Default => "default",
            Reason::Guard => "guard",
            Reason::Flow => "flow",
        }
    }
}

/// The outcome for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index into [`crate::plan::Plan::versions`].
    pub version: usize,
    pub reason: Reason,
    /// The minted anonymous id (lowercase hex): for [`Reason::Assigned`], and for
    /// [`Reason::Hold`] when a held request has no session key.
    pub minted: Option<[u8; ID_LEN]>,
    /// The session's cohort bucket ([`bucket`]), from the same hash as the version: set for
    /// [`Reason::Hash`] and [`Reason::Assigned`], never otherwise (override, pin and hold are
    /// explicit choices the controller's bucket routes must not undo).
    pub bucket: Option<u16>,
    /// The request has a session key (read or minted). Known for flow, hold, hash and assigned
    /// decisions; false for override and pin, which do not read the session sources.
    pub session: bool,
    /// The flow cookie, when the request carried one and the plan has `session.hold.flows`.
    pub flow: Option<FlowSeen>,
    /// The SHA-256 of the session key, with `session.hold.flows`, for a write or a request
    /// with a flow cookie (what a flow cookie binds): [`crate::routing::flow::key_digest`].
    pub key: Option<[u8; 32]>,
}

/// A request's flow cookie, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSeen {
    pub outcome: crate::routing::flow::Outcome,
    /// The version it names, when valid.
    pub version: Option<usize>,
    /// Its expiry (Unix seconds), when valid.
    pub expiry: u64,
    /// Valid, and the session would not be on its version without it (the weights, the routes
    /// or a trip moved it): the flow drains there, and a write does not extend it.
    pub draining: bool,
}

impl Decision {
    /// A decision that is not from a session key: no bucket.
    pub(crate) fn new(version: usize, reason: Reason) -> Decision {
        Decision {
            version,
            reason,
            minted: None,
            bucket: None,
            session: false,
            flow: None,
            key: None,
        }
    }
}

/// What the decision may read of a request: headers by lowercase name, and randomness for
/// minting anonymous ids. The wasm shell implements it with host calls; tests with a list.
pub trait RequestView {
    type Value: AsRef<[u8]>;
    /// The first value of a header.
    fn get(&mut self, name: &str) -> Option<Self::Value>;
    /// Every value of a header, in order.
    fn get_all(&mut self, name: &str) -> Vec<Self::Value>;
    /// 128 unpredictable bits for a new anonymous session id; `None` if unavailable (the request
    /// then goes to the default version).
    fn random_id(&mut self) -> Option<[u8; ID_BYTES]> {
        None
    }
    /// The request's method is one of `write_methods` (a flow cookie may be set on its response).
    fn write(&mut self) -> bool {
        false
    }
    /// The time, in seconds since the Unix epoch; read only to check a flow cookie.
    fn now_s(&mut self) -> Option<u64> {
        None
    }
}

/// A header list, for tests and offline tools: first value of a name wins, like Envoy's
/// `get_http_request_header`. Never mints ids.
impl<'a> RequestView for &'a [(&'a str, &'a [u8])] {
    type Value = &'a [u8];
    fn get(&mut self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
    fn get_all(&mut self, name: &str) -> Vec<&'a [u8]> {
        self.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    }
}
