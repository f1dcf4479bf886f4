//! The error type of the cgroup layer: every kernel-facing failure names the cgroup and the file.

use std::io;
use std::path::PathBuf;

use super::controller::Controller;

pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy is mounted (/proc/self/mountinfo lists none we can reach)")]
    NoHierarchy,

    #[error("{file}: cannot parse line {line:?}: {reason}")]
    ProcParse { file: &'static str, line: String, reason: &'static str },

    #[error("{file}: cannot read: {source}")]
    ProcRead {
        file: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("cgroup {cgroup}: cannot read {file}: {source}")]
    Read {
        cgroup: PathBuf,
        file: String,
        #[source]
        source: io::Error,
    },

    #[error("cgroup {cgroup}: cannot write {value:?} to {file}: {source}")]
    Write {
        cgroup: PathBuf,
        file: String,
        value: String,
        #[source]
        source: io::Error,
    },

    #[error("cgroup {cgroup}: cannot open {file}: {source}")]
    Open {
        cgroup: PathBuf,
        file: String,
        #[source]
        source: io::Error,
    },

    #[error("cgroup {cgroup}: unexpected content {content:?} in {file}: {reason}")]
    Parse { cgroup: PathBuf, file: String, content: String, reason: &'static str },

    #[error("cgroup {cgroup}: cannot create: {source}")]
    Mkdir {
        cgroup: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cgroup {cgroup}: cannot remove: {source}")]
    Rmdir {
        cgroup: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cgroup {cgroup}: cannot list child cgroups: {source}")]
    List {
        cgroup: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cgroup {cgroup}: cannot SIGKILL pid {pid}: {source}")]
    Signal {
        cgroup: PathBuf,
        pid: u32,
        #[source]
        source: io::Error,
    },

    #[error("the {controller} controller is not available on this host (needed for {quota})")]
    ControllerUnavailable { controller: Controller, quota: &'static str },

    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName { what: &'static str, name: String, reason: &'static str },

    #[error("invalid limit {field}: {reason}")]
    InvalidLimit { field: &'static str, reason: String },

    #[error("cgroup {cgroup} already exists (left by a previous run? clean it with cleanup_stale first)")]
    AlreadyExists { cgroup: PathBuf },

    #[error(
        "cgroup subtree {cgroup} belongs to a running plugin-supervisor ({}); a second one \
         needs a subtree of its own ([supervisor.cgroup] name)",
        pid.map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}"))
    )]
    InUse { cgroup: PathBuf, pid: Option<u32> },

    #[error("cgroup {cgroup}, left by a supervisor that died, could not be emptied in {waited:?}")]
    StaleNotEmptied { cgroup: PathBuf, waited: std::time::Duration },

    #[error("locking cgroup {cgroup}: {source}")]
    Lock {
        cgroup: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("parent cgroup {cgroup} does not exist")]
    MissingParent { cgroup: PathBuf },

    #[error(
        "cgroup {cgroup} still holds processes {pids:?}, so controllers cannot be enabled in its \
         cgroup.subtree_control (no-internal-processes rule; let the supervisor move itself out \
         with move_self, or delegate an empty parent)"
    )]
    InternalProcesses { cgroup: PathBuf, pids: Vec<u32> },

    #[error("cgroup {cgroup} holds this process (pid {pid}); refusing to kill it")]
    ContainsSelf { cgroup: PathBuf, pid: u32 },

    #[error("cgroup {cgroup}: new processes {pids:?} kept appearing after {rounds} kill rounds")]
    KillIncomplete { cgroup: PathBuf, pids: Vec<u32>, rounds: u32 },

    #[error("{call} failed: {source}")]
    Spawn {
        call: &'static str,
        #[source]
        source: io::Error,
    },
}

impl CgroupError {
    /// The OS error behind a kernel-facing failure, for callers that branch on errno.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            CgroupError::ProcRead { source, .. }
            | CgroupError::Read { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::Open { source, .. }
            | CgroupError::Mkdir { source, .. }
            | CgroupError::Rmdir { source, .. }
            | CgroupError::List { source, .. }
            | CgroupError::Signal { source, .. }
            | CgroupError::Spawn { source, .. }
            | CgroupError::Lock { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_cgroup_and_file() {
        let e = CgroupError::Write {
            cgroup: PathBuf::from("/sys/fs/cgroup/x"),
            file: "memory.max".into(),
            value: "12".into(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        let msg = e.to_string();
        assert!(msg.contains("/sys/fs/cgroup/x"), "{msg}");
        assert!(msg.contains("memory.max"), "{msg}");
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
    }

    #[test]
    fn unavailable_names_the_controller() {
        let e = CgroupError::ControllerUnavailable { controller: Controller::Pids, quota: "pids_max" };
        assert!(e.to_string().contains("pids controller"));
        assert_eq!(e.raw_os_error(), None);
    }
}
