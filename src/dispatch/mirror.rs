//! Mirroring: owns sending a copy of a share of a service's buffered
//! requests to another service (`[services.NAME] mirror = "OTHER"`,
//! `mirror_share`), fire and forget, and counting how its outcome compares
//! with the primary's. The copy never delays, fails or changes the
//! primary's reply: it is sent from its own task with its own admission
//! count (a separate [`Dispatcher`] over the same pools), at most
//! `mirror_max_in_flight` at once per service (past it, dropped and
//! counted), and its reply is read as far as its head and dropped.
//!
//! Only requests whose body is already buffered are mirrored (the caller
//! says so): never streamed uploads, WebSocket upgrades or push services.
//!
//! The narrow API, for the request path: [`Mirrors::send`] replaces a
//! [`Dispatcher::send`] of a buffered request and does the same, plus the
//! copy when the service mirrors.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use super::{Dispatcher, Outcome, PackedRequest, Policy, Reply, Ticket};
use crate::config::Config;
use crate::metrics::{
    MIRROR_DURATION, MIRROR_MISMATCHES, MIRROR_OUTCOME, MIRROR_PRIMARY_CLASS, MIRROR_SIDE,
    MIRROR_TARGET, MIRROR_TOTAL, MIRRORED_CLASS, SERVICE,
};

/// The mirror copies of a gateway: their own dispatcher (so copies are
/// admitted apart from client requests) and in-flight counts per service.
#[derive(Debug)]
pub struct Mirrors {
    dispatcher: Arc<Dispatcher>,
    in_flight: std::sync::RwLock<HashMap<String, Arc<AtomicUsize>>>,
    /// The copies' own policy (retry budget, limits) for the current config.
    policy: std::sync::RwLock<Option<(Arc<Config>, Arc<Policy>)>>,
}

/// A request's status class for the comparison: `1xx`..`5xx`, or `error`
/// when there was no reply from the app (no connection, the deadline...).
fn class(result: &Result<Reply, super::DispatchError>) -> &'static str {
    match result {
        Ok(reply) => match reply.meta.status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
        Err(_) => "error",
    }
}

impl Mirrors {
    /// Mirrors sending through `pools`, with a dispatcher of their own
    /// (which mirrors nothing).
    pub fn new(pools: &Arc<crate::pool::Pools>) -> Self {
        Self {
            dispatcher: Arc::new(Dispatcher::unmirrored(Arc::clone(pools))),
            in_flight: std::sync::RwLock::default(),
            policy: std::sync::RwLock::default(),
        }
    }

    /// The copies' policy for `config` (made once per config).
    fn policy(&self, config: &Arc<Config>) -> Arc<Policy> {
        use std::sync::PoisonError;
        if let Some((current, policy)) =
            &*self.policy.read().unwrap_or_else(PoisonError::into_inner)
            && Arc::ptr_eq(current, config)
        {
            return Arc::clone(policy);
        }
        let mut slot = self.policy.write().unwrap_or_else(PoisonError::into_inner);
        let previous = slot.as_ref().map(|(_, p)| Arc::clone(p));
        let policy = Arc::new(Policy::new(Arc::clone(config), previous.as_deref()));
        *slot = Some((Arc::clone(config), Arc::clone(&policy)));
        policy
    }

    fn counter(&self, service: &str) -> Arc<AtomicUsize> {
        use std::sync::PoisonError;
        if let Some(counter) = self
            .in_flight
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
        {
            return Arc::clone(counter);
        }
        Arc::clone(
            self.in_flight
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(service.to_owned())
                .or_default(),
        )
    }

