//! The client-connection limits: owns the count of open client connections
//! (`limits.max_connections`, one for the HTTP, HTTPS and unix listeners
//! together), the count per client address
//! (`limits.max_connections_per_client`), and the queue of parked
//! connections that are closed, oldest first, to make room at the limit.
//! It does not accept or serve connections: the listeners ask it before
//! they accept, and a parked connection registers here while it waits.
//!
//! Why evict: idle keep-alive connections count against the limit, so one
//! client holding `max_connections` of them idle would lock everyone else
//! out until `limits.idle_timeout`. At the limit, an accept waiting for
//! room closes the connection parked longest (it has nothing in flight; a
//! client reusing it later reconnects, as after any keep-alive close).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::cidr::client_key;
use crate::config::Config;

/// Open client connections, by gateway and by client, and the parked ones
/// that can be closed to make room.
#[derive(Debug)]
pub struct ConnectionLimit {
    /// One permit per connection allowed (`limits.max_connections`); the
    /// gateway resizes it on reload.
    permits: Arc<Semaphore>,
    parked: Mutex<ParkedQueue>,
    /// Woken when a connection parks: an accept waiting at the limit can
    /// close it.
    parked_now: Notify,
    /// Woken when an evicted connection resumed instead (its client sent a
    /// request just then): the accept that evicted it evicts another.
    eviction_missed: Notify,
    /// Open connections per client address (only addresses with some).
    clients: Mutex<HashMap<IpAddr, usize>>,
}

/// Parked connections, oldest first, each with what closes it.
#[derive(Debug, Default)]
struct ParkedQueue {
    next: u64,
    queue: BTreeMap<u64, Arc<Notify>>,
}

impl ConnectionLimit {
    /// Room for `max_connections` client connections.
    pub fn new(max_connections: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_connections)),
            parked: Mutex::default(),
            parked_now: Notify::new(),
            eviction_missed: Notify::new(),
            clients: Mutex::default(),
        }
    }

    /// The permits, one per connection allowed (to resize the limit).
    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Room for one more connection (one just accepted, so that no idle
    /// connection is closed for a client that is not there): at once if
    /// there is some; at the limit, closes the connection parked longest
    /// (counted as `idle_evicted`) and takes the room it leaves, or, with
    /// none parked, waits until one parks or any closes (the listener
    /// accepts nothing meanwhile: clients wait in the kernel's backlog).
    /// `None` once `shutdown` is cancelled. `what` names the listener in
    /// logs.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a connection already told to close stays closed, and
    /// the room it leaves goes to the next accept.
    pub async fn acquire(
        &self,
        shutdown: &CancellationToken,
        what: &str,
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(permit);
        }
        crate::metrics::limit_hit("connections");
        let mut warned = false;
        // Told one to close, whose room is still to come.
        let mut evicted = false;
        loop {
            let parked = self.parked_now.notified();
            let missed = self.eviction_missed.notified();
            tokio::pin!(parked, missed);
            parked.as_mut().enable();
            missed.as_mut().enable();
            if !evicted {
                evicted = self.evict_oldest();
                if evicted {
                    crate::metrics::limit_hit("idle_evicted");
                } else if !warned {
                    warned = true;
                    tracing::warn!(
                        listener = what,
                        "connection limit reached, none idle; accepting paused"
                    );
                }
            }
            tokio::select! {
                permit = Arc::clone(&self.permits).acquire_owned() => return permit.ok(),
                () = parked, if !evicted => {}
                () = missed, if evicted => evicted = false,
                () = shutdown.cancelled() => return None,
            }
        }
    }

    /// Tells the connection parked longest to close; `false` if none is.
    fn evict_oldest(&self) -> bool {
        let oldest = self
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .queue
            .pop_first();
        match oldest {
            Some((_, close)) => {
                // Stored if its task is not waiting right now.
                close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Registers a parked connection until the returned slot is dropped;
    /// [`ParkedSlot::evicted`] returns once it should close to make room.
    pub(crate) fn park(&self) -> ParkedSlot<'_> {
        let close = Arc::new(Notify::new());
        let id = {
            let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
            let id = parked.next;
            parked.next += 1;
            parked.queue.insert(id, Arc::clone(&close));
            id
        };
        self.parked_now.notify_waiters();
        ParkedSlot {
            limit: self,
            id,
            close,
            closing: false,
        }
    }

    /// Counts a connection from `client` (`None`: a unix-socket peer),
    /// until the returned slot is dropped: `Err` past
    /// `limits.max_connections_per_client` (counted as
    /// `connections_per_client`; the caller closes it). Unix-socket peers
    /// and `request.trusted_proxies` are neither counted nor capped
    /// (`Ok(None)`): many clients share them.
    pub(crate) fn admit(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        config: &Config,
    ) -> Result<Option<ClientSlot>, OverClientCap> {
        let Some(client) = client else {
            return Ok(None);
        };
        if config
            .request
            .trusted_proxies
            .iter()
            .any(|proxy| proxy.contains(client))
        {
            return Ok(None);
        }
        let client = client_key(client, config.limits.client_ipv6_prefix);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let open = clients.entry(client).or_default();
        if *open >= config.limits.max_connections_per_client {
            if *open == 0 {
                clients.remove(&client);
            }
            drop(clients);
            crate::metrics::limit_hit("connections_per_client");
            tracing::debug!(%client, "connection closed: too many from this client");
            return Err(OverClientCap);
        }
        *open += 1;
        Ok(Some(ClientSlot {
            limit: Arc::clone(self),
            client,
        }))
    }
}

/// A client had `limits.max_connections_per_client` connections open
/// already: the new one is closed unanswered.
#[derive(Debug)]
pub(crate) struct OverClientCap;

/// One connection counted against its client's cap, until dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    limit: Arc<ConnectionLimit>,
    client: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self
            .limit
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = clients.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

/// A parked connection in the eviction queue, until dropped.
#[derive(Debug)]
pub(crate) struct ParkedSlot<'a> {
    limit: &'a ConnectionLimit,
    id: u64,
    close: Arc<Notify>,
    /// Evicted, and closing as told.
    closing: bool,
}

