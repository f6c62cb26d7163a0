//! [`Instance`]: the services of one configuration of the plugin instance, and which request is
//! whose.

use super::service::Service;
use super::{Host, Level, Map};
use crate::routing::matcher::Matcher;
use std::cell::Cell;
use std::rc::Rc;

/// The plugin instance's services under one configuration, and which request is whose.
pub(super) struct Instance<H: Host> {
    pub(super) host: H,
    /// One per service, in document order (the matcher's indexes).
    pub(super) services: Vec<Rc<Service<H>>>,
    pub(super) matcher: Matcher,
    /// The host's id of `canary_unmatched_total`; defined only when a request can miss.
    pub(super) unmatched: Option<u32>,
    /// Unmatched requests not yet handed to the host.
    pub(super) pending: Cell<u64>,
    /// True while the root's ticks flush `pending`.
    pub(super) batching: Cell<bool>,
}

impl<H: Host> Instance<H> {
    /// The service of the request whose headers are being read: one `:authority` read (and a
    /// `:path` read when some service has path prefixes), none for a plugin that takes every
    /// request. `None`: the request is no service's; it is counted and left as it came.
    pub(super) fn pick(&self) -> Option<Rc<Service<H>>> {
        let index = self.matcher.matches_everything().or_else(|| {
            let read = |name: &str| self.host.header(Map::Request, name).ok().flatten();
            let mut authority = read(":authority").unwrap_or_default();
            let path = if self.matcher.reads_path() {
                read(":path")
            } else {
                None
            };
            self.matcher.find(&mut authority, path.as_deref())
        });
        let found = index.and_then(|i| self.services.get(i)).cloned();
        if found.is_none() {
            if self.batching.get() {
                self.pending.set(self.pending.get().saturating_add(1));
            } else {
                self.count_unmatched(1);
            }
        }
        found
    }

    pub(super) fn count_unmatched(&self, n: u64) {
        if let (Some(id), Ok(n)) = (self.unmatched, i64::try_from(n)) {
            if n > 0 && self.host.increment_metric(id, n).is_err() {
                self.host.log(
                    Level::Warn,
                    "sticky-canary: could not count an unmatched request",
                );
            }
        }
    }

    pub(super) fn flush(&self) {
        self.count_unmatched(self.pending.replace(0));
        for s in &self.services {
            s.flush();
        }
    }

    pub(super) fn retire(&self) {
        self.batching.set(false);
        self.count_unmatched(self.pending.replace(0));
        for s in &self.services {
            s.retire();
        }
    }
}
