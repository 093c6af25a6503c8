//! One-off resolves, as `rpcgate resolve` asks them: one connection to one
//! locator, `count` resolves of a name, and how the endpoints they gave
//! split. Not the pool's path (that is [`super::RemoteLocator`], cached
//! and failing over).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::mux::{self, ChannelError, Invocation, MuxConfig};
use crate::proto::locator::{ResolveReply, ResolveRequest, method};
use crate::proto::msgpack::MsgpackError;
use crate::proto::{Message, MessageError, PrimitiveEvent, Protocol, RemoteError};

/// Why a one-off resolve failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The locator could not be reached.
    #[error("cannot reach the locator at {addr}: {source}")]
    Connect {
        /// The locator asked.
        addr: SocketAddr,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The connection could not be set up.
    #[error("{0}")]
    Setup(#[source] std::io::Error),
    /// The resolve channel could not be opened.
    #[error("{0}")]
    Open(#[source] ChannelError),
    /// The connection failed while waiting for the reply.
    #[error("locator connection failed: {0}")]
    Connection(#[source] ChannelError),
    /// The channel ended without a reply.
    #[error("the locator sent no reply")]
    NoReply,
    /// The reply was not a primitive `value` or `error`.
    #[error("{0}")]
    Reply(#[source] MessageError),
    /// The reply's args could not be decoded.
    #[error("{0}")]
    Decode(#[source] MsgpackError),
    /// The locator answered with an error (an unknown name among them).
    #[error("`{name}`: {source}")]
    Remote {
        /// The name resolved.
        name: String,
        /// The locator's error.
        #[source]
        source: RemoteError,
    },
}

/// Resolves `name` at the locator `addr` `count` times (with `seed` as
/// `X-Cocaine-Sticky` would give it, for a consistent routing-group pick)
/// and counts each distinct answer: its endpoints as `host:port`, joined
/// with `,`, mapped to how many resolves gave it.
pub async fn resolve_split(
    addr: SocketAddr,
    name: &str,
    seed: Option<String>,
    count: u32,
) -> Result<BTreeMap<String, u32>, ResolveError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ResolveError::Connect { addr, source })?;
    let (handle, connection) =
        mux::from_tcp(stream, MuxConfig::default()).map_err(ResolveError::Setup)?;
    tokio::spawn(connection.run());
    let request = ResolveRequest {
        name: name.to_owned(),
        seed: seed.map(Into::into),
    };
    let mut split: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..count {
        let invocation = Invocation::new(
            Message::new(method::RESOLVE, request.to_args()),
            Protocol::Terminal,
            Protocol::Primitive,
        );
        let mut channel = handle.open(invocation).await.map_err(ResolveError::Open)?;
        let frame = match channel.receiver.recv().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(ResolveError::Connection(e)),
            None => return Err(ResolveError::NoReply),
        };
        let reply = match frame.primitive_event().map_err(ResolveError::Reply)? {
            PrimitiveEvent::Value(args) => {
                ResolveReply::decode_args(&args).map_err(ResolveError::Decode)?
            }
            PrimitiveEvent::Error(source) => {
                return Err(ResolveError::Remote {
                    name: name.to_owned(),
                    source,
                });
            }
        };
        let endpoints: Vec<_> = reply
            .endpoints
            .iter()
            .map(|e| format!("{}:{}", e.host, e.port))
            .collect();
        *split.entry(endpoints.join(",")).or_default() += 1;
    }
    Ok(split)
}
