//! Quota values as operators write them (`512M`, `50%`), parsed once into
//! numbers the cgroup code can write, and printed back the same way.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A memory size in bytes, written as a whole number with an optional
/// binary suffix: `K`, `M`, `G` or `T` (so `512M` is 512 MiB, as in
/// systemd and the cgroup tools).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct ByteSize(u64);

impl ByteSize {
    const UNITS: [(char, u64); 4] = [('T', 1 << 40), ('G', 1 << 30), ('M', 1 << 20), ('K', 1 << 10)];

    /// A size of `bytes` bytes.
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    /// The size in bytes, as `memory.max` and `memory.high` take it.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (digits, unit) = match text.char_indices().last() {
            Some((at, c)) if c.is_ascii_alphabetic() => {
                let unit = Self::UNITS
                    .iter()
                    .find(|(suffix, _)| *suffix == c)
                    .map(|(_, factor)| *factor)
                    .ok_or_else(|| format!("{text:?}: unknown size suffix {c:?} (use K, M, G or T)"))?;
                (&text[..at], unit)
            }
            _ => (text, 1),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{text:?} is not a size: write a whole number with an optional K, M, G or T"));
        }
        let count: u64 = digits.parse().map_err(|_| format!("{text:?} is too large"))?;
        let bytes = count.checked_mul(unit).ok_or_else(|| format!("{text:?} is too large"))?;
        if bytes == 0 {
            return Err(format!("{text:?}: a memory limit of zero would stop the plugin from starting"));
        }
        Ok(Self(bytes))
    }
}

impl TryFrom<String> for ByteSize {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

/// Uses the largest suffix that divides the size exactly, so a parsed
/// value prints as it was written.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Self::UNITS.iter().find(|(_, factor)| self.0.is_multiple_of(*factor)) {
            Some((suffix, factor)) => write!(f, "{}{suffix}", self.0 / factor),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A CPU quota as a percentage of one core: `50%` is half a core, `200%`
/// two full cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct CpuShare(u32);

impl CpuShare {
    /// A share of `percent` percent of one core.
    pub const fn from_percent(percent: u32) -> Self {
        Self(percent)
    }

    /// The share in percent of one core.
    pub const fn percent(self) -> u32 {
        self.0
    }

    /// The quota for a scheduling period of `period_us` microseconds, as
    /// `cpu.max` (v2) and `cpu.cfs_quota_us` (v1) take it.
    pub fn quota_us(self, period_us: u64) -> u64 {
        u64::from(self.0).saturating_mul(period_us) / 100
    }
}

impl FromStr for CpuShare {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let digits = text
            .strip_suffix('%')
            .ok_or_else(|| format!("{text:?} is not a CPU share: write a percentage such as \"50%\""))?;
        let percent: u32 =
            digits.parse().map_err(|_| format!("{text:?} is not a CPU share: write a percentage such as \"50%\""))?;
        if percent == 0 {
            return Err(format!("{text:?}: a CPU share of zero would stop the plugin from running"));
        }
        Ok(Self(percent))
    }
}

impl TryFrom<String> for CpuShare {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl fmt::Display for CpuShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

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
