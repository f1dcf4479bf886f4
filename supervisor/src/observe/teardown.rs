//! The verdict on an instance's end: what the checks after it found left behind (processes,
//! its cgroup, descriptors the supervisor held, IPC objects, files and POSIX message queues
//! of its uid) and what was done about each,
//! as the `teardown` event, the metric and `status` show it.

use std::fmt;
use std::time::Duration;

use crate::sandbox::leftovers::files::Entry;
use crate::sandbox::leftovers::ipc::IpcObject;

/// Something an ended instance left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leftover {
    /// A process still in the instance's cgroup after its main process ended (it forked,
    /// double-forked, or moved to a new session).
    Outlived { pid: i32, comm: String },
    /// A process of the plugin's uid outside every live instance of the plugin.
    Stray { pid: i32, comm: String },
    /// The instance's cgroup leaf (one hierarchy's directory) could not be removed.
    Cgroup { path: String },
    /// A descriptor the supervisor held for the instance is still open.
    Held { what: &'static str },
    /// An IPC object of the plugin's uid, with no live instance of the plugin left.
    Ipc(IpcObject),
    /// A file of the plugin's uid in a directory every uid may write to (POSIX shared
    /// memory, a temporary file) or a POSIX message queue, with no live instance left.
    File(Entry),
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leftover::Outlived { pid, comm } => write!(f, "process {pid} ({comm}) outlived the instance"),
            Leftover::Stray { pid, comm } => {
                write!(f, "process {pid} ({comm}) of the plugin's uid outside its instances")
            }
            Leftover::Cgroup { path } => write!(f, "cgroup {path} not removed"),
            Leftover::Held { what } => write!(f, "the supervisor still holds its {what}"),
            Leftover::Ipc(obj) => write!(f, "{obj}"),
            Leftover::File(entry) => write!(f, "{entry}"),
        }
    }
}

/// What was done about a leftover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    Killed,
    Removed,
    /// Not ours to act on; reported only.
    LeftAlone(std::borrow::Cow<'static, str>),
    /// It could not be removed yet; it is tried again in the background.
    Retrying(String),
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Done::Killed => f.write_str("killed"),
            Done::Removed => f.write_str("removed"),
            Done::LeftAlone(why) => write!(f, "left alone: {why}"),
            Done::Retrying(why) => write!(f, "retrying: {why}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub leftover: Leftover,
    pub done: Done,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.leftover, self.done)
    }
}

/// The verdict's one word, the metric's `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was left.
    Clean,
    /// Something was left, and all of it is gone now.
    Cleaned,
    /// Something is still there (being retried, or not ours to remove).
    Leftover,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Clean => "clean",
            Outcome::Cleaned => "cleaned",
            Outcome::Leftover => "leftover",
        }
    }
}

/// The result of the checks after one instance's end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub found: Vec<Found>,
    /// Checks that could not be made, and why (no cgroup, a uid shared with the host, ...).
    pub unchecked: Vec<String>,
    pub took: Duration,
    /// Findings past [`MAX_FOUND`], counted only.
    pub more: usize,
    /// Of those, the ones still there: neither killed nor removed.
    pub more_left: usize,
}

/// The most findings one verdict lists.
pub const MAX_FOUND: usize = 20;

impl Verdict {
    pub fn outcome(&self) -> Outcome {
        if self.found.is_empty() && self.more == 0 {
            Outcome::Clean
        } else if self.more_left == 0 && self.found.iter().all(|f| matches!(f.done, Done::Killed | Done::Removed)) {
            Outcome::Cleaned
        } else {
            Outcome::Leftover
        }
    }

    /// Records a finding; past [`MAX_FOUND`] only counted, so a plugin that leaves
    /// thousands of processes makes no longer an event or status.
    pub fn add(&mut self, leftover: Leftover, done: Done) {
        if self.found.len() < MAX_FOUND {
            self.found.push(Found { leftover, done });
        } else {
            // What was done about it is kept as a count: 21 children all killed were a
            // leftover, for the twenty-first alone.
            self.more += 1;
            if !matches!(done, Done::Killed | Done::Removed) {
                self.more_left += 1;
            }
        }
    }

