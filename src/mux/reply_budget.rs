//! The reply budget: owns how many bytes of backend replies are held for
//! owners that have not taken them yet, per reply and across every
//! connection that shares the budget, and which reply is cut when the
//! total is reached. It holds no frames itself: the channels' frame
//! queues ([`super::frame_queue`]) report what they hold.
//!
//! Cocaine v12 has no per-channel flow control, so a connection that
//! waited for one slow owner would stall every other channel on it. A
//! connection whose [`super::MuxConfig::reply_budget`] is set never
//! waits: each channel's replies are buffered up to
//! [`ReplyBudget::per_reply`] bytes, all of them together up to
//! [`ReplyBudget::total`]. A reply past its own bound is cut. When the
//! total is reached, the reply holding the most is cut to make room (the
//! newcomer only if it would itself hold the most), so readers that keep
//! up are never the ones cut.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// A reply holding at least this many bytes can be chosen to be cut when
/// the total is reached. Below it a reply is not worth the bookkeeping
/// (and ordinary replies, far smaller, never touch the shared lock).
pub(crate) const TRACKED_FROM: usize = 64 << 10;

/// What a frame queue that holds bytes of the budget can be asked.
pub(crate) trait Holder: Send + Sync {
    /// Bytes it holds now.
    fn held(&self) -> usize;
    /// Cuts it to make room for others: its frames go, its owner learns
    /// why. `false` if it was cut or closed already.
    fn evict(&self) -> bool;
}

/// The bytes of backend replies a gateway holds for its clients; cheap to
/// clone, shared by every backend connection of the gateway. The bounds
/// can change while in use ([`ReplyBudget::set_limits`]).
#[derive(Clone)]
pub struct ReplyBudget {
    inner: Arc<Inner>,
}

struct Inner {
    per_reply: AtomicUsize,
    total: AtomicUsize,
    used: AtomicUsize,
    next_key: AtomicU64,
    /// Replies holding [`TRACKED_FROM`] bytes or more at some point: the
    /// candidates to cut. Entries leave when their queue goes.
    tracked: Mutex<HashMap<u64, Weak<dyn Holder>>>,
}

impl std::fmt::Debug for ReplyBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyBudget")
            .field("per_reply", &self.per_reply())
            .field("total", &self.total())
            .field("used", &self.used())
            .finish()
    }
}

impl PartialEq for ReplyBudget {
    /// The same budget, not equal bounds.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Whether a reservation got its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// The bytes are the caller's (release them with
    /// [`ReplyBudget::release`]).
    Yes,
    /// The total is reached and the caller would hold the most: it is the
    /// one to cut.
    No,
}

