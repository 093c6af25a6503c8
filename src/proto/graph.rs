//! Protocol graphs: owns the decoded form of the service description that a
//! `resolve` reply carries (PROTOCOL.md §1.5), and the graphs of the services
//! rpcgate itself serves (apps and the locator).
//!
//! ```text
//! root := { id: [name, dispatch_node_or_nil, upstream_node_or_nil], ... }
//! node := { id: [name, next_node_or_nil], ... }
//! ```
//! `nil` means "stay in the same state" and `{}` means "terminal".

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes};

use super::msgpack::{self, MAX_DEPTH, MsgpackError, Reader};
use super::protocol::Protocol;

/// The control messages every root protocol has had since Cocaine 0.12.13,
/// numbered down from 65535 (§1.5).
///
/// Whether the runtime really dispatches them is unverified (\[U\] in
/// PROTOCOL.md §1.5 and §9), so the conservative choice: rpcgate never sends
/// them, tolerates them in every graph it reads, and lists them in the graphs
/// it serves so that its services look like a 0.12.13+ runtime's.
pub const CONTROL_MESSAGES: [(u64, &str); 4] = [
    (GOAWAY, "goaway"),
    (PING, "ping"),
    (SETTINGS, "settings"),
    (REVOKE, "revoke"),
];

/// The `goaway` control message id.
pub const GOAWAY: u64 = 65532;
/// The `ping` control message id.
pub const PING: u64 = 65533;
/// The `settings` control message id.
pub const SETTINGS: u64 = 65534;
/// The `revoke` control message id.
pub const REVOKE: u64 = 65535;

/// A service's protocol: its root messages by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Graph {
    /// Root messages by id.
    pub methods: BTreeMap<u64, Method>,
}

/// One root message of a [`Graph`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// The message name, e.g. `"enqueue"`.
    pub name: String,
    /// What the client may send next on the channel (Rust/Python call it `tx`).
    pub dispatch: Transition,
    /// What the service sends back (`rx`).
    pub upstream: Transition,
}

/// A transition after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// `nil`: stay in the same state (e.g. `write` can repeat).
    Recursive,
    /// A new state; an empty node is terminal.
    Node(Node),
}

/// A protocol state: the messages allowed in it, by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// Allowed messages by id: name and the transition after it.
    pub messages: BTreeMap<u64, (String, Transition)>,
}

// === impl Node ===

impl Node {
    /// The terminal node `{}`.
    pub fn terminal() -> Self {
        Self::default()
    }

    /// `{0: ["value", {}], 1: ["error", {}]}`.
    pub fn primitive() -> Self {
        Self::from_entries([
            (0, "value", Self::terminal()),
            (1, "error", Self::terminal()),
        ])
    }

    /// `{0: ["write", nil], 1: ["error", {}], 2: ["close", {}]}`.
    pub fn streaming() -> Self {
        let mut node = Self::from_entries([
            (1, "error", Self::terminal()),
            (2, "close", Self::terminal()),
        ]);
        node.messages
            .insert(0, ("write".to_owned(), Transition::Recursive));
        node
    }

    /// `{0: ["discard", {}]}`.
    pub fn discard() -> Self {
        Self::from_entries([(0, "discard", Self::terminal())])
    }

    fn from_entries<const N: usize>(entries: [(u64, &str, Self); N]) -> Self {
        Self {
            messages: entries
                .into_iter()
                .map(|(id, name, next)| (id, (name.to_owned(), Transition::Node(next))))
                .collect(),
        }
    }

    /// Whether nothing may follow.
    pub fn is_terminal(&self) -> bool {
        self.messages.is_empty()
    }

    fn decode(r: &mut Reader<'_>, depth: usize) -> Result<Self, MsgpackError> {
        if depth >= MAX_DEPTH {
            return Err(MsgpackError::TooDeep);
        }
        let len = r.read_map_len()?;
        let mut messages = BTreeMap::new();
        for _ in 0..len {
            let id = r.read_uint()?;
            let fields = r.read_array_len()?;
            if fields < 2 {
                return Err(MsgpackError::Unexpected {
                    expected: "[name, next]",
                    found: 0x90 | fields as u8,
                });
            }
            let name = r.read_string("message name")?;
            let next = Transition::decode(r, depth + 1)?;
            for _ in 2..fields {
                r.skip()?;
            }
            messages.insert(id, (name, next));
        }
        Ok(Self { messages })
    }

