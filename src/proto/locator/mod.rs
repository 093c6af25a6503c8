//! Locator messages: owns the method ids, argument shapes and reply shapes of
//! PROTOCOL.md §3.2, both ways (the client encodes requests and decodes
//! replies; the server does the opposite).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{Args, RawArgs};
use super::graph::Graph;
use super::msgpack::{self, MsgpackError, Reader};

/// The locator's protocol version (`protocol<locator_tag>::version`).
pub const PROTOCOL_VERSION: u64 = 3;

/// The port the runtime pins the locator to.
pub const DEFAULT_PORT: u16 = 10053;

/// Locator method ids.
pub mod method {
    /// `resolve [name, seed?]` → primitive `[endpoints, version, graph]`.
    pub const RESOLVE: u64 = 0;
    /// `connect [uuid]` → streaming (locator-to-locator only).
    pub const CONNECT: u64 = 1;
    /// `refresh [[group...]]` → primitive `[]`.
    pub const REFRESH: u64 = 2;
    /// `cluster []` → primitive `[{uuid: [ip, port]}]`.
    pub const CLUSTER: u64 = 3;
    /// `publish [name, endpoints, [version, graph]?]` → primitive `[]`, then `discard`.
    pub const PUBLISH: u64 = 4;
    /// `routing [router_id]` → streaming full dumps, then `discard`.
    pub const ROUTING: u64 = 5;
    /// `uuid []` → primitive `[uuid]`.
    pub const UUID: u64 = 6;
}

/// A service endpoint: an address string and a port (§3.2). Addresses are
/// strings on the wire so that dynamic languages can use them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// An IPv4 or IPv6 address, as text.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl Endpoint {
    /// The socket address, when `host` is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    fn encode(&self, buf: &mut impl BufMut) {
        msgpack::put_array_len(buf, 2);
        msgpack::put_str(buf, self.host.as_bytes());
        msgpack::put_uint(buf, u64::from(self.port));
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, MsgpackError> {
        expect_min_len(r.read_array_len()?, 2, "[host, port]")?;
        Ok(Self {
            host: r.read_string("endpoint host")?,
            port: r.read_u16()?,
        })
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

fn expect_min_len(len: usize, min: usize, expected: &'static str) -> Result<usize, MsgpackError> {
    if len < min {
        return Err(MsgpackError::Unexpected {
            expected,
            found: 0x90 | len.min(15) as u8,
        });
    }
    Ok(len)
}

fn encode_endpoints(buf: &mut impl BufMut, endpoints: &[Endpoint]) {
    msgpack::put_array_len(buf, endpoints.len());
    for e in endpoints {
        e.encode(buf);
    }
}

fn decode_endpoints(r: &mut Reader<'_>) -> Result<Vec<Endpoint>, MsgpackError> {
    let len = r.read_array_len()?;
    (0..len).map(|_| Endpoint::decode(r)).collect()
}

/// Builds an args array whose element count is fixed by the caller.
fn args(len: usize, write: impl FnOnce(&mut BytesMut)) -> Args {
    let mut buf = BytesMut::new();
    msgpack::put_array_len(&mut buf, len);
    write(&mut buf);
    match RawArgs::new(buf.freeze()) {
        Ok(raw) => Args::Raw(raw),
        // Every caller below writes exactly `len` values, so this branch is
        // unreachable; it degrades to `[]` rather than panicking.
        Err(_) => Args::Empty,
    }
}

/// Reads an args array of at least `min` elements and returns its length.
fn open_args<'a>(
    bytes: &'a Bytes,
    min: usize,
    expected: &'static str,
) -> Result<(Reader<'a>, usize), MsgpackError> {
    let mut r = Reader::new(bytes);
    let len = expect_min_len(r.read_array_len()?, min, expected)?;
    Ok((r, len))
}

// === resolve ===

/// `resolve [name]` or `resolve [name, seed]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRequest {
    /// The service or routing-group name.
    pub name: String,
    /// A seed for a consistent routing-group pick; `None` picks at random.
    pub seed: Option<Bytes>,
}

impl ResolveRequest {
    /// The args array.
    pub fn to_args(&self) -> Args {
        let len = if self.seed.is_some() { 2 } else { 1 };
        args(len, |b| {
            msgpack::put_str(b, self.name.as_bytes());
            if let Some(seed) = &self.seed {
                msgpack::put_str(b, seed);
            }
        })
    }

