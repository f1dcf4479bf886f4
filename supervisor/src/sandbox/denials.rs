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
/// Syscalls said apart; past them (a plugin calling number after unknown number) the rest
/// are said together, under [`OTHERS`]. With [`SAID_EVERY`], at most 17 events a second.
pub const SYSCALLS_APART: usize = 16;
/// The name the syscalls past [`SYSCALLS_APART`] are said under.
pub const OTHERS: &str = "other syscalls";

/// One instance's denials so far.
#[derive(Debug, Default)]
pub struct Denials {
    /// Per syscall: when it was last said, and how many were held back since.
    said: HashMap<String, (Instant, u64)>,
    window: Option<(Instant, u32)>,
}

impl Denials {
    /// One more denial of `syscall` at `now`: the name to say it under and how many were
    /// held back since that was last said, when it is to be said now. At most
    /// [`SYSCALLS_APART`] names are kept apart: any number reaches the listener, so a
    /// plugin could otherwise grow the map without end, and have each said.
    pub fn say<'a>(&mut self, syscall: &'a str, now: Instant) -> Option<(&'a str, u64)> {
        let name = if self.said.contains_key(syscall) || self.said.len() < SYSCALLS_APART { syscall } else { OTHERS };
        let fresh = !self.said.contains_key(name);
        let entry = self.said.entry(name.to_owned()).or_insert((now, 0));
        if !fresh && now < entry.0 + SAID_EVERY {
            entry.1 += 1;
            return None;
        }
        entry.0 = now;
        Some((name, std::mem::take(&mut entry.1)))
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
        assert_eq!(d.say("ptrace", t), Some(("ptrace", 0)), "the first is said");
        for ms in 1..1000 {
            assert_eq!(d.say("ptrace", t + Duration::from_millis(ms)), None);
        }
        assert_eq!(d.say("mount", t + Duration::from_millis(500)), Some(("mount", 0)), "another syscall is its own");
        assert_eq!(d.say("ptrace", t + SAID_EVERY), Some(("ptrace", 999)));
        assert_eq!(d.say("ptrace", t + SAID_EVERY + Duration::from_millis(1)), None);
    }

    /// A plugin calling a new unknown number each time cannot grow the map, nor have each
    /// one said.
    #[test]
    fn numbers_without_end_are_said_together_and_a_few_a_second() {
        let mut d = Denials::default();
        let t = Instant::now();
        let names: Vec<String> = (0..100_000).map(|n| format!("syscall {}", 1000 + n)).collect();
        let said = names.iter().enumerate().filter(|(i, n)| d.say(n, t + Duration::from_micros(*i as u64)).is_some());
        assert_eq!(said.count(), SYSCALLS_APART + 1, "each name once in the first second, the rest together");
        assert_eq!(d.said.len(), SYSCALLS_APART + 1, "the rest under one name");
        let later = t + Duration::from_secs(2);
        let (name, held) = d.say("syscall 999999", later).expect("said again a second later");
        assert_eq!(name, OTHERS);
        assert!(held > 99_000, "what was held back is counted: {held}");
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
