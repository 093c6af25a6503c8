//! The pools' side of routing groups: owns applying the locator's rings to
//! the groups (members, their pools, schedules, slow start), deciding
//! ejections within a group's cap and ending them, retiring the pools of
//! members that left, and the admin view of pools and groups. A group's
//! own state and picks are in `group`; one pool's health in `outlier`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::group::{self, Group};
use super::outlier::OutlierSettings;
use super::{Pool, Pools, until_notified};
use crate::locator::Rings;

/// How routing groups are served: slow start and outlier ejection.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GroupSettings {
    /// A member that joins a group (or rises from weight 0) ramps from 10%
    /// to 100% of its weight over this long; zero: at once.
    pub slow_start: Duration,
    /// Outlier ejection.
    pub outlier: OutlierSettings,
}

impl Pools {
    /// Sets how routing groups are served (at start and on a reload).
    pub fn configure_groups(&self, settings: GroupSettings) {
        let mut current = self
            .group_settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != settings {
            *current = settings;
            drop(current);
            self.groups_wake.notify_one();
        }
    }

    pub(super) fn group_settings(&self) -> GroupSettings {
        *self
            .group_settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The routing group `name`, if the locator's rings have it.
    pub fn group(&self, name: &str) -> Option<Arc<Group>> {
        let groups = self
            .groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if groups.is_empty() {
            return None;
        }
        groups.get(name).cloned()
    }

    /// Waits until `accept` holds for the routing groups, re-checking each
    /// time they are applied again (a routing update, a slow-start step,
    /// an ejection or a return).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn wait_until_groups(&self, accept: impl Fn(&[Arc<Group>]) -> bool) {
        until_notified(&self.groups_applied, || accept(&self.groups())).await;
    }

    /// Every routing group, by name.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        let mut all: Vec<_> = self
            .groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// A request to `pool` was answered (by the app, whatever it said).
    pub fn report_success(&self, pool: &Pool) {
        pool.health.success();
    }

    /// A request to `pool` failed in the backend (see [`super::Health`]'s
    /// rules), or a connection to it could not be made or was lost. A run
    /// of them ejects a routing group's member, within the group's cap.
    pub fn report_failure(&self, pool: &Pool) {
        let outlier = self.group_settings().outlier;
        if !pool.health.failure(outlier.consecutive_failures) {
            return;
        }
        let _deciding = self
            .ejecting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.health.is_ejected() {
            return;
        }
        let groups: Vec<_> = self
            .groups()
            .into_iter()
            .filter(|g| g.has_member(&pool.service))
            .collect();
        if groups.is_empty() {
            return;
        }
        for group in &groups {
            let members = group.members();
            let ejected = members
                .iter()
                .filter(|m| m.pool().health.is_ejected())
                .count();
            if ejected + 1 > outlier.max_ejected(members.len()) {
                tracing::warn!(
                    group = group.name(),
                    member = %pool.service,
                    failures = pool.health.consecutive_failures(),
                    ejected,
                    "member failing but not ejected: the group's ejection cap is reached"
                );
                return;
            }
        }
        let length = pool.health.eject(Instant::now(), outlier.base_ejection);
        for group in &groups {
            tracing::warn!(
                group = group.name(),
                member = %pool.service,
                failures = pool.health.consecutive_failures(),
                ejection = pool.health.ejections(),
                ?length,
                "member ejected after backend failures in a row"
            );
            metrics::counter!(
                crate::metrics::OUTLIER_EJECTIONS,
                crate::metrics::SERVICE => group.name().to_owned(),
                crate::metrics::MEMBER => pool.service.clone()
            )
            .increment(1);
        }
        self.groups_wake.notify_one();
    }

    /// Applies the locator's rings: each group's members, weights and
    /// schedule; ejections that are due end; members that left every
    /// group have their pools drained. Returns when to look again (a slow
    /// start or an ejection in progress).
    pub(super) fn apply_rings(self: &Arc<Self>, rings: &Rings) -> Option<Instant> {
        let now = Instant::now();
        let settings = self.group_settings();
        let mut again: Option<Instant> = None;
        let mut soonest = |at: Option<Instant>| {
            if let Some(at) = at {
                again = Some(again.map_or(at, |a| a.min(at)));
            }
        };
        let mut left = Vec::new();
        let mut groups = self
            .groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        groups.retain(|name, group| {
            let keep = rings.get(name).is_some_and(|r| !r.is_empty());
            if !keep {
                tracing::info!(group = %name, "routing group gone");
                left.extend(group.members());
            }
            keep
        });
        for (name, ring) in rings.iter().filter(|(_, r)| !r.is_empty()) {
            let group = groups
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Group::new(name.clone())));
            for member in group.members() {
                if member.pool().health.return_if_due(now) {
                    tracing::info!(group = %name, member = %member.name(), "ejected member returns");
                    metrics::counter!(
                        crate::metrics::OUTLIER_RETURNS,
                        crate::metrics::SERVICE => name.clone(),
                        crate::metrics::MEMBER => member.name().to_string()
                    )
                    .increment(1);
                }
                soonest(member.pool().health.ejected_until());
            }
            let budget = (self
                .settings
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner))(name)
            .size;
            let context = group::RebuildContext {
                now,
                slow_start: settings.slow_start,
                budget,
            };
            let rebuilt = group.rebuild(Arc::clone(ring), &context, &mut |member| {
                self.get_or_start(member, false)
            });
            soonest(rebuilt.again_at);
            left.extend(rebuilt.left);
        }
        let member_of_any = |service: &str| groups.values().any(|g| g.has_member(service));
        let leaving: Vec<_> = left
            .into_iter()
            .filter(|m| !member_of_any(m.name()))
            .collect();
        let group_names: Vec<String> = groups.keys().cloned().collect();
        drop(groups);
        for member in leaving {
            let pool = member.pool();
            pool.set_group_share(0);
            if !pool.kept.load(Ordering::Acquire) {
                tracing::info!(member = %member.name(), "member left its routing groups; its pool drains");
                self.retire(pool);
            }
        }
        self.groups_applied.notify_waiters();
        // A pool made for a group's name before its ring was known (it
        // resolved the group on the locator) is of no use now.
        for name in group_names {
            let existing = self
                .pools
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&name)
                .cloned();
            if let Some(pool) = existing {
                tracing::info!(group = %name, "a pool named after a routing group drains: requests now pick members");
                self.retire(&pool);
            }
        }
        again
    }

    /// Takes `pool` out, and has its maintainer drain it and end; waiting
    /// checkouts give up with [`PoolError::Left`].
    pub(super) fn retire(&self, pool: &Arc<Pool>) {
        pool.left.store(true, Ordering::Release);
        self.forget(pool);
        pool.wake.notify_one();
        pool.ready.notify_waiters();
    }

    /// Pools and routing groups as the admin API shows them: per service,
    /// its size and connections; per group, its members.
    pub fn view(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut view: serde_json::Map<String, serde_json::Value> = self
            .all()
            .iter()
            .map(|pool| {
                let conns = serde_json::to_value(pool.snapshot()).unwrap_or_default();
                let mut entry =
                    serde_json::json!({"size": pool.settings().size, "connections": conns});
                if pool.is_member() {
                    entry["group_member"] = serde_json::Value::Bool(true);
                }
                (pool.service().to_owned(), entry)
            })
            .collect();
        for group in self.groups() {
            let members = serde_json::to_value(group.view()).unwrap_or_default();
            view.insert(
                group.name().to_owned(),
                serde_json::json!({"group": true, "members": members}),
            );
        }
        view
    }
}
