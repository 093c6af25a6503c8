//! The composition root: owns building the gateway from a config and a
//! locator (pools, handler, HTTP and admin listeners) and its ordered
//! shutdown; the embedded service (`service.rs`) and the standalone mode
//! (`standalone.rs`: an embedded locator and demo apps on loopback). The
//! only module that knows all the others.

mod service;
mod standalone;

pub use self::service::{GatewayBuilder, GatewayService};
pub use self::standalone::{
    CANARY, STANDALONE_JSONRPC_ALLOW, Standalone, standalone_token, standalone_token_path,
};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::listener::bind_reuse_port;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::{Config, TlsConfig};
use crate::dispatch::Dispatcher;
use crate::http::{self, Handler};
use crate::locator::{Locator, RemoteLocator, RemoteLocatorConfig};
use crate::mux::ReplyBudget;
use crate::pool::{GroupSettings, OutlierSettings, PoolSettings, Pools};

/// How long shutdown waits for the JSON access log's last lines (a writer
/// stuck on a sink nobody reads is given up on).
const ACCESS_LOG_FLUSH: Duration = Duration::from_secs(1);

/// A gateway serving HTTP.
#[derive(Debug)]
pub struct RunningGateway {
    /// Where HTTP is served.
    pub addr: SocketAddr,
    /// Where the admin API is served.
    pub admin_addr: Option<SocketAddr>,
    /// Where HTTPS is served, when configured.
    pub tls_addr: Option<SocketAddr>,
    /// The HTTPS listener's certificates (reload them with
    /// [`crate::tls::CertStore::reload`], e.g. on SIGHUP).
    pub certificates: Option<Arc<crate::tls::CertStore>>,
    admin: Arc<AdminState>,
    handler: Arc<Handler>,
    /// The bytes of replies held for slow clients (its bounds follow
    /// reloads).
    reply_budget: ReplyBudget,
    /// Client connections allowed (HTTP, HTTPS and unix together), and how
    /// many permits that is now.
    connections: Arc<http::ConnectionLimit>,
    max_connections: std::sync::Mutex<usize>,
    /// Stops the HTTP and HTTPS listeners and their connections.
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Stops the admin API, last.
    admin_shutdown: CancellationToken,
    admin_tracker: TaskTracker,
}

/// What a shutdown had to cut when its deadline passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Client connections dropped.
    pub cut_connections: usize,
    /// Requests in flight on them.
    pub cut_requests: usize,
    /// Whether the backend connections had to be abandoned undrained.
    pub backends_cut: bool,
}

