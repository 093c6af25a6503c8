//! Routing groups as the gateway serves them: owns, per group, its members
//! (read from the locator's `routing` ring), a pool per member, each
//! member's effective weight (after slow start and ejection), the schedule
//! that requests walk to pick a member exactly by weight, and the sticky
//! pick on the ring. It picks a member and a connection; it never sends.
//!
//! Weights: the `routing` stream carries each group's ring, not its
//! weights. A member's weight is taken as its number of ring points, which
//! the locator makes proportional to the configured weight (4 ×
//! `lround(weight / total × 64 × members)`, PROTOCOL.md §3.4), so a share
//! is off the configured one by at most half a step: 0.4 percentage points
//! for two members, less for more.
//!
//! The connection budget: a group gets its own pool size (`pool.size`, or
//! `pool_size` under `[services.GROUP]`), split over the members by
//! weight, each member at least [`MIN_MEMBER_CONNECTIONS`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::Pool;
use super::schedule::{interleave, whole_weights};
use crate::locator::Continuum;
use crate::mux::MuxHandle;

/// The fewest connections a member of a group keeps, however light.
pub const MIN_MEMBER_CONNECTIONS: usize = 2;

/// Slow start begins at this share of a member's weight.
const RAMP_FLOOR: f64 = 0.1;

/// How often effective weights are recomputed while a member ramps up or
/// waits for its first connection.
const RAMP_TICK: Duration = Duration::from_millis(50);

/// One member of a group.
#[derive(Debug)]
pub struct Member {
    name: Arc<str>,
    pool: Arc<Pool>,
    ramp: Mutex<Ramp>,
    picks: metrics::Counter,
}

/// Where a member is in its slow start.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ramp {
    /// Full weight.
    Done,
    /// Joined; the ramp starts when its first connection is up.
    Waiting,
    /// Ramping since then.
    Since(Instant),
}

impl Member {
    /// The member's service name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Its slow-start factor at `now` (1 when not ramping).
    fn ramp_factor(&self, now: Instant, slow_start: Duration) -> f64 {
        match *self.ramp.lock().unwrap_or_else(PoisonError::into_inner) {
            Ramp::Done => 1.0,
            Ramp::Waiting => 0.0,
            Ramp::Since(_) if slow_start.is_zero() => 1.0,
            Ramp::Since(from) => {
                let done =
                    now.saturating_duration_since(from).as_secs_f64() / slow_start.as_secs_f64();
                (RAMP_FLOOR + (1.0 - RAMP_FLOOR) * done).min(1.0)
            }
        }
    }
}

/// A group's members and schedule as of its last change. Requests read one
/// snapshot; a change replaces it whole.
#[derive(Debug, Default)]
struct Snapshot {
    ring: Arc<Continuum>,
    members: Vec<Arc<Member>>,
    /// Points on the ring, per member.
    weights: Vec<u32>,
    /// Effective weight per member (points × slow start, 0 if ejected).
    effective: Vec<f64>,
    /// The interleaving of member indexes, one cycle.
    schedule: Vec<u32>,
}

/// What a request gets from [`Group::choose`].
#[derive(Debug)]
pub enum Choice {
    /// A member with a usable connection.
    Ready(Arc<Member>, MuxHandle),
    /// No member had a usable connection: wait for this one's.
    Wait(Arc<Member>),
}

/// A routing group.
#[derive(Debug)]
pub struct Group {
    name: String,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The next position in the schedule, shared by every request.
    next: AtomicUsize,
}

