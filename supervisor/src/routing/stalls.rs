//! The gateway-wide budget of stalled calls: calls whose answer waits, a
//! full buffer ahead, for a caller that is not taking it. Each holds a
//! buffer of the daemon's memory and up to a stream window of its plugin
//! connection's window, so the budget bounds both, far below the streams'
//! worth a plugin connection holds: callers that do not read can never shut
//! a plugin's connection for its other callers. A stalled call keeps its
//! place until its caller has taken all it holds. A call that would stall
//! past the budget is reset at once, never one that stalled before it: a
//! flood cannot take the place of a slow caller that was there first. One
//! caller (a uid) holds at most a quarter of the places ([`ByCaller`]): one
//! that keeps its calls stalled, taking a byte now and then, cannot take
//! every other caller's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

pub struct StallBudget {
    limit: usize,
    stalled: AtomicUsize,
    /// The budget this one is a share of: a place here is one there too.
    within: Option<Arc<StallBudget>>,
}

/// A place among the stalled calls (and in the budget its own is a share of), given
/// back when dropped.
pub struct Stalled(Arc<StallBudget>);

impl StallBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, stalled: AtomicUsize::new(0), within: None })
    }

    /// A share of `whole`: at most `limit` of its places, so that those stalling here
    /// always leave the rest to the others.
    pub fn share_of(whole: &Arc<StallBudget>, limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, stalled: AtomicUsize::new(0), within: Some(whole.clone()) })
    }

    /// A place, or `None` when the budget (or the one it is a share of) is spent.
    pub fn stall(self: &Arc<Self>) -> Option<Stalled> {
        // The share's place first: only the share's own calls ever see it counted while
        // the whole's is asked for.
        if !self.take() {
            return None;
        }
        if self.within.as_ref().is_some_and(|whole| !whole.take()) {
            self.stalled.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Stalled(self.clone()))
    }

    fn take(&self) -> bool {
        self.stalled.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1)).is_ok()
    }

    /// Every place is taken, here or in the budget this is a share of.
    pub fn spent(&self) -> bool {
        self.stalled.load(Ordering::Acquire) >= self.limit || self.within.as_ref().is_some_and(|w| w.spent())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Calls stalled now.
    #[cfg(test)]
    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::Acquire)
    }
}

/// The gateway's budget shared out by caller: each caller (a uid) draws on a share of at
/// most a quarter of the places, one share for all its connections.
pub struct ByCaller {
    whole: Arc<StallBudget>,
    /// Each caller's share, while a connection or a stalled call of its holds it.
    shares: Mutex<HashMap<u32, Weak<StallBudget>>>,
}

impl ByCaller {
    pub fn new(whole: Arc<StallBudget>) -> Self {
        Self { whole, shares: Mutex::default() }
    }

    /// The share of the caller `uid`, which each of its connections holds while it lasts,
    /// and each of its stalled calls while it is stalled.
    pub fn share(&self, uid: u32) -> Arc<StallBudget> {
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(share) = shares.get(&uid).and_then(Weak::upgrade) {
            return share;
        }
        // Shares whose connections have all gone are forgotten: what is kept is as long
        // as the callers connected now.
        shares.retain(|_, share| share.strong_count() > 0);
        let share = StallBudget::share_of(&self.whole, (self.whole.limit() / 4).max(1));
        shares.insert(uid, Arc::downgrade(&share));
        share
    }

    /// Callers with a share now.
    #[cfg(test)]
    fn callers(&self) -> usize {
        self.shares.lock().unwrap().values().filter(|s| s.strong_count() > 0).count()
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.0.stalled.fetch_sub(1, Ordering::AcqRel);
        if let Some(whole) = &self.0.within {
            whole.stalled.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_budget_a_newcomer_gets_no_place_and_the_first_keep_theirs() {
        let budget = StallBudget::new(2);
        let first = budget.stall().expect("a place");
        let second = budget.stall().expect("a place");
        assert!(budget.stall().is_none(), "past the budget");
        assert!(budget.spent());
        assert_eq!(budget.stalled(), 2);
        drop(first);
        let third = budget.stall().expect("a place given back is taken again");
        assert!(budget.stall().is_none());
        drop((second, third));
        assert_eq!(budget.stalled(), 0);
    }

    #[test]
    fn a_caller_holds_at_most_a_quarter_of_the_places_whatever_its_connections() {
        let whole = StallBudget::new(16);
        let by_caller = ByCaller::new(whole.clone());
        // Two connections of one caller draw on one share.
        let (first, second) = (by_caller.share(1000), by_caller.share(1000));
        let held: Vec<_> = (0..2).map(|_| first.stall().expect("a place")).collect();
        let more: Vec<_> = (0..2).map(|_| second.stall().expect("a place")).collect();
        assert!(second.stall().is_none() && first.spent(), "the caller has its quarter");
        assert!(!whole.spent(), "the others' places are left");
        // Another caller still stalls, up to its own quarter.
        let other = by_caller.share(1001);
        let others: Vec<_> = (0..4).map(|_| other.stall().expect("another caller's place")).collect();
        assert!(other.stall().is_none());
        assert_eq!(whole.stalled(), 8);
        // Its connections gone, its stalled calls keep its share: a new connection of the
        // caller's draws on the same, places taken and all, so reconnecting frees nothing.
        drop((first, second, held));
        assert_eq!(whole.stalled(), 6);
        let reconnected = by_caller.share(1000);
        let retaken: Vec<_> = (0..2).map(|_| reconnected.stall().expect("the places given back")).collect();
        assert!(reconnected.stall().is_none(), "the calls still stalled count in the share");
        // With its last connection and call gone, the caller is forgotten.
        drop((reconnected, retaken, more));
        let third = by_caller.share(1002);
        assert_eq!(by_caller.callers(), 2, "callers 1001 and 1002; 1000 has none left");
        drop((others, other, third));
        assert_eq!(whole.stalled(), 0);
    }

    #[test]
    fn a_share_takes_at_most_its_part_of_the_whole_and_counts_in_it() {
        let whole = StallBudget::new(4);
        let share = StallBudget::share_of(&whole, 2);
        let held: Vec<_> = (0..2).map(|_| share.stall().expect("a place in the share")).collect();
        assert!(share.stall().is_none() && share.spent(), "past the share");
        assert_eq!(whole.stalled(), 2, "a place in the share is one in the whole");
        let others: Vec<_> = (0..2).map(|_| whole.stall().expect("the rest is the others'")).collect();
        assert!(whole.spent());
        drop(held);
        assert_eq!((share.stalled(), whole.stalled()), (0, 2));
        let more: Vec<_> = (0..2).map(|_| whole.stall().expect("places the share gave back")).collect();
        assert!(share.stall().is_none() && share.spent(), "the whole is spent by the others");
        assert_eq!(share.stalled(), 0, "a place refused in the whole is not kept in the share");
        drop((others, more));
        assert!(share.stall().is_some());
    }
}