impl ShutdownReport {
    /// Nothing was cut.
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

impl RunningGateway {
    /// Binds the configured listeners and serves, resolving through `locator`.
    pub async fn start(config: Config, locator: Arc<dyn Locator>) -> std::io::Result<Self> {
        // The file was checked; an address given another way (a flag, a
        // config built in code) is checked here.
        if let Some(reason) = config.admin_exposure() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("admin: {reason}"),
            ));
        }
        let listener = bind_reuse_port(config.listen)?;
        let admin_listener = match config.admin {
            Some(addr) => Some(bind_reuse_port(addr)?),
            None => None,
        };
        // Certificates load before anything serves: a bad pair stops the start.
        let tls = match &config.tls {
            Some(tls) => {
                let (store, server) = crate::tls::server_config(tls)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let listener = bind_reuse_port(tls.listen)?;
                Some((store, server, listener, Arc::new(tls.clone())))
            }
            None => None,
        };
        let config = Arc::new(config);
        let reply_budget = reply_budget_for(&config);
        let pools = pools_for(&config, locator, &reply_budget);
        let handler = Arc::new(Handler::new(
            Arc::clone(&config),
            Dispatcher::new(Arc::clone(&pools)),
        ));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let addr = listener.local_addr()?;
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        // One limit on client connections across the HTTP and HTTPS listeners.
        let connections = Arc::new(http::ConnectionLimit::new(config.limits.max_connections));
        let mut tls_addr = None;
        let mut certificates = None;
        if let Some((store, server, listener, settings)) = tls {
            tls_addr = Some(listener.local_addr()?);
            tracker.spawn(crate::tls::watch_files(
                Arc::clone(&store),
                settings.reload_poll,
                shutdown.clone(),
            ));
            tracker.spawn(crate::tls::serve(
                listener,
                tokio_rustls::TlsAcceptor::from(Arc::new(server)),
                Arc::clone(&handler),
                settings,
                Arc::clone(&connections),
                shutdown.clone(),
                tracker.clone(),
            ));
            certificates = Some(store);
        }
        if let Some(path) = &config.listen_unix {
            // A stale socket from a previous run would make bind fail.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                std::fs::remove_file(path)?;
            }
            let unix = tokio::net::UnixListener::bind(path)?;
            tracker.spawn(http::serve(
                unix,
                false,
                Arc::clone(&handler),
                Arc::clone(&connections),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        tracker.spawn(http::serve(
            listener,
            config.proxy_protocol,
            Arc::clone(&handler),
            Arc::clone(&connections),
            shutdown.clone(),
            tracker.clone(),
        ));
        let admin = Arc::new(AdminState {
            handler: Arc::clone(&handler),
            pools,
            ready: AtomicBool::new(true),
            stats: admin::Stats::default(),
        });
        let admin_shutdown = CancellationToken::new();
        let admin_tracker = TaskTracker::new();
        if let Some(listener) = admin_listener {
            admin_tracker.spawn(admin::serve(
                listener,
                Arc::clone(&admin),
                admin_shutdown.clone(),
                admin_tracker.clone(),
            ));
        }
        tracing::info!(%addr, admin = ?admin_addr, tls = ?tls_addr, "gateway listening");
        Ok(Self {
            addr,
            admin_addr,
            tls_addr,
            certificates,
            admin,
            handler,
            reply_budget,
            connections,
            max_connections: std::sync::Mutex::new(config.limits.max_connections),
            shutdown,
            tracker,
            admin_shutdown,
            admin_tracker,
        })
    }

    /// The pools, by service.
    pub fn pools(&self) -> &Arc<Pools> {
        &self.admin.pools
    }

    /// Exports the spans queued so far (`[tracing] otlp_endpoint`), and
    /// returns once the collector answered, or the export failed or timed
    /// out. At once when export is off.
    pub async fn flush_traces(&self) {
        if let Some(tracer) = self.handler.tracer() {
            tracer.flush().await;
        }
    }

    /// The span counts (exported, dropped, queue peak) when
    /// OpenTelemetry export is on.
    pub fn trace_stats(&self) -> Option<crate::otlp::TraceStats> {
        self.handler.tracer().map(crate::otlp::Tracer::stats)
    }

    /// Long-lived streams (SSE, WebSocket) open now.
    pub fn streams_open(&self) -> usize {
        self.handler.streams().len()
    }

    /// The config the gateway serves with now.
    pub fn config(&self) -> Arc<Config> {
        self.handler.config()
    }

    /// JSON access-log lines dropped so far because the writer fell behind
    /// (`rpcgate_access_log_dropped_total`).
    pub fn access_log_dropped(&self) -> u64 {
        self.handler.access_log_dropped()
    }

    /// Applies `new` while serving (SIGHUP): routes, timeouts, request and
    /// retry settings, limits, pool settings (sizes, lifespans; pools for
    /// newly configured services start), the shutdown timeout, and the
    /// certificate list. Nothing in flight is dropped: requests finish with
    /// the config they started with, and open connections keep their
    /// connection limits. If a certificate pair cannot be loaded, nothing
    /// is applied. Returns the keys that changed but need a restart (see
    /// [`Config::needs_restart`]); the running values stay for those.
    pub fn reload(&self, mut new: Config) -> Result<Vec<&'static str>, String> {
        let old = self.handler.config();
        let restart = old.needs_restart(&new);
        // What cannot apply keeps its running value, so `/config` shows
        // what is in effect.
        new.listen = old.listen;
        new.admin = old.admin;
        new.locators.clone_from(&old.locators);
        new.resolve_timeout = old.resolve_timeout;
        new.listen_unix.clone_from(&old.listen_unix);
        match (&old.tls, &mut new.tls) {
            (Some(old_tls), Some(new_tls)) => {
                if let Some(store) = &self.certificates {
                    store
                        .replace(&new_tls.certificates)
                        .map_err(|e| e.to_string())?;
                }
                let certificates = std::mem::take(&mut new_tls.certificates);
                *new_tls = TlsConfig {
                    certificates,
                    ..old_tls.clone()
                };
            }
            (old_tls, new_tls) => new_tls.clone_from(old_tls),
        }
        let new = Arc::new(new);
        self.reply_budget
            .set_limits(new.limits.reply_buffer, new.limits.reply_buffer_total);
        self.admin
            .pools
            .reconfigure(pool_settings(&new, &self.reply_budget));
        self.admin.pools.configure_groups(group_settings(&new));
        for service in new.services.keys() {
            self.admin.pools.keep(service);
        }
        self.resize_connections(new.limits.max_connections);
        self.handler.reload(new);
        Ok(restart)
    }

    /// Sets how many client connections may be open: more permits at once,
    /// or fewer as open connections close (accepting pauses meanwhile).
    fn resize_connections(&self, limit: usize) {
        let mut current = self
            .max_connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let permits = self.connections.permits();
        if limit > *current {
            permits.add_permits(limit - *current);
        } else if limit < *current {
            // Free permits go at once; the rest as connections close.
            let fewer = *current - limit;
            let later = fewer - permits.forget_permits(fewer);
            if let Ok(later @ 1..) = u32::try_from(later) {
                let connections = Arc::clone(permits);
                let shutdown = self.shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        permits = connections.acquire_many_owned(later) => {
                            if let Ok(permits) = permits {
                                permits.forget();
                            }
                        }
                        () = shutdown.cancelled() => {}
                    }
                });
            }
        }
        *current = limit;
    }

    /// Starts a gateway that resolves through the config's locators.
    ///
    /// It waits for the locators' first `routing` dump (at most the
    /// resolve timeout), so requests for a routing group pick members by
    /// weight from the first one on.
    pub async fn start_remote(config: Config) -> std::io::Result<(Self, RemoteLocator)> {
        let locator = RemoteLocator::new(remote_locator_config(&config));
        let _ = tokio::time::timeout(config.resolve_timeout, locator.routing_ready()).await;
        let gateway = Self::start(config, Arc::new(locator.clone())).await?;
        Ok((gateway, locator))
    }

    /// Ordered shutdown: not ready, stop accepting, close connections
    /// gracefully, let in-flight requests finish, then close the backend
    /// connections.
    /// Within the configured `shutdown_timeout`; see [`Self::shutdown_within`].
    pub async fn shutdown(self) -> ShutdownReport {
        let deadline = self.handler.config().shutdown_timeout;
        self.shutdown_within(deadline).await
    }

    /// Ordered shutdown: `/ready` turns false; the listeners stop
    /// accepting; kept-alive connections are told to close (HTTP/1.1
    /// `Connection: close`, or closed once idle for a short grace; HTTP/2
    /// GOAWAY); requests in
    /// flight finish until `deadline`, and are cut past it; the backend
    /// connections drain and close; the admin API stops last. The report
    /// says what was cut.
    pub async fn shutdown_within(self, deadline: Duration) -> ShutdownReport {
        let until = tokio::time::Instant::now() + deadline;
        let mut report = ShutdownReport::default();
        self.admin.ready.store(false, Ordering::Release);
        self.shutdown.cancel();
        // Streams end cleanly now (SSE bodies end, WebSockets get 1001).
        self.handler.streams().stop();
        self.tracker.close();
        let drained = async {
            tokio::join!(self.tracker.wait(), self.handler.streams().wait());
        };
        if tokio::time::timeout_at(until, drained).await.is_err() {
            report.cut_connections = self.handler.open_connections.load(Ordering::Acquire);
            report.cut_requests = self.handler.busy.load(Ordering::Acquire);
            tracing::warn!(
                connections = report.cut_connections,
                requests = report.cut_requests,
                ?deadline,
                "shutdown deadline passed; cutting the connections still open"
            );
            self.handler.cut.cancel();
            self.handler.streams().cut();
            self.tracker.wait().await;
            self.handler.streams().wait().await;
        }
        // Backends drain what is left (nothing, once clients are gone);
        // a backend that will not finish is abandoned at the deadline,
        // with a second of grace for the cancels just sent.
        let backends = until.max(tokio::time::Instant::now() + Duration::from_secs(1));
        if tokio::time::timeout_at(backends, self.admin.pools.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("backend connections did not drain in time; abandoned");
            report.backends_cut = true;
        }
        // The last requests' spans, within one export's time.
        if let Some(tracer) = self.handler.tracer() {
            let limit = self.handler.config().tracing.export_timeout + Duration::from_secs(1);
            if tokio::time::timeout(limit, tracer.flush()).await.is_err() {
                tracing::warn!("the last spans were not exported in time");
            }
        }
        // The last requests' access-log lines.
        self.handler.flush_access_log(ACCESS_LOG_FLUSH).await;
        self.admin_shutdown.cancel();
        self.admin_tracker.close();
        self.admin_tracker.wait().await;
        report
    }
}

