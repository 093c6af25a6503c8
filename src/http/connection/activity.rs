//! What a connection knows of its requests: activity and idleness,
//! requests in flight and cancelled, parking, and the open-connection
//! count.

#[allow(clippy::wildcard_imports)] // the connection's own rooms share its imports
use super::*;

/// When a connection last had a request in flight.
#[derive(Debug)]
pub(super) struct Activity {
    pub(super) in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened, or resumed
    /// after parking).
    pub(super) since: std::sync::Mutex<Instant>,
    /// Requests started (the first one wakes `first`), and those the client
    /// cancelled before their response head (see
    /// `limits.max_premature_resets`).
    pub(super) started: AtomicUsize,
    pub(super) first: tokio::sync::Notify,
    pub(super) premature: AtomicUsize,
    pub(super) max_premature: usize,
    /// Set (before `abused` is notified) once cancellations passed the
    /// limit: the connection's later requests are refused.
    pub(super) abusive: std::sync::atomic::AtomicBool,
    /// Wakes the connection when cancellations pass the limit.
    pub(super) abused: tokio::sync::Notify,
    /// Set once the connection knows the gateway is stopping: its HTTP/1
    /// responses carry `Connection: close` from then on. A flag of its own,
    /// not the shutdown token, which every connection shares (and whose
    /// reads take its lock).
    pub(super) closing: std::sync::atomic::AtomicBool,
    /// Notified when a push stream on this HTTP/1.1 connection cut its
    /// client for reading too slowly: the connection is closed at once.
    pub(super) stream_cut: Arc<tokio::sync::Notify>,
    /// Since when writes to the client have waited (`limits.send_timeout_ms`).
    pub(super) send_stall: Arc<SendStall>,
    /// A WebSocket accepted on this HTTP/1.1 connection, to run once its
    /// 101 is written.
    pub(super) upgrade: std::sync::Mutex<Option<super::super::websocket::Pending>>,
    /// HTTP/1.1: whether hyper may hold bytes not yet written (see
    /// [`SendWatch`]).
    pub(super) unflushed: Arc<AtomicBool>,
    /// HTTP/1.1: a push stream handed over by hyper, to be served without
    /// it (see [`push_h1`]).
    pub(super) handoff: Arc<push_h1::HandoffSlot<Busy>>,
}

impl Activity {
    pub(super) fn new(max_premature: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            since: std::sync::Mutex::new(Instant::now()),
            started: AtomicUsize::new(0),
            first: tokio::sync::Notify::new(),
            premature: AtomicUsize::new(0),
            max_premature,
            abusive: std::sync::atomic::AtomicBool::new(false),
            abused: tokio::sync::Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            stream_cut: Arc::new(tokio::sync::Notify::new()),
            send_stall: Arc::default(),
            upgrade: std::sync::Mutex::new(None),
            unflushed: Arc::new(AtomicBool::new(false)),
            handoff: Arc::default(),
        }
    }

    /// Keeps `pending` for the connection to run after its 101.
    pub(super) fn upgrade(&self, pending: super::super::websocket::Pending) {
        *self
            .upgrade
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pending);
    }

    /// The WebSocket accepted on this connection, once.
    pub(super) fn take_upgrade(&self) -> Option<crate::dispatch::websocket::Session> {
        self.upgrade
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?
            .take()
    }

    /// The gateway is stopping (see [`Self::is_closing`]).
    pub(super) fn closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Whether responses should say `Connection: close`.
    pub(super) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Whether its client cancelled too many requests (see [`Unanswered`]).
    pub(super) fn is_abusive(&self) -> bool {
        self.abusive.load(Ordering::Acquire)
    }

    pub(super) fn ever_busy(&self) -> bool {
        self.started.load(Ordering::Acquire) > 0
    }

    /// Returns once a request has started on the connection.
    pub(super) async fn first_request(&self) {
        let first = self.first.notified();
        tokio::pin!(first);
        first.as_mut().enable();
        if !self.ever_busy() {
            first.await;
        }
    }

    /// The wait for the next request starts now (a request ended, or a
    /// parked connection resumed).
    pub(super) fn waiting_since_now(&self) {
        *self
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    /// How long nothing has been in flight; `None` while something is.
    pub(super) fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(since.elapsed())
    }
}

/// A request in flight on a connection (and in the gateway), until dropped.
pub(super) struct Busy(pub(super) Arc<Activity>, Arc<AtomicUsize>);

impl Busy {
    pub(super) fn new(activity: &Arc<Activity>, gateway: &Arc<AtomicUsize>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        if activity.started.fetch_add(1, Ordering::AcqRel) == 0 {
            activity.first.notify_waiters();
        }
        gateway.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity), Arc::clone(gateway))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.waiting_since_now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.1.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request whose response head is not made yet: dropped so, the client
/// cancelled it (an HTTP/2 reset, or it went away), which counts toward
/// `limits.max_premature_resets`.
pub(super) struct Unanswered(pub(super) Option<Arc<Activity>>);

impl Unanswered {
    pub(super) fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(activity) = self.0.take() else {
            return;
        };
        let premature = activity.premature.fetch_add(1, Ordering::AcqRel) + 1;
        if premature > activity.max_premature
            && premature * 2 > activity.started.load(Ordering::Acquire)
        {
            activity.abusive.store(true, Ordering::Release);
            activity.abused.notify_one();
        }
    }
}

/// Counts a parked connection in [`crate::metrics::HTTP_PARKED`] until
/// dropped.
pub(super) struct ParkedGauge;

impl ParkedGauge {
    pub(super) fn new() -> Self {
        metrics::gauge!(crate::metrics::HTTP_PARKED).increment(1.0);
        Self
    }
}

impl Drop for ParkedGauge {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::HTTP_PARKED).decrement(1.0);
    }
}

/// Counts an open client connection until dropped.
pub(super) struct Open(pub(super) Arc<Handler>);

impl Open {
    pub(super) fn new(handler: Arc<Handler>) -> Self {
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS).increment(1.0);
        handler.open_connections.fetch_add(1, Ordering::AcqRel);
        Self(handler)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS).decrement(1.0);
        self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}