    /// Reads the args array. An empty seed counts as no seed (§3.3).
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let (mut r, len) = open_args(bytes, 1, "[name, seed?]")?;
        let name = r.read_string("service name")?;
        let seed = if len >= 2 && !r.is_nil() {
            Some(r.read_bytes()?).filter(|s| !s.is_empty())
        } else {
            None
        };
        Ok(Self { name, seed })
    }
}

/// The `value` of a successful resolve: `[endpoints, version, graph]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveReply {
    /// Where the service listens, in the order clients should try.
    pub endpoints: Vec<Endpoint>,
    /// The service's protocol version (apps: 1).
    pub version: u64,
    /// The service's protocol graph.
    pub graph: Graph,
}

impl ResolveReply {
    /// The `value` args array.
    pub fn to_args(&self) -> Args {
        args(3, |b| {
            encode_endpoints(b, &self.endpoints);
            msgpack::put_uint(b, self.version);
            self.graph.encode(b);
        })
    }

    /// Reads the `value` args array.
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let (mut r, _) = open_args(bytes, 3, "[endpoints, version, graph]")?;
        Ok(Self {
            endpoints: decode_endpoints(&mut r)?,
            version: r.read_uint()?,
            graph: Graph::decode(&mut r)?,
        })
    }
}

// === publish ===

/// `publish [name, endpoints, [version, graph]?]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The name to publish under.
    pub name: String,
    /// Where the service listens.
    pub endpoints: Vec<Endpoint>,
    /// The protocol version and graph; a graph with version 0 is refused
    /// with `missing_version_error`.
    pub meta: Option<(u64, Graph)>,
}

impl PublishRequest {
    /// The args array.
    pub fn to_args(&self) -> Args {
        let len = if self.meta.is_some() { 3 } else { 2 };
        args(len, |b| {
            msgpack::put_str(b, self.name.as_bytes());
            encode_endpoints(b, &self.endpoints);
            if let Some((version, graph)) = &self.meta {
                msgpack::put_array_len(b, 2);
                msgpack::put_uint(b, *version);
                graph.encode(b);
            }
        })
    }

    /// Reads the args array.
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let (mut r, len) = open_args(bytes, 2, "[name, endpoints, [version, graph]?]")?;
        let name = r.read_string("service name")?;
        let endpoints = decode_endpoints(&mut r)?;
        let meta = if len >= 3 && !r.is_nil() {
            expect_min_len(r.read_array_len()?, 2, "[version, graph]")?;
            Some((r.read_uint()?, Graph::decode(&mut r)?))
        } else {
            None
        };
        Ok(Self {
            name,
            endpoints,
            meta,
        })
    }
}

// === routing ===

/// `routing [router_id]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingRequest {
    /// Any unique string; subscribing again with it replaces the old stream.
    pub router_id: Bytes,
}

impl RoutingRequest {
    /// The args array.
    pub fn to_args(&self) -> Args {
        args(1, |b| msgpack::put_str(b, &self.router_id))
    }

    /// Reads the args array.
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let (mut r, _) = open_args(bytes, 1, "[router_id]")?;
        Ok(Self {
            router_id: r.read_bytes()?,
        })
    }
}

/// One point of a routing-group continuum: `[point, member]`.
pub type RingPoint = (u32, String);

/// A `routing` update: the full dump `[{group: [[point, member]...]}]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutingUpdate {
    /// Every group's sorted continuum.
    pub groups: BTreeMap<String, Vec<RingPoint>>,
}

impl RoutingUpdate {
    /// The `write` args array.
    pub fn to_args(&self) -> Args {
        args(1, |b| {
            msgpack::put_map_len(b, self.groups.len());
            for (group, ring) in &self.groups {
                msgpack::put_str(b, group.as_bytes());
                msgpack::put_array_len(b, ring.len());
                for (point, member) in ring {
                    msgpack::put_array_len(b, 2);
                    msgpack::put_uint(b, u64::from(*point));
                    msgpack::put_str(b, member.as_bytes());
                }
            }
        })
    }

