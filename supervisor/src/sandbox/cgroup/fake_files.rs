//! Control-file templates and write rules of the in-memory kernel model used by `FakeFs`.
//!
//! Only what the cgroup layer relies on is modelled: which files a cgroup has per version
//! and controller, the values they start with, and the kernel's checks on writes that would
//! otherwise hide ordering bugs (v1 memsw >= limit, CFS ranges, values rounded to pages), and
//! the refusals an operator's change can meet: `pids.max` above `PID_MAX_LIMIT` (EINVAL) and a
//! v1 memory limit below what the group uses and cannot reclaim (EBUSY; v2 takes it and
//! reclaims or OOM-kills instead).

use std::collections::BTreeMap;

use super::controller::Version;
use super::limits::PID_MAX_LIMIT;
use super::parse::V1_UNLIMITED;

const PAGE: u64 = 4096;

pub(super) fn core_files(version: Version, is_root: bool, cgroup_kill: bool) -> Vec<(&'static str, String)> {
    match version {
        Version::V1 => {
            vec![("cgroup.procs", String::new()), ("tasks", String::new()), ("notify_on_release", "0\n".into())]
        }
        Version::V2 => {
            let mut files = vec![
                ("cgroup.procs", String::new()),
                ("cgroup.controllers", String::new()),
                ("cgroup.subtree_control", String::new()),
                ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n".into()),
            ];
            if !is_root {
                files.push(("cgroup.events", String::new()));
                files.push(("cgroup.freeze", "0\n".into()));
                files.push(("cgroup.type", "domain\n".into()));
                if cgroup_kill {
                    files.push(("cgroup.kill", String::new()));
                }
            }
            files
        }
    }
}

pub(super) fn controller_files(version: Version, controller: &str) -> Vec<(&'static str, String)> {
    let unlimited = V1_UNLIMITED.to_string();
    match (version, controller) {
        (Version::V2, "memory") => vec![
            ("memory.max", "max\n".into()),
            ("memory.high", "max\n".into()),
            ("memory.swap.max", "max\n".into()),
            ("memory.current", "0\n".into()),
            ("memory.peak", "0\n".into()),
            ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n".into()),
            ("memory.stat", "anon 0\nfile 0\nkernel 0\nshmem 0\n".into()),
        ],
        (Version::V2, "cpu") => vec![("cpu.max", "max 100000\n".into()), ("cpu.weight", "100\n".into())],
        (Version::V2 | Version::V1, "pids") => {
            vec![("pids.max", "max\n".into()), ("pids.current", "0\n".into()), ("pids.events", "max 0\n".into())]
        }
        (Version::V1, "memory") => vec![
            ("memory.limit_in_bytes", format!("{unlimited}\n")),
            ("memory.memsw.limit_in_bytes", format!("{unlimited}\n")),
            ("memory.soft_limit_in_bytes", format!("{unlimited}\n")),
            ("memory.usage_in_bytes", "0\n".into()),
            ("memory.max_usage_in_bytes", "0\n".into()),
            ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n".into()),
            ("memory.stat", "cache 0\nrss 0\nmapped_file 0\ntotal_cache 0\ntotal_rss 0\n".into()),
        ],
        (Version::V1, "cpu") => vec![
            ("cpu.cfs_quota_us", "-1\n".into()),
            ("cpu.cfs_period_us", "100000\n".into()),
            ("cpu.stat", "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n".into()),
        ],
        (Version::V1, "cpuacct") => vec![("cpuacct.usage", "0\n".into())],
        (Version::V1, "freezer") => vec![("freezer.state", "THAWED\n".into())],
        _ => vec![],
    }
}

/// The v2 `cpu.stat` grows throttling keys when the cpu controller is enabled.
pub(super) const V2_CPU_THROTTLE_KEYS: &str = "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";