    /// Sends `request` to `service` as [`Dispatcher::send`] does and
    /// returns its outcome. When `buffered` (the whole body is in
    /// `request`: not a streamed upload, an upgrade or a push service) and
    /// `service` has a `mirror` in `config`, a share of requests is also
    /// copied to the mirror from a task of its own, and its outcome
    /// counted against this one's.
    ///
    /// # Cancel safety
    ///
    /// As [`Dispatcher::send`]. A copy already sent goes on; it counts as
    /// `abandoned` if the primary's future is dropped before its head.
    // Dispatcher::send's arguments plus what the request path knows, kept
    // flat so that the hook stays one call.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        dispatcher: &Dispatcher,
        config: &Arc<Config>,
        policy: &Policy,
        service: &str,
        ticket: &Ticket,
        request: &PackedRequest,
        buffered: bool,
    ) -> Outcome {
        let Some(copy) = buffered
            .then(|| self.copy(config, service, request))
            .flatten()
        else {
            return dispatcher.send(policy, service, ticket, request).await;
        };
        let started = Instant::now();
        let outcome = dispatcher.send(policy, service, ticket, request).await;
        let _ = copy.send((class(&outcome.result), started.elapsed()));
        outcome
    }

    /// Starts a copy of `request` if `service` mirrors and the share picks
    /// it; returns where to report the primary's outcome.
    fn copy(
        &self,
        config: &Arc<Config>,
        service: &str,
        request: &PackedRequest,
    ) -> Option<tokio::sync::oneshot::Sender<(&'static str, std::time::Duration)>> {
        if config.services.is_empty() {
            return None;
        }
        let settings = config.services.get(service)?;
        let target = settings.mirror.as_deref()?;
        if rand::random::<f64>() >= settings.mirror_share {
            return None;
        }
        let labels = [
            (SERVICE, service.to_owned()),
            (MIRROR_TARGET, target.to_owned()),
        ];
        let counter = self.counter(service);
        if counter.fetch_add(1, Ordering::AcqRel) >= settings.mirror_max_in_flight {
            counter.fetch_sub(1, Ordering::AcqRel);
            count(&labels, "dropped");
            return None;
        }
        let slot = InFlight(counter);
        let (report, primary) =
            tokio::sync::oneshot::channel::<(&'static str, std::time::Duration)>();
        let (dispatcher, policy) = (Arc::clone(&self.dispatcher), self.policy(config));
        let (request, target) = (request.clone(), target.to_owned());
        tokio::spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            let mirrored =
                match dispatcher.admit(&policy, &target, &hyper::HeaderMap::new(), started) {
                    Ok(ticket) => {
                        let outcome = dispatcher.send(&policy, &target, &ticket, &request).await;
                        let mirrored = class(&outcome.result);
                        if let Ok(reply) = outcome.result {
                            reply.body.discard();
                        }
                        mirrored
                    }
                    Err(_) => "error",
                };
            let mirror_took = started.elapsed();
            let side = |side: &'static str, took: std::time::Duration| {
                let mut labels = labels.to_vec();
                labels.push((MIRROR_SIDE, side.to_owned()));
                metrics::histogram!(MIRROR_DURATION, &labels).record(took.as_secs_f64());
            };
            side("mirror", mirror_took);
            let Ok((primary, primary_took)) = primary.await else {
                count(&labels, "abandoned");
                return;
            };
            side("primary", primary_took);
            if mirrored == "error" {
                count(&labels, "error");
            } else if primary == mirrored {
                count(&labels, "match");
            } else {
                count(&labels, "mismatch");
            }
            if primary != mirrored {
                let mut labels = labels.to_vec();
                labels.push((MIRROR_PRIMARY_CLASS, primary.to_owned()));
                labels.push((MIRRORED_CLASS, mirrored.to_owned()));
                metrics::counter!(MIRROR_MISMATCHES, &labels).increment(1);
            }
        });
        Some(report)
    }
}

/// Counts one copy's `outcome`.
fn count(labels: &[(&'static str, String); 2], outcome: &'static str) {
    let mut labels = labels.to_vec();
    labels.push((MIRROR_OUTCOME, outcome.to_owned()));
    metrics::counter!(MIRROR_TOTAL, &labels).increment(1);
}

/// A mirror copy counted in flight while it lives.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