// === the library entry point ===

/// The pool settings per service that `config` gives.
fn pool_settings(
    config: &Arc<Config>,
    reply_budget: &ReplyBudget,
) -> impl Fn(&str) -> PoolSettings + Send + Sync + 'static {
    let config = Arc::clone(config);
    let reply_budget = reply_budget.clone();
    move |service| PoolSettings {
        size: config.pool_size_for(service),
        lifespan: config.lifespan_for(service),
        jitter: config.pool.jitter,
        reconnect_share: config.pool.reconnect_share,
        connect_timeout: config.pool.connect_timeout,
        idle_timeout: config.pool.idle_timeout,
        resolve_timeout: config.resolve_timeout,
        reply_budget: Some(reply_budget.clone()),
    }
}

/// The budget for replies held for slow clients that `config` gives (one
/// for the gateway, shared by every backend connection).
fn reply_budget_for(config: &Config) -> ReplyBudget {
    ReplyBudget::new(config.limits.reply_buffer, config.limits.reply_buffer_total)
}

/// The locator client `config` gives: its locators and resolve timeout.
fn remote_locator_config(config: &Config) -> RemoteLocatorConfig {
    RemoteLocatorConfig {
        endpoints: config.locators.clone(),
        resolve_timeout: config.resolve_timeout,
        ..RemoteLocatorConfig::default()
    }
}

