//! What the routing stack protects a plugin (and its callers) with: the concurrency limit
//! per instance and its queue (`max_in_flight`, `max_queued`), the message size limits
//! (`max_request_bytes`, `max_response_bytes`) and the circuit breaker (`[plugin.breaker]`).
//! Each is read at each call, so an `update` applies them live.

use std::time::Duration;

use serde::Deserialize;

use super::load::{Problems, Seg};

/// Calls one instance works on at once. A plugin's SDK serves on tonic, whose HTTP/2
/// server admits 200 streams per connection: past that a call would wait inside the
/// plugin's connection (the queue without bound of tonic #1616) instead of being shed
/// here. With the queue, it stays below what one gateway connection may have open
/// (`max_concurrent_streams`, 100): one caller's connection alone can overflow them, and
/// is then shed, rather than held by its own stream limit (the same #1616 one hop
/// earlier). Far above what a single-threaded plugin gains from: more only adds latency.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
/// Calls that may wait for a place when every instance is at `max_in_flight`: a short
/// burst's worth, half the limit, so a queued call waits about one call's time.
pub const DEFAULT_MAX_QUEUED: u32 = 32;
/// gRPC's own default receive limit (4 MiB), in both directions.
pub const DEFAULT_MAX_MESSAGE: u64 = 4 << 20;
/// The largest `max_in_flight` and `max_queued`.
pub const MAX_LIMIT: u32 = 65_536;

/// The flat keys of a `[[plugin]]` entry, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Protection {
    pub max_in_flight: u32,
    pub max_queued: u32,
    pub max_request_bytes: u64,
    pub max_response_bytes: u64,
    pub breaker: BreakerConfig,
}

impl Default for Protection {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_queued: DEFAULT_MAX_QUEUED,
            max_request_bytes: DEFAULT_MAX_MESSAGE,
            max_response_bytes: DEFAULT_MAX_MESSAGE,
            breaker: BreakerConfig::default(),
        }
    }
}

/// `[plugin.breaker]`: linkerd's consecutive-failures accrual, with its defaults: 7
/// failures in a row open the circuit for a backoff from 1 s, doubling per failed probe up
/// to 60 s, jittered by half either way so that many callers' probes do not line up.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures of the plugin's own doing that open the circuit; 0 turns the
    /// breaker off.
    #[serde(default = "default_failures")]
    pub failures: u32,
    #[serde(default = "default_min_backoff", with = "super::units::duration")]
    pub min_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "super::units::duration")]
    pub max_backoff: Duration,
    /// 0 to 1: each backoff is spread over ±jitter of itself.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: default_failures(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
            jitter: default_jitter(),
        }
    }
}

fn default_failures() -> u32 {
    7
}
fn default_min_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_jitter() -> f64 {
    0.5
}

/// Checks the keys of plugin entry `i`.
pub(super) fn check(p: &super::PluginConfig, i: usize, problems: &mut Problems<'_>) {
    let at = |key: &'static str| vec![Seg::Key("plugin"), Seg::Index(i), Seg::Key(key)];
    for (key, v) in [("max_in_flight", p.max_in_flight), ("max_queued", p.max_queued)] {
        let least = u32::from(key == "max_in_flight");
        if v.is_some_and(|v| v < least || v > MAX_LIMIT) {
            problems.at(&at(key), format!("must be between {least} and {MAX_LIMIT}"));
        }
    }
    for (key, v) in [("max_request_bytes", p.max_request_bytes), ("max_response_bytes", p.max_response_bytes)] {
        // A message's length prefix is a u32.
        if v.is_some_and(|v| v.bytes() == 0 || v.bytes() > u64::from(u32::MAX)) {
            problems.at(&at(key), "must be between 1 and 4G - 1 bytes (a gRPC message's length is 32 bits)");
        }
    }
    let b = &p.breaker;
    let sub = |key: &'static str| {
        let mut path = at("breaker");
        path.push(Seg::Key(key));
        path
    };
    if b.min_backoff.is_zero() || b.min_backoff > b.max_backoff {
        problems.at(&sub("min_backoff"), "must be above zero and at most max_backoff");
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        problems.at(&sub("jitter"), "must be between 0 and 1");
    }
}

impl Protection {
    pub(super) fn of(p: &super::PluginConfig) -> Self {
        let d = Self::default();
        Self {
            max_in_flight: p.max_in_flight.unwrap_or(d.max_in_flight),
            max_queued: p.max_queued.unwrap_or(d.max_queued),
            max_request_bytes: p.max_request_bytes.map_or(d.max_request_bytes, |b| b.bytes()),
            max_response_bytes: p.max_response_bytes.map_or(d.max_response_bytes, |b| b.bytes()),
            breaker: p.breaker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const HEAD: &str = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\n";

    fn problems(keys: &str) -> String {
        match format!("{HEAD}{keys}").parse::<Config>() {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_grpcs_sizes_and_linkerds_breaker() {
        let config: Config = HEAD.parse().unwrap();
        let p = config.specs()[0].protection;
        assert_eq!((p.max_in_flight, p.max_queued), (64, 32));
        assert_eq!((p.max_request_bytes, p.max_response_bytes), (4 << 20, 4 << 20));
        assert_eq!(p.breaker.failures, 7);
        assert_eq!((p.breaker.min_backoff, p.breaker.max_backoff), (Duration::from_secs(1), Duration::from_secs(60)));
    }

    #[test]
    fn keys_are_read_and_bad_values_named() {
        let text = "max_in_flight = 4\nmax_queued = 0\nmax_request_bytes = \"1K\"\nmax_response_bytes = 2048\n[plugin.breaker]\nfailures = 3\nmin_backoff = \"200ms\"\nmax_backoff = \"2s\"\njitter = 0\n";
        let config: Config = format!("{HEAD}{text}").parse().unwrap();
        let p = config.specs()[0].protection;
        assert_eq!((p.max_in_flight, p.max_queued, p.max_request_bytes, p.max_response_bytes), (4, 0, 1024, 2048));
        assert_eq!(p.breaker.failures, 3);
        for (bad, says) in [
            ("max_in_flight = 0", "plugin[0].max_in_flight: must be between 1 and 65536"),
            ("max_queued = 70000", "plugin[0].max_queued: must be between 0 and 65536"),
            ("max_request_bytes = \"5G\"", "plugin[0].max_request_bytes: must be between 1 and"),
            ("[plugin.breaker]\nmin_backoff = \"2m\"", "plugin[0].breaker.min_backoff: must be above zero"),
            ("[plugin.breaker]\njitter = 2.0", "plugin[0].breaker.jitter: must be between 0 and 1"),
            ("[plugin.breaker]\nfailurs = 2", "breaker.failurs"),
        ] {
            let got = problems(bad);
            assert!(got.contains(says), "{bad}: {got}");
        }
    }

    #[test]
    fn the_readme_example_is_valid_and_says_the_defaults() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = &readme[readme.find("## Protection layers").unwrap()..];
        let block = &section[section.find("```toml\n").unwrap() + 8..];
        let block = &block[..block.find("```").unwrap()];
        let block = block.replace("binary = \"zoo\"", "binary = \"/bin/true\"\ntier = \"none\"");
        let config: Config = format!("[supervisor.sandbox]\nallow_unsandboxed = true\n{block}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert_eq!(config.specs()[0].protection, Protection::default(), "{block}");
    }
}
