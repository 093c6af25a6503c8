//! The locator's state: owns the services that can be resolved (configured,
//! published here, and published through other locators of the cluster),
//! the routing groups with their continua, the cluster's other locators,
//! and the current `routing` dump that every subscriber follows.
//! Protocol-free and store-free: the served methods in [`super::server`]
//! and the cluster sync in [`super::cluster::store`] call into it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::config::{StaticService, validate_group};
use super::continuum::Continuum;
use crate::proto::locator::{Endpoint, ResolveReply, RoutingUpdate};
use crate::proto::{ErrorCode, Graph, RemoteError};

/// The name the locator resolves itself by.
pub const OWN_NAME: &str = "locator";

/// The locator protocol's version (PROTOCOL.md §3.2).
const OWN_VERSION: u64 = 3;

/// One resolvable instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Where it listens.
    pub endpoints: Vec<Endpoint>,
    /// Its protocol version.
    pub version: u64,
    /// Its protocol graph.
    pub graph: Arc<Graph>,
}

#[derive(Debug, Default)]
struct Inner {
    configured: BTreeMap<String, Instance>,
    /// The locator itself, resolvable as `locator` (see
    /// [`Registry::set_own`]).
    own: Option<Instance>,
    /// Published instances by name, each with the token its publisher holds.
    published: HashMap<String, Vec<(u64, Instance)>>,
    /// Instances published through other locators, from the cluster store.
    remote: HashMap<String, Vec<Instance>>,
    /// The other locators of the cluster, by uuid.
    peers: BTreeMap<String, Endpoint>,
    groups: BTreeMap<String, (BTreeMap<String, u32>, Continuum)>,
    next_token: u64,
    /// Per name, the turn of the next resolve among its instances.
    turns: HashMap<String, usize>,
    /// `routing` subscribers by router id; a new subscription with the same
    /// id cancels the old one.
    subscribers: HashMap<Vec<u8>, (u64, CancellationToken)>,
}

/// The locator's state, shared by every session and the admin API.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    dump: watch::Sender<Arc<RoutingUpdate>>,
    /// Bumped on every publish and unpublish.
    services_changed: watch::Sender<u64>,
    uuid: String,
}

impl Registry {
    /// A registry with the given uuid and nothing registered.
    pub fn new(uuid: String) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            dump: watch::Sender::new(Arc::new(RoutingUpdate::default())),
            services_changed: watch::Sender::new(0),
            uuid,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the locator resolve its own name, `locator`, to `endpoints`
    /// (version 3, the locator graph), as Cocaine's runtime does. A
    /// configured or published `locator` still comes first.
    pub fn set_own(&self, endpoints: Vec<Endpoint>) {
        self.lock().own = Some(Instance {
            endpoints,
            version: OWN_VERSION,
            graph: Arc::new(Graph::locator()),
        });
    }

    /// This locator's uuid.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Replaces the configured services (published ones are kept).
    pub fn set_configured(&self, services: &BTreeMap<String, StaticService>) {
        let app = Arc::new(Graph::app());
        self.lock().configured = services
            .iter()
            .map(|(name, s)| {
                let instance = Instance {
                    endpoints: s.endpoints.clone(),
                    version: s.version,
                    graph: Arc::clone(&app),
                };
                (name.clone(), instance)
            })
            .collect();
    }

    /// Replaces every routing group at once (a config reload) and pushes a
    /// new dump. Nothing changes unless every group is valid.
    pub fn set_groups(
        &self,
        groups: &BTreeMap<String, BTreeMap<String, u32>>,
    ) -> Result<(), String> {
        let mut built = BTreeMap::new();
        for (name, weights) in groups {
            validate_group(weights).map_err(|e| format!("group `{name}`: {e}"))?;
            let ring = Continuum::new(weights).map_err(|e| format!("group `{name}`: {e}"))?;
            built.insert(name.clone(), (weights.clone(), ring));
        }
        self.lock().groups = built;
        self.push_dump();
        Ok(())
    }

