//! The sync of one locator's [`Registry`] with the cluster prefix in etcd:
//! owns the session (lease, keepalive, this locator's key), writing local
//! publications and the file's groups, and reading a snapshot of the prefix
//! then watching from its revision into the registry. While etcd cannot be
//! reached the registry keeps its last view; sessions are retried with
//! backoff, and everything local is written again when one comes up.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Cluster;
use super::etcd::{EtcdError, KeyValue, WatchEvent, b64, unb64};
use crate::backoff::Backoff;
use crate::locator::config::validate_group;
use crate::locator::registry::{Instance, Registry};
use crate::proto::Graph;
use crate::proto::locator::Endpoint;

/// The waits between two session attempts: 100 ms after a failed session,
/// doubled up to 5 s, each ±20%.
const BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).with_jitter(0.2);

/// A published instance as stored.
#[derive(Debug, Serialize, Deserialize)]
struct InstanceValue {
    endpoints: Vec<(String, u16)>,
    version: u64,
    /// The protocol graph, msgpack in base64.
    graph: String,
}

/// A locator as stored.
#[derive(Debug, Serialize, Deserialize)]
struct LocatorValue {
    endpoints: Vec<(String, u16)>,
}

/// Starts the task that keeps `registry` in step with the store.
/// `advertise` is this locator's address for the `cluster` method of the
/// others. On `shutdown` the task revokes its lease and ends.
pub fn spawn(
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    advertise: SocketAddr,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let sync = Sync {
        cluster,
        registry,
        session_id: crate::locator::server::random_uuid(),
        advertise: Endpoint::from(advertise),
        shutdown,
    };
    tracker.spawn(sync.run());
}

struct Sync {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    /// Names this process's service keys (`SESSION:TOKEN`), so that its
    /// own publications, served locally, are not counted twice.
    session_id: String,
    advertise: Endpoint,
    shutdown: CancellationToken,
}

impl Sync {
    async fn run(self) {
        let mut retry = 0;
        loop {
            let mut lease = 0;
            let result = tokio::select! {
                result = self.session(&mut lease) => result,
                () = self.shutdown.cancelled() => Ok(()),
            };
            if self.shutdown.is_cancelled() {
                if lease != 0 {
                    // Keys go now rather than at the TTL.
                    let _ = self.cluster.client.revoke(lease).await;
                }
                return;
            }
            let error = match result {
                Ok(()) => "the session ended".to_owned(),
                Err(e) => e.to_string(),
            };
            if self.cluster.status.borrow().connected {
                retry = 0;
                tracing::warn!(error = %error, "cluster store lost; serving the last view");
            } else {
                tracing::debug!(error = %error, "cluster store still unreachable");
            }
            self.cluster.status.send_modify(|s| {
                s.connected = false;
                s.error = Some(error);
                s.failures += 1;
            });
            metrics::gauge!(crate::metrics::LOCATOR_STORE_CONNECTED).set(0.0);
            metrics::counter!(crate::metrics::LOCATOR_STORE_FAILURES).increment(1);
            tokio::select! {
                () = tokio::time::sleep(BACKOFF.pause(retry)) => {}
                () = self.shutdown.cancelled() => return,
            }
            retry = retry.saturating_add(1);
        }
    }

