//! The locator server: owns the locator protocol of PROTOCOL.md §3 as a
//! [`Service`] (resolve, connect, refresh, cluster, publish, routing, uuid),
//! the accept loop, config reloads, and the lifecycle of a running locator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cluster::{self, Cluster};
use super::config::{ConfigError, LocatorConfig};
use super::registry::{Instance, Registry};
use crate::proto::graph::{GOAWAY, PING, REVOKE};
use crate::proto::locator::{
    ClusterReply, PublishRequest, ResolveRequest, RoutingRequest, UuidArgs, method,
};
use crate::proto::{Args, ErrorCode, Graph, Protocol, RemoteError};
use crate::session::{self, Call, Service};

/// The locator protocol over a [`Registry`].
#[derive(Debug)]
pub struct LocatorService {
    registry: Arc<Registry>,
    reloader: Arc<Reloader>,
    tracker: TaskTracker,
}

/// Re-reads the config file, for SIGHUP, `refresh` and the admin API.
#[derive(Debug)]
pub struct Reloader {
    path: Option<PathBuf>,
    registry: Arc<Registry>,
    running: LocatorConfig,
    cluster: Option<Arc<Cluster>>,
}

impl Reloader {
    /// Re-reads the file and applies its services and groups. An invalid
    /// file changes nothing. Address changes need a restart and are
    /// reported, not applied. In a cluster the groups are written to the
    /// store (the file wins at this moment) and served from there.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let config = LocatorConfig::load(path)?;
        match &self.cluster {
            Some(cluster) => cluster.write_groups(config.groups.clone()),
            None => self
                .registry
                .set_groups(&config.groups)
                .map_err(|reason| ConfigError {
                    file: path.clone(),
                    key: "groups".into(),
                    reason,
                })?,
        }
        self.registry.set_configured(&config.services);
        if config.listen != self.running.listen
            || config.admin != self.running.admin
            || config.admin_token != self.running.admin_token
            || config.admin_header_timeout != self.running.admin_header_timeout
        {
            tracing::warn!(file = %path.display(), "listen/admin changes (addresses, admin token, admin head timeout) need a restart; not applied");
        }
        tracing::info!(file = %path.display(), groups = config.groups.len(), "locator config reloaded");
        Ok(())
    }

    /// The cluster store, if this locator is part of one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }
}

impl Service for LocatorService {
    fn protocols(&self, method: u64) -> Option<(Protocol, Protocol)> {
        Some(match method {
            method::RESOLVE | method::REFRESH | method::CLUSTER | method::UUID => {
                (Protocol::Terminal, Protocol::Primitive)
            }
            method::CONNECT => (Protocol::Terminal, Protocol::Streaming),
            method::PUBLISH => (Protocol::Discard, Protocol::Primitive),
            method::ROUTING => (Protocol::Discard, Protocol::Streaming),
            GOAWAY..=REVOKE => (Protocol::Terminal, Protocol::Primitive),
            _ => return None,
        })
    }

    fn call(&self, call: Call) {
        let registry = Arc::clone(&self.registry);
        let reloader = Arc::clone(&self.reloader);
        self.tracker.spawn(async move {
            let method = call.method;
            if let Err(e) = handle(call, &registry, &reloader).await {
                tracing::debug!(method, error = %e, "locator reply not sent");
            }
        });
    }
}

