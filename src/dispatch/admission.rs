//! Admission: owns whether a routed request may go on (load shedding: the
//! requests in flight at the gateway and per service), its deadline (the
//! service's timeout, shortened by `X-Request-Timeout`), and what its
//! member choice needs (its routing group, its sticky key's ring point).
//! Sync: it refuses at once rather than queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::HeaderMap;
use hyper::header::HeaderName;
use tokio::time::Instant;

use super::{DispatchError, Retry};
use crate::config::Config;
use crate::pool::Group;

/// `X-Request-Timeout: <ms>` shortens a request's deadline.
const X_REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-request-timeout");

/// The default sticky header (`request.sticky_header`).
const X_COCAINE_STICKY: HeaderName = HeaderName::from_static("x-cocaine-sticky");

/// One config's worth of dispatch settings: limits, timeouts, the retry
/// policy and its budget. A request reads one snapshot from start to end.
#[derive(Debug)]
pub struct Policy {
    config: Arc<Config>,
    retry: Arc<Retry>,
    /// Per service with a `max_in_flight`: the limit and the count.
    service_in_flight: HashMap<String, (usize, Arc<AtomicUsize>)>,
    /// The header whose value picks a group member on the continuum.
    sticky_header: HeaderName,
}

impl Policy {
    /// The policy of `config`, keeping `previous`' counters (in-flight
    /// counts per service, the retry budget) where they still apply, so
    /// requests in flight across a reload stay counted.
    pub fn new(config: Arc<Config>, previous: Option<&Self>) -> Self {
        let r = &config.retry;
        let retry = match previous {
            Some(p) if p.config.retry == *r => Arc::clone(&p.retry),
            _ => Arc::new(Retry::new(
                r.attempts,
                r.budget_share,
                r.budget_floor,
                r.backoff,
            )),
        };
        let service_in_flight = config
            .services
            .iter()
            .filter_map(|(name, s)| {
                let counter = previous
                    .and_then(|p| p.service_in_flight.get(name))
                    .map_or_else(Arc::default, |(_, c)| Arc::clone(c));
                Some((name.clone(), (s.max_in_flight?, counter)))
            })
            .collect();
        let sticky_header = HeaderName::from_bytes(config.request.sticky_header.as_bytes())
            .unwrap_or(X_COCAINE_STICKY);
        Self {
            config,
            retry,
            service_in_flight,
            sticky_header,
        }
    }

    /// The retry policy.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }

    /// The config it was made from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Whether `service` has a mirror (`[services.X] mirror`).
    pub fn mirrors(&self, service: &str) -> bool {
        !self.config.services.is_empty()
            && self
                .config
                .services
                .get(service)
                .is_some_and(|s| s.mirror.is_some())
    }

    /// Whether `service` is a push service (`[services.X] push = true`).
    pub fn is_push(&self, service: &str) -> bool {
        !self.config.services.is_empty()
            && self.config.services.get(service).is_some_and(|s| s.push)
    }
}

/// One request counted against a limit until dropped.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot if fewer than `limit` are taken.
    fn take(counter: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        if counter.fetch_add(1, Ordering::AcqRel) >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(Arc::clone(counter)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admitted request: counted in flight while it lives, with its
/// deadline and what its member choice needs.
#[derive(Debug)]
pub struct Ticket {
    _slots: (Slot, Option<Slot>),
    timeout: Duration,
    deadline: Instant,
    pub(super) group: Option<Arc<Group>>,
    pub(super) sticky: Option<u32>,
}

impl Ticket {
    /// The request's timeout (what the app is told, and errors report).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When the request's time is up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl super::Dispatcher {
    /// Admits a request for `service` that started at `started`: refuses
    /// it at once ([`DispatchError::Shed`]) if `limits.max_in_flight`
    /// requests are in flight, or the service's `max_in_flight`; otherwise
    /// fixes its deadline and, for a routing group, its sticky key.
    pub fn admit(
        &self,
        policy: &Policy,
        service: &str,
        headers: &HeaderMap,
        started: Instant,
    ) -> Result<Ticket, DispatchError> {
        let config = &policy.config;
        let slot = Slot::take(&self.in_flight, config.limits.max_in_flight).ok_or_else(|| {
            crate::metrics::limit_hit("in_flight");
            DispatchError::Shed("at the gateway")
        })?;
        let service_slot = match policy.service_in_flight.get(service) {
            Some((limit, counter)) => Some(Slot::take(counter, *limit).ok_or_else(|| {
                crate::metrics::limit_hit("service_in_flight");
                DispatchError::Shed("for this service")
            })?),
            None => None,
        };
        let mut timeout = config.timeout_for(service);
        if let Some(ms) = headers
            .get(X_REQUEST_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            // A request may shorten its deadline, never extend it.
            timeout = timeout.min(Duration::from_millis(ms.max(1)));
        }
        // A routing group's name: its member is chosen per request, by a
        // sticky key if the request has one.
        let group = self.pools.group(service);
        let sticky = group
            .as_ref()
            .and_then(|_| headers.get(&policy.sticky_header))
            .map(|key| crate::locator::continuum::seed_point(key.as_bytes()));
        Ok(Ticket {
            _slots: (slot, service_slot),
            timeout,
            deadline: started + timeout,
            group,
            sticky,
        })
    }
}