    /// Sets one group's weights (the admin API) and pushes a new dump.
    pub fn set_group(&self, name: &str, weights: BTreeMap<String, u32>) -> Result<(), String> {
        if name.is_empty() {
            return Err("a group name must not be empty".into());
        }
        validate_group(&weights)?;
        let ring = Continuum::new(&weights).map_err(|e| e.to_string())?;
        self.lock().groups.insert(name.to_owned(), (weights, ring));
        self.push_dump();
        Ok(())
    }

    /// Removes a group; `false` if there was none.
    pub fn remove_group(&self, name: &str) -> bool {
        let removed = self.lock().groups.remove(name).is_some();
        if removed {
            self.push_dump();
        }
        removed
    }

    /// Every group's weights.
    pub fn groups(&self) -> BTreeMap<String, BTreeMap<String, u32>> {
        self.lock()
            .groups
            .iter()
            .map(|(name, (weights, _))| (name.clone(), weights.clone()))
            .collect()
    }

    /// Every resolvable name with its instances (configured first).
    pub fn services(&self) -> BTreeMap<String, Vec<Instance>> {
        let inner = self.lock();
        let mut all: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for (name, instance) in &inner.configured {
            all.entry(name.clone()).or_default().push(instance.clone());
        }
        for (name, instances) in &inner.published {
            all.entry(name.clone())
                .or_default()
                .extend(instances.iter().map(|(_, i)| i.clone()));
        }
        for (name, instances) in &inner.remote {
            all.entry(name.clone())
                .or_default()
                .extend(instances.iter().cloned());
        }
        all
    }

    /// The instances published to this locator: name, token, instance.
    pub fn local_publications(&self) -> Vec<(String, u64, Instance)> {
        let inner = self.lock();
        inner
            .published
            .iter()
            .flat_map(|(name, instances)| {
                instances
                    .iter()
                    .map(move |(token, i)| (name.clone(), *token, i.clone()))
            })
            .collect()
    }

    /// Replaces the instances published through other locators (the
    /// cluster store's view); resolve serves them beside local ones.
    pub fn set_remote(&self, remote: HashMap<String, Vec<Instance>>) {
        let mut inner = self.lock();
        if inner.remote == remote {
            return;
        }
        inner.remote = remote;
        drop(inner);
        self.services_changed.send_modify(|n| *n += 1);
    }

    /// Replaces the other locators of the cluster (what `cluster` answers).
    pub fn set_peers(&self, peers: BTreeMap<String, Endpoint>) {
        self.lock().peers = peers;
    }

    /// The other locators of the cluster, by uuid.
    pub fn peers(&self) -> BTreeMap<String, Endpoint> {
        self.lock().peers.clone()
    }

    fn push_dump(&self) {
        let groups = self
            .lock()
            .groups
            .iter()
            .map(|(name, (_, ring))| (name.clone(), ring.points().to_vec()))
            .collect();
        self.dump.send_replace(Arc::new(RoutingUpdate { groups }));
    }

    /// Follows publish and unpublish events (a counter that changes).
    pub fn watch_services(&self) -> watch::Receiver<u64> {
        self.services_changed.subscribe()
    }

    /// Whether `name` currently resolves to a configured or published service.
    pub fn has_service(&self, name: &str) -> bool {
        let inner = self.lock();
        inner.configured.contains_key(name)
            || inner.published.contains_key(name)
            || inner.remote.contains_key(name)
    }

    /// Follows the `routing` dump: the current one, then every change.
    pub fn watch_dump(&self) -> watch::Receiver<Arc<RoutingUpdate>> {
        self.dump.subscribe()
    }

