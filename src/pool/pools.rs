//! The registry: every service's pool and every routing group's members,
//! created on first use, forgotten when idle or unknown.

use super::*;

/// Settings per service.
type SettingsFn = Box<dyn Fn(&str) -> PoolSettings + Send + Sync>;

/// Every service's pool, and every routing group's members.
pub struct Pools {
    pub(super) pools: RwLock<HashMap<String, Arc<Pool>>>,
    /// Routing groups by name, from the locator's rings.
    pub(super) groups: RwLock<HashMap<String, Arc<Group>>>,
    pub(super) group_settings: RwLock<GroupSettings>,
    /// Wakes the group maintainer (an ejection, new settings).
    pub(super) groups_wake: Arc<Notify>,
    /// Signals that the groups were applied again.
    pub(super) groups_applied: Notify,
    /// Serialises ejection decisions (the share cap counts the others).
    pub(super) ejecting: std::sync::Mutex<()>,
    /// Signals that a pool was added or taken out.
    pub(super) changed: Notify,
    pub(super) locator: Arc<dyn Locator>,
    pub(super) settings: RwLock<SettingsFn>,
    pub(super) tracker: TaskTracker,
    pub(super) shutdown: CancellationToken,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field(
                "services",
                &self
                    .all()
                    .iter()
                    .map(|p| p.service().to_owned())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Pools {
    /// Pools resolving through `locator`, with settings per service from
    /// `settings`. Follows the locator's routing groups: when a group's
    /// ring changes, that group's pool (only) refreshes.
    pub fn new(
        locator: Arc<dyn Locator>,
        settings: impl Fn(&str) -> PoolSettings + Send + Sync + 'static,
    ) -> Arc<Self> {
        let pools = Arc::new(Self {
            pools: RwLock::new(HashMap::new()),
            groups: RwLock::new(HashMap::new()),
            group_settings: RwLock::new(GroupSettings::default()),
            groups_wake: Arc::new(Notify::new()),
            groups_applied: Notify::new(),
            ejecting: std::sync::Mutex::new(()),
            changed: Notify::new(),
            locator,
            settings: RwLock::new(Box::new(settings)),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        });
        // The rings known now apply before the first request can come.
        let routing = pools.locator.routing();
        let known = Arc::clone(&routing.borrow());
        pools.apply_rings(&known);
        pools.tracker.spawn(maintain::follow_groups(
            Arc::downgrade(&pools),
            routing,
            pools.shutdown.clone(),
            Arc::clone(&pools.groups_wake),
        ));
        pools
    }

    /// The locator the pools resolve through.
    pub fn locator(&self) -> &Arc<dyn Locator> {
        &self.locator
    }

    /// The pool of `service`, created (and started) on first use.
    pub fn get(self: &Arc<Self>, service: &str) -> Arc<Pool> {
        self.get_or_start(service, false)
    }

    /// [`Pools::get`]; with `kept`, the pool is marked kept before its
    /// maintainer starts.
    pub(super) fn get_or_start(self: &Arc<Self>, service: &str, kept: bool) -> Arc<Pool> {
        if let Some(pool) = self
            .pools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(service)
        {
            return Arc::clone(pool);
        }
        let mut pools = self
            .pools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pool) = pools.get(service) {
            return Arc::clone(pool);
        }
        let settings = (self
            .settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))(service);
        let pool = Arc::new(Pool::new(service.to_owned(), settings));
        pool.kept.store(kept, Ordering::Release);
        pools.insert(service.to_owned(), Arc::clone(&pool));
        drop(pools);
        self.announce_change();
        self.tracker.spawn(maintain::run(
            Arc::clone(&pool),
            Arc::clone(&self.locator),
            self.shutdown.clone(),
            self.tracker.clone(),
            Arc::downgrade(self),
        ));
        pool
    }

    /// Replaces the settings per service (a config reload) and applies
    /// them to every pool there is (see [`Pool::settings`]).
    pub fn reconfigure(&self, settings: impl Fn(&str) -> PoolSettings + Send + Sync + 'static) {
        // Lock order as in `get`: pools, then settings; a pool created
        // meanwhile gets the new settings.
        let pools = self
            .pools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut current = self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Box::new(settings);
        for pool in pools.values() {
            pool.set_settings((current)(&pool.service));
        }
    }

    /// The pool of a configured service ([`Pools::get`]), kept even while
    /// the locator does not know the name. `None` for a routing group's
    /// name: its members' pools serve it (and are kept while members).
    pub fn keep(self: &Arc<Self>, service: &str) -> Option<Arc<Pool>> {
        if self.group(service).is_some() {
            return None;
        }
        let pool = self.get_or_start(service, true);
        // An existing pool (first made by a request) is kept from now on.
        pool.kept.store(true, Ordering::Release);
        Some(pool)
    }

    /// Takes `pool` out (if it is still the one for its service).
    pub(super) fn forget(&self, pool: &Arc<Pool>) {
        if self.take_out(pool, usize::MAX) {
            self.announce_change();
        }
    }

    /// Takes `pool` out if nothing but this map and `pool` itself (its
    /// maintainer's reference) holds it: no request is on its way to a
    /// checkout, and none can start while the map is locked. Whether it
    /// was taken out; the caller then calls [`Pools::announce_change`].
    pub(super) fn forget_unused(&self, pool: &Arc<Pool>) -> bool {
        self.take_out(pool, 2)
    }

    /// Wakes [`Pools::wait_until`] callers after a pool was added or taken out.
    pub(super) fn announce_change(&self) {
        self.changed.notify_waiters();
    }

    pub(super) fn take_out(&self, pool: &Arc<Pool>, max_holders: usize) -> bool {
        let mut pools = self
            .pools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pools
            .get(&pool.service)
            .is_some_and(|current| Arc::ptr_eq(current, pool))
            && Arc::strong_count(pool) <= max_holders
            && pools.remove(&pool.service).is_some()
    }

    /// Waits until `accept` holds for the pools there are, re-checking
    /// each time one is added or taken out.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn wait_until(&self, accept: impl Fn(&[Arc<Pool>]) -> bool) {
        until_notified(&self.changed, || accept(&self.all())).await;
    }

    /// Every pool, by service.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut all: Vec<_> = self
            .pools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.service.cmp(&b.service));
        all
    }

    /// Stops maintaining, drains every connection, and waits for them.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        for pool in self.all() {
            pool.drain_all().await;
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}
