//! The controllers this layer drives and the two cgroup versions they can come from.

use std::fmt;

/// A cgroup controller (or, for `Freezer` on v2, the core freezer) this layer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Cpu,
    Pids,
    /// Only used on v1-only hosts: elsewhere the unified `cpu.stat` reports usage.
    Cpuacct,
    /// Only used on v1-only hosts: v2 freezes through `cgroup.freeze`.
    Freezer,
}

impl Controller {
    pub const ALL: [Controller; 5] =
        [Controller::Memory, Controller::Cpu, Controller::Pids, Controller::Cpuacct, Controller::Freezer];

    /// The name the kernel uses in mount options, `/proc/self/cgroup` and `cgroup.controllers`.
    pub const fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
            Controller::Cpuacct => "cpuacct",
            Controller::Freezer => "freezer",
        }
    }

    pub fn from_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Controllers a quota can ask for; the others only serve reporting and killing.
    pub const QUOTA: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which cgroup interface a hierarchy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Controller::ALL {
            assert_eq!(Controller::from_name(c.name()), Some(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!(Controller::from_name("hugetlb"), None);
        assert_eq!(Controller::from_name("name=systemd"), None);
    }

    #[test]
    fn index_matches_position_in_all() {
        for (i, c) in Controller::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