impl Group {
    pub(super) fn new(name: String) -> Self {
        Self {
            name,
            snapshot: RwLock::new(Arc::default()),
            next: AtomicUsize::new(0),
        }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The member for a request, and a connection to it if one is usable.
    ///
    /// Without `sticky`, the next position of the schedule; with it, the
    /// member owning that point on the ring (the locator's seeded rule).
    /// A member that is ejected (or, for a sticky key, has weight 0 after
    /// ejection) is passed over, and so is one with no usable connection
    /// (not connected yet, or down) or named by `exclude` (a retry): the
    /// next on the ring, or the heaviest other member, takes the request.
    /// `None` when the group has no members.
    pub fn choose(&self, sticky: Option<u32>, exclude: Option<&str>) -> Option<Choice> {
        let snapshot = self.snapshot();
        let first = match sticky {
            Some(point) => snapshot.ring_index(point)?,
            None => {
                let len = snapshot.schedule.len();
                if len == 0 {
                    return None;
                }
                let at = self.next.fetch_add(1, Ordering::Relaxed) % len;
                snapshot.schedule[at] as usize
            }
        };
        // The common case first, with nothing allocated: the chosen member
        // takes traffic and has a usable connection.
        let chosen = &snapshot.members[first];
        let excluded =
            |member: &Member| exclude == Some(&*member.name) && snapshot.members.len() > 1;
        if (sticky.is_none() || snapshot.takes(first))
            && !excluded(chosen)
            && let Some(handle) = chosen.pool.pick()
        {
            chosen.picks.increment(1);
            return Some(Choice::Ready(Arc::clone(chosen), handle));
        }
        let mut waiting = None;
        for index in snapshot.candidates(first, sticky) {
            let member = &snapshot.members[index];
            if excluded(member) {
                continue;
            }
            if let Some(handle) = member.pool.pick() {
                member.picks.increment(1);
                return Some(Choice::Ready(Arc::clone(member), handle));
            }
            if waiting.is_none() {
                waiting = Some(Arc::clone(member));
            }
        }
        let member = waiting.or_else(|| snapshot.members.get(first).cloned())?;
        member.picks.increment(1);
        Some(Choice::Wait(member))
    }

    /// The members, for [`super::Pools`]' bookkeeping.
    pub(super) fn members(&self) -> Vec<Arc<Member>> {
        self.snapshot().members.clone()
    }

    /// Whether `pool` is one of its members.
    pub(super) fn has_member(&self, service: &str) -> bool {
        self.snapshot().members.iter().any(|m| &*m.name == service)
    }

    /// Rebuilds from `ring` (a new one, or the current one again):
    /// members that joined get a pool from `pool_for`, and (unless this is
    /// the group's first ring) a slow start; members that left are
    /// returned. Recomputes effective weights, the schedule and each
    /// member's share of `budget` connections. Returns the members that
    /// left, and when it needs looking at again (a ramp in progress).
    pub(super) fn rebuild(
        &self,
        ring: Arc<Continuum>,
        ctx: &RebuildContext,
        pool_for: &mut dyn FnMut(&str) -> Arc<Pool>,
    ) -> Rebuilt {
        let old = self.snapshot();
        let first_ring = old.members.is_empty();
        let mut points: BTreeMap<&str, u32> = BTreeMap::new();
        for (_, name) in ring.points() {
            *points.entry(name.as_str()).or_insert(0) += 1;
        }
        let mut members = Vec::with_capacity(points.len());
        let mut weights = Vec::with_capacity(points.len());
        for (name, count) in &points {
            let member = match old.members.iter().find(|m| &*m.name == *name) {
                Some(member) => Arc::clone(member),
                None => {
                    let ramp = if first_ring || ctx.slow_start.is_zero() {
                        Ramp::Done
                    } else {
                        Ramp::Waiting
                    };
                    if ramp == Ramp::Waiting {
                        tracing::info!(group = %self.name, member = %name, slow_start = ?ctx.slow_start, "member joins with slow start");
                    }
                    Arc::new(Member {
                        name: Arc::from(*name),
                        pool: pool_for(name),
                        ramp: Mutex::new(ramp),
                        picks: metrics::counter!(
                            crate::metrics::MEMBER_PICKS,
                            crate::metrics::SERVICE => self.name.clone(),
                            crate::metrics::MEMBER => (*name).to_owned()
                        ),
                    })
                }
            };
            members.push(member);
            weights.push(*count);
        }
        let left: Vec<_> = old
            .members
            .iter()
            .filter(|m| !points.contains_key(&*m.name))
            .cloned()
            .collect();
        // Slow start: a ramp begins once the member can take a request.
        let mut ramping = false;
        for member in &members {
            let mut ramp = member.ramp.lock().unwrap_or_else(PoisonError::into_inner);
            match *ramp {
                Ramp::Waiting if member.pool.has_usable() => *ramp = Ramp::Since(ctx.now),
                Ramp::Since(from) if ctx.now.saturating_duration_since(from) >= ctx.slow_start => {
                    *ramp = Ramp::Done;
                }
                _ => {}
            }
            ramping |= *ramp != Ramp::Done;
        }
        let effective: Vec<f64> = members
            .iter()
            .zip(&weights)
            .map(|(member, weight)| {
                if member.pool.health.is_ejected() {
                    0.0
                } else {
                    f64::from(*weight) * member.ramp_factor(ctx.now, ctx.slow_start)
                }
            })
            .collect();
        let schedule = if effective.iter().any(|w| *w > 0.0) {
            interleave(&whole_weights(&effective))
        } else {
            // Nothing can take traffic by the rules: the plain weights, so
            // requests still wait on someone rather than fail at once.
            let plain: Vec<f64> = weights.iter().map(|w| f64::from(*w)).collect();
            interleave(&whole_weights(&plain))
        };
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        for (member, weight) in members.iter().zip(&weights) {
            let share = if total == 0 {
                MIN_MEMBER_CONNECTIONS
            } else {
                ((ctx.budget as f64 * f64::from(*weight) / total as f64).round() as usize)
                    .max(MIN_MEMBER_CONNECTIONS)
            };
            member.pool.set_group_share(share);
        }
        for ((member, weight), eff) in members.iter().zip(&weights).zip(&effective) {
            let gauge = |kind: &'static str, value: f64| {
                metrics::gauge!(
                    crate::metrics::MEMBER_WEIGHT,
                    crate::metrics::SERVICE => self.name.clone(),
                    crate::metrics::MEMBER => member.name.to_string(),
                    crate::metrics::KIND => kind
                )
                .set(value);
            };
            gauge("configured", f64::from(*weight));
            gauge("effective", *eff);
        }
        for member in &left {
            for kind in ["configured", "effective"] {
                metrics::gauge!(
                    crate::metrics::MEMBER_WEIGHT,
                    crate::metrics::SERVICE => self.name.clone(),
                    crate::metrics::MEMBER => member.name.to_string(),
                    crate::metrics::KIND => kind
                )
                .set(0.0);
            }
        }
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(Snapshot {
            ring,
            members,
            weights,
            effective,
            schedule,
        });
        Rebuilt {
            left,
            again_at: ramping.then(|| ctx.now + RAMP_TICK),
        }
    }

