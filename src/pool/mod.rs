//! Connection pools: owns, per virtual service, a fixed number of
//! multiplexed backend connections, each resolved through the [`Locator`]
//! when it connects; their refresh by jittered lifespan with a cap on
//! simultaneous reconnects; routing groups (a pool per member, the member
//! chosen per request by weight or sticky key, slow start, ejection);
//! replacing dead connections with backoff; and choosing a connection per
//! request (least in flight of two random picks, fresh ones first).
//!
//! Old connections are never cut: one leaves selection only when its
//! replacement is up, and then drains its open channels before closing.
//! While the locator is down, existing connections keep serving.
//!
//! Not bb8: bb8 hands out an item exclusively and takes it back, which for
//! a multiplexed handle means a mutex round trip per request and no way to
//! pick the least loaded connection; it also has no jittered lifespans,
//! capped rolling refresh or refresh-on-routing-change. A pool here is a
//! read-mostly list plus one maintainer task.

mod group;
mod maintain;
mod outlier;
mod routing;
mod schedule;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::group::{Choice, Group, MIN_MEMBER_CONNECTIONS, Member, MemberView};
pub use self::outlier::{Health, OutlierSettings};
pub use self::routing::GroupSettings;
use crate::locator::{Locator, LocatorError};
use crate::mux::MuxHandle;

mod pools;
pub use self::pools::*;

mod error;
pub use self::error::*;

/// A request joins the connection gathering a write only while that
/// connection has fewer than this many requests in flight.
pub const GATHER_LIMIT: usize = 64;

/// Settings of one service's pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    /// Connections to keep.
    pub size: usize,
    /// Age after which a connection is replaced.
    pub lifespan: Duration,
    /// Lifespans vary by up to this share either way.
    pub jitter: f64,
    /// At most this share of the pool reconnects at once (at least one).
    pub reconnect_share: f64,
    /// Limit on one TCP connect.
    pub connect_timeout: Duration,
    /// Limit on one resolve.
    pub resolve_timeout: Duration,
    /// A pool that is not kept (see [`Pools::keep`]) and served nothing
    /// for this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// The budget its connections buffer replies within, so that none of
    /// them waits for a slow reader (see [`crate::mux::ReplyBudget`]);
    /// `None`: a connection pauses its reads for a full reply queue.
    pub reply_budget: Option<crate::mux::ReplyBudget>,
}

impl PoolSettings {
    /// How many connections may be (re)connecting at once.
    pub fn reconnect_cap(&self) -> usize {
        ((self.size as f64 * self.reconnect_share).ceil() as usize).max(1)
    }

    /// A lifespan with jitter applied.
    pub fn jittered_lifespan(&self) -> Duration {
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = if spread > 0.0 {
            rand::rng().random_range(1.0 - spread..=1.0 + spread)
        } else {
            1.0
        };
        self.lifespan.mul_f64(factor)
    }
}

/// One pooled connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) handle: MuxHandle,
    pub(crate) endpoint: SocketAddr,
    /// The service the name resolved to (a routing group's member).
    pub(crate) member: String,
    pub(crate) born: Instant,
    pub(crate) expires: Instant,
    /// The pool's refresh epoch when it connected.
    pub(crate) epoch: u64,
}

impl Conn {
    fn is_usable(&self) -> bool {
        !self.handle.is_closed() && !self.handle.is_draining()
    }
}

