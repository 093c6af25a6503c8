//! The `chat` demo: owns WebSocket chat rooms, for trying WebSocket through
//! the gateway (`websocat`, a browser).
//!
//! - `ws://HOST/chat/http/rooms/NAME`: joins room `NAME` (created on first
//!   use, gone when empty). Every message a member sends, text or binary,
//!   goes to every member, the sender included. Each member has a queue of
//!   [`MEMBER_QUEUE`] messages; a member whose queue is full is dropped
//!   from the room (its WebSocket ends with an error, close 1011), never
//!   waited for.
//! - `GET /chat/http/`: a small self-contained page that joins a room over
//!   WebSocket and shows the `ticker` demo's clock over `EventSource`, so
//!   two browser tabs show both kinds of push.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{header, with_version};
use crate::app::{HandlerResult, WebSocketMessage, WebSocketRequest};
use crate::proto::{ErrorCode, RemoteError};

/// Messages a member may have waiting before it is dropped.
pub const MEMBER_QUEUE: usize = 64;

/// The most members in one room.
const MAX_MEMBERS: usize = 1024;

/// The longest room name, in bytes.
const MAX_ROOM_NAME: usize = 64;

/// The rooms of one `chat` app.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
}

#[derive(Debug, Default)]
struct Room {
    next_id: u64,
    members: HashMap<u64, mpsc::Sender<WebSocketMessage>>,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a member to `room`: its id and queue; `None` if the room is
    /// full.
    fn join(&self, room: &str) -> Option<(u64, mpsc::Receiver<WebSocketMessage>)> {
        let mut rooms = self.lock();
        let room = rooms.entry(room.to_owned()).or_default();
        if room.members.len() >= MAX_MEMBERS {
            return None;
        }
        let (tx, rx) = mpsc::channel(MEMBER_QUEUE);
        let id = room.next_id;
        room.next_id += 1;
        room.members.insert(id, tx);
        Some((id, rx))
    }

    fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.lock();
        if let Some(members) = rooms.get_mut(room) {
            members.members.remove(&id);
            if members.members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Queues `message` for every member of `room`; members whose queue
    /// is full are dropped (their queue ends).
    fn broadcast(&self, room: &str, message: &WebSocketMessage) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(room) else {
            return;
        };
        room.members
            .retain(|_, member| member.try_send(message.clone()).is_ok());
    }
}

/// Answers one request to the `chat` app.
pub(super) async fn chat(
    req: WebSocketRequest,
    rooms: Arc<Rooms>,
    tag: Option<Bytes>,
) -> HandlerResult {
    let path = req.path().into_owned();
    let room = path
        .strip_prefix("/rooms/")
        .filter(|r| !r.contains('/'))
        .map(decode_room)
        .filter(|r| !r.is_empty() && r.len() <= MAX_ROOM_NAME && !r.contains('/'));
    match (room, req.is_upgrade()) {
        (Some(room), true) => member(req, &rooms, &room).await,
        (Some(_), false) => {
            let headers = with_version(vec![header("Upgrade", "websocket")], &tag);
            req.respond(426, headers, "a chat room speaks WebSocket\n")
                .await
                .ok();
            Ok(())
        }
        (None, false) if path.is_empty() || path == "/" => {
            let headers = with_version(
                vec![
                    header("Content-Type", "text/html; charset=utf-8"),
                    header("Content-Length", PAGE.len().to_string()),
                ],
                &tag,
            );
            req.respond(200, headers, Bytes::from_static(PAGE.as_bytes()))
                .await
                .ok();
            Ok(())
        }
        (None, _) => {
            req.respond(
                404,
                with_version(Vec::new(), &tag),
                "no such page; rooms are at /rooms/NAME\n",
            )
            .await
            .ok();
            Ok(())
        }
    }
}

/// One member of `room`, from its upgrade to its end.
async fn member(req: WebSocketRequest, rooms: &Rooms, room: &str) -> HandlerResult {
    let Some((id, mut inbox)) = rooms.join(room) else {
        req.respond(503, Vec::new(), "the room is full\n")
            .await
            .ok();
        return Ok(());
    };
    let Ok(mut ws) = req.accept().await else {
        rooms.leave(room, id);
        return Ok(());
    };
    let dropped = loop {
        tokio::select! {
            message = ws.recv() => match message {
                Some(Ok(message)) => rooms.broadcast(room, &message),
                // Closed by the client, or the stream was cancelled.
                Some(Err(_)) | None => break false,
            },
            message = inbox.recv() => match message {
                Some(message) => {
                    if ws.send(message).await.is_err() {
                        break false;
                    }
                }
                // Dropped from the room: it fell too far behind.
                None => break true,
            },
        }
    };
    rooms.leave(room, id);
    if dropped {
        let error = RemoteError::new(
            ErrorCode::new(crate::proto::category::WORKER_USER, 1),
            "dropped from the room: too slow to keep up",
        );
        ws.fail(error).await.ok();
    } else {
        ws.close().await.ok();
    }
    Ok(())
}

/// A room name as the page typed it: the path segment percent-decoded
/// (`my%20room` is `my room`); bytes that are not UTF-8 become U+FFFD.
fn decode_room(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The demo page: a room over WebSocket and the ticker over EventSource,
/// with a connection state, reconnects with backoff, an outbox for what
/// is typed while disconnected, and sender names and times.
const PAGE: &str = include_str!("chat.html");

#[cfg(test)]
mod tests {
    use super::decode_room;

    #[test]
    fn room_names_are_decoded() {
        assert_eq!(decode_room("my%20room"), "my room");
        assert_eq!(decode_room("caf%C3%A9"), "café");
        assert_eq!(decode_room("100%"), "100%");
        assert_eq!(decode_room("a+b%2"), "a+b%2");
    }
}
