//! Cgroups for plugin instances: the delegated subtree, per-instance quotas, joining before
//! the first instruction, stats, kill and removal, on pure v2, hybrid and v1-only hosts.
//!
//! Flow: `Layout::detect` → `Subtree::lock` → `Subtree::cleanup_stale` (until `Removed`) →
//! `Subtree::create`
//! → `Subtree::create_instance` → `Instance::join_fds` + `JoinFds::spawn` → `Instance::stats`
//! / `set_limits` → `Instance::kill` + `Instance::try_remove` (polled) → `Subtree::teardown`.
//!
//! All kernel access goes through the `CgroupFs` trait (`RealFs` in production, `FakeFs` in
//! unit tests). cgroups-rs 0.5.1 is not used at run time, after reading its source:
//! - its hierarchy detection (`hierarchies::auto`) only looks at `/sys/fs/cgroup`, so on a
//!   hybrid host it picks v1 and never sees `/sys/fs/cgroup/unified`; its `V2` is hard-wired
//!   to `/sys/fs/cgroup`;
//! - its v1 `Cgroup::new`/`create` makes the cgroup in every mounted v1 hierarchy (cpuset,
//!   devices, blkio, ...), and cpuset's post-create hook also writes `cpuset.cpus`/`mems`
//!   into every ancestor whose value is empty: writes outside anything we own;
//! - its controller objects do their own `std::fs` I/O, bypassing any seam a fake could use,
//!   turn read errors into zeros (`memory_stat`), lose the path in errors ("FIXME"), apply a
//!   v1 memory limit before the memsw limit (EINVAL when raising it), map the soft limit
//!   to v2 `memory.low` (we need `memory.high`), and report no v2 `oom_kill`;
//! - its `delete` sleeps in a retry loop (blocking) and it has no clone3 or pidfd support;
//! - it always pulls in zbus and its async I/O stack, for systemd support we do not need.
//!
//! It serves as an independent oracle in the integration tests instead: limits written by
//! this layer are read back through cgroups-rs's own controllers at the same paths.
#![deny(clippy::undocumented_unsafe_blocks)]

mod apply;
mod clone3;
mod controller;
mod error;
mod fs;
mod instance;
mod join;
mod kill;
mod layout;
mod limits;
mod mountinfo;
mod parse;
mod paths;
mod proc_cgroup;
mod real_fs;
mod remove;
mod stale;
mod stats;
mod subtree;

#[cfg(test)]
mod fake_files;
#[cfg(test)]
pub(crate) mod fake_fs;
#[cfg(test)]
mod fake_kernel;
#[cfg(test)]
pub(crate) mod test_hosts;
#[cfg(test)]
mod tests_instance;
#[cfg(test)]
mod tests_subtree;

pub use clone3::{Forked, clone_into_cgroup, fork_with_pidfd, is_unsupported as clone3_unsupported};
pub use controller::{Controller, Version};
pub use error::{CgroupError, Result};
pub use fs::{CgroupFs, DirLock};
pub use instance::Instance;
pub use join::{ChildJoin, ForkMode, JoinFds, JoinPath, Spawned};
pub use kill::KillStrategy;
pub use layout::{Hierarchy, HierarchyId, Layout, LayoutKind, unified_dir};
pub use limits::{Limits, PID_MAX_LIMIT};
pub use mountinfo::{CgroupMount, cgroup_mounts};
pub use paths::{
    CgroupSet, DEFAULT_NAME, PLUGINS_DIR, SUPERVISOR_LEAF, cgroup_set_at, subtree_root, validate_name, validate_parent,
};
pub use proc_cgroup::{Membership, parse as parse_proc_cgroup};
pub use real_fs::RealFs;
pub use remove::Removal;
pub use stale::cleanup_stale;
pub use stats::{StatFiles, Stats};
pub use subtree::{Subtree, SubtreeConfig, SubtreeLock};