/// The pool of one virtual service.
#[derive(Debug)]
pub struct Pool {
    service: String,
    settings: RwLock<PoolSettings>,
    pub(crate) conns: RwLock<Vec<Arc<Conn>>>,
    /// Bumped to replace every connection (a routing change).
    pub(crate) epoch: AtomicU64,
    /// Wakes the maintainer (a request found nothing usable, a refresh).
    pub(crate) wake: Notify,
    /// Signals that a connection was added.
    pub(crate) ready: Notify,
    /// A configured service: kept and retried even while the locator does
    /// not know it (its app may start later). Other pools are dropped then.
    pub(crate) kept: std::sync::atomic::AtomicBool,
    pub(crate) last_error: RwLock<Option<ConnectError>>,
    /// Connections being made right now (at most the reconnect cap).
    pub(crate) connecting: std::sync::atomic::AtomicUsize,
    /// The most connections ever being made at once.
    pub(crate) connecting_peak: std::sync::atomic::AtomicUsize,
    /// Index of the connection picked last (for batching, see [`Pool::pick`]).
    last_pick: std::sync::atomic::AtomicUsize,
    /// Set by every checkout, cleared by the maintainer: whether the pool
    /// served anything since the maintainer last looked.
    pub(crate) used: std::sync::atomic::AtomicBool,
    /// Its name, shared (a metrics label per request costs no copy).
    label: Arc<str>,
    /// Backend failures in a row and ejection, for routing groups.
    pub(crate) health: Health,
    /// While it serves a routing group's member: its share of the group's
    /// connection budget, which replaces the configured size (0: none).
    /// Such a pool is kept like a configured one.
    group_share: std::sync::atomic::AtomicUsize,
    /// Set when the pool was taken out (its member left every group): the
    /// maintainer drains it and ends; waiting checkouts give up.
    pub(crate) left: std::sync::atomic::AtomicBool,
    /// Endpoints that refused, timed out or lost a connection lately, and
    /// when: the next connects try other endpoints first.
    unreachable: std::sync::Mutex<Vec<(SocketAddr, Instant)>>,
    /// Connect attempts finished (either way), for waiting checkouts.
    pub(crate) attempts: AtomicU64,
    /// Set by a checkout that found the locator unreachable: the
    /// maintainer attempts at once instead of after its backoff.
    pub(crate) retry_now: std::sync::atomic::AtomicBool,
}

/// How long an endpoint that failed is tried last.
const UNREACHABLE_FOR: Duration = Duration::from_secs(5);

