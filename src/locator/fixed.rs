//! A fixed locator: owns name resolution from a static table (the locator
//! config format), for tests and for users without a Cocaine locator.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::Rng;
use tokio::sync::watch;

use super::config::LocatorConfig;
use super::continuum::Continuum;
use super::{BoxFuture, Locator, LocatorError, Resolved, Rings, socket_addrs};
use crate::proto::Graph;

/// Resolves from a table given at construction.
#[derive(Debug)]
pub struct FixedLocator {
    services: BTreeMap<String, Resolved>,
    rings: watch::Sender<Arc<Rings>>,
}

impl FixedLocator {
    /// The services and groups of a locator config.
    pub fn new(config: &LocatorConfig) -> Self {
        let graph = Arc::new(Graph::app());
        let services = config
            .services
            .iter()
            .map(|(name, s)| {
                let resolved = Resolved {
                    service: name.clone(),
                    endpoints: socket_addrs(&s.endpoints),
                    version: s.version,
                    graph: Arc::clone(&graph),
                };
                (name.clone(), resolved)
            })
            .collect();
        let rings = config
            .groups
            .iter()
            .filter_map(|(name, weights)| {
                Continuum::new(weights)
                    .ok()
                    .map(|ring| (name.clone(), Arc::new(ring)))
            })
            .collect();
        Self {
            services,
            rings: watch::Sender::new(Arc::new(rings)),
        }
    }

    /// Replaces one group's ring, as a locator's `routing` update would.
    pub fn set_group(&self, name: &str, ring: Continuum) {
        self.rings.send_modify(|rings| {
            let mut next = (**rings).clone();
            next.insert(name.to_owned(), Arc::new(ring));
            *rings = Arc::new(next);
        });
    }

    fn lookup(&self, name: &str) -> Result<Resolved, LocatorError> {
        let rings = self.rings.borrow();
        let target = match rings.get(name) {
            Some(ring) => ring
                .lookup(rand::rng().random())
                .ok_or_else(|| LocatorError::NotFound(name.to_owned()))?
                .to_owned(),
            None => name.to_owned(),
        };
        self.services
            .get(&target)
            .cloned()
            .ok_or(LocatorError::NotFound(target))
    }
}

impl Locator for FixedLocator {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Resolved, LocatorError>> {
        let result = self.lookup(name);
        Box::pin(async move { result })
    }

    fn routing(&self) -> watch::Receiver<Arc<Rings>> {
        self.rings.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_services_and_groups() {
        let config = LocatorConfig::parse(
            r#"
            [services.v1]
            endpoints = ["127.0.0.1:1"]
            [services.v2]
            endpoints = ["127.0.0.1:2"]
            [groups.g]
            v1 = 0
            v2 = 1
            "#,
            std::path::Path::new("inline"),
        )
        .unwrap();
        let locator = FixedLocator::new(&config);
        assert_eq!(locator.resolve("v1").await.unwrap().endpoints[0].port(), 1);
        let picked = locator.resolve("g").await.unwrap();
        assert_eq!(
            (picked.service.as_str(), picked.endpoints[0].port()),
            ("v2", 2)
        );
        assert!(locator.resolve("nope").await.unwrap_err().is_not_found());
        let routing = locator.routing();
        locator.set_group("g", Continuum::new(&[("v1".to_owned(), 1)].into()).unwrap());
        assert!(routing.has_changed().unwrap());
        assert_eq!(locator.resolve("g").await.unwrap().service, "v1");
    }
}