pub(super) const READ_ONLY: &[&str] = &[
    "cgroup.controllers",
    "cgroup.events",
    "cgroup.type",
    "cpu.stat",
    "memory.current",
    "memory.events",
    "memory.stat",
    "memory.usage_in_bytes",
    "pids.current",
    "pids.events",
    "cpuacct.usage",
];

/// Validates and normalises a write the way the kernel would; `Err` is the errno.
pub(super) fn normalise(file: &str, value: &str, files: &BTreeMap<String, String>) -> Result<String, i32> {
    let v = value.trim();
    let pages = |t: &str| -> Result<u64, i32> {
        if t == "-1" {
            return Ok(V1_UNLIMITED);
        }
        let n: u64 = t.parse().map_err(|_| libc::EINVAL)?;
        Ok((n / PAGE * PAGE).min(V1_UNLIMITED))
    };
    let current = |name: &str| -> u64 { files.get(name).and_then(|s| s.trim().parse().ok()).unwrap_or(V1_UNLIMITED) };
    match file {
        "memory.limit_in_bytes" => {
            let n = pages(v)?;
            if files.contains_key("memory.memsw.limit_in_bytes") && n > current("memory.memsw.limit_in_bytes") {
                return Err(libc::EINVAL);
            }
            // The model has no reclaimable memory: what the group uses stays.
            if n < current("memory.usage_in_bytes") {
                return Err(libc::EBUSY);
            }
            Ok(format!("{n}\n"))
        }
        "memory.memsw.limit_in_bytes" => {
            let n = pages(v)?;
            if n < current("memory.limit_in_bytes") {
                return Err(libc::EINVAL);
            }
            Ok(format!("{n}\n"))
        }
        "memory.soft_limit_in_bytes" => Ok(format!("{}\n", pages(v)?)),
        "memory.max" | "memory.high" | "memory.swap.max" => match v {
            "max" => Ok("max\n".into()),
            n => Ok(format!("{}\n", pages(n)?)),
        },
        "pids.max" => match v {
            "max" => Ok("max\n".into()),
            n => match n.parse::<u64>() {
                Ok(n) if n <= PID_MAX_LIMIT => Ok(format!("{n}\n")),
                _ => Err(libc::EINVAL),
            },
        },
        "cpu.max" => {
            let mut it = v.split_whitespace();
            let old_period = files
                .get("cpu.max")
                .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
                .unwrap_or_else(|| "100000".into());
            let (quota, period) = match (it.next(), it.next(), it.next()) {
                (Some(q), None, None) => (q.to_owned(), old_period),
                (Some(q), Some(p), None) => (q.to_owned(), p.to_owned()),
                _ => return Err(libc::EINVAL),
            };
            let period_n: u64 = period.parse().map_err(|_| libc::EINVAL)?;
            if !(1000..=1_000_000).contains(&period_n) {
                return Err(libc::EINVAL);
            }
            if quota != "max" && quota.parse::<u64>().map_err(|_| libc::EINVAL)? < 1000 {
                return Err(libc::EINVAL);
            }
            Ok(format!("{quota} {period}\n"))
        }
        "cpu.cfs_period_us" => match v.parse::<u64>() {
            Ok(p) if (1000..=1_000_000).contains(&p) => Ok(format!("{p}\n")),
            _ => Err(libc::EINVAL),
        },
        "cpu.cfs_quota_us" => match v.parse::<i64>() {
            Ok(-1) => Ok("-1\n".into()),
            Ok(q) if q >= 1000 => Ok(format!("{q}\n")),
            _ => Err(libc::EINVAL),
        },
        "cgroup.freeze" => match v {
            "0" | "1" => Ok(format!("{v}\n")),
            _ => Err(libc::EINVAL),
        },
        "freezer.state" => match v {
            "FROZEN" | "THAWED" => Ok(format!("{v}\n")),
            _ => Err(libc::EINVAL),
        },
        _ => Ok(value.to_owned()),
    }
}