impl Pool {
    fn new(service: String, settings: PoolSettings) -> Self {
        Self {
            label: Arc::from(service.as_str()),
            health: Health::default(),
            group_share: std::sync::atomic::AtomicUsize::new(0),
            left: std::sync::atomic::AtomicBool::new(false),
            unreachable: std::sync::Mutex::new(Vec::new()),
            attempts: AtomicU64::new(0),
            retry_now: std::sync::atomic::AtomicBool::new(false),
            service,
            settings: RwLock::new(settings),
            conns: RwLock::new(Vec::new()),
            epoch: AtomicU64::new(0),
            wake: Notify::new(),
            ready: Notify::new(),
            kept: std::sync::atomic::AtomicBool::new(false),
            last_error: RwLock::new(None),
            connecting: std::sync::atomic::AtomicUsize::new(0),
            connecting_peak: std::sync::atomic::AtomicUsize::new(0),
            last_pick: std::sync::atomic::AtomicUsize::new(usize::MAX),
            used: std::sync::atomic::AtomicBool::new(true),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Arc<Conn>>> {
        self.conns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The service this pool serves.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The service name, shared.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// Its settings now (as a group member, the size is its share of the
    /// group's budget).
    pub fn settings(&self) -> PoolSettings {
        let mut settings = self
            .settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let share = self.group_share.load(Ordering::Acquire);
        if share > 0 {
            settings.size = share;
        }
        settings
    }

    /// Whether `endpoint` failed within [`UNREACHABLE_FOR`] of `now`.
    pub(crate) fn is_unreachable(&self, endpoint: SocketAddr, now: Instant) -> bool {
        self.unreachable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|(e, at)| *e == endpoint && now.saturating_duration_since(*at) < UNREACHABLE_FOR)
    }

    /// Remembers that `endpoint` failed at `now` (and forgets old failures).
    pub(crate) fn mark_unreachable(&self, endpoint: SocketAddr, now: Instant) {
        let mut list = self
            .unreachable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        list.retain(|(e, at)| {
            *e != endpoint && now.saturating_duration_since(*at) < UNREACHABLE_FOR
        });
        list.push((endpoint, now));
    }

    /// Backend failures and ejection.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether a request could have a connection now.
    pub fn has_usable(&self) -> bool {
        self.read().iter().any(|c| c.is_usable())
    }

    /// Whether it serves a routing group's member (and so is kept).
    pub(crate) fn is_member(&self) -> bool {
        self.group_share.load(Ordering::Acquire) > 0
    }

    /// Sets its share of a group's connection budget (0: not a member).
    pub(crate) fn set_group_share(&self, share: usize) {
        if self.group_share.swap(share, Ordering::AcqRel) != share {
            self.wake.notify_one();
        }
    }

    /// New settings (a config reload): a new size applies at once (a
    /// smaller pool drains its surplus, a larger one connects more, within
    /// the reconnect cap); a new lifespan applies to connections made from
    /// now on.
    fn set_settings(&self, settings: PoolSettings) {
        let mut current = self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != settings {
            *current = settings;
            drop(current);
            self.wake.notify_one();
        }
    }

    /// Starts a rolling refresh: every connection is replaced, at most the
    /// reconnect cap at a time, each old one draining once its replacement
    /// is up.
    pub fn refresh(&self) {
        metrics::counter!(crate::metrics::POOL_REFRESHES, crate::metrics::SERVICE => self.service.clone()).increment(1);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Tells every connection the pool holds now to drain (finish its
    /// channels, then close).
    pub(crate) async fn drain_all(&self) {
        let conns: Vec<_> = self.read().iter().cloned().collect();
        for conn in conns {
            conn.handle.drain().await;
        }
    }

    /// A usable connection: the less loaded of two random picks, preferring
    /// connections from the current refresh epoch.
    ///
    /// Batching: while the connection picked last is still gathering a
    /// write (see [`MuxHandle::is_gathering`]), requests join it, up to
    /// [`GATHER_LIMIT`] in flight. Requests arriving together then cost one
    /// write and one read on each side instead of one each; each batch
    /// still goes where two random picks say, so load spreads the same.
    pub fn pick(&self) -> Option<MuxHandle> {
        let conns = self.read();
        let last = self.last_pick.load(Ordering::Relaxed);
        if let Some(conn) = conns.get(last)
            && conn.handle.is_gathering()
            && conn.handle.in_flight() < GATHER_LIMIT
            && conn.is_usable()
        {
            return Some(conn.handle.clone());
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let fresh = conns
            .iter()
            .filter(|c| c.epoch == epoch && c.is_usable())
            .count();
        let (count, from_epoch) = if fresh == 0 {
            (conns.iter().filter(|c| c.is_usable()).count(), None)
        } else {
            (fresh, Some(epoch))
        };
        // The n-th usable connection (of the chosen epoch), by index.
        let nth = |n: usize| {
            conns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_usable() && from_epoch.is_none_or(|e| c.epoch == e))
                .nth(n)
        };
        let (index, best) = match count {
            0 => return None,
            1 => nth(0)?,
            n => {
                let mut rng = rand::rng();
                let a = nth(rng.random_range(0..n))?;
                let b = nth(rng.random_range(0..n))?;
                if a.1.handle.in_flight() <= b.1.handle.in_flight() {
                    a
                } else {
                    b
                }
            }
        };
        self.last_pick.store(index, Ordering::Relaxed);
        Some(best.handle.clone())
    }

    /// A usable connection, waiting for one to come up until `deadline`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn checkout(&self, deadline: Instant) -> Result<MuxHandle, PoolError> {
        // Read first: the flag's cache line is written once per
        // maintainer look, not once per request.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        // The common case, without registering for a wake-up first.
        if let Some(handle) = self.pick() {
            return Ok(handle);
        }
        // Connect attempts finished before this checkout, and until when to
        // wait once the locator was found unreachable.
        let attempts_before = self.attempts.load(Ordering::Acquire);
        let mut locator_wait: Option<Instant> = None;
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(handle) = self.pick() {
                return Ok(handle);
            }
            if self.left.load(Ordering::Acquire) {
                return Err(PoolError::Left(self.service.clone()));
            }
            let last_error = self
                .last_error
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            match last_error {
                Some(ConnectError::Locator(LocatorError::NotFound(name))) => {
                    return Err(PoolError::NotFound(name));
                }
                // Known at once (and kept with the resolve): never sent
                // an HTTP request.
                Some(ConnectError::NotAnApp(name)) if self.read().is_empty() => {
                    return Err(PoolError::NotAnApp(name));
                }
                // No connection, and the locator cannot be reached: ask the
                // maintainer for an attempt now (not after its backoff);
                // once one has failed since, or the resolve timeout passed,
                // the request fails rather than wait for its deadline.
                Some(ConnectError::Locator(e @ LocatorError::Unavailable(_)))
                    if self.read().is_empty() =>
                {
                    let attempted = self.attempts.load(Ordering::Acquire) > attempts_before;
                    if attempted || locator_wait.is_some_and(|until| Instant::now() >= until) {
                        return Err(PoolError::LocatorUnavailable {
                            service: self.service.clone(),
                            source: e,
                        });
                    }
                    if locator_wait.is_none() {
                        locator_wait = Some(Instant::now() + self.settings().resolve_timeout);
                        self.retry_now.store(true, Ordering::Release);
                    }
                }
                _ => {}
            }
            self.wake.notify_one();
            let until = locator_wait.map_or(deadline, |until| until.min(deadline));
            if tokio::time::timeout_at(until, ready).await.is_err() && until == deadline {
                let last_error = match self
                    .last_error
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
                {
                    Some(error) => error,
                    None => ConnectError::StillConnecting,
                };
                return Err(PoolError::NoConnection {
                    service: self.service.clone(),
                    last_error,
                });
            }
        }
    }

    /// Connections being made right now, and the most ever at once.
    pub fn connecting(&self) -> (usize, usize) {
        (
            self.connecting.load(Ordering::Acquire),
            self.connecting_peak.load(Ordering::Acquire),
        )
    }

    /// Waits until `accept` holds for the pool's connections, re-checking
    /// each time a connection is added or a connect fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn wait_until(&self, accept: impl Fn(&[ConnSnapshot]) -> bool) {
        until_notified(&self.ready, || accept(&self.snapshot())).await;
    }

    /// A snapshot of every connection, for the admin API.
    pub fn snapshot(&self) -> Vec<ConnSnapshot> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let now = Instant::now();
        self.read()
            .iter()
            .map(|c| ConnSnapshot {
                endpoint: c.endpoint,
                member: c.member.clone(),
                age: now.saturating_duration_since(c.born),
                lifespan: c.expires.saturating_duration_since(c.born),
                in_flight: c.handle.in_flight(),
                state: if c.handle.is_closed() {
                    "closed"
                } else if c.handle.is_draining() {
                    "draining"
                } else if c.epoch != epoch || c.expires <= now {
                    "stale"
                } else {
                    "live"
                },
            })
            .collect()
    }
}

/// Waits until `done` holds, checking again each time `notify` wakes its
/// waiters (registered before each check, so no wake-up is missed).
async fn until_notified(notify: &Notify, done: impl Fn() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}

/// One connection as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnSnapshot {
    /// The backend address.
    pub endpoint: SocketAddr,
    /// The service it resolved to.
    pub member: String,
    /// How long it has been up.
    #[serde(serialize_with = "as_secs")]
    pub age: Duration,
    /// Its jittered lifespan.
    #[serde(serialize_with = "as_secs")]
    pub lifespan: Duration,
    /// Channels open on it.
    pub in_flight: usize,
    /// live, stale (awaiting replacement), draining or closed.
    pub state: &'static str,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
