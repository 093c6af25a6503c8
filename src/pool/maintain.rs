//! The pool maintainer: owns keeping one pool at its size, replacing expired
//! or stale connections at most the reconnect cap at a time, replacing dead
//! ones with backoff; and following the routing groups (applying each new
//! set of rings to the groups' members and schedules).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Conn, ConnectError, EndpointFailure, Pool, Pools};
use crate::backoff::Backoff;
use crate::locator::{Locator, LocatorError, Rings};
use crate::mux::{self, MuxConfig};

/// The pauses between connect attempts while a service fails: 100 ms after
/// the first failure, doubling, at most 5 s.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// A connection that closes sooner than this after connecting, without
/// being told to drain, counts as a failed connect: a backend that accepts
/// and drops at once is backed off like one that refuses.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// How often the maintainer looks even when nothing wakes it (to notice
/// connections that died without a request noticing).
const IDLE_CHECK: Duration = Duration::from_secs(1);

type Connected = Result<Conn, ConnectError>;

/// Keeps `pool` at its size until shutdown. A pool that never connected
/// and whose name the locator does not know is given up: it is taken out
/// of `pools` and the task ends (see [`is_unknown`]). So is a pool that is
/// not kept and served nothing for its idle timeout; its connections drain.
pub(super) async fn run(
    pool: Arc<Pool>,
    locator: Arc<dyn Locator>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    pools: Weak<Pools>,
) {
    let mut connecting: JoinSet<Connected> = JoinSet::new();
    let mut failures = 0u32;
    // Until the first connection, the pool's name may be made up (any path
    // names a service): it gets no metric series of its own.
    let mut ever_connected = false;
    let mut retry_at: Option<Instant> = None;
    let mut idle_since = Instant::now();
    loop {
        if shutdown.is_cancelled() {
            // A connection may have come up after `Pools::shutdown` drained
            // the others: drain whatever the pool holds now.
            connecting.abort_all();
            pool.drain_all().await;
            return;
        }
        if pool.left.load(Ordering::Acquire) {
            // Its member left every routing group (`Pools::retire` took it
            // out): requests in flight finish on draining connections.
            connecting.abort_all();
            if ever_connected {
                set_gauges(&pool.service, GAUGE_STATES.map(|state| (state, 0)));
            }
            pool.drain_all().await;
            return;
        }
        let now = Instant::now();
        let epoch = pool.epoch.load(Ordering::Acquire);
        // Dead connections leave at once; ones that died young are failures.
        let mut died_young = None;
        let mut lost = Vec::new();
        pool.conns
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|c| {
                if !c.handle.is_closed() {
                    return true;
                }
                if !c.handle.is_draining() {
                    // Lost, not retired: its endpoint goes to the back of
                    // the line for the next connects.
                    lost.push((c.member.clone(), c.endpoint));
                    if now.duration_since(c.born) < HEALTHY_AFTER {
                        died_young = Some(c.endpoint);
                    }
                }
                false
            });
        for (member, endpoint) in lost.drain(..) {
            pool.mark_unreachable(endpoint, now);
            locator.forget_endpoint(&member, endpoint);
        }
        if let Some(endpoint) = died_young {
            if let Some(pools) = pools.upgrade() {
                pools.report_failure(&pool);
            }
            failures = failures.saturating_add(1);
            let pause = BACKOFF.pause(failures.saturating_sub(1));
            retry_at = Some(now + pause);
            tracing::debug!(service = %pool.service, %endpoint, ?pause, "pool connection closed right after connecting");
            *pool
                .last_error
                .write()
                .unwrap_or_else(PoisonError::into_inner) =
                Some(ConnectError::ClosedAtOnce(endpoint));
        } else if failures > 0
            && pool
                .read()
                .iter()
                .any(|c| c.is_usable() && now.duration_since(c.born) >= HEALTHY_AFTER)
        {
            // A connection proved healthy: the service works again.
            failures = 0;
        }
        // A reload may have shrunk the pool: the surplus drains.
        for old in retire_surplus(&pool) {
            old.handle.drain().await;
        }
        let settings = pool.settings();
        if pool.used.swap(false, Ordering::Relaxed)
            || pool.read().iter().any(|c| c.handle.in_flight() > 0)
        {
            idle_since = now;
        }
        if let Some(limit) = settings.idle_timeout
            && now.duration_since(idle_since) >= limit
            && !pool.kept.load(Ordering::Acquire)
            && !pool.is_member()
            && connecting.is_empty()
            && let Some(pools) = pools.upgrade()
            && pools.forget_unused(&pool)
        {
            tracing::info!(service = %pool.service, idle = ?limit, "idle pool closed");
            // The gauges read zero before anyone hears the pool is gone.
            if ever_connected {
                set_gauges(&pool.service, GAUGE_STATES.map(|state| (state, 0)));
            }
            pools.announce_change();
            pool.drain_all().await;
            return;
        }
        let (fresh, next_expiry) = {
            let conns = pool.read();
            let fresh = conns
                .iter()
                .filter(|c| c.is_usable() && c.epoch == epoch && c.expires > now)
                .count();
            let next = conns
                .iter()
                .filter(|c| c.expires > now)
                .map(|c| c.expires)
                .min();
            (fresh, next)
        };
        if ever_connected {
            publish_gauges(&pool);
        }
        let wanted = settings.size.saturating_sub(fresh);
        let mut allowed = wanted.min(settings.reconnect_cap());
        if failures > 0 {
            // While the service fails: one probe at a time.
            allowed = allowed.min(1);
        }
        // A request found the locator unreachable: one attempt now.
        let backing_off =
            retry_at.is_some_and(|at| at > now) && !pool.retry_now.swap(false, Ordering::AcqRel);
        if !backing_off {
            while connecting.len() < allowed {
                let now_connecting = pool.connecting.fetch_add(1, Ordering::AcqRel) + 1;
                pool.connecting_peak
                    .fetch_max(now_connecting, Ordering::AcqRel);
                let locator = Arc::clone(&locator);
                let tracker = tracker.clone();
                connecting.spawn(connect(locator, Arc::clone(&pool), epoch, tracker));
            }
        }
        let wake_at = [
            next_expiry,
            retry_at.filter(|at| *at > now),
            Some(now + IDLE_CHECK),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + IDLE_CHECK);
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = pool.wake.notified() => {}
            () = sleep_until(wake_at) => {}
            Some(done) = connecting.join_next() => {
                pool.connecting.fetch_sub(1, Ordering::AcqRel);
                pool.attempts.fetch_add(1, Ordering::AcqRel);
                let result = if matches!(done, Ok(Ok(_))) { "ok" } else { "error" };
                ever_connected |= result == "ok";
                let label = if ever_connected {
                    pool.service.clone()
                } else {
                    crate::metrics::UNKNOWN_SERVICE.to_owned()
                };
                metrics::counter!(
                    crate::metrics::POOL_CONNECTS,
                    crate::metrics::SERVICE => label,
                    crate::metrics::RESULT => result
                )
                .increment(1);
                match done {
                Ok(Ok(conn)) => {
                    // While failing, a connect is only a probe: the next one
                    // waits its pause until a connection proves healthy.
                    retry_at = (failures > 0).then(|| Instant::now() + BACKOFF.pause(failures.saturating_sub(1)));
                    for old in add(&pool, conn) {
                        // Never cut: it finishes its open channels, then closes.
                        old.handle.drain().await;
                    }
                }
                Ok(Err(error))
                    if (is_unknown(&error) || is_locator_down(&error))
                        && !ever_connected
                        && !pool.kept.load(Ordering::Acquire)
                        && !pool.is_member()
                        && pool.read().is_empty() =>
                {
                    tracing::debug!(service = %pool.service, error = ?error, "unknown service or no locator: pool dropped");
                    *pool.last_error.write().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    if let Some(pools) = pools.upgrade() {
                        pools.forget(&pool);
                    }
                    // Waiting requests re-check and fail with "not found".
                    pool.ready.notify_waiters();
                    connecting.abort_all();
                    return;
                }
                Ok(Err(error)) => {
                    if !matches!(error, ConnectError::NotAnApp(_))
                        && let Some(pools) = pools.upgrade()
                    {
                        pools.report_failure(&pool);
                    }
                    failures = failures.saturating_add(1);
                    let pause = BACKOFF.pause(failures.saturating_sub(1));
                    retry_at = Some(Instant::now() + pause);
                    tracing::debug!(service = %pool.service, ?error, ?pause, "pool connect failed");
                    *pool.last_error.write().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    // Waiting requests re-check: an unknown service fails at once.
                    pool.ready.notify_waiters();
                }
                Err(join) => tracing::error!(service = %pool.service, error = %join, "pool connect task failed"),
                }
            }
        }
    }
}

