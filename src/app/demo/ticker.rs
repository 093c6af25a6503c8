//! The `ticker` demo: owns a server-sent events stream of the app's clock,
//! for trying push through the gateway (`curl -N`, a browser's
//! `EventSource`).
//!
//! `GET /ticker/http/?interval_ms=N` (default 1000, at least 1) answers
//! `text/event-stream` and sends one event per interval:
//! `id: <n>` and `data: <Unix time in ms>`. With `count=N` it ends after N
//! events (default: never). A client that reconnects with `Last-Event-ID`
//! (as `EventSource` does) goes on from the next id.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{MAX_DELAY, header, param, stopped, with_version};
use crate::app::{HandlerResult, HttpRequest, HttpResponse};

pub(super) async fn ticker(
    mut req: HttpRequest,
    mut res: HttpResponse,
    tag: Option<Bytes>,
) -> HandlerResult {
    let interval =
        Duration::from_millis(param(&req, "interval_ms", 1000u64)?.max(1)).min(MAX_DELAY);
    let count: u64 = param(&req, "count", u64::MAX)?;
    // Ids go on from the last one the client saw.
    let first = req
        .header("last-event-id")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok())
        .map_or(1, |last| last.saturating_add(1));
    let headers = with_version(
        vec![
            header("Content-Type", "text/event-stream"),
            header("Cache-Control", "no-cache"),
        ],
        &tag,
    );
    if res.head(200, headers).await.is_err() {
        return Ok(());
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: wait a whole interval for the first event.
    ticks.tick().await;
    for id in (first..).take(usize::try_from(count).unwrap_or(usize::MAX)) {
        tokio::select! {
            _ = ticks.tick() => {}
            e = req.cancelled() => return stopped(e),
        }
        let now = wall_clock_ms();
        if res
            .body(format!("id: {id}\ndata: {now}\n\n"))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    res.finish().await.ok();
    Ok(())
}

/// The app's clock in Unix milliseconds: the ticker's payload is the wall
/// clock by definition, not a deadline.
#[allow(clippy::disallowed_methods)]
fn wall_clock_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
