//! The HTTP helper: owns the app side of PROTOCOL.md §5. It decodes the
//! request 5-tuple from the first chunk (body included), hands any further
//! chunks to the handler as a body stream, and writes the meta
//! `[code, headers]`, raw body chunks and `close`.
//!
//! A streamed upload (a gateway service with `stream_request_body`; see
//! `rpcgate::dispatch::upload`) comes as a 5-tuple with an empty body and
//! the `enqueue` header `request_body = "stream"`, then the body as
//! `write` chunks, ended by an empty chunk. [`HttpRequest::next_body_chunk`]
//! returns those chunks and then `None` at the empty one;
//! [`HttpRequest::is_body_streamed`] tells the two kinds apart.

use std::borrow::Cow;

use bytes::Bytes;

use super::handler::{Request, RequestError, Response};
use crate::proto::http::{EncodedHeaders, HeaderPair, LazyHttpRequest, ResponseMeta};
use crate::proto::http::{REQUEST_BODY, REQUEST_BODY_STREAM};
use crate::proto::{ErrorCode, Headers, Message, RemoteError};
use crate::session::ReplyError;

/// An HTTP request as a Cocaine proxy packed it.
#[derive(Debug)]
pub struct HttpRequest {
    /// The method, e.g. `GET`.
    pub method: Bytes,
    /// Path and query as the proxy forwarded them.
    pub uri: Bytes,
    /// `1.1` or `1.0` (or `HTTP/1.1` from some proxies).
    pub version: Bytes,
    /// Every header line, still encoded (see [`HttpRequest::headers`]).
    headers: EncodedHeaders,
    /// The body carried in the first chunk.
    pub body: Bytes,
    /// The `enqueue` frame's headers (trace ids, timeout, ...).
    pub frame_headers: Headers,
    /// The body follows as chunks ended by an empty one.
    streamed: bool,
    /// The streamed body's end was read.
    body_ended: bool,
    rest: Request,
}

impl HttpRequest {
    /// Reads the 5-tuple from the first chunk of `request`.
    pub async fn read(mut request: Request) -> Result<Self, RequestError> {
        let first = match request.next_chunk().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(e),
            None => {
                return Err(RequestError::Malformed(
                    "no request chunk before close".into(),
                ));
            }
        };
        // Header lines are checked here and read when the handler looks.
        let tuple = LazyHttpRequest::decode(&first)
            .map_err(|e| RequestError::Malformed(format!("request 5-tuple: {e}")))?;
        let frame_headers = std::mem::take(&mut request.headers);
        let streamed = frame_headers
            .get(REQUEST_BODY)
            .is_some_and(|v| &v[..] == REQUEST_BODY_STREAM);
        Ok(Self {
            method: tuple.method,
            uri: tuple.uri,
            version: tuple.version,
            headers: tuple.headers,
            body: tuple.body,
            frame_headers,
            streamed,
            body_ended: false,
            rest: request,
        })
    }

    /// Whether the body is streamed: it follows the 5-tuple (whose body
    /// field is then empty) as chunks, read with
    /// [`HttpRequest::next_body_chunk`] until it returns `None`. Otherwise
    /// [`HttpRequest::body`] is the whole body.
    pub fn is_body_streamed(&self) -> bool {
        self.streamed
    }

    /// Every header line in received order, repeated names included.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.iter()
    }

    /// The next body chunk after the 5-tuple; `None` at the end.
    ///
    /// For a streamed body ([`HttpRequest::is_body_streamed`]), the end is
    /// the empty chunk that marks it (or the client's `close`, if it comes
    /// first); the chunks read are the whole body, in order. A gateway
    /// that stops forwarding the body (the client went away, passed a
    /// limit or stalled, or the reply ended first) cancels the channel:
    /// that reads as `Some(Err(RequestError::Cancelled(_)))`. After the
    /// end, further calls read on as for a body that is not streamed.
    ///
    /// Otherwise every further chunk the client writes is returned as it
    /// comes, and `None` comes with its `close`. A gateway sends none (the
    /// body was in the 5-tuple) and closes only once the reply has ended,
    /// so a handler must not wait for the end of a body that is not
    /// streamed before it answers.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn next_body_chunk(&mut self) -> Option<Result<Bytes, RequestError>> {
        if self.streamed && !self.body_ended {
            return match self.rest.next_chunk().await {
                Some(Ok(chunk)) if chunk.is_empty() => {
                    self.body_ended = true;
                    None
                }
                None => {
                    self.body_ended = true;
                    None
                }
                other => other,
            };
        }
        self.rest.next_chunk().await
    }

    /// Waits until the client cancels or disconnects (see
    /// [`Request::cancelled`]).
    pub async fn cancelled(&mut self) -> RequestError {
        self.rest.cancelled().await
    }

    /// The first header named `name`, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The path, without the query.
    pub fn path(&self) -> Cow<'_, str> {
        let uri = String::from_utf8_lossy(&self.uri);
        match uri {
            Cow::Borrowed(s) => Cow::Borrowed(s.split('?').next().unwrap_or("")),
            Cow::Owned(s) => Cow::Owned(s.split('?').next().unwrap_or("").to_owned()),
        }
    }

    /// The query parameters, percent-decoded, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        let uri = String::from_utf8_lossy(&self.uri);
        let Some((_, query)) = uri.split_once('?') else {
            return Vec::new();
        };
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// The first query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Writes an HTTP response: the meta first, then body chunks, then `close`.
#[derive(Debug)]
pub struct HttpResponse {
    response: Response,
    head_sent: bool,
}