/// How routing groups are served, from `config`.
fn group_settings(config: &Config) -> GroupSettings {
    GroupSettings {
        slow_start: config.pool.slow_start,
        outlier: OutlierSettings {
            consecutive_failures: config.outlier.consecutive_failures,
            base_ejection: config.outlier.base_ejection,
            max_ejection_share: config.outlier.max_ejection_share,
        },
    }
}

fn pools_for(
    config: &Arc<Config>,
    locator: Arc<dyn Locator>,
    reply_budget: &ReplyBudget,
) -> Arc<Pools> {
    let pools = Pools::new(locator, pool_settings(config, reply_budget));
    pools.configure_groups(group_settings(config));
    // Configured services connect at start; others on first use.
    for service in config.services.keys() {
        pools.keep(service);
    }
    pools
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolve_timeout_reaches_the_locator_client_and_every_pool() {
        let mut config = Config::default();
        assert_eq!(config.resolve_timeout, Duration::from_secs(2));
        config.resolve_timeout = Duration::from_millis(750);
        config.locators = vec![SocketAddr::from(([127, 0, 0, 1], 1))];
        let locator = remote_locator_config(&config);
        assert_eq!(locator.resolve_timeout, config.resolve_timeout);
        assert_eq!(locator.endpoints, config.locators);
        let config = Arc::new(config);
        let settings = pool_settings(&config, &reply_budget_for(&config));
        for service in ["echo", "made-up"] {
            assert_eq!(settings(service).resolve_timeout, config.resolve_timeout);
        }
    }
}