async fn handle(
    call: Call,
    registry: &Registry,
    reloader: &Reloader,
) -> Result<(), session::ReplyError> {
    let Call {
        method,
        args,
        mut incoming,
        reply,
        ..
    } = call;
    let invalid = |e: crate::proto::msgpack::MsgpackError| {
        RemoteError::new(ErrorCode::INVALID_ARGUMENT, e.to_string())
    };
    match method {
        method::RESOLVE => match ResolveRequest::decode_args(&args) {
            Ok(request) => match registry.resolve(&request.name, request.seed.as_deref()) {
                Ok(resolved) => reply.value(resolved.to_args()).await,
                Err(e) => reply.error(e).await,
            },
            Err(e) => reply.error(invalid(e)).await,
        },
        // No cluster: the stream closes at once (§3.2).
        method::CONNECT => reply.close().await,
        method::REFRESH => match reloader.reload() {
            Ok(()) => reply.value(Args::Empty).await,
            Err(e) => {
                let code = ErrorCode::new(crate::proto::category::LOCATOR, 2);
                reply.error(RemoteError::new(code, e.to_string())).await
            }
        },
        // The other locators of the cluster, from their keys in the store.
        method::CLUSTER => {
            let nodes = registry.peers();
            reply.value(ClusterReply { nodes }.to_args()).await
        }
        method::UUID => {
            let uuid = UuidArgs {
                uuid: registry.uuid().to_owned(),
            };
            reply.value(uuid.to_args()).await
        }
        method::PUBLISH => {
            let request = match PublishRequest::decode_args(&args) {
                Ok(request) => request,
                Err(e) => return reply.error(invalid(e)).await,
            };
            let (version, graph) = request
                .meta
                .unwrap_or_else(|| (crate::proto::app::PROTOCOL_VERSION, Graph::app()));
            let instance = Instance {
                endpoints: request.endpoints,
                version,
                graph: Arc::new(graph),
            };
            let token = match registry.publish(&request.name, instance) {
                Ok(token) => token,
                Err(e) => return reply.error(e).await,
            };
            tracing::info!(name = %request.name, "service published");
            let replied = reply.value(Args::Empty).await;
            // Registered until `discard` or the publisher's disconnect.
            while let Some(Ok(_)) = incoming.recv().await {}
            registry.unpublish(&request.name, token);
            tracing::info!(name = %request.name, "service unpublished");
            replied
        }
        method::ROUTING => {
            let request = match RoutingRequest::decode_args(&args) {
                Ok(request) => request,
                Err(e) => return reply.error(invalid(e)).await,
            };
            let (generation, replaced) = registry.subscribe(&request.router_id);
            let mut dump = registry.watch_dump();
            let mut reply = reply;
            let result = async {
                loop {
                    let update = Arc::clone(&dump.borrow_and_update());
                    reply
                        .send(crate::proto::Message::new(0, update.to_args()))
                        .await?;
                    tokio::select! {
                        changed = dump.changed() => if changed.is_err() { break },
                        // The only thing a client may send is `discard`; a
                        // disconnect ends the stream the same way.
                        _ = incoming.recv() => break,
                        () = replaced.cancelled() => break,
                    }
                }
                Ok(())
            }
            .await;
            registry.unsubscribe(&request.router_id, generation);
            result?;
            reply.close().await
        }
        PING => reply.value(Args::Empty).await,
        _ => {
            // goaway / settings / revoke: unverified (\[U\] §1.5); answer
            // with an error rather than act on them.
            reply
                .error(RemoteError::new(
                    ErrorCode::SLOT_NOT_FOUND,
                    "control message not supported",
                ))
                .await
        }
    }
}

