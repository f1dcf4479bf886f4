//! Why the harness could not start, greet, initialise or stop a plugin: each
//! cause for which the supervisor would refuse or fail an instance, worded as
//! the supervisor words it, so a test fails with the reason production would give.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::SdkError;

/// The step of the start a plugin ended in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Handshake,
    Init,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Handshake => "handshake",
            Phase::Init => "init",
        })
    }
}

/// Why a plugin under test was refused, or could not be run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("cannot make the plugin's connections: {0}")]
    Connect(#[source] std::io::Error),
    #[error("cannot start {}: {source}", path.display())]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("HTTP/2 with the plugin failed: {0}")]
    Http2(#[from] h2::Error),
    #[error("no handshake within {0:?}: not a plugin, or hung at start")]
    HandshakeTimeout(Duration),
    /// The plugin answered `FAILED_PRECONDITION`: no protocol version in common.
    #[error("plugin refused the handshake: {0}")]
    HandshakeRefused(String),
    #[error("handshake failed: {code:?}: {message}")]
    HandshakeFailed { code: tonic::Code, message: String },
    /// The child process ended first; `stderr` is what it wrote there last.
    #[error("plugin exited ({status}) before it answered the {phase}; its stderr: {stderr:?}")]
    Exited { phase: Phase, status: ExitStatus, stderr: String },
    /// The in-process plugin stopped serving first (the SDK refused to serve it).
    #[error("plugin stopped before it answered the {phase}: {source}")]
    Stopped { phase: Phase, source: SdkError },
    /// The in-process plugin stopped serving, without an error, first.
    #[error("plugin stopped serving before it answered the {phase}")]
    Ended { phase: Phase },
    /// The in-process plugin's task panicked.
    #[error("plugin panicked before it answered the {phase}: {message}")]
    Panicked { phase: Phase, message: String },
    /// The name the plugin declares is not the one its config entry gives it.
    #[error("plugin answered the handshake as {declared:?}, but the config names it {expected:?}")]
    Name { declared: String, expected: String },
    #[error("plugin chose protocol version {chosen}, but the supervisor speaks {offered:?}")]
    Protocol { chosen: u32, offered: Vec<u32> },
    /// Past the bounds the supervisor puts on a declaration (a version's or the
    /// descriptors' size, a service's name).
    #[error(transparent)]
    Undeclarable(#[from] plugin_proto::declared::Undeclarable),
    #[error("plugin version {version:?} is not a semver version: {source}")]
    Version { version: String, source: semver::Error },
    #[error("plugin SDK version {version:?} is not a semver version: {source}")]
    SdkVersion { version: String, source: semver::Error },
    #[error("plugin was built with SDK {sdk}, but the supervisor supports SDK {supported}")]
    UnsupportedSdk { sdk: semver::Version, supported: &'static str },
    /// The declared descriptors do not form a complete contract (a type used and not
    /// defined, an import left out).
    #[error("plugin declared a contract that does not decode: {0}")]
    Contract(#[source] prost_reflect::DescriptorError),
    /// A name in the declared contract is not a protobuf identifier (protoc writes
    /// only those; a hand-built set may hold any string).
    #[error(transparent)]
    NotIdentifier(#[from] plugin_proto::declared::NotIdentifier),
    /// A service the plugin says it serves is not in its declared descriptors.
    #[error("plugin declares service {service:?} but its descriptors do not describe it (they describe: {described})")]
    Undescribed { service: String, described: String },
    #[error("init did not finish within {0:?}")]
    InitTimeout(Duration),
    /// The plugin answered init with an error: `UNAVAILABLE` the supervisor retries
    /// (init failed), any other code it refuses the instance for.
    #[error("init answered {code:?}: {message}")]
    Init { code: tonic::Code, message: String },
    #[error("health check failed: {code:?}: {message}")]
    Health { code: tonic::Code, message: String },
    #[error("no log line of the plugin's matched within {0:?}")]
    NoSuchLog(Duration),
    #[error("cannot wait for the plugin's process: {0}")]
    Wait(#[source] std::io::Error),
}
