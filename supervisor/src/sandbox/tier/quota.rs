//! A tier's default quotas; the values (`512M`, `50%`) are the units
//! operators write everywhere (`crate::config::units`).

use serde::Deserialize;

pub use crate::config::units::{ByteSize, CpuShare};

/// A tier's default cgroup limits; a plugin's config may override each.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// `memory.max`: the plugin is OOM-killed above this.
    pub memory_max: ByteSize,
    /// `memory.high`: reclaim pressure starts here; `None` leaves it unset.
    #[serde(default)]
    pub memory_high: Option<ByteSize>,
    /// `cpu.max` as a share of one core.
    pub cpu: CpuShare,
    /// `pids.max`: tasks (threads included) the plugin may have.
    pub pids_max: u32,
}

impl Quota {
    /// Checks the relations between the values, naming the key at fault.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(high) = self.memory_high
            && high > self.memory_max
        {
            return Err((
                "quota.memory_high",
                format!("{high} is above memory_max {}: the high mark must come first", self.memory_max),
            ));
        }
        if self.pids_max == 0 {
            return Err(("quota.pids_max", "0 leaves no task for the plugin itself".to_owned()));
        }
        Ok(())
    }
}