/// Whether the locator said it does not know the name. Such a pool (with
/// no connection ever made) is dropped rather than retried forever: every
/// path names a service, and a pool per made-up name, each with a task
/// re-resolving it, would grow without bound. The next request for the
/// name resolves afresh.
fn is_unknown(error: &ConnectError) -> bool {
    matches!(
        error,
        ConnectError::Locator(crate::locator::LocatorError::NotFound(_))
    )
}

/// Whether no locator could be reached. A pool that never connected is
/// dropped then too (unless configured or a group member): with the
/// locator down every name is unresolvable, and keeping a pool, a task and
/// metric series per made-up name would grow without bound.
fn is_locator_down(error: &ConnectError) -> bool {
    matches!(error, ConnectError::Locator(LocatorError::Unavailable(_)))
}

/// The connection states the pool gauges count.
const GAUGE_STATES: [&str; 3] = ["live", "stale", "draining"];

/// Sets the per-state connection gauges of a pool.
fn publish_gauges(pool: &Pool) {
    let mut counts = GAUGE_STATES.map(|state| (state, 0usize));
    for conn in pool.snapshot() {
        if let Some(entry) = counts.iter_mut().find(|(state, _)| *state == conn.state) {
            entry.1 += 1;
        }
    }
    set_gauges(&pool.service, counts);
}