    pub fn merge(&mut self, other: Verdict) {
        for f in other.found {
            self.add(f.leftover, f.done);
        }
        self.more += other.more;
        self.more_left += other.more_left;
        self.unchecked.extend(other.unchecked);
    }
}

/// The event's text: `teardown clean in 1.2 ms`, or what was found and done.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "teardown {} in {} ms", self.outcome().as_str(), super::phases::ms(self.took))?;
        for (i, found) in self.found.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{found}")?;
        }
        match (self.more, self.more_left) {
            (0, _) => {}
            (more, 0) => write!(f, "; and {more} more (killed or removed)")?,
            (more, left) => write!(f, "; and {more} more ({left} of them still there)")?,
        }
        if !self.unchecked.is_empty() {
            write!(f, " [not checked: {}]", self.unchecked.join("; "))?;
        }
        Ok(())
    }
}

/// The verdict on an instance's last end, as `status` keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastTeardown {
    pub unix_nanos: u64,
    pub verdict: Verdict,
}

impl LastTeardown {
    pub fn now(verdict: Verdict) -> Self {
        Self { unix_nanos: super::unix_nanos(), verdict }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::leftovers::ipc::IpcKind;

    #[test]
    fn the_verdict_says_clean_cleaned_or_leftover_and_lists_each_finding_with_what_was_done() {
        let mut v = Verdict { took: Duration::from_micros(1200), ..Verdict::default() };
        assert_eq!(v.outcome(), Outcome::Clean);
        assert_eq!(v.to_string(), "teardown clean in 1.2 ms");
        v.add(Leftover::Outlived { pid: 42, comm: "sleep".into() }, Done::Killed);
        v.add(Leftover::Ipc(IpcObject { kind: IpcKind::Shm, id: 3, key: 0x1234 }), Done::Removed);
        assert_eq!(v.outcome(), Outcome::Cleaned);
        assert_eq!(
            v.to_string(),
            "teardown cleaned in 1.2 ms: process 42 (sleep) outlived the instance (killed); \
             shared memory 3 (key 0x00001234) (removed)"
        );
        v.add(Leftover::Cgroup { path: "/sys/fs/cgroup/x".into() }, Done::Retrying("busy".into()));
        v.unchecked.push("IPC objects: zoo-1 still runs as the same uid".into());
        assert_eq!(v.outcome(), Outcome::Leftover);
        assert!(
            v.to_string().ends_with(
                "cgroup /sys/fs/cgroup/x not removed (retrying: busy) [not checked: IPC objects: zoo-1 still runs as the same uid]"
            ),
            "{v}"
        );
        let mut many = Verdict::default();
        for pid in 0..25 {
            many.add(Leftover::Outlived { pid, comm: "x".into() }, Done::Killed);
        }
        assert_eq!(many.found.len(), MAX_FOUND);
        assert!(many.to_string().ends_with("; and 5 more (killed or removed)"), "{many}");
        // All killed, past the listed twenty too: cleaned (it said leftover).
        assert_eq!(many.outcome(), Outcome::Cleaned);
        many.add(Leftover::Stray { pid: 99, comm: "x".into() }, Done::LeftAlone("not ours".into()));
        assert_eq!(many.outcome(), Outcome::Leftover);
        assert!(many.to_string().ends_with("; and 6 more (1 of them still there)"), "{many}");
        let alone = Verdict {
            found: vec![Found {
                leftover: Leftover::Stray { pid: 7, comm: "x".into() },
                done: Done::LeftAlone("not in this supervisor's cgroups".into()),
            }],
            ..Verdict::default()
        };
        assert_eq!(alone.outcome(), Outcome::Leftover);
    }
}
