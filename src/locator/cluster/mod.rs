//! Locators that share services and routing groups through etcd: owns the
//! key layout under the cluster prefix, the [`Cluster`] handle that the
//! admin API and reloads write through, and the task that keeps a
//! [`Registry`](super::registry::Registry) in step with the store
//! ([`store`]). The etcd wire (JSON gateway) is in [`etcd`].
//!
//! Keys, under `PREFIX` (`cluster.prefix`, default `/rpcgate`):
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `PREFIX/services/NAME/SESSION:TOKEN` | `{"endpoints": [["ip", port]], "version": 1, "graph": "<base64 msgpack>"}` | the publishing locator's lease; deleted when the publisher's session ends |
//! | `PREFIX/groups/NAME` | `{"member": weight, ...}` | until deleted (admin `DELETE`) |
//! | `PREFIX/locators/UUID` | `{"endpoints": [["ip", port]]}` | the locator's lease |
//!
//! One lease per locator process (its etcd "session", as a ZooKeeper
//! session held the ephemeral nodes): every key the locator writes for a
//! publication or for itself hangs on it, one keepalive every TTL/3 keeps
//! them all, and when the locator dies they all go at the TTL. A
//! publication that ends (discard or the publisher's disconnect) deletes
//! its key at once; a locator that shuts down revokes its lease.
//!
//! Groups: the store is the truth for what is served. On start and on
//! SIGHUP (or `refresh`, or admin `POST /reload`) the file's `[groups]`
//! are written to the store, so the file wins at those moments; groups
//! absent from the file are left alone (another locator or the admin API
//! owns them). The admin API's PUT and DELETE write to the store and
//! answer 503 when it cannot be reached.

pub mod etcd;
pub mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, watch};

pub use self::etcd::{EtcdClient, EtcdError, EtcdSetupError};
use super::config::ClusterConfig;

/// Whether the store is reachable, for `/ready` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// A session with etcd is up: the view follows the store.
    pub connected: bool,
    /// The last error, while disconnected.
    pub error: Option<String>,
    /// The store revision the view was last brought to.
    pub revision: i64,
    /// Sessions that ended with an error since the start.
    pub failures: u64,
}

/// What the admin API and reloads write through; shared with the task in
/// [`store`].
#[derive(Debug)]
pub struct Cluster {
    client: EtcdClient,
    config: ClusterConfig,
    status: watch::Sender<Status>,
    /// The file's groups, waiting to be written (start, SIGHUP).
    pending_groups: Mutex<Option<BTreeMap<String, BTreeMap<String, u32>>>>,
    wake: Notify,
}

impl Cluster {
    /// A handle for `config`; [`store::spawn`] starts its sync task.
    pub fn new(config: ClusterConfig) -> Result<Arc<Self>, EtcdSetupError> {
        let client = EtcdClient::with_security(&config.etcd, &config.security)?;
        Ok(Arc::new(Self {
            client,
            config,
            status: watch::Sender::new(Status::default()),
            pending_groups: Mutex::new(None),
            wake: Notify::new(),
        }))
    }

    /// The cluster's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The etcd client (shared by the sync task and the admin API).
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    /// The store's reachability now.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Follows the store's reachability.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Writes one group's weights to the store (the admin API); every
    /// locator's `routing` subscribers get it from their watch.
    pub async fn put_group(
        &self,
        name: &str,
        weights: &BTreeMap<String, u32>,
    ) -> Result<(), EtcdError> {
        let value = serde_json::to_vec(weights).map_err(|e| EtcdError::Refused(e.to_string()))?;
        self.client.put(&self.group_key(name), &value, 0).await
    }

    /// Deletes a group from the store; whether it was there.
    pub async fn delete_group(&self, name: &str) -> Result<bool, EtcdError> {
        self.client.delete(&self.group_key(name)).await
    }

    /// Queues the file's groups to be written to the store, now if it is
    /// reachable, else as soon as it is.
    pub fn write_groups(&self, groups: BTreeMap<String, BTreeMap<String, u32>>) {
        *self
            .pending_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(groups);
        self.wake.notify_one();
    }

    fn group_key(&self, name: &str) -> String {
        format!("{}/groups/{name}", self.config.prefix)
    }
}
