//! Why a plugin's signature was not accepted.

use std::io;

use thiserror::Error;

use super::keys::KeyId;
use super::subject::Subject;

/// Each variant names the plugin and the signature file (`subject.path`).
#[derive(Debug, Error)]
pub enum SignatureError {
    #[error("{subject}: signature file {} is missing", .subject.path.display())]
    Missing { subject: Subject },

    #[error("{subject}: cannot read signature file {}: {source}", .subject.path.display())]
    Unreadable {
        subject: Subject,
        #[source]
        source: io::Error,
    },

    #[error("{subject}: signature file {} is a {kind}, not a regular file", .subject.path.display())]
    NotRegularFile { subject: Subject, kind: &'static str },

    #[error(
        "{subject}: signature file {} is not valid (line {line}): {reason}",
        .subject.path.display()
    )]
    Unparsable { subject: Subject, line: usize, reason: String },

    #[error(
        "{subject}: binary sha256 {found} does not match the signed sha256 {signed} in {}",
        .subject.path.display()
    )]
    DigestMismatch { subject: Subject, signed: String, found: String },

    #[error(
        "{subject}: signature file {} is for plugin {signed:?}, not {expected:?}{}",
        .subject.path.display(),
        declared_name_note(&.subject.plugin, .expected)
    )]
    NameMismatch { subject: Subject, signed: String, expected: String },

    #[error(
        "{subject}: signature file {} is for version {signed:?}, not {expected:?}",
        .subject.path.display()
    )]
    VersionMismatch { subject: Subject, signed: String, expected: String },

    #[error(
        "{subject}: signature file {} was made with key {key_id}, which is not among the trusted keys",
        .subject.path.display()
    )]
    UntrustedKey { subject: Subject, key_id: KeyId },

    #[error(
        "{subject}: signature in {} does not verify with trusted key {key_id}",
        .subject.path.display()
    )]
    BadSignature { subject: Subject, key_id: KeyId },
}

impl SignatureError {
    pub fn subject(&self) -> &Subject {
        match self {
            Self::Missing { subject }
            | Self::Unreadable { subject, .. }
            | Self::NotRegularFile { subject, .. }
            | Self::Unparsable { subject, .. }
            | Self::DigestMismatch { subject, .. }
            | Self::NameMismatch { subject, .. }
            | Self::VersionMismatch { subject, .. }
            | Self::UntrustedKey { subject, .. }
            | Self::BadSignature { subject, .. } => subject,
        }
    }
}

/// Where the name a signature must carry is not the entry's own, it is the entry's
/// `declared_name`: the message says so, so the operator knows which key to look at.
fn declared_name_note(plugin: &str, expected: &str) -> &'static str {
    if plugin == expected { "" } else { " (the entry's declared_name)" }
}