fn set_gauges(service: &str, counts: [(&'static str, usize); 3]) {
    for (state, n) in counts {
        metrics::gauge!(crate::metrics::POOL_CONNECTIONS, crate::metrics::SERVICE => service.to_owned(), crate::metrics::STATE => state)
            .set(n as f64);
    }
}

/// Adds a new connection; if that makes the pool larger than its size,
/// the stalest usable connection leaves selection; it is returned to drain.
fn add(pool: &Pool, conn: Conn) -> Vec<Arc<Conn>> {
    *pool
        .last_error
        .write()
        .unwrap_or_else(PoisonError::into_inner) = None;
    pool.conns
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::new(conn));
    let retired = retire_surplus(pool);
    pool.ready.notify_waiters();
    retired
}

/// Takes usable connections beyond the pool's size out of selection (old
/// epoch first, then expired, then the oldest) and returns them to drain:
/// after [`add`], or when a reload shrank the pool.
fn retire_surplus(pool: &Pool) -> Vec<Arc<Conn>> {
    let size = pool.settings().size;
    let epoch = pool.epoch.load(Ordering::Acquire);
    let now = Instant::now();
    let mut conns = pool.conns.write().unwrap_or_else(PoisonError::into_inner);
    let mut retired = Vec::new();
    while conns.iter().filter(|c| c.is_usable()).count() > size {
        let Some(victim) = conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_usable())
            .min_by_key(|(_, c)| (c.epoch == epoch, c.expires > now, c.born))
            .map(|(i, _)| i)
        else {
            break;
        };
        retired.push(conns.remove(victim));
    }
    drop(conns);
    if !retired.is_empty() {
        pool.ready.notify_waiters();
    }
    retired
}

/// Resolves the service and connects to the first endpoint that accepts.
/// Resolves at most this many times per connect while every endpoint
/// resolved was unreachable a moment ago (another instance may answer).
const RESOLVES_PER_CONNECT: usize = 3;

