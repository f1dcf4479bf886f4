//! The gateway-wide budget of stalled calls: calls whose answer waits, a
//! full buffer ahead, for a caller that is not taking it. Each holds a
//! buffer of the daemon's memory and up to a stream window of its plugin
//! connection's window, so the budget bounds both, far below the streams'
//! worth a plugin connection holds: callers that do not read can never shut
//! a plugin's connection for its other callers. A stalled call keeps its
//! place until its caller has taken all it holds. A call that would stall
//! past the budget is reset at once, never one that stalled before it: a
//! flood cannot take the place of a slow caller that was there first.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