    /// `resolve`: a routing group is remapped to one member by its
    /// continuum (a random point without a seed, the md5 point with one),
    /// then the name is looked up; several instances are picked from at
    /// random so reconnecting clients spread out.
    pub fn resolve(&self, name: &str, seed: Option<&[u8]>) -> Result<ResolveReply, RemoteError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut rng = rand::rng();
        let target = match inner.groups.get(name) {
            Some((_, ring)) => {
                let member = match seed {
                    Some(seed) => ring.lookup_seed(seed),
                    None => ring.lookup(rng.random()),
                };
                member.ok_or_else(not_available)?.to_owned()
            }
            None => name.to_owned(),
        };
        let configured = inner.configured.get(&target);
        let published = inner.published.get(&target).map_or(&[][..], Vec::as_slice);
        let remote = inner.remote.get(&target).map_or(&[][..], Vec::as_slice);
        let count = published.len() + remote.len() + usize::from(configured.is_some());
        if count == 0 {
            return match &inner.own {
                Some(own) if target == OWN_NAME => Ok(ResolveReply {
                    endpoints: own.endpoints.clone(),
                    version: own.version,
                    graph: (*own.graph).clone(),
                }),
                _ => Err(not_available()),
            };
        }
        // Instances in turn, not at random (the runtime's locator picks at
        // random): a client that resolves once per connection spreads its
        // connections evenly over the instances.
        let turn = inner.turns.entry(target.clone()).or_insert(0);
        let mut pick = *turn % count;
        *turn = turn.wrapping_add(1);
        let instance = 'pick: {
            if let Some(instance) = configured {
                if pick == 0 {
                    break 'pick instance;
                }
                pick -= 1;
            }
            match published.get(pick) {
                Some((_, instance)) => instance,
                None => &remote[pick - published.len()],
            }
        };
        Ok(ResolveReply {
            endpoints: instance.endpoints.clone(),
            version: instance.version,
            graph: (*instance.graph).clone(),
        })
    }

    /// `publish`: registers an instance and returns the token that removes
    /// it. A graph with version 0 is refused with `missing_version_error`.
    pub fn publish(&self, name: &str, instance: Instance) -> Result<u64, RemoteError> {
        if instance.version == 0 {
            return Err(RemoteError::new(
                ErrorCode::MISSING_VERSION,
                "missing protocol version",
            ));
        }
        if name.is_empty() {
            return Err(RemoteError::new(
                ErrorCode::INVALID_ARGUMENT,
                "service name must not be empty",
            ));
        }
        let mut inner = self.lock();
        inner.next_token += 1;
        let token = inner.next_token;
        inner
            .published
            .entry(name.to_owned())
            .or_default()
            .push((token, instance));
        drop(inner);
        self.services_changed.send_modify(|n| *n += 1);
        Ok(token)
    }

    /// Removes a published instance.
    pub fn unpublish(&self, name: &str, token: u64) {
        let mut inner = self.lock();
        if let Some(instances) = inner.published.get_mut(name) {
            instances.retain(|(t, _)| *t != token);
            if instances.is_empty() {
                inner.published.remove(name);
            }
        }
        drop(inner);
        self.services_changed.send_modify(|n| *n += 1);
    }

    /// Registers a `routing` subscriber under `router_id`, cancelling any
    /// earlier one with the same id. Returns its generation and token.
    pub fn subscribe(&self, router_id: &[u8]) -> (u64, CancellationToken) {
        let mut inner = self.lock();
        inner.next_token += 1;
        let generation = inner.next_token;
        let token = CancellationToken::new();
        if let Some((_, old)) = inner
            .subscribers
            .insert(router_id.to_vec(), (generation, token.clone()))
        {
            old.cancel();
        }
        (generation, token)
    }

    /// Removes a subscriber, unless a newer one took its id.
    pub fn unsubscribe(&self, router_id: &[u8], generation: u64) {
        let mut inner = self.lock();
        if inner
            .subscribers
            .get(router_id)
            .is_some_and(|(g, _)| *g == generation)
        {
            inner.subscribers.remove(router_id);
        }
    }

    /// The number of live `routing` subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }
}