impl HttpResponse {
    pub(crate) fn new(response: Response) -> Self {
        Self {
            response,
            head_sent: false,
        }
    }

    /// The channel's reply side and whether the head went.
    pub(super) fn into_parts(self) -> (Response, bool) {
        (self.response, self.head_sent)
    }

    /// Sends the meta `[status, headers]`. Only once, before any body.
    pub async fn head(&mut self, status: u16, headers: Vec<HeaderPair>) -> Result<(), ReplyError> {
        if self.head_sent {
            return Err(ReplyError::NotAllowed {
                ty: 0,
                state: crate::proto::Protocol::Streaming,
            });
        }
        let meta = ResponseMeta { status, headers };
        self.response.write(meta.to_bytes()).await?;
        self.head_sent = true;
        Ok(())
    }

    /// Sends a body chunk (raw bytes), after the head.
    pub async fn body(&mut self, chunk: impl Into<Bytes>) -> Result<(), ReplyError> {
        if !self.head_sent {
            self.head(200, Vec::new()).await?;
        }
        self.response.write(chunk).await
    }

    /// Ends the response with `close` (sending a bare 200 head if none was sent).
    pub async fn finish(mut self) -> Result<(), ReplyError> {
        if !self.head_sent {
            self.head(200, Vec::new()).await?;
        }
        self.response.close().await
    }

    /// A whole response: head, one body chunk (if not empty), close.
    pub async fn respond(
        mut self,
        status: u16,
        headers: Vec<HeaderPair>,
        body: impl Into<Bytes>,
    ) -> Result<(), ReplyError> {
        if self.head_sent {
            // Refused: the head went already (`head` says so).
            return self.head(status, headers).await;
        }
        let meta = Message::write(ResponseMeta { status, headers }.to_bytes());
        self.head_sent = true;
        // Head, body and `close` in one hand-off to the session.
        let body = body.into();
        if body.is_empty() {
            self.response.end_with([meta, Message::close()]).await
        } else {
            self.response
                .end_with([meta, Message::write(body), Message::close()])
                .await
        }
    }

    /// Ends the channel with an `error` instead of a response.
    pub async fn error(self, error: RemoteError) -> Result<(), ReplyError> {
        self.response.error(error).await
    }
}

/// Turns a failed request read into the error the client gets.
pub(crate) fn bad_request(e: &RequestError) -> RemoteError {
    RemoteError::new(ErrorCode::INVALID_ARGUMENT, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%41%4a"), "AJ");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
