//! The plugin instance's root context, [`Root`]: configure, tick, HTTP call answers, done, new
//! streams.

use super::instance::Instance;
use super::service::Service;
use super::stream::Stream;
use super::{Host, Level};
use crate::metrics::{self, MetricKind};
use crate::plan::services::Services;
use std::cell::Cell;
use std::rc::Rc;

/// The plugin instance: its configuration and the metrics it defined.
pub struct Root<H: Host> {
    host: H,
    /// The services of the current configuration (`None` until the first is accepted).
    instance: Option<Rc<Instance<H>>>,
}

impl<H: Host + Clone> Root<H> {
    pub fn new(host: H) -> Root<H> {
        Root {
            host,
            instance: None,
        }
    }

    pub fn on_vm_start(&self) -> bool {
        self.host.log(
            Level::Info,
            &format!("sticky-canary {} VM started", crate::VERSION),
        );
        true
    }

    /// Compiles the plugin configuration and defines its metrics; `false` refuses it (Envoy then
    /// refuses the filter), with one log line naming the field path and the reason.
    pub fn on_configure(&mut self) -> bool {
        let host = &self.host;
        let error = |message: String| {
            host.log(Level::Error, &format!("sticky-canary: {message}"));
            false
        };
        let bytes = match host.plugin_configuration() {
            Ok(bytes) => bytes,
            Err(e) => return error(format!("cannot read the plugin configuration: {e:?}")),
        };
        let compiled = match Services::from_json_with_env(&bytes, &|name| host.env(name)) {
            Ok(services) => services,
            Err(e) => return error(format!("invalid configuration: {e}")),
        };
        // The brake looks on every tick; without batching it still needs one. One tick for
        // every service: the smallest interval.
        let tick_ms = compiled.tick_ms();
        let mut services = Vec::with_capacity(compiled.plans.len());
        for plan in compiled.plans {
            match Service::new(host.clone(), plan) {
                Ok(s) => services.push(Rc::new(s)),
                Err(e) => return error(e),
            }
        }
        let unmatched = match compiled.matcher.matches_everything() {
            Some(_) => None,
            None => match host.define_metric(MetricKind::Counter, metrics::names::UNMATCHED) {
                Ok(id) => Some(id),
                Err(e) => {
                    return error(format!(
                        "cannot define {}: {e:?}",
                        metrics::names::UNMATCHED
                    ))
                }
            },
        };
        let timer = host.set_tick_period(tick_ms);
        let batches = host.batches();
        for service in &services {
            service.restore_guard();
            if !batches {
                service.batching.set(false);
            } else if let Err(e) = timer {
                // Without ticks nothing would flush: count straight into the host instead.
                service.warn(format_args!(
                    "no timer ({e:?}); counters are updated per request"
                ));
                service.batching.set(false);
            }
            host.log(
                Level::Info,
                &format!(
                    "sticky-canary {}: {}",
                    crate::VERSION,
                    service.plan.summary()
                ),
            );
            for w in &service.plan.warnings {
                service.warn(format_args!("{w}"));
            }
        }
        let instance = Instance {
            host: host.clone(),
            services,
            matcher: compiled.matcher,
            unmatched,
            pending: Cell::new(0),
            batching: Cell::new(batches && tick_ms > 0 && timer.is_ok()),
        };
        // A reconfigured root context hands over what the previous plan counted.
        if let Some(previous) = self.instance.replace(Rc::new(instance)) {
            if let Some(now) = &self.instance {
                for s in &now.services {
                    let same = previous
                        .services
                        .iter()
                        .find(|p| p.plan.service == s.plan.service);
                    if let Some(p) = same {
                        s.adopt_flows(p);
                    }
                }
            }
            previous.retire();
        }
        true
    }

    /// The flush interval elapsed.
    pub fn on_tick(&self) {
        if let Some(instance) = &self.instance {
            instance.flush();
            for s in &instance.services {
                s.publish_draining();
                s.guard_tick();
            }
        }
    }

    /// A follower's tick, for a host where one root judges the brake for the others (the
    /// native build: the main thread's root judges and queries the pool, each worker thread's
    /// root follows): learns the recorded trips and publishes the draining flows; judges
    /// nothing, queries no pool.
    pub fn on_follower_tick(&self) {
        if let Some(instance) = &self.instance {
            instance.flush();
            for s in &instance.services {
                s.publish_draining();
                s.learn_guard();
            }
        }
    }

    /// The answer to an HTTP call this root sent (the pool's query of one service): `headers`
    /// pairs (0 when the call failed) and `body_size` bytes of body. An unknown token is
    /// ignored.
    pub fn on_http_call_response(&self, token: u32, headers: usize, body_size: usize) {
        let Some(instance) = &self.instance else {
            return;
        };
        for s in &instance.services {
            if let (Some(g), Some(guard)) = (&s.guard, &s.plan.guard) {
                if let (Some(p), Some(pool)) = (&g.pool, &guard.pool) {
                    if p.awaits(token) {
                        return s.pool_answer(g, p, pool, headers, body_size);
                    }
                }
            }
        }
    }

    /// The host is done with this plugin instance (a new configuration replaced it, or the VM
    /// stops): nothing pending may be lost, and streams still draining count on their own.
    pub fn on_done(&self) -> bool {
        if let Some(instance) = &self.instance {
            instance.retire();
        }
        true
    }

    /// A new HTTP stream on the current plan. A plugin that takes every request hands it its
    /// one service now; otherwise the stream picks its service from its request headers.
    /// Without a plan (cannot happen after a successful configure) the stream passes through
    /// untouched.
    pub fn stream(&self) -> Stream<H> {
        let everything = self.instance.as_ref().and_then(|instance| {
            instance
                .services
                .get(instance.matcher.matches_everything()?)
        });
        Stream::new(
            everything.cloned(),
            self.instance.clone().filter(|_| everything.is_none()),
        )
    }
}
