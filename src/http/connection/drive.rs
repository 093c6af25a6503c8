//! Driving one hyper connection (HTTP/1.1 or HTTP/2) until it is done:
//! graceful close on shutdown, abuse or idleness, and parking's end at a
//! request boundary.

#[allow(clippy::wildcard_imports)] // the connection's own rooms share its imports
use super::*;

/// How driving a hyper connection ended.
pub(super) enum Ended {
    /// It finished by itself (the client closed, no keep-alive, an error),
    /// or gracefully when told to.
    Done(Result<(), hyper::Error>),
    /// Idle long enough: it finished at a request boundary when asked to,
    /// and its socket can be taken back.
    Parked,
    /// The shutdown deadline passed.
    Cut,
    /// HTTP/1.1: hyper wrote a push stream's head and everything before
    /// it; the stream is in the connection's handoff slot.
    HandedOff,
}

/// A hyper server connection, HTTP/1.1 or HTTP/2.
pub(super) trait Serving {
    /// Serves; ready once the connection is done. HTTP/1.1 leaves the
    /// socket open, to be taken back.
    fn poll_serve(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>>;
    /// Finish what is in flight, then end (HTTP/1.1: no more keep-alive,
    /// at once if idle; HTTP/2: GOAWAY).
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Serving for http1::Connection<I, S>
where
    S: HttpService<Incoming, ResBody = ConnBody> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    fn poll_serve(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.get_mut().poll_without_shutdown(cx)
    }

    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Serving for http2::Connection<I, S, TokioExecutor>
where
    S: HttpService<Incoming, ResBody = ConnBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, ConnBody>,
{
    fn poll_serve(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.poll(cx)
    }

    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `connection` until it is done, closing it gracefully on
/// shutdown, on abuse
/// (most requests cancelled), or past the idle timeout; with `park_after`,
/// ends it for parking once idle that long; with `head_timeout`
/// (HTTP/1.1), closes it once it has waited that long for a request head
/// (from the end of the last request, the connection's start, or its
/// resumption after parking) — the check's cadence makes this at most
/// `park_after` late.
///
/// On shutdown, HTTP/2 gets GOAWAY at once (after the grace for a first
/// request, on a connection not used yet); requests in flight finish.
/// HTTP/1.1 (`park_after` set) keeps being served: each response made
/// from then on carries `Connection: close` (see [`RequestService`]), after
/// which hyper ends the connection; one with nothing in flight is closed
/// once it has sent nothing for the grace (the client may have sent a
/// request before it could learn that the gateway is closing).
///
/// The futures it waits on live as long as the connection, not one
/// request: a busy connection is polled on every wake, and registering
/// fresh ones per request showed in the load profile. The idle check is a
/// timer that looks again every `park_after` (or idle timeout), so a
/// request ending needs no wake of its own.
pub(super) async fn drive<C: Serving>(
    mut connection: Pin<&mut C>,
    w: &Watch<'_>,
    park_after: Option<Duration>,
    head_timeout: Option<Duration>,
) -> Ended {
    let idle_timeout = w.limits.idle_timeout;
    // Parked only after serving a request: a connection resumed because
    // bytes came serves them first.
    let served_before = w.activity.started.load(Ordering::Acquire);
    let parkable = || w.activity.started.load(Ordering::Acquire) > served_before;
    // The longest the idle check may sleep: a request that ends right after
    // it was armed is still parked on time.
    // A quarter of the send timeout: a client that takes nothing is cut
    // between 1 and 1.25 times it.
    let send_timeout = w.limits.send_timeout;
    let check_every = [park_after, head_timeout, Some(send_timeout / 4)]
        .into_iter()
        .flatten()
        .fold(idle_timeout, Duration::min);
    let idle_check_in = || match w.activity.idle_for() {
        Some(idle) => {
            let mut due = head_timeout.map_or(idle_timeout, |head| head.min(idle_timeout));
            if let Some(park) = park_after.filter(|_| parkable()) {
                due = due.min(park);
            }
            due.saturating_sub(idle).min(check_every)
        }
        None => check_every,
    };
    // HTTP/1.1 once shutting down: since when.
    let mut stopping: Option<Instant> = None;
    // When the idle check should look next, shutting down or not.
    let next_check = |stopping: Option<Instant>| match (stopping, w.activity.idle_for()) {
        (Some(at), Some(idle)) => idle_check_in().min(
            w.grace
                .saturating_sub(idle)
                .max(w.grace.saturating_sub(at.elapsed())),
        ),
        _ => idle_check_in(),
    };
    let shutdown = w.shutdown.cancelled();
    // Watched only once stopping: the deadline comes after the shutdown.
    let cut = w.cut.cancelled();
    let abused = w.activity.abused.notified();
    let stream_cut = w.activity.stream_cut.notified();
    let handoff = w.activity.handoff.ready.notified();
    let check = tokio::time::sleep(next_check(stopping));
    tokio::pin!(shutdown, cut, abused, stream_cut, handoff, check);
    let mut watchers = WatcherGate::default();
    // A push stream was handed over: hyper is served on until its bytes
    // are out.
    let mut handing_off = false;
    loop {
        // hyper's connection on every wake-up; the watchers only
        // when one of them woke the task (each poll of a `Notify` waiter
        // takes its lock, and the shutdown one is shared by every
        // connection).
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = connection.as_mut().poll_serve(cx) {
                return Poll::Ready(Event::Served(result));
            }
            if handing_off && !w.activity.unflushed.load(Ordering::Relaxed) {
                return Poll::Ready(Event::HandedOff);
            }
            let Some(waker) = watchers.due(cx) else {
                return Poll::Pending;
            };
            let mut cx = Context::from_waker(&waker);
            if stopping.is_none() && shutdown.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            if stopping.is_some() && cut.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Cut);
            }
            if abused.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Abused);
            }
            if stream_cut.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Cut);
            }
            if !handing_off && handoff.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Handoff);
            }
            if check.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Check);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Served(result) => return Ended::Done(result),
            Event::Cut => return Ended::Cut,
            Event::HandedOff => return Ended::HandedOff,
            Event::Handoff => handing_off = true,
            Event::Shutdown if park_after.is_some() => {
                // HTTP/1.1: served on, closed once idle for the grace.
                w.activity.closing();
                stopping = Some(Instant::now());
                check.as_mut().reset(Instant::now() + next_check(stopping));
                watchers.rearm();
            }
            Event::Shutdown => {
                if !w.activity.ever_busy() {
                    // Accepted just before the shutdown: the client may be
                    // sending its first request now, and closing would
                    // reset it. It gets a moment to, and an answer.
                    tokio::select! {
                        result = std::future::poll_fn(|cx| connection.as_mut().poll_serve(cx)) => {
                            return Ended::Done(result);
                        }
                        () = w.activity.first_request() => {}
                        () = tokio::time::sleep(w.grace) => {}
                        () = w.cut.cancelled() => return Ended::Cut,
                    }
                }
                // Keep-alive connections are told to close (HTTP/1.1 after
                // the response in flight, HTTP/2 with GOAWAY); requests in
                // flight finish, unless the shutdown deadline cuts them.
                return finish(connection, w).await;
            }
            Event::Abused => {
                // Rapid reset paced to dodge the HTTP/2 pending-reset limit.
                crate::metrics::limit_hit("premature_resets");
                log_rapid_reset(
                    w.peer,
                    "cancels most of its requests after they reached the app",
                );
                return finish(connection, w).await;
            }
            Event::Check => {
                if w.activity
                    .send_stall
                    .stalled_for()
                    .is_some_and(|stalled| stalled >= send_timeout)
                {
                    // Bytes for the client, and it took none of them.
                    crate::metrics::limit_hit("send_timeout");
                    return Ended::Cut;
                }
                // Only if nothing was in flight the whole time.
                match w.activity.idle_for() {
                    Some(idle) if idle >= idle_timeout => {
                        crate::metrics::limit_hit("idle_timeout");
                        return finish(connection, w).await;
                    }
                    // Waiting for a head too long: a slow client (slowloris),
                    // or an idle one not parked (`idle_release` is longer).
                    // Not `finish`: told to finish, hyper still waits for the
                    // head of a connection's first request. The caller
                    // closes the socket.
                    Some(idle) if head_timeout.is_some_and(|head| idle >= head) => {
                        crate::metrics::limit_hit("header_timeout");
                        return Ended::Done(Ok(()));
                    }
                    // Shutting down, and no request came in the grace:
                    // hyper ends an idle keep-alive connection at once
                    // (one still reading a head gets one more grace);
                    // the caller then looks for bytes that came after all.
                    Some(idle)
                        if stopping
                            .is_some_and(|at| idle >= w.grace && at.elapsed() >= w.grace) =>
                    {
                        return tokio::time::timeout(w.grace, finish(connection, w))
                            .await
                            .unwrap_or(Ended::Done(Ok(())));
                    }
                    Some(idle)
                        if park_after.is_some_and(|park| idle >= park)
                            && parkable()
                            && stopping.is_none() =>
                    {
                        return match finish(connection, w).await {
                            Ended::Done(Ok(())) => Ended::Parked,
                            other => other,
                        };
                    }
                    _ => {
                        check.as_mut().reset(Instant::now() + next_check(stopping));
                        // The reset timer registers on its next poll.
                        watchers.rearm();
                    }
                }
            }
        }
    }
}

