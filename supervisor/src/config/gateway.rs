//! `[supervisor.gateway]`: how many host connections the gateway holds and
//! for how long, how many calls each may have open, how many calls may
//! wait on callers that do not read, and the descriptors it leaves to
//! everything else.

use std::time::Duration;

use serde::Deserialize;

use super::load::{Problems, Seg};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Connections held at once; at the limit, a new caller closes the
    /// connection that has been idle longest, or with none idle the one
    /// busy longest (refusing newcomers would let an attacker's connections
    /// lock real callers out).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection with no call open for this long is closed.
    #[serde(default = "default_idle_timeout", with = "super::units::duration")]
    pub idle_timeout: Duration,
    /// A connection that has not sent the HTTP/2 preface by then is closed.
    #[serde(default = "default_preface_timeout", with = "super::units::duration")]
    pub preface_timeout: Duration,
    /// Calls one connection may have open at once.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Calls whose answer may wait, a full buffer ahead, for a caller that
    /// is not reading, across the gateway; a call that would stall past
    /// them is reset at once.
    #[serde(default = "default_max_stalled_calls")]
    pub max_stalled_calls: usize,
    /// Descriptors the gateway never takes, below the daemon's limit: they
    /// keep plugin restarts and the control socket working.
    #[serde(default = "default_fd_reserve")]
    pub fd_reserve: u64,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            preface_timeout: default_preface_timeout(),
            max_concurrent_streams: default_max_concurrent_streams(),
            max_stalled_calls: default_max_stalled_calls(),
            fd_reserve: default_fd_reserve(),
        }
    }
}

fn default_max_connections() -> usize {
    1024
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_preface_timeout() -> Duration {
    Duration::from_secs(5)
}
/// The least RFC 9113 advises a peer to allow.
fn default_max_concurrent_streams() -> u32 {
    100
}
/// 128 MiB of buffers at most (a stalled call holds 512 KiB), and a
/// quarter of the streams' worth a plugin connection's window holds.
fn default_max_stalled_calls() -> usize {
    256
}
fn default_fd_reserve() -> u64 {
    1024
}

/// The least reserve that still lets a plugin restart (its socketpairs,
/// pidfd, pipes and cgroup files) while the control socket answers.
const MIN_FD_RESERVE: u64 = 64;
/// The kernel's largest descriptor limit (`fs.nr_open` by default).
const MAX_FD_RESERVE: u64 = 1 << 20;
/// Stalled calls all on one plugin may hold at most half its connection's
/// window, so its other callers always have the other half.
const MAX_STALLED_CALLS: usize =
    (plugin_proto::transport::CONNECTION_WINDOW / plugin_proto::transport::STREAM_WINDOW / 2) as usize;

pub(super) fn check(g: &GatewaySection, p: &mut Problems<'_>) {
    let at = |key: &'static str| [Seg::Key("supervisor"), Seg::Key("gateway"), Seg::Key(key)];
    if !(1..=1 << 20).contains(&g.max_connections) {
        p.at(&at("max_connections"), format!("must be between 1 and 1048576, not {}", g.max_connections));
    }
    if !(1..=1 << 16).contains(&g.max_concurrent_streams) {
        p.at(&at("max_concurrent_streams"), format!("must be between 1 and 65536, not {}", g.max_concurrent_streams));
    }
    for (key, d) in [("idle_timeout", g.idle_timeout), ("preface_timeout", g.preface_timeout)] {
        if d.is_zero() {
            p.at(&at(key), "must be longer than zero");
        }
    }
    if !(1..=MAX_STALLED_CALLS).contains(&g.max_stalled_calls) {
        p.at(
            &at("max_stalled_calls"),
            format!(
                "must be between 1 and {MAX_STALLED_CALLS} (half a plugin connection's window), not {}",
                g.max_stalled_calls
            ),
        );
    }
    if g.fd_reserve < MIN_FD_RESERVE {
        p.at(
            &at("fd_reserve"),
            format!("must be at least {MIN_FD_RESERVE}: plugin restarts and the control socket need descriptors"),
        );
    } else if g.fd_reserve > MAX_FD_RESERVE {
        p.at(
            &at("fd_reserve"),
            format!(
                "must be at most {MAX_FD_RESERVE} (the kernel's largest descriptor limit), not {}: the gateway \
                 would have no descriptor left",
                g.fd_reserve
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::load::parse;

    fn parse_gateway(text: &str) -> Result<super::super::Config, super::super::ConfigError> {
        parse(&format!("[supervisor.gateway]\n{text}"), Path::new("/etc/ps.toml"))
    }

    #[test]
    fn defaults_bound_connections_and_keep_a_reserve() {
        let c = parse_gateway("").unwrap();
        let g = &c.supervisor.gateway;
        assert_eq!(g.max_connections, 1024);
        assert_eq!(g.idle_timeout, Duration::from_secs(300));
        assert_eq!(g.preface_timeout, Duration::from_secs(5));
        assert_eq!(g.max_concurrent_streams, 100);
        assert_eq!(g.max_stalled_calls, 256);
        assert_eq!(g.fd_reserve, 1024);
    }

    #[test]
    fn each_bad_value_names_file_line_and_key() {
        for (text, expected) in [
            ("max_connections = 0\n", "/etc/ps.toml:2: supervisor.gateway.max_connections: must be between 1 and"),
            (
                "max_concurrent_streams = 0\n",
                "/etc/ps.toml:2: supervisor.gateway.max_concurrent_streams: must be between 1 and",
            ),
            ("idle_timeout = \"0s\"\n", "/etc/ps.toml:2: supervisor.gateway.idle_timeout: must be longer than zero"),
            ("preface_timeout = \"0s\"\n", "/etc/ps.toml:2: supervisor.gateway.preface_timeout: must be longer than"),
            ("fd_reserve = 3\n", "/etc/ps.toml:2: supervisor.gateway.fd_reserve: must be at least 64"),
            (
                "fd_reserve = 2000000\n",
                "/etc/ps.toml:2: supervisor.gateway.fd_reserve: must be at most 1048576 (the kernel's largest \
                 descriptor limit), not 2000000",
            ),
            (
                "max_stalled_calls = 0\n",
                "/etc/ps.toml:2: supervisor.gateway.max_stalled_calls: must be between 1 and 512",
            ),
            (
                "max_stalled_calls = 513\n",
                "/etc/ps.toml:2: supervisor.gateway.max_stalled_calls: must be between 1 and 512 (half a plugin \
                 connection's window), not 513",
            ),
            ("idle_timeout = \"2y\"\n", "/etc/ps.toml:2: supervisor.gateway.idle_timeout: duration \"2y\" is too long"),
            (
                "max_conections = 5\n",
                "/etc/ps.toml:2: supervisor.gateway.max_conections: unknown field `max_conections`",
            ),
        ] {
            let err = parse_gateway(text).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
    }
}
