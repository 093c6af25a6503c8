//! Service discovery: owns the [`Locator`] trait the pool consults, its
//! implementations (a remote Cocaine locator client and a fixed table from
//! config), the locator **server** (PROTOCOL.md §3), and the routing-group
//! continuum. It sits beside the request path: the pool asks it; it never
//! calls up into the pool.
//!
//! Routing groups: a client that follows the `routing` stream knows every
//! group's ring, so [`Locator::resolve`] on a group name picks the member
//! itself (a random point, the locator's rule) and resolves that member.
//! Each new connection therefore lands on a member in proportion to the
//! weights, and a weight change applies to the next pick.

mod admin;
pub mod client;
pub mod cluster;
pub mod config;
pub mod continuum;
pub mod fixed;
pub mod registry;
pub mod server;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

pub use self::client::{Publication, RemoteLocator, RemoteLocatorConfig, publish};
pub use self::config::{ClusterConfig, ConfigError, EtcdSecurity, LocatorConfig};
pub use self::continuum::Continuum;
pub use self::fixed::FixedLocator;
pub use self::server::RunningLocator;
use crate::proto::{ErrorCode, Graph, RemoteError};

/// A boxed, sendable future (the trait must be object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Every routing group's ring, by group name.
pub type Rings = BTreeMap<String, Arc<Continuum>>;

/// Where a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The service actually resolved: the name itself, or the member a
    /// routing group was mapped to.
    pub service: String,
    /// Addresses to try, in order.
    pub endpoints: Vec<SocketAddr>,
    /// The service's protocol version.
    pub version: u64,
    /// The service's protocol graph.
    pub graph: Arc<Graph>,
}

/// Why a name could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LocatorError {
    /// The locator does not know the name (`[[10, 1]]`).
    #[error("service `{0}` is not available")]
    NotFound(String),
    /// No locator could be reached or answered in time.
    #[error("locator unavailable: {0}")]
    Unavailable(String),
    /// The locator answered with another error.
    #[error("locator error: {0}")]
    Remote(RemoteError),
    /// The locator's reply could not be understood.
    #[error("invalid locator reply: {0}")]
    Protocol(String),
}

impl LocatorError {
    /// Whether the name is unknown (as opposed to the locator failing).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    pub(crate) fn from_remote(name: &str, error: RemoteError) -> Self {
        if error.code == ErrorCode::SERVICE_NOT_AVAILABLE {
            Self::NotFound(name.to_owned())
        } else {
            Self::Remote(error)
        }
    }
}

/// What the pool consults: resolve names, and follow routing groups.
pub trait Locator: Send + Sync + std::fmt::Debug + 'static {
    /// Resolves a service or routing-group name to endpoints, version and
    /// graph. A group is mapped to one member by its weights.
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Resolved, LocatorError>>;

    /// Every routing group's ring, updated as the locator reports changes.
    fn routing(&self) -> watch::Receiver<Arc<Rings>>;

    /// [`Locator::resolve`], asking the locator itself rather than a cache
    /// or a resolve in flight: the pool resolves once per connection, so
    /// that its connections spread over the instances the locator picks.
    fn resolve_fresh<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Resolved, LocatorError>> {
        self.resolve(name)
    }

    /// `endpoint` of `name` could not be connected to or its connection was
    /// lost: cached answers that list it are dropped at once.
    fn forget_endpoint(&self, name: &str, endpoint: SocketAddr) {
        let _ = (name, endpoint);
    }
}

/// Converts a resolve reply's endpoints to socket addresses, keeping order
/// and skipping any that are not IP addresses.
pub(crate) fn socket_addrs(endpoints: &[crate::proto::locator::Endpoint]) -> Vec<SocketAddr> {
    endpoints.iter().filter_map(|e| e.socket_addr()).collect()
}
