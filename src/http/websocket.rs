//! The HTTP side of a WebSocket (RFC 6455): the 101's handshake headers,
//! and carrying the accepted session from the response to the connection,
//! which runs it on the socket once hyper has written the 101. The
//! session itself (messages between the client and the app's channel) is
//! [`crate::dispatch::websocket`]'s.

use std::sync::{Arc, Mutex, PoisonError};

use hyper::header::{self, HeaderMap, HeaderValue};
use tokio_tungstenite::tungstenite;

use crate::dispatch::websocket::Session;

/// The headers the gateway sets on a 101 itself: the app's versions of
/// these are dropped.
pub(crate) fn is_own_header(name: &header::HeaderName) -> bool {
    name == header::SEC_WEBSOCKET_ACCEPT || name == header::CONTENT_LENGTH
}

/// Sets the handshake headers of the 101 answering `key`.
pub(crate) fn accept(headers: &mut HeaderMap, key: &HeaderValue) {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
}

/// A session waiting for its 101 to be written: the response carries it
/// (in its extensions) to the connection, which runs it on the socket.
#[derive(Debug, Clone)]
pub(crate) struct Pending(Arc<Mutex<Option<Session>>>);

impl Pending {
    pub(crate) fn new(session: Session) -> Self {
        Self(Arc::new(Mutex::new(Some(session))))
    }

    /// The session, once.
    pub(crate) fn take(&self) -> Option<Session> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        let mut headers = HeaderMap::new();
        accept(
            &mut headers,
            &HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        // RFC 6455 §1.3's example.
        assert_eq!(
            headers[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(headers[header::UPGRADE], "websocket");
    }
}