    fn encode(&self, buf: &mut impl BufMut) {
        msgpack::put_map_len(buf, self.messages.len());
        for (id, (name, next)) in &self.messages {
            msgpack::put_uint(buf, *id);
            msgpack::put_array_len(buf, 2);
            msgpack::put_str(buf, name.as_bytes());
            next.encode(buf);
        }
    }
}

// === impl Transition ===

impl Transition {
    /// The [`Protocol`] state this transition leads to, when it has one of
    /// the standard shapes. `Recursive` stays in `current`.
    pub fn protocol(&self, current: Protocol) -> Option<Protocol> {
        match self {
            Self::Recursive => Some(current),
            Self::Node(node) if node.is_terminal() => Some(Protocol::Terminal),
            Self::Node(node) if *node == Node::primitive() => Some(Protocol::Primitive),
            Self::Node(node) if *node == Node::streaming() => Some(Protocol::Streaming),
            Self::Node(node) if *node == Node::discard() => Some(Protocol::Discard),
            Self::Node(_) => None,
        }
    }

    fn decode(r: &mut Reader<'_>, depth: usize) -> Result<Self, MsgpackError> {
        if r.is_nil() {
            r.read_nil()?;
            Ok(Self::Recursive)
        } else {
            Ok(Self::Node(Node::decode(r, depth)?))
        }
    }

    fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Self::Recursive => msgpack::put_nil(buf),
            Self::Node(node) => node.encode(buf),
        }
    }
}

// === impl Graph ===

impl Graph {
    /// The graph of an app service (`enqueue`, `info`, `control`, plus the
    /// control messages), as `resolve` returns it for apps (§1.5).
    pub fn app() -> Self {
        let mut graph = Self::default();
        graph.insert(
            0,
            "enqueue",
            Transition::Node(Node::streaming()),
            Transition::Node(Node::streaming()),
        );
        graph.insert(
            1,
            "info",
            Transition::Node(Node::terminal()),
            Transition::Node(Node::primitive()),
        );
        graph.insert(
            2,
            "control",
            Transition::Node(Node::streaming()),
            Transition::Node(Node::primitive()),
        );
        graph.with_control_messages()
    }

    /// The graph of the locator service (§3.2).
    pub fn locator() -> Self {
        let mut graph = Self::default();
        let none = || Transition::Node(Node::terminal());
        let discard = || Transition::Node(Node::discard());
        let value = || Transition::Node(Node::primitive());
        let stream = || Transition::Node(Node::streaming());
        graph.insert(0, "resolve", none(), value());
        graph.insert(1, "connect", none(), stream());
        graph.insert(2, "refresh", none(), value());
        graph.insert(3, "cluster", none(), value());
        graph.insert(4, "publish", discard(), value());
        graph.insert(5, "routing", discard(), stream());
        graph.insert(6, "uuid", none(), value());
        graph.with_control_messages()
    }

    fn with_control_messages(mut self) -> Self {
        for (id, name) in CONTROL_MESSAGES {
            self.insert(
                id,
                name,
                Transition::Node(Node::terminal()),
                Transition::Node(Node::primitive()),
            );
        }
        self
    }

    fn insert(&mut self, id: u64, name: &str, dispatch: Transition, upstream: Transition) {
        self.methods.insert(
            id,
            Method {
                name: name.to_owned(),
                dispatch,
                upstream,
            },
        );
    }

    /// Whether this is an app's graph, which an HTTP request may be sent
    /// to: `enqueue` at id 0, streaming both ways (§1.5, §4). A service
    /// with any other graph (the locator, storage, logging...) would take
    /// message 0 as something else entirely.
    pub fn is_app(&self) -> bool {
        let streaming =
            |t: &Transition| matches!(t, Transition::Node(n) if *n == Node::streaming());
        self.methods.get(&0).is_some_and(|m| {
            m.name == "enqueue" && streaming(&m.dispatch) && streaming(&m.upstream)
        })
    }

