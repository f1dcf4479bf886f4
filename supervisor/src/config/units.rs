//! The units operators write in the config and on the command line:
//! durations ("250ms", "5s"), sizes ("128M", "1G"), CPU shares ("50%") and
//! file modes ("0600"), each parsed with an error that says what was expected.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses "250ms", "5s", "1m 30s", at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. \"250ms\" or \"5s\""))?;
    within_bounds(s, d)
}

/// The longest duration anything accepts. Every timeout, backoff and
/// deadline is added to clocks and encoded for gRPC (`grpc-timeout` holds
/// at most 8 digits of hours): a year keeps all of that far from overflow,
/// and no operator means a longer wait.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

fn within_bounds(s: &str, d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!("duration {s:?} is too long: at most 365 days"));
    }
    Ok(d)
}

pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Serde adapter for durations written as strings.
pub mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let s = String::deserialize(d)?;
            parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
        }
    }
}

/// A size in bytes, written "128M", "1G", "65536", "512Ki".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits_end);
        let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}; write e.g. \"128M\" or \"1G\""))?;
        let unit = unit.trim();
        let unit = unit.strip_suffix(['B', 'b']).unwrap_or(unit);
        let unit = unit.strip_suffix('i').unwrap_or(unit);
        let mult: u64 = match unit {
            "" => 1,
            "K" | "k" => 1 << 10,
            "M" | "m" => 1 << 20,
            "G" | "g" => 1 << 30,
            "T" | "t" => 1 << 40,
            other => {
                return Err(format!("invalid size {s:?}: unknown unit {other:?} (use K, M, G or T)"));
            }
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl ByteSize {
    /// The size in bytes, as `memory.max` and `memory.high` take it.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if n >= 1 << shift && n.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum, whose error on a wrong type names only
        // the enum ("did not match any variant"), not what was given or is wanted.
        struct Size;
        impl serde::de::Visitor<'_> for Size {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"128M\" or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n).map(ByteSize).map_err(|_| E::custom(format!("{n} bytes: a size cannot be negative")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(Size)
    }
}

/// A CPU quota as a share of one core: "50%" is half a core, "200%" two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuShare {
    /// Hundredths of a percent of one core, so "12.5%" is exact.
    pub basis_points: u32,
}

impl CpuShare {
    pub const PERIOD_US: u64 = 100_000;

    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let pct = t
            .strip_suffix('%')
            .ok_or_else(|| format!("invalid CPU share {s:?}; write a percentage of one core, e.g. \"50%\""))?;
        let v: f64 = pct.trim().parse().map_err(|_| format!("invalid CPU share {s:?}; write e.g. \"50%\""))?;
        if !(v > 0.0 && v <= 100_000.0) {
            return Err(format!("CPU share {s:?} must be above 0% and at most 100000%"));
        }
        let basis_points = (v * 100.0).round() as u32;
        // Held in hundredths of a percent: a smaller share would be kept (and written to
        // the state file) as "0%", which no quota is.
        if basis_points == 0 {
            return Err(format!("CPU share {s:?} is below 0.01%, the smallest share a quota is given in"));
        }
        Ok(CpuShare { basis_points })
    }

    /// (quota, period) in microseconds for `cpu.max` / CFS.
    pub fn quota_period_us(self) -> (u64, u64) {
        (self.quota_us(Self::PERIOD_US).max(1_000), Self::PERIOD_US)
    }

    /// The quota for a scheduling period of `period_us` microseconds.
    pub fn quota_us(self, period_us: u64) -> u64 {
        period_us.saturating_mul(u64::from(self.basis_points)) / 10_000
    }
}

impl std::str::FromStr for CpuShare {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for CpuShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.basis_points.is_multiple_of(100) {
            write!(f, "{}%", self.basis_points / 100)
        } else {
            write!(f, "{}%", f64::from(self.basis_points) / 100.0)
        }
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl serde::Serialize for CpuShare {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CpuShare {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CpuShare::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A file mode written as an octal string, "0600".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let digits = s.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o777 => Ok(Mode(m)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid file mode {s:?}; write an octal string such as \"0600\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units_and_refuse_nonsense() {
        assert_eq!(ByteSize::parse("128M"), Ok(ByteSize(128 << 20)));
        assert_eq!(ByteSize::parse("1G"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("512Ki"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert!(ByteSize::parse("12X").unwrap_err().contains("unknown unit"));
        assert!(ByteSize::parse("").is_err());
        assert!(ByteSize::parse("99999999999T").unwrap_err().contains("too large"));
        assert_eq!(ByteSize(128 << 20).to_string(), "128M");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn a_share_too_small_to_hold_is_refused_and_every_accepted_one_reads_back_as_itself() {
        for tiny in ["0.001%", "0.0049%"] {
            let e = CpuShare::parse(tiny).unwrap_err();
            assert!(e.contains("below 0.01%"), "{tiny}: {e}");
        }
        for s in ["0.005%", "0.01%", "0.5%", "1%", "12.34%", "100000%"] {
            let written = CpuShare::parse(s).unwrap().to_string();
            assert_eq!(CpuShare::parse(&written), CpuShare::parse(s), "{s} written as {written}");
        }
    }

    #[test]
    fn cpu_shares_are_percentages_of_one_core() {
        assert_eq!(CpuShare::parse("50%").unwrap().quota_period_us(), (50_000, 100_000));
        assert_eq!(CpuShare::parse("200%").unwrap().quota_period_us(), (200_000, 100_000));
        assert_eq!(CpuShare::parse("12.5%").unwrap().to_string(), "12.5%");
        assert!(CpuShare::parse("50").is_err());
        assert!(CpuShare::parse("0%").is_err());
        assert!(CpuShare::parse("-5%").is_err());
    }

    #[test]
    fn durations_name_the_expected_form() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").unwrap_err().contains("\"5s\""));
    }

    #[test]
    fn durations_longer_than_a_year_are_refused_with_the_bound() {
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration("999999999999h"),
            Err("duration \"999999999999h\" is too long: at most 365 days".into())
        );
        assert!(parse_duration("18446744073709551615s").unwrap_err().contains("at most 365 days"));
    }

    #[test]
    fn an_overlong_duration_in_the_config_names_file_line_and_key() {
        for (text, key) in [
            ("[supervisor.defaults]\ncall_timeout = \"999999999999h\"\n", "supervisor.defaults.call_timeout"),
            ("[supervisor.defaults.backoff]\nmax = \"400d\"\n", "supervisor.defaults.backoff.max"),
            (
                "[[plugin]]\nname = \"e\"\nbinary = \"/bin/true\"\nstop_timeout = \"9999999h\"\n",
                "plugin[0].stop_timeout",
            ),
        ] {
            let err = super::super::load::parse(text, std::path::Path::new("/etc/ps.toml")).unwrap_err().to_string();
            let line = text.lines().count();
            assert!(err.starts_with(&format!("/etc/ps.toml:{line}: {key}: duration ")), "{err}");
            assert!(err.contains("is too long: at most 365 days"), "{err}");
        }
    }
}