impl ReplyBudget {
    /// A budget of `per_reply` bytes for each reply and `total` for all.
    pub fn new(per_reply: usize, total: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_reply: AtomicUsize::new(per_reply.max(1)),
                total: AtomicUsize::new(total.max(1)),
                used: AtomicUsize::new(0),
                next_key: AtomicU64::new(1),
                tracked: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// New bounds (a config reload). Replies already past them are cut at
    /// their next frame.
    pub fn set_limits(&self, per_reply: usize, total: usize) {
        self.inner
            .per_reply
            .store(per_reply.max(1), Ordering::Relaxed);
        self.inner.total.store(total.max(1), Ordering::Relaxed);
    }

    /// The most one reply may hold, in bytes.
    pub fn per_reply(&self) -> usize {
        self.inner.per_reply.load(Ordering::Relaxed)
    }

    /// The most all replies together may hold, in bytes.
    pub fn total(&self) -> usize {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// Bytes held now, all replies together.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes for a reply that holds `held` already (`own` is
    /// that reply, so it is never chosen to make room for itself). At the
    /// total, the tracked reply holding the most is cut first if it holds
    /// more than the caller would.
    ///
    /// Must be called without the caller's queue locked: cutting another
    /// reply takes that reply's lock.
    pub(crate) fn reserve(&self, n: usize, held: usize, own: Option<u64>) -> Reserved {
        // Each round either reserves, cuts a reply that held more (its
        // bytes come back), or gives up; a bounded number of rounds keeps
        // a pathological race from spinning.
        for _ in 0..8 {
            if self.try_take(n) {
                return Reserved::Yes;
            }
            let Some(victim) = self.largest(own) else {
                return Reserved::No;
            };
            if victim.held() <= held + n {
                return Reserved::No;
            }
            victim.evict();
        }
        Reserved::No
    }

    /// Takes `n` bytes if that stays within the total; cuts nothing, so
    /// it may be called with a queue's lock held.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        let total = self.total();
        let before = self.inner.used.fetch_add(n, Ordering::AcqRel);
        if before + n <= total {
            return true;
        }
        self.inner.used.fetch_sub(n, Ordering::AcqRel);
        false
    }

    /// Gives back `n` bytes.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            self.inner.used.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// A key for [`ReplyBudget::track`].
    pub(crate) fn key(&self) -> u64 {
        self.inner.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes `holder` a candidate to cut at the total.
    pub(crate) fn track(&self, key: u64, holder: Weak<dyn Holder>) {
        self.lock_tracked().insert(key, holder);
    }

    /// `key`'s queue is gone.
    pub(crate) fn untrack(&self, key: u64) {
        self.lock_tracked().remove(&key);
    }

    fn lock_tracked(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<dyn Holder>>> {
        self.inner
            .tracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The tracked reply, other than `own`, holding the most now.
    fn largest(&self, own: Option<u64>) -> Option<Arc<dyn Holder>> {
        let tracked = self.lock_tracked();
        tracked
            .iter()
            .filter(|(key, _)| Some(**key) != own)
            .filter_map(|(_, holder)| holder.upgrade())
            .map(|holder| (holder.held(), holder))
            .max_by_key(|(held, _)| *held)
            .map(|(_, holder)| holder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    struct Fake {
        held: AtomicUsize,
        evicted: AtomicBool,
        budget: ReplyBudget,
    }

    impl Holder for Fake {
        fn held(&self) -> usize {
            self.held.load(Ordering::Relaxed)
        }
        fn evict(&self) -> bool {
            let held = self.held.swap(0, Ordering::Relaxed);
            self.budget.release(held);
            !self.evicted.swap(true, Ordering::Relaxed)
        }
    }

    fn holder(budget: &ReplyBudget, held: usize) -> (u64, Arc<Fake>) {
        assert_eq!(budget.reserve(held, 0, None), Reserved::Yes);
        let fake = Arc::new(Fake {
            held: AtomicUsize::new(held),
            evicted: AtomicBool::new(false),
            budget: budget.clone(),
        });
        let key = budget.key();
        let weak: Weak<dyn Holder> = Arc::downgrade(&(Arc::clone(&fake) as Arc<dyn Holder>));
        budget.track(key, weak);
        (key, fake)
    }

    #[test]
    fn reserves_up_to_the_total_and_gives_back() {
        let budget = ReplyBudget::new(100, 1000);
        assert_eq!(budget.reserve(600, 0, None), Reserved::Yes);
        assert_eq!(budget.reserve(400, 0, None), Reserved::Yes);
        assert_eq!(budget.used(), 1000);
        // Nothing tracked to cut: the newcomer is refused, and nothing
        // of it stays counted.
        assert_eq!(budget.reserve(1, 0, None), Reserved::No);
        assert_eq!(budget.used(), 1000);
        budget.release(400);
        assert_eq!(budget.reserve(1, 0, None), Reserved::Yes);
        assert_eq!(budget.used(), 601);
    }

    #[test]
    fn at_the_total_the_largest_holder_is_cut_not_the_small_newcomer() {
        let budget = ReplyBudget::new(1 << 20, 1000);
        let (_, small) = holder(&budget, 200);
        let (_, large) = holder(&budget, 700);
        assert_eq!(budget.reserve(50, 10, None), Reserved::Yes);
        assert_eq!(budget.reserve(100, 10, None), Reserved::Yes);
        assert!(large.evicted.load(Ordering::Relaxed), "the largest went");
        assert!(!small.evicted.load(Ordering::Relaxed));
        assert_eq!(budget.used(), 200 + 50 + 100);
    }

    #[test]
    fn the_newcomer_is_refused_when_it_would_hold_the_most() {
        let budget = ReplyBudget::new(1 << 20, 1000);
        let (own, me) = holder(&budget, 600);
        let (_, other) = holder(&budget, 400);
        // `me` (600 held) asks for more: the other holds less, so `me`
        // is the one to cut, and it is never chosen for itself.
        assert_eq!(budget.reserve(10, 600, Some(own)), Reserved::No);
        assert!(!other.evicted.load(Ordering::Relaxed));
        assert!(!me.evicted.load(Ordering::Relaxed));
    }

    #[test]
    fn untracked_and_dropped_holders_are_not_candidates() {
        let budget = ReplyBudget::new(1 << 20, 1000);
        let (key, gone) = holder(&budget, 900);
        budget.untrack(key);
        assert_eq!(budget.reserve(200, 0, None), Reserved::No);
        assert!(!gone.evicted.load(Ordering::Relaxed));
        let (_, dropped) = holder(&budget, 50);
        budget.release(50);
        drop(dropped);
        assert_eq!(budget.reserve(200, 0, None), Reserved::No);
    }

    #[test]
    fn new_limits_apply_to_the_next_reservation() {
        let budget = ReplyBudget::new(10, 100);
        assert_eq!(budget.reserve(100, 0, None), Reserved::Yes);
        budget.set_limits(20, 200);
        assert_eq!(budget.per_reply(), 20);
        assert_eq!(budget.reserve(100, 0, None), Reserved::Yes);
        assert_eq!(budget.reserve(1, 0, None), Reserved::No);
    }
}