    /// The id of the root message called `name`.
    pub fn method_id(&self, name: &str) -> Option<u64> {
        self.methods
            .iter()
            .find(|(_, m)| m.name == name)
            .map(|(id, _)| *id)
    }

    /// Decodes a graph from a reader positioned at its map.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, MsgpackError> {
        let len = r.read_map_len()?;
        let mut methods = BTreeMap::new();
        for _ in 0..len {
            let id = r.read_uint()?;
            let fields = r.read_array_len()?;
            if fields < 3 {
                return Err(MsgpackError::Unexpected {
                    expected: "[name, dispatch, upstream]",
                    found: 0x90 | fields as u8,
                });
            }
            let name = r.read_string("method name")?;
            let dispatch = Transition::decode(r, 1)?;
            let upstream = Transition::decode(r, 1)?;
            for _ in 3..fields {
                r.skip()?;
            }
            methods.insert(
                id,
                Method {
                    name,
                    dispatch,
                    upstream,
                },
            );
        }
        Ok(Self { methods })
    }

    /// Decodes a graph from its own buffer.
    pub fn decode_bytes(bytes: &Bytes) -> Result<Self, MsgpackError> {
        Self::decode(&mut Reader::new(bytes))
    }

    /// Writes the graph with v4 string forms.
    pub fn encode(&self, buf: &mut impl BufMut) {
        msgpack::put_map_len(buf, self.methods.len());
        for (id, method) in &self.methods {
            msgpack::put_uint(buf, *id);
            msgpack::put_array_len(buf, 3);
            msgpack::put_str(buf, method.name.as_bytes());
            method.dispatch.encode(buf);
            method.upstream.encode(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_app_graph_is_an_app() {
        assert!(Graph::app().is_app());
        assert!(!Graph::locator().is_app());
        assert!(!Graph::default().is_app());
    }
    use bytes::BytesMut;

    #[test]
    fn app_graph_round_trips_and_maps_to_protocols() {
        let graph = Graph::app();
        let mut buf = BytesMut::new();
        graph.encode(&mut buf);
        let decoded = Graph::decode_bytes(&buf.freeze()).unwrap();
        assert_eq!(decoded, graph);
        let enqueue = &decoded.methods[&0];
        assert_eq!(enqueue.name, "enqueue");
        assert_eq!(
            enqueue.dispatch.protocol(Protocol::Terminal),
            Some(Protocol::Streaming)
        );
        assert_eq!(
            decoded.methods[&1].upstream.protocol(Protocol::Terminal),
            Some(Protocol::Primitive)
        );
        assert_eq!(decoded.method_id("revoke"), Some(65535));
    }

    #[test]
    fn locator_graph_has_publish_with_discard() {
        let graph = Graph::locator();
        assert_eq!(graph.method_id("routing"), Some(5));
        assert_eq!(
            graph.methods[&4].dispatch.protocol(Protocol::Terminal),
            Some(Protocol::Discard)
        );
    }

    #[test]
    fn tolerates_control_ids_and_extra_fields() {
        // {65535: ["revoke", {}, {0: ["value", {}]}, "extra"], 0: ["x", nil, nil]}
        let mut buf = BytesMut::new();
        msgpack::put_map_len(&mut buf, 2);
        msgpack::put_uint(&mut buf, 65535);
        msgpack::put_array_len(&mut buf, 4);
        msgpack::put_str(&mut buf, b"revoke");
        msgpack::put_map_len(&mut buf, 0);
        msgpack::put_map_len(&mut buf, 1);
        msgpack::put_uint(&mut buf, 0);
        msgpack::put_array_len(&mut buf, 2);
        msgpack::put_str(&mut buf, b"value");
        msgpack::put_map_len(&mut buf, 0);
        msgpack::put_str(&mut buf, b"extra");
        msgpack::put_uint(&mut buf, 0);
        msgpack::put_array_len(&mut buf, 3);
        msgpack::put_str(&mut buf, b"x");
        msgpack::put_nil(&mut buf);
        msgpack::put_nil(&mut buf);
        let graph = Graph::decode_bytes(&buf.freeze()).unwrap();
        assert_eq!(graph.methods[&65535].name, "revoke");
        assert_eq!(graph.methods[&0].dispatch, Transition::Recursive);
    }
}