    /// Reads the `write` args array. Points may come in any integer width
    /// (the Rust framework typed them as u64).
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let (mut r, _) = open_args(bytes, 1, "[{group: ring}]")?;
        let len = r.read_map_len()?;
        let mut groups = BTreeMap::new();
        for _ in 0..len {
            let group = r.read_string("group name")?;
            let points = r.read_array_len()?;
            let mut ring = Vec::with_capacity(points);
            for _ in 0..points {
                expect_min_len(r.read_array_len()?, 2, "[point, member]")?;
                ring.push((r.read_u32()?, r.read_string("member name")?));
            }
            groups.insert(group, ring);
        }
        Ok(Self { groups })
    }
}

// === refresh, cluster, uuid, connect ===

/// `refresh [[group...]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRequest {
    /// The routing groups to re-read.
    pub groups: Vec<String>,
}

impl RefreshRequest {
    /// The args array.
    pub fn to_args(&self) -> Args {
        args(1, |b| {
            msgpack::put_array_len(b, self.groups.len());
            for g in &self.groups {
                msgpack::put_str(b, g.as_bytes());
            }
        })
    }

    /// Reads the args array.
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let (mut r, _) = open_args(bytes, 1, "[[group...]]")?;
        let len = r.read_array_len()?;
        let groups = (0..len)
            .map(|_| r.read_string("group name"))
            .collect::<Result<_, _>>()?;
        Ok(Self { groups })
    }
}

/// The `value` of `cluster`: `[{uuid: [ip, port]}]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterReply {
    /// Connected remote nodes by uuid; empty when there is no cluster.
    pub nodes: BTreeMap<String, Endpoint>,
}

impl ClusterReply {
    /// The `value` args array.
    pub fn to_args(&self) -> Args {
        args(1, |b| {
            msgpack::put_map_len(b, self.nodes.len());
            for (uuid, endpoint) in &self.nodes {
                msgpack::put_str(b, uuid.as_bytes());
                endpoint.encode(b);
            }
        })
    }

    /// Reads the `value` args array.
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let (mut r, _) = open_args(bytes, 1, "[{uuid: endpoint}]")?;
        let len = r.read_map_len()?;
        let mut nodes = BTreeMap::new();
        for _ in 0..len {
            nodes.insert(r.read_string("node uuid")?, Endpoint::decode(&mut r)?);
        }
        Ok(Self { nodes })
    }
}

/// A one-string args array: the `uuid` reply `[uuid]` and the `connect`
/// request `[node_uuid]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UuidArgs {
    /// The uuid.
    pub uuid: String,
}

impl UuidArgs {
    /// The args array.
    pub fn to_args(&self) -> Args {
        args(1, |b| msgpack::put_str(b, self.uuid.as_bytes()))
    }

    /// Reads the args array.
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let (mut r, _) = open_args(bytes, 1, "[uuid]")?;
        Ok(Self {
            uuid: r.read_string("uuid")?,
        })
    }
}

/// The `write` of a `connect` stream: `[uuid, {name: [endpoints, version, graph]}]`.
/// Locator-to-locator only; rpcgate never sends `connect` but can read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectUpdate {
    /// The announcing node.
    pub uuid: String,
    /// Its services.
    pub services: BTreeMap<String, ResolveReply>,
}

impl ConnectUpdate {
    /// The `write` args array.
    pub fn to_args(&self) -> Args {
        args(2, |b| {
            msgpack::put_str(b, self.uuid.as_bytes());
            msgpack::put_map_len(b, self.services.len());
            for (name, reply) in &self.services {
                msgpack::put_str(b, name.as_bytes());
                msgpack::put_array_len(b, 3);
                encode_endpoints(b, &reply.endpoints);
                msgpack::put_uint(b, reply.version);
                reply.graph.encode(b);
            }
        })
    }

    /// Reads the `write` args array.
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let (mut r, _) = open_args(bytes, 2, "[uuid, services]")?;
        let uuid = r.read_string("uuid")?;
        let len = r.read_map_len()?;
        let mut services = BTreeMap::new();
        for _ in 0..len {
            let name = r.read_string("service name")?;
            expect_min_len(r.read_array_len()?, 3, "[endpoints, version, graph]")?;
            let reply = ResolveReply {
                endpoints: decode_endpoints(&mut r)?,
                version: r.read_uint()?,
                graph: Graph::decode(&mut r)?,
            };
            services.insert(name, reply);
        }
        Ok(Self { uuid, services })
    }
}

#[cfg(test)]
mod tests;