fn not_available() -> RemoteError {
    RemoteError::new(ErrorCode::SERVICE_NOT_AVAILABLE, "service is not available")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(port: u16) -> Instance {
        Instance {
            endpoints: vec![Endpoint {
                host: "127.0.0.1".into(),
                port,
            }],
            version: 1,
            graph: Arc::new(Graph::app()),
        }
    }

    #[test]
    fn publish_resolve_unpublish() {
        let r = Registry::new("u".into());
        assert_eq!(
            r.resolve("echo", None).unwrap_err().code,
            ErrorCode::SERVICE_NOT_AVAILABLE
        );
        let token = r.publish("echo", instance(1)).unwrap();
        assert_eq!(r.resolve("echo", None).unwrap().endpoints[0].port, 1);
        r.unpublish("echo", token);
        assert!(r.resolve("echo", None).is_err());
        let mut zero = instance(1);
        zero.version = 0;
        assert_eq!(
            r.publish("echo", zero).unwrap_err().code,
            ErrorCode::MISSING_VERSION
        );
    }

    #[test]
    fn several_instances_are_picked_at_random() {
        let r = Registry::new("u".into());
        r.publish("echo", instance(1)).unwrap();
        r.publish("echo", instance(2)).unwrap();
        let mut seen = [0; 3];
        for _ in 0..400 {
            seen[usize::from(r.resolve("echo", None).unwrap().endpoints[0].port)] += 1;
        }
        assert!(seen[1] > 100 && seen[2] > 100, "{seen:?}");
    }

    #[test]
    fn groups_remap_to_members_and_push_dumps() {
        let r = Registry::new("u".into());
        r.publish("app_v1", instance(1)).unwrap();
        r.publish("app_v2", instance(2)).unwrap();
        let mut dump = r.watch_dump();
        r.set_group("g", [("app_v1".into(), 1), ("app_v2".into(), 3)].into())
            .unwrap();
        assert!(dump.has_changed().unwrap());
        assert_eq!(dump.borrow_and_update().groups["g"].len(), 512);
        let port = |seed: &str| r.resolve("g", Some(seed.as_bytes())).unwrap().endpoints[0].port;
        assert_eq!((port("user-42"), port("alice"), port("bob")), (1, 1, 2));
        assert!(r.set_group("g", [("app_v1".into(), 0)].into()).is_err());
        assert_eq!(
            r.groups()["g"]["app_v2"],
            3,
            "a refused change keeps the old weights"
        );
    }

    #[test]
    fn remote_instances_resolve_in_turn_with_local_ones() {
        let r = Registry::new("u".into());
        r.publish("echo", instance(1)).unwrap();
        r.set_remote([("echo".to_owned(), vec![instance(2)])].into());
        r.set_remote([("other".to_owned(), vec![instance(3)])].into());
        assert!(r.has_service("other"));
        r.set_remote([("echo".to_owned(), vec![instance(2), instance(3)])].into());
        let mut seen = [0; 4];
        for _ in 0..30 {
            seen[usize::from(r.resolve("echo", None).unwrap().endpoints[0].port)] += 1;
        }
        assert_eq!(seen, [0, 10, 10, 10]);
        assert_eq!(r.local_publications().len(), 1);
        assert_eq!(r.services()["echo"].len(), 3);
        r.set_remote(HashMap::new());
        assert!(!r.has_service("other"));
    }

    #[test]
    fn resubscribing_cancels_the_old_stream() {
        let r = Registry::new("u".into());
        let (g1, t1) = r.subscribe(b"router");
        let (g2, t2) = r.subscribe(b"router");
        assert!(t1.is_cancelled() && !t2.is_cancelled());
        r.unsubscribe(b"router", g1);
        assert_eq!(
            r.subscriber_count(),
            1,
            "the old generation does not remove the new"
        );
        r.unsubscribe(b"router", g2);
        assert_eq!(r.subscriber_count(), 0);
    }
}
