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
}

/// A place among the stalled calls, given back when dropped.
pub struct Stalled(Arc<StallBudget>);

impl StallBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, stalled: AtomicUsize::new(0) })
    }

    /// A place, or `None` when the budget is spent.
    pub fn stall(self: &Arc<Self>) -> Option<Stalled> {
        self.stalled
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1))
            .ok()
            .map(|_| Stalled(self.clone()))
    }

    /// Every place is taken.
    pub fn spent(&self) -> bool {
        self.stalled.load(Ordering::Acquire) >= self.limit
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
}
