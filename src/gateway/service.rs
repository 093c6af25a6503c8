//! The gateway embedded in another server: [`GatewayBuilder`] builds it as
//! a tower `Service` ([`GatewayService`]) that serves through the same
//! exchange, layers and observer as the listeners.

use std::sync::Arc;

use super::{ACCESS_LOG_FLUSH, pools_for, remote_locator_config, reply_budget_for};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::http::Handler;
use crate::locator::{Locator, RemoteLocator};
use crate::pool::Pools;

/// Builds the gateway as a tower [`Service`](tower_service::Service), for
/// mounting inside another hyper or axum server.
///
/// ```no_run
/// # async fn demo() {
/// use rpcgate::config::Config;
/// use rpcgate::gateway::GatewayBuilder;
/// let service = GatewayBuilder::new(Config::default()).build();
/// // hand `service` to your server; `service.shutdown().await` drains it.
/// # }
/// ```
#[derive(Debug)]
pub struct GatewayBuilder {
    config: Config,
    locator: Option<Arc<dyn Locator>>,
}

impl GatewayBuilder {
    /// A gateway with `config` (its listen and admin addresses are unused).
    pub fn new(config: Config) -> Self {
        Self {
            config,
            locator: None,
        }
    }

    /// Resolves through `locator` instead of the config's locators.
    pub fn with_locator(mut self, locator: Arc<dyn Locator>) -> Self {
        self.locator = Some(locator);
        self
    }

    /// Starts the pools (in the current runtime) and returns the service.
    pub fn build(self) -> GatewayService {
        let locator = self
            .locator
            .unwrap_or_else(|| Arc::new(RemoteLocator::new(remote_locator_config(&self.config))));
        let config = Arc::new(self.config);
        let pools = pools_for(&config, locator, &reply_budget_for(&config));
        GatewayService {
            handler: Arc::new(Handler::new(config, Dispatcher::new(Arc::clone(&pools)))),
            pools,
        }
    }
}

/// The gateway as a `Service<http::Request<B>>`: cheap to clone, never
/// fails (errors are responses).
///
/// Give each request its peer's address as a
/// [`PeerAddr`](crate::http::PeerAddr) extension: the service then applies
/// the listeners' client rules to it (`X-Real-IP` from the peer, or from a
/// `request.trusted_proxies` peer's forwarding headers; the per-client
/// stream cap). A client-sent `X-Client-Subject` is removed either way;
/// without a `PeerAddr`, so is `X-Real-IP` (see
/// [`Handler::handle`](crate::http::Handler::handle)).
#[derive(Debug, Clone)]
pub struct GatewayService {
    handler: Arc<Handler>,
    pools: Arc<Pools>,
}

impl GatewayService {
    /// Drains and closes the backend connections, then writes out the
    /// JSON access log's last lines.
    pub async fn shutdown(&self) {
        self.pools.shutdown().await;
        self.handler.flush_access_log(ACCESS_LOG_FLUSH).await;
    }
}

impl<B> tower_service::Service<hyper::Request<B>> for GatewayService
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = hyper::Response<crate::http::GatewayBody>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<B>) -> Self::Future {
        let handler = Arc::clone(&self.handler);
        Box::pin(async move { Ok(handler.handle(request).await) })
    }
}