/// What woke [`drive`]'s loop.
pub(super) enum Event {
    Served(Result<(), hyper::Error>),
    Shutdown,
    /// The shutdown deadline passed (watched once stopping).
    Cut,
    Abused,
    Check,
    /// A push stream was put in the handoff slot.
    Handoff,
    /// ...and hyper's bytes are out.
    HandedOff,
}

/// Lets a connection's watcher futures (shutdown, the cut, abuse, the idle check) be
/// polled only when one of them woke the task: they are polled with a
/// waker of their own, which records that it fired and wakes the task.
#[derive(Default)]
pub(super) struct WatcherGate {
    /// The watchers' waker, and the task waker it wraps.
    pub(super) waker: Option<(Arc<WatcherWaker>, std::task::Waker)>,
}

pub(super) struct WatcherWaker {
    pub(super) fired: std::sync::atomic::AtomicBool,
    pub(super) task: std::task::Waker,
}

impl std::task::Wake for WatcherWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl WatcherGate {
    /// The waker to poll the watchers with, if they are due: on the first
    /// poll, when the task's waker changed, or when one of them fired.
    pub(super) fn due(&mut self, cx: &Context<'_>) -> Option<std::task::Waker> {
        match &self.waker {
            Some((watcher, waker)) if watcher.task.will_wake(cx.waker()) => watcher
                .fired
                .swap(false, Ordering::AcqRel)
                .then(|| waker.clone()),
            _ => {
                let watcher = Arc::new(WatcherWaker {
                    fired: std::sync::atomic::AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                let waker = std::task::Waker::from(Arc::clone(&watcher));
                self.waker = Some((watcher, waker.clone()));
                Some(waker)
            }
        }
    }

    /// Polls the watchers on the next wake-up (a timer was reset).
    pub(super) fn rearm(&self) {
        if let Some((watcher, _)) = &self.waker {
            watcher.fired.store(true, Ordering::Release);
        }
    }
}

/// Tells `connection` to finish gracefully and drives it until it has,
/// or until the shutdown deadline cuts it.
pub(super) async fn finish<C: Serving>(mut connection: Pin<&mut C>, w: &Watch<'_>) -> Ended {
    connection.as_mut().graceful();
    tokio::select! {
        result = std::future::poll_fn(|cx| connection.as_mut().poll_serve(cx)) => Ended::Done(result),
        () = w.cut.cancelled() => Ended::Cut,
    }
}
