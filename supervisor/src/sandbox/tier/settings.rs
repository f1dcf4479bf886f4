//! The non-seccomp settings of a tier: Landlock, namespaces and resource
//! limits, with the checks that keep them consistent with the spawn
//! sequence.

use std::path::PathBuf;

use serde::Deserialize;

use super::required::EXEC_FD;

/// Landlock settings beyond what every plugin gets (read and execute on its
/// binary and libraries, read-write on its data directory when configured).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Landlock {
    /// Refuse to start the plugin unless the kernel enforces every rule;
    /// when false, enforce what the kernel's Landlock ABI allows.
    pub required: bool,
    /// Extra paths the plugin may read (files or directory trees).
    #[serde(default)]
    pub read_only: Vec<PathBuf>,
}

impl Landlock {
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        match self.read_only.iter().find(|p| !p.is_absolute()) {
            Some(relative) => Err((
                "landlock.read_only",
                format!(
                    "{} is relative: Landlock paths must be absolute, the plugin's working directory is not the supervisor's",
                    relative.display()
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Which new namespaces the plugin starts in. Each one the supervisor
/// creates before dropping privileges; the plugin itself can create none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// A network namespace with only a loopback device: no network at all
    /// beyond the inherited sockets.
    #[serde(default)]
    pub network: bool,
    /// An IPC namespace: no System V IPC or POSIX queues shared with others.
    #[serde(default)]
    pub ipc: bool,
    /// A UTS namespace: its own host name.
    #[serde(default)]
    pub uts: bool,
    /// A PID namespace: the plugin is pid 1 and sees no other process.
    #[serde(default)]
    pub pid: bool,
    /// A mount namespace.
    #[serde(default)]
    pub mount: bool,
}

impl Namespaces {
    /// A PID namespace is refused: the spawn sequence checks that the supervisor is still
    /// its parent with `getppid`, which is 0 in a new PID namespace (every start failed
    /// "checking the supervisor is alive"), and where it forks rather than clones, it cannot
    /// enter one (the plugin ran in the host's, silently).
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.pid {
            return Err((
                "namespaces.pid",
                "a PID namespace is not supported: the spawn checks its parent with getppid, which a new PID \
                 namespace hides, and cannot enter one where it forks; set it false"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The `CLONE_NEW*` flags for `unshare(2)` or `clone3(2)`.
    pub fn clone_flags(self) -> libc::c_int {
        [
            (self.network, libc::CLONE_NEWNET),
            (self.ipc, libc::CLONE_NEWIPC),
            (self.uts, libc::CLONE_NEWUTS),
            (self.pid, libc::CLONE_NEWPID),
            (self.mount, libc::CLONE_NEWNS),
        ]
        .into_iter()
        .filter(|(wanted, _)| *wanted)
        .fold(0, |flags, (_, flag)| flags | flag)
    }

    /// Whether every namespace `other` asks for is asked for here too.
    pub fn includes(self, other: Self) -> bool {
        self.clone_flags() & other.clone_flags() == other.clone_flags()
    }
}

/// Resource limits set with `setrlimit` before exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `RLIMIT_NOFILE`, soft and hard.
    pub nofile: u32,
}

impl Limits {
    /// The fds every plugin holds from the start: stdio, the RPC socket and
    /// the host socket.
    const INHERITED_FDS: u32 = 5;

    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        let exec_fd = EXEC_FD.unsigned_abs();
        if self.nofile > exec_fd {
            return Err((
                "limits.nofile",
                format!(
                    "{} is above {exec_fd}: with fd {exec_fd} within reach the plugin could re-open \
                     it and pass the exec rule again",
                    self.nofile
                ),
            ));
        }
        if self.nofile <= Self::INHERITED_FDS {
            return Err((
                "limits.nofile",
                format!("{} leaves no descriptor beyond the inherited fds 0-4", self.nofile),
            ));
        }
        Ok(())
    }
}