/// A locator serving on a socket.
#[derive(Debug)]
pub struct RunningLocator {
    /// Where the locator protocol is served.
    pub addr: SocketAddr,
    /// Where the admin API is served, if enabled.
    pub admin_addr: Option<SocketAddr>,
    registry: Arc<Registry>,
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl RunningLocator {
    /// Binds `config.listen` (and `config.admin`) and starts serving.
    /// `path` is the config file that SIGHUP, `refresh` and the admin
    /// `reload` re-read. With `config.cluster`, the locator joins the
    /// cluster: it does not wait for etcd, which it keeps trying.
    /// An admin address off loopback without an admin token is refused.
    pub async fn start(config: LocatorConfig, path: Option<PathBuf>) -> std::io::Result<Self> {
        // The file was checked; an address given another way (a flag, a
        // config built in code) is checked here.
        if let Some(reason) = config.admin_exposure() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("admin: {reason}"),
            ));
        }
        if let Some(cluster) = &config.cluster {
            cluster::EtcdClient::with_security(&cluster.etcd, &cluster.security)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let listener = TcpListener::bind(config.listen).await?;
        let admin = match config.admin {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self::serve(listener, admin, config, path))
    }

    /// Serves on already bound listeners.
    pub fn serve(
        listener: TcpListener,
        admin: Option<TcpListener>,
        config: LocatorConfig,
        path: Option<PathBuf>,
    ) -> Self {
        let uuid = config.uuid.clone().unwrap_or_else(random_uuid);
        let registry = Arc::new(Registry::new(uuid));
        registry.set_configured(&config.services);
        // Validated on load: a failure here cannot happen, but would only
        // leave the groups empty.
        if let Err(e) = registry.set_groups(&config.groups) {
            tracing::error!(error = %e, "routing groups not applied");
        }
        let addr = listener.local_addr().unwrap_or(config.listen);
        registry.set_own(vec![own_endpoint(addr)]);
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let cluster = config.cluster.as_ref().and_then(|c| {
            Cluster::new(c.clone())
                .map_err(|e| tracing::error!(error = %e, "not joining the cluster"))
                .ok()
        });
        if let Some(cluster) = &cluster {
            // The file's groups are served until the store answers, then
            // written there: the file wins at start.
            if !config.groups.is_empty() {
                cluster.write_groups(config.groups.clone());
            }
            cluster::store::spawn(
                Arc::clone(cluster),
                Arc::clone(&registry),
                advertised(addr),
                shutdown.clone(),
                &tracker,
            );
        }
        let admin_routes = admin.map(|listener| {
            (
                listener,
                config.admin_token.clone(),
                config.admin_header_timeout,
            )
        });
        let reloader = Arc::new(Reloader {
            path,
            registry: Arc::clone(&registry),
            running: config,
            cluster,
        });
        let service = Arc::new(LocatorService {
            registry: Arc::clone(&registry),
            reloader: Arc::clone(&reloader),
            tracker: tracker.clone(),
        });
        tracker.spawn(session::accept_loop(
            listener,
            service,
            "locator",
            shutdown.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
        if let Some((listener, token, header_timeout)) = admin_routes {
            let routes = super::admin::LocatorAdmin {
                registry: Arc::clone(&registry),
                reloader: Arc::clone(&reloader),
                token,
                header_timeout,
            };
            tracker.spawn(crate::admin::serve_routes(
                listener,
                Arc::new(routes),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        tracing::info!(%addr, admin = ?admin_addr, "locator listening");
        Self {
            addr,
            admin_addr,
            registry,
            reloader,
            shutdown,
            tracker,
        }
    }

    /// The state: groups, services, subscribers.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The cluster store, if this locator is part of one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.reloader.cluster()
    }

    /// Re-reads the config file (what SIGHUP does).
    pub fn reload(&self) -> Result<(), ConfigError> {
        self.reloader.reload()
    }

    /// Stops accepting, closes every connection, and waits for the tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// `addr` with an unspecified IP (`0.0.0.0`, `::`) replaced by loopback of
/// the same family: where a client on this host reaches a listener bound
/// to all interfaces.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// The address other locators list for this one (set `listen` to the
/// host's IP for a cluster across hosts).
fn advertised(addr: SocketAddr) -> SocketAddr {
    loopback_if_unspecified(addr)
}

/// The endpoint the locator gives for itself when asked to resolve
/// `locator`.
fn own_endpoint(addr: SocketAddr) -> crate::proto::locator::Endpoint {
    let addr = loopback_if_unspecified(addr);
    crate::proto::locator::Endpoint {
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}

/// A random RFC 4122 version-4 uuid, as text.
pub fn random_uuid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
