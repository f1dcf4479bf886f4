//! The quotas an instance runs with: the tier's defaults, overridden by the
//! plugin's config, overridden by what the operator set at run time; and
//! their translation into cgroup limits.

use super::cgroup::Limits;
use super::tier::Quota;
use crate::config::QuotaConfig;

/// Layers the operator's overrides over the config over the tier.
pub fn effective(tier: Option<&Quota>, config: &QuotaConfig, overrides: &QuotaConfig) -> QuotaConfig {
    let memory_max = overrides.memory_max.or(config.memory_max).or(tier.map(|t| t.memory_max));
    // A high mark at or above the limit means nothing (lowering the limit
    // below an inherited high mark leaves just the limit).
    let memory_high = overrides
        .memory_high
        .or(config.memory_high)
        .or(tier.and_then(|t| t.memory_high))
        .filter(|high| memory_max.is_none_or(|max| *high < max));
    QuotaConfig {
        memory_max,
        memory_high,
        cpu: overrides.cpu.or(config.cpu).or(tier.map(|t| t.cpu)),
        pids_max: overrides.pids_max.or(config.pids_max).or(tier.map(|t| u64::from(t.pids_max))),
        optional: config.optional,
    }
}

/// The cgroup limits for a quota.
pub fn limits(q: &QuotaConfig) -> Limits {
    Limits {
        memory_max: q.memory_max.map(|b| b.bytes()),
        memory_high: q.memory_high.map(|b| b.bytes()),
        cpu_max: q.cpu.map(|c| c.quota_period_us()),
        pids_max: q.pids_max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::{ByteSize, CpuShare};

    #[test]
    fn a_lowered_limit_drops_a_high_mark_above_it() {
        let tier = Quota {
            memory_max: ByteSize(512 << 20),
            memory_high: Some(ByteSize(448 << 20)),
            cpu: CpuShare::parse("100%").unwrap(),
            pids_max: 256,
        };
        let over = QuotaConfig { memory_max: Some(ByteSize(64 << 20)), ..Default::default() };
        let q = effective(Some(&tier), &QuotaConfig::default(), &over);
        assert_eq!((q.memory_max, q.memory_high), (Some(ByteSize(64 << 20)), None));
        assert_eq!(
            effective(Some(&tier), &QuotaConfig::default(), &QuotaConfig::default()).memory_high,
            Some(ByteSize(448 << 20))
        );
    }

    #[test]
    fn overrides_beat_config_which_beats_the_tier() {
        let tier = Quota {
            memory_max: ByteSize(512 << 20),
            memory_high: None,
            cpu: CpuShare::parse("100%").unwrap(),
            pids_max: 256,
        };
        let config = QuotaConfig { memory_max: Some(ByteSize(128 << 20)), ..Default::default() };
        let over = QuotaConfig { pids_max: Some(64), ..Default::default() };
        let q = effective(Some(&tier), &config, &over);
        assert_eq!(q.memory_max, Some(ByteSize(128 << 20)));
        assert_eq!(q.pids_max, Some(64));
        assert_eq!(q.cpu, Some(CpuShare::parse("100%").unwrap()));
        let l = limits(&q);
        assert_eq!(l.memory_max, Some(128 << 20));
        assert_eq!(l.cpu_max, Some((100_000, 100_000)));
        assert_eq!(limits(&effective(None, &QuotaConfig::default(), &QuotaConfig::default())), Limits::default());
    }
}
