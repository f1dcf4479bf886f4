//! Warnings that a flood would repeat thousands of times a second: said at
//! most once per interval, with how many were held back since.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Quiet {
    every: Duration,
    /// When it was last said, and how often it was held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Quiet {
    pub const fn new(every: Duration) -> Self {
        Self { every, state: Mutex::new((None, 0)) }
    }

    /// `Some(n)` when the warning is due now: it was held back `n` times
    /// since it was last said.
    pub fn due(&self) -> Option<u64> {
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> Option<u64> {
        // Nothing panics while holding the lock; a poisoned one is still whole.
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match st.0 {
            Some(said) if now < said + self.every => {
                st.1 += 1;
                None
            }
            _ => {
                let held_back = std::mem::take(&mut st.1);
                st.0 = Some(now);
                Some(held_back)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn said_once_per_interval_with_what_was_held_back() {
        let q = Quiet::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(q.due_at(t), Some(0), "the first is said");
        for s in 1..10 {
            assert_eq!(q.due_at(t + Duration::from_secs(s)), None);
        }
        assert_eq!(q.due_at(t + Duration::from_secs(10)), Some(9));
        assert_eq!(q.due_at(t + Duration::from_secs(11)), None);
    }
}
