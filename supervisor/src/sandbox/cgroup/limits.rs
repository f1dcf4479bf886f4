//! The quotas of one instance and how they are spelled in v1 and v2 control files.

use super::controller::{Controller, Version};
use super::error::{CgroupError, Result};

/// Quotas for one cgroup. `None` means unlimited, so applying a `Limits` sets every quota
/// this host can enforce, and clearing a field lifts that quota on a running instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes; v2 `memory.max`, v1 `memory.limit_in_bytes`. Swap cannot be used to dodge it:
    /// v2 sets `memory.swap.max` to 0 and v1 sets `memory.memsw.limit_in_bytes` to the same
    /// value, wherever the kernel has swap accounting.
    pub memory_max: Option<u64>,
    /// Bytes; v2 `memory.high` (throttles and reclaims above it). v1 has no equivalent: it
    /// maps to `memory.soft_limit_in_bytes`, which only steers reclaim under global memory
    /// pressure and never throttles, so on v1 this is a hint, not a quota.
    pub memory_high: Option<u64>,
    /// `(quota_us, period_us)`: the group may run `quota_us` of CPU time every `period_us`
    /// (50% of one core is `(50_000, 100_000)`). v2 `cpu.max`, v1 `cpu.cfs_{quota,period}_us`.
    pub cpu_max: Option<(u64, u64)>,
    /// Tasks (processes and threads); `pids.max` on both versions.
    pub pids_max: Option<u64>,
}

const PAGE: u64 = 4096;
/// The kernel's ceiling on pids (`PID_MAX_LIMIT` on 64-bit): `pids.max` refuses anything
/// above it with EINVAL, on v1 and v2.
pub const PID_MAX_LIMIT: u64 = 4_194_304;
const PERIOD_US: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
const MIN_QUOTA_US: u64 = 1_000;
/// cgroupfs parses v1 values as signed 64-bit.
const MAX_V1_VALUE: u64 = i64::MAX as u64;