    /// Each member as the admin API shows it.
    pub fn view(&self) -> Vec<MemberView> {
        let snapshot = self.snapshot();
        let now = Instant::now();
        snapshot
            .members
            .iter()
            .zip(&snapshot.weights)
            .zip(&snapshot.effective)
            .map(|((member, weight), effective)| {
                let health = &member.pool.health;
                let ramp = *member.ramp.lock().unwrap_or_else(PoisonError::into_inner);
                let state = if health.is_ejected() {
                    "ejected"
                } else if !member.pool.has_usable() {
                    "connecting"
                } else if ramp != Ramp::Done {
                    "slow_start"
                } else {
                    "active"
                };
                let mut connections: BTreeMap<&'static str, usize> = BTreeMap::new();
                for conn in member.pool.snapshot() {
                    *connections.entry(conn.state).or_insert(0) += 1;
                }
                MemberView {
                    member: member.name.to_string(),
                    weight: *weight,
                    effective_weight: *effective,
                    state,
                    connections,
                    consecutive_failures: health.consecutive_failures(),
                    ejections: health.ejections(),
                    ejected_for_s: health
                        .ejected_until()
                        .map(|at| at.saturating_duration_since(now).as_secs_f64()),
                }
            })
            .collect()
    }
}

impl Snapshot {
    /// Whether member `i` takes traffic now (a positive effective weight).
    fn takes(&self, i: usize) -> bool {
        self.effective.get(i).is_some_and(|w| *w > 0.0)
    }

    /// The member index owning `point` on the ring.
    fn ring_index(&self, point: u32) -> Option<usize> {
        let name = self.ring.lookup(point)?;
        self.members.iter().position(|m| &*m.name == name)
    }

    /// Member indexes to try, `first` first: for a sticky pick, the next
    /// members along the ring (each once) that take traffic; otherwise the
    /// others by effective weight, heaviest first.
    fn candidates(&self, first: usize, sticky: Option<u32>) -> Vec<usize> {
        let takes = |i: usize| self.takes(i);
        let mut order = Vec::with_capacity(self.members.len());
        if sticky.is_none() || takes(first) {
            order.push(first);
        }
        match sticky {
            Some(point) => {
                for name in self.ring.walk(point) {
                    if order.len() == self.members.len() {
                        break;
                    }
                    if let Some(i) = self.members.iter().position(|m| &*m.name == name)
                        && !order.contains(&i)
                        && takes(i)
                    {
                        order.push(i);
                    }
                }
            }
            None => {
                let mut rest: Vec<usize> = (0..self.members.len())
                    .filter(|i| *i != first && takes(*i))
                    .collect();
                rest.sort_by(|a, b| self.effective[*b].total_cmp(&self.effective[*a]));
                order.extend(rest);
            }
        }
        order
    }
}

/// What a rebuild needs from the pools.
#[derive(Debug)]
pub(super) struct RebuildContext {
    pub(super) now: Instant,
    pub(super) slow_start: Duration,
    /// The group's connection budget.
    pub(super) budget: usize,
}

/// What a rebuild found.
#[derive(Debug)]
pub(super) struct Rebuilt {
    /// Members no longer in the ring.
    pub(super) left: Vec<Arc<Member>>,
    /// When to rebuild again (a slow start in progress).
    pub(super) again_at: Option<Instant>,
}

/// One member as `/pools` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    /// The member's service name.
    pub member: String,
    /// Its weight: its points on the ring.
    pub weight: u32,
    /// The weight it gets now, after slow start and ejection.
    pub effective_weight: f64,
    /// active, slow_start, connecting or ejected.
    pub state: &'static str,
    /// Its connections by state.
    pub connections: BTreeMap<&'static str, usize>,
    /// Backend failures in a row.
    pub consecutive_failures: u32,
    /// Times ejected so far.
    pub ejections: u32,
    /// Seconds left of the current ejection.
    pub ejected_for_s: Option<f64>,
}
