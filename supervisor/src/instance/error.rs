//! Why an instance did not start, as types: which plugin and instance, whether a retry
//! can help (a refusal waits for the operator; a failure is retried under the restart
//! policy), and the cause. The causes' words are what `status` and `events` show.

use std::time::Duration;

use crate::config::units::format_duration;
use crate::integrity::{IntegrityError, LibraryError};
use crate::sandbox::spawn::SpawnError;

/// An instance that did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// It cannot run as configured; retrying will not help.
    #[error("plugin {plugin:?} ({instance}) cannot run as configured: {cause}")]
    Refused { plugin: String, instance: String, cause: Cause },
    /// It failed in a way a retry may fix.
    #[error("plugin {plugin:?} ({instance}) failed to start: {cause}")]
    Failed { plugin: String, instance: String, cause: Cause },
}

impl StartError {
    pub fn cause(&self) -> &Cause {
        match self {
            StartError::Refused { cause, .. } | StartError::Failed { cause, .. } => cause,
        }
    }

    pub fn is_refusal(&self) -> bool {
        matches!(self, StartError::Refused { .. })
    }
}

/// The start-up step a process died in before answering.
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

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The binary failed verification (digest, signature, ELF machine ...).
    #[error(transparent)]
    Image(Box<IntegrityError>),
    #[error("plugin {plugin:?}: resolving the libraries it needs: {source}")]
    Libraries { plugin: String, source: Box<LibraryError> },
    #[error("verifying the binary panicked: {0}")]
    VerifierPanicked(String),
    #[error("checking its handshake panicked: {0}")]
    HandshakeCheckPanicked(String),
    /// The sandbox could not be built for it (quotas, Landlock, a missing tier).
    #[error("{0}")]
    Confine(String),
    /// Its binary has memory both writable and executable from exec, which its tier forbids.
    #[error(
        "tier {tier} forbids memory both writable and executable, and the binary has {what}, which the kernel \
         maps at exec where no filter sees it: rebuild it without (an assembly object needs a .note.GNU-stack \
         section), or run it under a tier that allows such memory"
    )]
    WritableExec { tier: String, what: &'static str },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error("HTTP/2 setup: {0}")]
    Http2(#[from] h2::Error),
    #[error("no handshake within {}: not a plugin, or hung at start", format_duration(*.0))]
    HandshakeTimeout(Duration),
    #[error("plugin refused the handshake: {0}")]
    HandshakeRefused(String),
    #[error("handshake failed: {code:?}: {message}")]
    HandshakeFailed { code: tonic::Code, message: String },
    /// What it declared at handshake does not match the config.
    #[error("{0}")]
    Declared(String),
    #[error("init did not finish within {}", format_duration(*.0))]
    InitTimeout(Duration),
    #[error("init failed: {0}")]
    InitFailed(String),
    #[error("init refused: {code:?}: {message}")]
    InitRefused { code: tonic::Code, message: String },
    /// It died while starting, of a cause the supervisor knows (a seccomp or OOM kill).
    #[error("{0} during start-up")]
    KilledStarting(String),
    #[error("{status} before answering the {phase}: not a plugin, or it crashed at start")]
    DiedStarting { status: String, phase: Phase },
    #[error("ended before answering the {0}: not a plugin, or it crashed at start")]
    EndedStarting(Phase),
    /// The supervisor stopped, or the instance's revision was retired, while it started.
    #[error("stopped while starting: {0}")]
    Cancelled(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_operators_see_are_the_cause_alone() {
        let e = StartError::Refused {
            plugin: "echo".into(),
            instance: "echo-0".into(),
            cause: Cause::Declared("plugin version 2.0.0 is outside the configured range ^1".into()),
        };
        assert_eq!(e.cause().to_string(), "plugin version 2.0.0 is outside the configured range ^1");
        assert_eq!(
            e.to_string(),
            "plugin \"echo\" (echo-0) cannot run as configured: plugin version 2.0.0 is outside the configured range ^1"
        );
        assert!(e.is_refusal());
        assert_eq!(
            Cause::HandshakeTimeout(Duration::from_secs(5)).to_string(),
            "no handshake within 5s: not a plugin, or hung at start"
        );
        assert_eq!(
            Cause::DiedStarting { status: "exited with code 3".into(), phase: Phase::Init }.to_string(),
            "exited with code 3 before answering the init: not a plugin, or it crashed at start"
        );
    }
}
