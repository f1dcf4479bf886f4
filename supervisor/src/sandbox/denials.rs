//! The calls one instance's filter denied with an errno: each counted, said (kept in the
//! event history and logged) at most once a second per syscall with how many were held
//! back, and answered at a bounded pace. A plugin looping on a forbidden call otherwise
//! pushed every other plugin's events out of the history, filled the daemon's log at tens
//! of thousands of lines a second, and took most of a core: every denial is a round trip
//! through the daemon's seccomp listener.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// How often one syscall's denials are said.
pub const SAID_EVERY: Duration = Duration::from_secs(1);
/// Denials answered in one [`PACE_WINDOW`]; past them the next waits for the window's end,
/// and with it the plugin's thread that made the call (its own doing).
pub const ANSWERED_PER_WINDOW: u32 = 200;
/// The window [`ANSWERED_PER_WINDOW`] counts in.
pub const PACE_WINDOW: Duration = Duration::from_millis(100);

/// One instance's denials so far.
#[derive(Debug, Default)]
pub struct Denials {
    /// Per syscall: when it was last said, and how many were held back since.
    said: HashMap<String, (Instant, u64)>,
    window: Option<(Instant, u32)>,
}

impl Denials {
    /// One more denial of `syscall` at `now`: `Some(held back since it was last said)`
    /// when it is to be said now. The map is bounded by the syscalls there are.
    pub fn say(&mut self, syscall: &str, now: Instant) -> Option<u64> {
        match self.said.get_mut(syscall) {
            Some((at, held)) if now < *at + SAID_EVERY => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                self.said.insert(syscall.to_owned(), (now, 0));
                Some(0)
            }
        }
    }

    /// One more denial answered at `now`: how long to wait before answering the next, when
    /// this window's denials are used up.
    pub fn pace(&mut self, now: Instant) -> Option<Duration> {
        let (start, answered) = match self.window {
            Some((start, n)) if now < start + PACE_WINDOW => (start, n + 1),
            _ => (now, 1),
        };
        self.window = Some((start, answered));
        (answered >= ANSWERED_PER_WINDOW).then(|| (start + PACE_WINDOW).saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_syscall_is_said_once_a_second_with_what_was_held_back() {
        let mut d = Denials::default();
        let t = Instant::now();
        assert_eq!(d.say("ptrace", t), Some(0), "the first is said");
        for ms in 1..1000 {
            assert_eq!(d.say("ptrace", t + Duration::from_millis(ms)), None);
        }
        assert_eq!(d.say("mount", t + Duration::from_millis(500)), Some(0), "another syscall is its own");
        assert_eq!(d.say("ptrace", t + SAID_EVERY), Some(999));
        assert_eq!(d.say("ptrace", t + SAID_EVERY + Duration::from_millis(1)), None);
    }

    #[test]
    fn past_the_windows_answers_the_next_waits_for_its_end() {
        let mut d = Denials::default();
        let t = Instant::now();
        for _ in 1..ANSWERED_PER_WINDOW {
            assert_eq!(d.pace(t), None);
        }
        let later = t + Duration::from_millis(30);
        assert_eq!(d.pace(later), Some(PACE_WINDOW - Duration::from_millis(30)), "the window's last");
        assert_eq!(d.pace(t + PACE_WINDOW), None, "a new window");
    }
}