/// Resolves the service afresh (one resolve per connection, so connections
/// spread over the instances the locator hands out) and connects to the
/// first endpoint that accepts, endpoints that just failed last. An endpoint
/// that refuses or times out is remembered as unreachable for a while and
/// dropped from the locator client's cache.
async fn connect(
    locator: Arc<dyn Locator>,
    pool: Arc<Pool>,
    epoch: u64,
    tracker: TaskTracker,
) -> Connected {
    let (service, settings) = (&pool.service, pool.settings());
    let mut resolved = None;
    for _ in 0..RESOLVES_PER_CONNECT {
        let answer = match timeout(settings.resolve_timeout, locator.resolve_fresh(service)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(ConnectError::Locator(e)),
            Err(_) => {
                return Err(ConnectError::Locator(LocatorError::Unavailable(format!(
                    "resolving `{service}` took longer than {:?}",
                    settings.resolve_timeout
                ))));
            }
        };
        let all_unreachable = answer
            .endpoints
            .iter()
            .all(|e| pool.is_unreachable(*e, Instant::now()));
        resolved = Some(answer);
        if !all_unreachable {
            break;
        }
    }
    let Some(resolved) = resolved else {
        return Err(ConnectError::ResolvedToNothing(service.to_owned()));
    };
    if !resolved.graph.is_app() {
        // Checked once per resolve, never per request.
        return Err(ConnectError::NotAnApp(resolved.service));
    }
    let now = Instant::now();
    let mut endpoints = resolved.endpoints.clone();
    // Stable: the locator's order, with endpoints that just failed last.
    endpoints.sort_by_key(|e| pool.is_unreachable(*e, now));
    let mut errors = Vec::new();
    for endpoint in &endpoints {
        match timeout(settings.connect_timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => {
                return start(
                    stream,
                    *endpoint,
                    resolved.service.clone(),
                    &pool,
                    epoch,
                    &tracker,
                );
            }
            Ok(Err(e)) => errors.push(EndpointFailure {
                endpoint: *endpoint,
                error: Some(Arc::new(e)),
            }),
            Err(_) => errors.push(EndpointFailure {
                endpoint: *endpoint,
                error: None,
            }),
        }
        pool.mark_unreachable(*endpoint, Instant::now());
        locator.forget_endpoint(&resolved.service, *endpoint);
    }
    Err(ConnectError::Unreachable {
        service: service.to_owned(),
        member: resolved.service,
        failures: errors,
    })
}

fn start(
    stream: TcpStream,
    endpoint: SocketAddr,
    member: String,
    pool: &Arc<Pool>,
    epoch: u64,
    tracker: &TaskTracker,
) -> Result<Conn, ConnectError> {
    let config = MuxConfig {
        reply_budget: pool.settings().reply_budget,
        ..MuxConfig::default()
    };
    let (handle, connection) = mux::from_tcp(stream, config).map_err(|e| ConnectError::Setup {
        endpoint,
        source: Arc::new(e),
    })?;
    // The maintainer replaces a connection as soon as it closes.
    let closed = Arc::downgrade(pool);
    tracker.spawn(async move {
        let result = connection.run().await;
        if let Some(pool) = closed.upgrade() {
            pool.wake.notify_one();
        }
        result
    });
    let settings = pool.settings();
    let born = Instant::now();
    Ok(Conn {
        handle,
        endpoint,
        member,
        born,
        expires: born + settings.jittered_lifespan(),
        epoch,
    })
}

/// Follows the locator's routing groups: applies each new set of rings
/// (members, weights, schedules), and applies them again while a slow
/// start ramps, when an ejection is due to end, or when woken (an
/// ejection, new settings).
pub(super) async fn follow_groups(
    pools: Weak<Pools>,
    mut routing: watch::Receiver<Arc<Rings>>,
    shutdown: CancellationToken,
    wake: Arc<Notify>,
) {
    loop {
        let rings = Arc::clone(&routing.borrow_and_update());
        let again_at = {
            let Some(pools) = pools.upgrade() else { return };
            pools.apply_rings(&rings)
        };
        tokio::select! {
            changed = routing.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = sleep_until(again_at.unwrap_or_else(Instant::now)), if again_at.is_some() => {}
        }
    }
}
