//! Quota values as operators write them.

use super::super::{ByteSize, CpuShare};

#[test]
fn sizes_parse_with_binary_suffixes_and_print_back() {
    for (text, bytes) in [("512M", 512 << 20), ("1G", 1 << 30), ("64K", 64 << 10), ("2T", 2 << 40), ("1000", 1000)] {
        let size: ByteSize = text.parse().expect("valid size");
        assert_eq!(size.bytes(), bytes, "{text}");
        assert_eq!(size.to_string(), text);
    }
    assert_eq!(ByteSize::from_bytes(1536 << 20).to_string(), "1536M");
}

#[test]
fn bad_sizes_say_why() {
    for (text, why) in [
        ("512X", "suffix"),
        ("", "not a size"),
        ("M", "not a size"),
        ("-1M", "not a size"),
        ("1.5G", "not a size"),
        ("0", "zero"),
        ("99999999999T", "too large"),
    ] {
        let err = text.parse::<ByteSize>().expect_err(text);
        assert!(err.contains(why), "{text}: {err}");
    }
}

#[test]
fn cpu_shares_are_percentages_of_one_core() {
    let half: CpuShare = "50%".parse().expect("valid share");
    assert_eq!(half.percent(), 50);
    assert_eq!(half.quota_us(100_000), 50_000);
    assert_eq!("200%".parse::<CpuShare>().map(|s| s.quota_us(100_000)), Ok(200_000));
    assert_eq!(half.to_string(), "50%");
    for text in ["50", "0%", "x%", "-5%", ""] {
        assert!(text.parse::<CpuShare>().is_err(), "{text}");
    }
}