    /// One session: a lease, this locator's keys, a snapshot, then the
    /// watch, until something fails. `lease` is set once granted.
    async fn session(&self, lease: &mut i64) -> Result<(), EtcdError> {
        let client = &self.cluster.client;
        let config = &self.cluster.config;
        *lease = client.grant(config.lease_ttl).await?;
        let me = LocatorValue {
            endpoints: vec![(self.advertise.host.clone(), self.advertise.port)],
        };
        client
            .put(&self.locator_key(), &to_json(&me)?, *lease)
            .await?;
        let mut services = self.registry.watch_services();
        services.borrow_and_update();
        let mut written = HashMap::new();
        self.write_publications(*lease, &mut written).await?;
        self.write_pending_groups().await?;
        let root = format!("{}/", config.prefix);
        let (revision, kvs) = client.range_prefix(&root).await?;
        let mut mirror: BTreeMap<String, Vec<u8>> =
            kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        self.apply(&mirror, revision);
        let mut watch = client.watch(&root, revision + 1).await?;
        self.cluster.status.send_modify(|s| {
            s.connected = true;
            s.error = None;
        });
        metrics::gauge!(crate::metrics::LOCATOR_STORE_CONNECTED).set(1.0);
        tracing::info!(revision, keys = mirror.len(), "cluster store connected");
        let mut keepalive = tokio::time::interval(config.lease_ttl / 3);
        keepalive.tick().await;
        loop {
            tokio::select! {
                _ = keepalive.tick() => client.keep_alive(*lease).await?,
                changed = services.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.write_publications(*lease, &mut written).await?;
                }
                () = self.cluster.wake.notified() => self.write_pending_groups().await?,
                next = watch.next() => {
                    let (revision, events) = next?;
                    if events.is_empty() {
                        continue;
                    }
                    for event in events {
                        match event {
                            WatchEvent::Put(KeyValue { key, value }) => {
                                mirror.insert(key, value);
                            }
                            WatchEvent::Delete(key) => {
                                mirror.remove(&key);
                            }
                        }
                    }
                    self.apply(&mirror, revision);
                }
            }
        }
    }

    fn locator_key(&self) -> String {
        format!(
            "{}/locators/{}",
            self.cluster.config.prefix,
            self.registry.uuid()
        )
    }

    /// Brings the store's service keys of this session in line with the
    /// registry's local publications: new ones are put, ended ones deleted.
    async fn write_publications(
        &self,
        lease: i64,
        written: &mut HashMap<String, Vec<u8>>,
    ) -> Result<(), EtcdError> {
        let prefix = &self.cluster.config.prefix;
        let mut wanted = HashMap::new();
        for (name, token, instance) in self.registry.local_publications() {
            let key = format!("{prefix}/services/{name}/{}:{token}", self.session_id);
            let mut graph = Vec::new();
            instance.graph.encode(&mut graph);
            let value = InstanceValue {
                endpoints: instance
                    .endpoints
                    .iter()
                    .map(|e| (e.host.clone(), e.port))
                    .collect(),
                version: instance.version,
                graph: b64(&graph),
            };
            wanted.insert(key, to_json(&value)?);
        }
        for (key, value) in &wanted {
            if written.get(key) != Some(value) {
                self.cluster.client.put(key, value, lease).await?;
                written.insert(key.clone(), value.clone());
            }
        }
        let gone: Vec<String> = written
            .keys()
            .filter(|key| !wanted.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            self.cluster.client.delete(&key).await?;
            written.remove(&key);
        }
        Ok(())
    }

    /// Writes the file's groups, if a start or reload queued them. They stay
    /// queued if the write fails.
    async fn write_pending_groups(&self) -> Result<(), EtcdError> {
        let pending = self
            .cluster
            .pending_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(groups) = pending else {
            return Ok(());
        };
        for (name, weights) in &groups {
            self.cluster.put_group(name, weights).await?;
        }
        let mut slot = self
            .cluster
            .pending_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A reload that came in meanwhile stays queued.
        if slot.as_ref() == Some(&groups) {
            *slot = None;
        }
        Ok(())
    }

    /// Serves the mirror of the prefix: other locators' instances, the
    /// groups (a new dump only when they changed), the peers.
    fn apply(&self, mirror: &BTreeMap<String, Vec<u8>>, revision: i64) {
        let prefix = &self.cluster.config.prefix;
        let services_root = format!("{prefix}/services/");
        let groups_root = format!("{prefix}/groups/");
        let locators_root = format!("{prefix}/locators/");
        let own = format!("{}:", self.session_id);
        let mut remote: HashMap<String, Vec<Instance>> = HashMap::new();
        let mut groups = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for (key, value) in mirror {
            if let Some(rest) = key.strip_prefix(&services_root) {
                let Some((name, id)) = rest.rsplit_once('/') else {
                    continue;
                };
                if id.starts_with(&own) || name.is_empty() {
                    continue;
                }
                match decode_instance(value) {
                    Ok(instance) => remote.entry(name.to_owned()).or_default().push(instance),
                    Err(e) => tracing::warn!(%key, error = %e, "ignoring a bad service key"),
                }
            } else if let Some(name) = key.strip_prefix(&groups_root) {
                let weights = serde_json::from_slice::<BTreeMap<String, u32>>(value)
                    .map_err(|e| e.to_string())
                    .and_then(|w| validate_group(&w).map(|()| w));
                match weights {
                    Ok(weights) if !name.is_empty() => {
                        groups.insert(name.to_owned(), weights);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%key, error = %e, "ignoring a bad group key"),
                }
            } else if let Some(uuid) = key.strip_prefix(&locators_root) {
                if uuid == self.registry.uuid() {
                    continue;
                }
                let endpoint = serde_json::from_slice::<LocatorValue>(value)
                    .ok()
                    .and_then(|v| v.endpoints.into_iter().next());
                if let Some((host, port)) = endpoint {
                    peers.insert(uuid.to_owned(), Endpoint { host, port });
                }
            }
        }
        self.registry.set_remote(remote);
        self.registry.set_peers(peers);
        if self.registry.groups() != groups {
            // Each group was validated above: this cannot fail.
            if let Err(e) = self.registry.set_groups(&groups) {
                tracing::error!(error = %e, "groups from the store not applied");
            }
        }
        self.cluster.status.send_modify(|s| s.revision = revision);
    }
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, EtcdError> {
    serde_json::to_vec(value).map_err(|e| EtcdError::Refused(e.to_string()))
}

fn decode_instance(value: &[u8]) -> Result<Instance, String> {
    let value: InstanceValue = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    let graph = unb64(&value.graph).ok_or("the graph is not base64")?;
    let graph = Graph::decode_bytes(&Bytes::from(graph)).map_err(|e| e.to_string())?;
    if value.version == 0 || value.endpoints.is_empty() {
        return Err("no version or no endpoints".into());
    }
    Ok(Instance {
        endpoints: value
            .endpoints
            .into_iter()
            .map(|(host, port)| Endpoint { host, port })
            .collect(),
        version: value.version,
        graph: Arc::new(graph),
    })
}
