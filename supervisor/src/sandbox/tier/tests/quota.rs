//! Quota values in tier files are the config's units.

use super::super::{ByteSize, CpuShare};

#[test]
fn tier_quotas_use_the_config_units() {
    let size: ByteSize = "512M".parse().expect("valid size");
    assert_eq!(size.bytes(), 512 << 20);
    assert_eq!(size.to_string(), "512M");
    let half: CpuShare = "50%".parse().expect("valid share");
    assert_eq!(half.quota_us(100_000), 50_000);
    assert!("50".parse::<CpuShare>().is_err());
}
