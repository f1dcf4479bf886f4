//! Changing a plugin's quotas at run time: the change is checked, written
//! to the state file first (so it survives restarts), then applied to every
//! running instance's cgroup at once.

use std::sync::Arc;

use crate::config::QuotaConfig;
use crate::config::units::{ByteSize, CpuShare};
use crate::sandbox::quota;
use crate::{Supervisor, SupervisorError};

/// One requested change: `Some(Some(v))` sets, `Some(None)` returns the
/// value to its configured default, `None` leaves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaChange {
    pub memory_max: Option<Option<ByteSize>>,
    pub memory_high: Option<Option<ByteSize>>,
    pub cpu: Option<Option<CpuShare>>,
    pub pids_max: Option<Option<u64>>,
}

/// The word that returns a value to its default.
pub const DEFAULT: &str = "default";

fn parse<T>(s: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Option<Option<T>>, String> {
    match s.trim() {
        "" => Ok(None),
        DEFAULT => Ok(Some(None)),
        v => f(v).map(|v| Some(Some(v))),
    }
}

impl QuotaChange {
    /// From the strings operators type ("256M", "50%", "64", "default").
    pub fn parse(memory_max: &str, memory_high: &str, cpu: &str, pids_max: &str) -> Result<Self, String> {
        Ok(Self {
            memory_max: parse(memory_max, ByteSize::parse).map_err(|e| format!("memory: {e}"))?,
            memory_high: parse(memory_high, ByteSize::parse).map_err(|e| format!("memory-high: {e}"))?,
            cpu: parse(cpu, CpuShare::parse).map_err(|e| format!("cpu: {e}"))?,
            pids_max: parse(pids_max, |v| {
                v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| format!("{v:?} is not a task count above 0"))
            })
            .map_err(|e| format!("pids: {e}"))?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn apply(&self, mut q: QuotaConfig) -> QuotaConfig {
        if let Some(v) = self.memory_max {
            q.memory_max = v;
        }
        if let Some(v) = self.memory_high {
            q.memory_high = v;
        }
        if let Some(v) = self.cpu {
            q.cpu = v;
        }
        if let Some(v) = self.pids_max {
            q.pids_max = v;
        }
        q
    }
}

impl Supervisor {
    /// The quotas `name`'s instances start with now.
    pub fn quota(&self, name: &str) -> Result<QuotaConfig, SupervisorError> {
        let p = self.plugin(name)?;
        let tier = self.shared().sandbox.tier(&p.spec.load().tier).map(|t| t.quota.clone());
        Ok(p.quota(tier.as_ref()))
    }

    /// Applies `change` to `name`: persisted, then set on every running
    /// instance. Returns the quotas in force and what happened.
    pub fn change_quota(&self, name: &str, change: &QuotaChange) -> Result<(QuotaConfig, String), SupervisorError> {
        let p = self.plugin(name)?;
        if change.is_empty() {
            return Ok((self.quota(name)?, "unchanged".into()));
        }
        let bad = |reason: String| SupervisorError::Quota { plugin: name.into(), reason };
        let overrides = change.apply((**p.overrides.load()).clone());
        let tier = self.shared().sandbox.tier(&p.spec.load().tier).map(|t| t.quota.clone());
        let effective = quota::effective(tier.as_ref(), &p.spec.load().quota, &overrides);
        if let (Some(Some(high)), Some(max)) = (change.memory_high, effective.memory_max)
            && high >= max
        {
            return Err(bad(format!("memory-high {high} must be below memory {max}")));
        }
        let limits = quota::limits(&effective);
        limits.validate().map_err(|e| bad(e.to_string()))?;
        self.shared().state.set_quota(name, overrides.clone())?;
        p.overrides.store(Arc::new(overrides));
        let mut applied = 0;
        let mut failures = Vec::new();
        for inst in &p.instances {
            inst.update(|s| s.quota = effective.clone());
            if let Some(cg) = inst.cgroup.load_full() {
                match cg.set_limits(&limits) {
                    Ok(()) => applied += 1,
                    Err(e) => failures.push(format!("{}: {e}", inst.id)),
                }
            }
        }
        let shown = describe(&effective);
        let mut message = format!("{name}: {shown} (persisted; applied to {applied} running instance(s))");
        if !failures.is_empty() {
            message.push_str(&format!("; not applied: {}", failures.join("; ")));
        }
        self.events().emit(name, "", "quota", message.clone(), &[]);
        Ok((effective, message))
    }
}

/// "memory 256M, cpu 50%, pids 64".
pub fn describe(q: &QuotaConfig) -> String {
    let mut parts = Vec::new();
    if let Some(m) = q.memory_max {
        parts.push(format!("memory {m}"));
    }
    if let Some(m) = q.memory_high {
        parts.push(format!("memory-high {m}"));
    }
    if let Some(c) = q.cpu {
        parts.push(format!("cpu {c}"));
    }
    if let Some(n) = q.pids_max {
        parts.push(format!("pids {n}"));
    }
    if parts.is_empty() { "no quotas".into() } else { parts.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_set_default_and_leave() {
        let c = QuotaChange::parse("256M", "", "default", "64").unwrap();
        assert_eq!(c.memory_max, Some(Some(ByteSize(256 << 20))));
        assert_eq!(c.memory_high, None);
        assert_eq!(c.cpu, Some(None));
        assert_eq!(c.pids_max, Some(Some(64)));
        let before = QuotaConfig { cpu: CpuShare::parse("20%").ok(), ..Default::default() };
        let after = c.apply(before);
        assert_eq!(after.cpu, None);
        assert_eq!(after.memory_max, Some(ByteSize(256 << 20)));
        assert!(QuotaChange::parse("", "", "", "").unwrap().is_empty());
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert!(QuotaChange::parse("lots", "", "", "").unwrap_err().starts_with("memory:"));
        assert!(QuotaChange::parse("", "", "half", "").unwrap_err().starts_with("cpu:"));
        assert!(QuotaChange::parse("", "", "", "0").unwrap_err().starts_with("pids:"));
    }
}
