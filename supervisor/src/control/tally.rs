//! Things a flood of connections repeats thousands of times a second (a uid the control
//! socket does not admit, connecting and closing in a loop): counted each time, said at
//! most once per interval with how many there were since it was last said. Said each
//! time, they would fill the log and push every lifecycle event out of the `events`
//! history.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

/// How often a flood is said: as often as the gateway says its evictions.
pub const SAID_EVERY: Duration = Duration::from_secs(10);
/// Distinct uids named in what is said; more are counted, not named.
const UIDS_NAMED: usize = 8;

/// What is said: how many happened since it was last said, and from which uids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    pub count: u64,
    pub uids: Vec<u32>,
    /// Distinct uids left unnamed.
    pub more_uids: usize,
}

impl Said {
    /// `uid`, or `uids` when there were several.
    pub fn uid_word(&self) -> &'static str {
        if self.uids.len() + self.more_uids > 1 { "uids" } else { "uid" }
    }

    /// The uids, as `65534` or `65534, 1000 and 3 more`.
    pub fn uids_text(&self) -> String {
        let named = self.uids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        if self.more_uids == 0 { named } else { format!("{named} and {} more", self.more_uids) }
    }
}

/// Occurrences held back since the last time they were said.
#[derive(Debug)]
pub struct Tally {
    every: Duration,
    said_at: Option<Instant>,
    count: u64,
    uids: BTreeSet<u32>,
    more_uids: BTreeSet<u32>,
}

impl Tally {
    pub fn new(every: Duration) -> Self {
        Self { every, said_at: None, count: 0, uids: BTreeSet::new(), more_uids: BTreeSet::new() }
    }

    /// One more, from `uid`, at `now`: what to say when it is due now (it and those held
    /// back before it).
    pub fn note(&mut self, uid: u32, now: Instant) -> Option<Said> {
        self.count += 1;
        if self.uids.len() < UIDS_NAMED || self.uids.contains(&uid) {
            self.uids.insert(uid);
        } else if self.more_uids.len() < u16::MAX as usize {
            // Bounded too: only the count of them is said.
            self.more_uids.insert(uid);
        }
        self.due(now)
    }

    /// What was held back, once the interval since it was last said is over.
    pub fn due(&mut self, now: Instant) -> Option<Said> {
        if self.count == 0 || self.said_at.is_some_and(|at| now < at + self.every) {
            return None;
        }
        self.said_at = Some(now);
        Some(Said {
            count: std::mem::take(&mut self.count),
            uids: std::mem::take(&mut self.uids).into_iter().collect(),
            more_uids: std::mem::take(&mut self.more_uids).len(),
        })
    }

    /// When [`Tally::due`] will have something to say, if anything is held back.
    pub fn next_due(&self) -> Option<Instant> {
        (self.count > 0).then(|| self.said_at.map_or_else(Instant::now, |at| at + self.every))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_said_at_once_then_at_most_once_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut t = Tally::new(SAID_EVERY);
        assert_eq!(t.note(65534, t0), Some(Said { count: 1, uids: vec![65534], more_uids: 0 }));
        // A flood: 315,455 in 5 s says nothing more within the interval.
        for i in 0..315_455u64 {
            assert_eq!(t.note(65534, t0 + Duration::from_micros(i * 15)), None);
        }
        assert_eq!(t.next_due(), Some(t0 + SAID_EVERY));
        assert_eq!(t.due(t0 + SAID_EVERY - Duration::from_millis(1)), None);
        // Said once the interval is over, even with no refusal to carry it.
        let said = t.due(t0 + SAID_EVERY).expect("due");
        assert_eq!((said.count, said.uids_text()), (315_455, "65534".to_owned()));
        assert_eq!(t.next_due(), None, "nothing held back");
        assert_eq!(t.due(t0 + SAID_EVERY * 5), None);
        // The next after a quiet interval is said at once.
        assert_eq!(t.note(1000, t0 + SAID_EVERY * 3).map(|s| s.count), Some(1));
    }

    #[test]
    fn many_uids_are_counted_not_all_named() {
        let t0 = Instant::now();
        let mut t = Tally::new(SAID_EVERY);
        assert!(t.note(1, t0).is_some());
        for uid in 0..20u32 {
            t.note(1000 + uid, t0);
            t.note(1000 + uid, t0);
        }
        let said = t.due(t0 + SAID_EVERY).expect("due");
        assert_eq!(said.count, 40);
        assert_eq!(said.uids, (1000..1008).collect::<Vec<_>>());
        assert_eq!(said.uids_text(), "1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007 and 12 more");
        assert_eq!(said.uid_word(), "uids");
        assert_eq!(Said { count: 5, uids: vec![65534], more_uids: 0 }.uid_word(), "uid");
    }
}