impl Limits {
    /// Refuses values the kernel would reject or silently round to something else, so the
    /// caller gets the reason up front rather than an EINVAL halfway through applying.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(CgroupError::InvalidLimit { field, reason });
        for (field, v) in [("memory_max", self.memory_max), ("memory_high", self.memory_high)] {
            match v {
                Some(b) if b < PAGE => return bad(field, format!("{b} bytes is below one page")),
                Some(b) if b > MAX_V1_VALUE => {
                    return bad(field, format!("{b} bytes is out of range"));
                }
                _ => {}
            }
        }
        if let Some((quota, period)) = self.cpu_max {
            if !PERIOD_US.contains(&period) {
                return bad("cpu_max", format!("period {period}us is outside 1000..=1000000"));
            }
            if !(MIN_QUOTA_US..=MAX_V1_VALUE).contains(&quota) {
                return bad("cpu_max", format!("quota {quota}us is below 1000us or out of range"));
            }
        }
        match self.pids_max {
            Some(0) => return bad("pids_max", "0 tasks leaves none for the plugin itself".into()),
            Some(p) if p > PID_MAX_LIMIT => {
                return bad("pids_max", format!("{p} tasks is above the kernel's maximum of {PID_MAX_LIMIT}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Which controller each set quota needs, and the field that asks for it.
    pub fn requested(&self) -> Vec<(Controller, &'static str)> {
        let mut out = Vec::new();
        if self.memory_max.is_some() {
            out.push((Controller::Memory, "memory_max"));
        }
        if self.memory_high.is_some() {
            out.push((Controller::Memory, "memory_high"));
        }
        if self.cpu_max.is_some() {
            out.push((Controller::Cpu, "cpu_max"));
        }
        if self.pids_max.is_some() {
            out.push((Controller::Pids, "pids_max"));
        }
        out
    }
}

/// One control-file write, in the order it must happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileWrite {
    pub file: &'static str,
    pub value: String,
    /// Skipped when the kernel lacks the file (swap accounting off).
    pub optional: bool,
}

fn w(file: &'static str, value: String) -> FileWrite {
    FileWrite { file, value, optional: false }
}

fn v2(v: Option<u64>) -> String {
    v.map_or_else(|| "max".to_owned(), |n| n.to_string())
}

fn v1(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_owned(), |n| n.to_string())
}

/// `v1_current_limit` is what `memory.limit_in_bytes` holds now (`None` = unlimited): v1
/// refuses memsw below the memory limit, so raising writes memsw first and lowering last.
pub(crate) fn memory_writes(version: Version, l: &Limits, v1_current_limit: Option<u64>) -> Vec<FileWrite> {
    match version {
        Version::V2 => vec![
            w("memory.max", v2(l.memory_max)),
            FileWrite {
                file: "memory.swap.max",
                value: if l.memory_max.is_some() { "0".into() } else { "max".into() },
                optional: true,
            },
            w("memory.high", v2(l.memory_high)),
        ],
        Version::V1 => {
            let limit = w("memory.limit_in_bytes", v1(l.memory_max));
            let memsw = FileWrite { file: "memory.memsw.limit_in_bytes", value: v1(l.memory_max), optional: true };
            let raising = l.memory_max.unwrap_or(u64::MAX) > v1_current_limit.unwrap_or(u64::MAX);
            let mut out = if raising { vec![memsw, limit] } else { vec![limit, memsw] };
            out.push(w("memory.soft_limit_in_bytes", v1(l.memory_high)));
            out
        }
    }
}

pub(crate) fn cpu_writes(version: Version, l: &Limits) -> Vec<FileWrite> {
    match (version, l.cpu_max) {
        (Version::V2, Some((q, p))) => vec![w("cpu.max", format!("{q} {p}"))],
        (Version::V2, None) => vec![w("cpu.max", "max".into())],
        // Period first: the quota is checked against it.
        (Version::V1, Some((q, p))) => {
            vec![w("cpu.cfs_period_us", p.to_string()), w("cpu.cfs_quota_us", q.to_string())]
        }
        (Version::V1, None) => vec![w("cpu.cfs_quota_us", "-1".into())],
    }
}

pub(crate) fn pids_writes(l: &Limits) -> Vec<FileWrite> {
    vec![w("pids.max", v2(l.pids_max))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validation() {
        Limits::default().validate().unwrap();
        Limits {
            memory_max: Some(1 << 20),
            memory_high: Some(1 << 19),
            cpu_max: Some((50_000, 100_000)),
            pids_max: Some(64),
        }
        .validate()
        .unwrap();
        Limits { pids_max: Some(PID_MAX_LIMIT), ..Limits::default() }.validate().unwrap();
        for bad in [
            Limits { memory_max: Some(100), ..Limits::default() },
            Limits { memory_high: Some(u64::MAX), ..Limits::default() },
            Limits { cpu_max: Some((500, 100_000)), ..Limits::default() },
            Limits { cpu_max: Some((50_000, 999)), ..Limits::default() },
            Limits { cpu_max: Some((50_000, 2_000_000)), ..Limits::default() },
            Limits { pids_max: Some(0), ..Limits::default() },
            Limits { pids_max: Some(PID_MAX_LIMIT + 1), ..Limits::default() },
        ] {
            let e = bad.validate().unwrap_err();
            assert!(matches!(e, CgroupError::InvalidLimit { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn requested_controllers() {
        assert!(Limits::default().requested().is_empty());
        let l = Limits { memory_high: Some(1 << 20), pids_max: Some(3), ..Limits::default() };
        assert_eq!(l.requested(), vec![(Controller::Memory, "memory_high"), (Controller::Pids, "pids_max")]);
    }

    #[test]
    fn v2_spelling() {
        let l = Limits { memory_max: Some(1 << 20), cpu_max: Some((20_000, 100_000)), ..Limits::default() };
        let m = memory_writes(Version::V2, &l, None);
        assert_eq!(m[0], w("memory.max", "1048576".into()));
        assert_eq!((m[1].file, m[1].value.as_str(), m[1].optional), ("memory.swap.max", "0", true));
        assert_eq!(m[2], w("memory.high", "max".into()));
        assert_eq!(cpu_writes(Version::V2, &l), vec![w("cpu.max", "20000 100000".into())]);
        assert_eq!(cpu_writes(Version::V2, &Limits::default()), vec![w("cpu.max", "max".into())]);
        assert_eq!(pids_writes(&Limits::default()), vec![w("pids.max", "max".into())]);
    }

    #[test]
    fn v1_spelling_and_memsw_order() {
        let l = Limits {
            memory_max: Some(8 << 20),
            memory_high: Some(4 << 20),
            cpu_max: Some((20_000, 50_000)),
            ..Limits::default()
        };
        let lowering = memory_writes(Version::V1, &l, None);
        assert_eq!(lowering[0].file, "memory.limit_in_bytes");
        assert_eq!(lowering[1].file, "memory.memsw.limit_in_bytes");
        assert_eq!(lowering[2], w("memory.soft_limit_in_bytes", "4194304".into()));
        let raising = memory_writes(Version::V1, &l, Some(1 << 20));
        assert_eq!(raising[0].file, "memory.memsw.limit_in_bytes");
        assert_eq!(raising[1].file, "memory.limit_in_bytes");
        let lift = memory_writes(Version::V1, &Limits::default(), Some(1 << 20));
        assert_eq!(lift[0], FileWrite { file: "memory.memsw.limit_in_bytes", value: "-1".into(), optional: true });
        assert_eq!(lift[1], w("memory.limit_in_bytes", "-1".into()));
        assert_eq!(
            cpu_writes(Version::V1, &l),
            vec![w("cpu.cfs_period_us", "50000".into()), w("cpu.cfs_quota_us", "20000".into())]
        );
        assert_eq!(cpu_writes(Version::V1, &Limits::default()), vec![w("cpu.cfs_quota_us", "-1".into())]);
    }

    proptest! {
        #[test]
        fn v1_memory_order_keeps_memsw_at_or_above_limit(cur in proptest::option::of(4096u64..1<<40), new in proptest::option::of(4096u64..1<<40)) {
            // Simulate the kernel's invariant over the writes in the order given.
            let inf = u64::MAX;
            let (mut limit, mut memsw) = (cur.unwrap_or(inf), cur.unwrap_or(inf));
            let l = Limits { memory_max: new, ..Limits::default() };
            for fw in memory_writes(Version::V1, &l, cur) {
                let v = if fw.value == "-1" { inf } else { fw.value.parse().unwrap() };
                match fw.file {
                    "memory.limit_in_bytes" => { prop_assert!(v <= memsw); limit = v; }
                    "memory.memsw.limit_in_bytes" => { prop_assert!(v >= limit); memsw = v; }
                    _ => {}
                }
            }
            prop_assert_eq!(limit, new.unwrap_or(inf));
            prop_assert_eq!(memsw, new.unwrap_or(inf));
        }
    }
}