impl ParkedSlot<'_> {
    /// Returns once the connection should close to make room (see
    /// [`ConnectionLimit::acquire`]); it then counts as closing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an eviction not seen stays stored.
    pub(crate) async fn evicted(&mut self) {
        self.close.notified().await;
        self.closing = true;
    }
}

impl Drop for ParkedSlot<'_> {
    fn drop(&mut self) {
        let queued = self
            .limit
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .queue
            .remove(&self.id)
            .is_some();
        if !queued && !self.closing {
            // Evicted just as its client sent a request: it goes on
            // serving, so the accept that evicted it needs another.
            self.limit.eviction_missed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

    use super::*;

    #[tokio::test]
    async fn at_the_limit_the_oldest_parked_connection_makes_room() {
        let limit = ConnectionLimit::new(2);
        let shutdown = CancellationToken::new();
        let first = limit.acquire(&shutdown, "t").await.unwrap();
        let second = limit.acquire(&shutdown, "t").await.unwrap();
        let mut older = limit.park();
        let mut newer = limit.park();
        // The third waits for room: the older parked one is told to close,
        // and closes (its slot and permit go).
        let third = limit.acquire(&shutdown, "t");
        tokio::pin!(third);
        tokio::select! {
            biased;
            () = older.evicted() => {}
            _ = &mut third => panic!("room without a close"),
        }
        drop(older);
        drop(first);
        let _third = third.await.unwrap();
        // The newer one was left alone.
        assert!(
            tokio::time::timeout(std::time::Duration::ZERO, newer.evicted())
                .await
                .is_err()
        );
        drop((second, newer));
    }

    #[tokio::test]
    async fn an_evicted_connection_that_resumes_makes_the_accept_evict_another() {
        let limit = ConnectionLimit::new(1);
        let shutdown = CancellationToken::new();
        let permit = limit.acquire(&shutdown, "t").await.unwrap();
        let resumed = limit.park();
        let mut other = limit.park();
        let next = limit.acquire(&shutdown, "t");
        tokio::pin!(next);
        // The accept evicts `resumed`, which resumes without closing...
        assert!(
            tokio::time::timeout(std::time::Duration::ZERO, &mut next)
                .await
                .is_err()
        );
        drop(resumed);
        // ...so the accept evicts the other one.
        tokio::select! {
            () = other.evicted() => {}
            _ = &mut next => panic!("room without a close"),
        }
        drop((other, permit));
        assert!(next.await.is_some());
    }

    #[test]
    fn a_client_past_its_cap_is_refused_and_exempt_peers_are_not_counted() {
        let limit = Arc::new(ConnectionLimit::new(100));
        let mut config = Config::default();
        config.limits.max_connections_per_client = 2;
        config.request.trusted_proxies = vec![crate::cidr::Cidr::parse("10.0.0.1").unwrap()];
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let a = limit.admit(Some(client), &config).unwrap();
        let b = limit.admit(Some(client), &config).unwrap();
        assert!(limit.admit(Some(client), &config).is_err());
        // Another client is not affected.
        let other = limit.admit(Some("192.0.2.2".parse().unwrap()), &config);
        assert!(matches!(other, Ok(Some(_))));
        // One closes: room for one more.
        drop(a);
        let c = limit.admit(Some(client), &config).unwrap();
        assert!(limit.admit(Some(client), &config).is_err());
        // A trusted proxy and a unix-socket peer are not capped.
        for _ in 0..5 {
            assert!(matches!(
                limit.admit(Some("10.0.0.1".parse().unwrap()), &config),
                Ok(None)
            ));
            assert!(matches!(limit.admit(None, &config), Ok(None)));
        }
        drop((b, c, other));
        assert!(limit.clients.lock().unwrap().is_empty(), "no leftovers");
    }

    #[test]
    fn ipv6_clients_are_grouped_by_prefix_and_mapped_ipv4_counts_as_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64),
            client_key(ip("2001:db8:1:2::7"), 64)
        );
        assert_ne!(
            client_key(ip("2001:db8:1:3::1"), 64),
            client_key(ip("2001:db8:1:2::1"), 64)
        );
        assert_eq!(client_key(ip("2001:db8:1:2::1"), 48), ip("2001:db8:1::"));
        assert_eq!(client_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(client_key(ip("ffff::1"), 1), ip("8000::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(client_key(ip("192.0.2.1"), 64), ip("192.0.2.1"));

        // One /64 shares the cap; another /64 and the mapped address's
        // IPv4 twin are counted as such.
        let limit = Arc::new(ConnectionLimit::new(100));
        let mut config = Config::default();
        config.limits.max_connections_per_client = 1;
        let a = limit.admit(Some(ip("2001:db8::1")), &config).unwrap();
        assert!(limit.admit(Some(ip("2001:db8::2")), &config).is_err());
        let b = limit.admit(Some(ip("2001:db8:0:1::1")), &config).unwrap();
        let c = limit.admit(Some(ip("::ffff:192.0.2.1")), &config).unwrap();
        assert!(limit.admit(Some(ip("192.0.2.1")), &config).is_err());
        config.limits.client_ipv6_prefix = 128;
        let d = limit.admit(Some(ip("2001:db8::2")), &config).unwrap();
        drop((a, b, c, d));
        assert!(limit.clients.lock().unwrap().is_empty(), "no leftovers");
    }
}
