//! Signing a plugin binary and verifying its signature against the trusted keys.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signature;
use thiserror::Error;

use super::digest::Sha256Digest;
use super::keyfile::{KeyError, SecretKey};
use super::keys::{KeyId, PublicKey};
use super::message::{FieldError, signed_message};
use super::sigfile::SignatureFile;
use super::signature_error::SignatureError;
use super::subject::Subject;

/// What a valid signature vouches for. When the config pins no version, the supervisor
/// compares `version` with the one the plugin reports at handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    pub name: String,
    pub version: String,
    pub sha256: Sha256Digest,
    pub key_id: KeyId,
}

#[derive(Debug, Error)]
pub enum SignError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot sign: {0}")]
    Field(#[from] FieldError),
    #[error("cannot read the binary to sign: {source}")]
    Hash {
        #[source]
        source: io::Error,
    },
    #[error("cannot read binary {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Only a regular file can be a plugin binary; reading a device or a FIFO to hash it
    /// would never end (`/dev/zero`) or wait for a writer.
    #[error("{} is a {kind}, not a regular file: only a regular file can be a plugin binary", .path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },
    #[error(
        "{} is {size} bytes, over the {limit}-byte limit on a plugin binary: the supervisor would refuse to run it",
        .path.display()
    )]
    TooLarge { path: PathBuf, size: u64, limit: u64 },
    #[error("cannot write signature file {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Signs the open `binary` as plugin `name` at `version` with the key in `secret_key_path`.
pub fn sign(binary: &File, secret_key_path: &Path, name: &str, version: &str) -> Result<SignatureFile, SignError> {
    let key = SecretKey::load(secret_key_path)?;
    let digest = Sha256Digest::of_file(binary).map_err(|source| SignError::Hash { source })?;
    Ok(sign_digest(&key, name, version, digest)?)
}

/// Signs an already computed digest.
pub fn sign_digest(
    key: &SecretKey,
    name: &str,
    version: &str,
    sha256: Sha256Digest,
) -> Result<SignatureFile, FieldError> {
    let message = signed_message(name, version, &sha256)?;
    Ok(SignatureFile {
        name: name.to_owned(),
        version: version.to_owned(),
        sha256,
        key_id: key.public_key().key_id(),
        signature: key.sign(&message),
    })
}

/// Opens `binary_path`, signs it and writes `<binary_path>.sig`; returns the file written.
/// This is `supervisorctl plugin sign`.
pub fn sign_binary(
    binary_path: &Path,
    secret_key_path: &Path,
    name: &str,
    version: &str,
) -> Result<(SignatureFile, PathBuf), SignError> {
    let read_err = |source| SignError::Read { path: binary_path.to_path_buf(), source };
    let (binary, meta) = super::verified::open_regular(binary_path).map_err(|e| match e {
        super::verified::NotOpened::Kind(kind) => SignError::NotRegularFile { path: binary_path.to_path_buf(), kind },
        super::verified::NotOpened::Io(e) => read_err(e),
    })?;
    let limit = super::DEFAULT_MAX_FILE_SIZE;
    if meta.len() > limit {
        return Err(SignError::TooLarge { path: binary_path.to_path_buf(), size: meta.len(), limit });
    }
    let key = SecretKey::load(secret_key_path)?;
    let digest = Sha256Digest::of_file_bounded(&binary, limit).map_err(read_err)?;
    let sig = sign_digest(&key, name, version, digest)?;
    let sig_path = SignatureFile::path_for(binary_path);
    sig.write(&sig_path).map_err(|source| SignError::Write { path: sig_path.clone(), source })?;
    Ok((sig, sig_path))
}

/// Checks `sig` for a binary whose digest is `digest`. `subject` names the plugin and the
/// signature file for the error messages.
///
/// Every check must pass; they run in the order that gives the most useful message: a
/// replaced binary shows as a digest mismatch, a signature file copied from another plugin
/// as a name or version mismatch, and only then do keys and the signature itself speak.
pub fn verify(
    subject: &Subject,
    digest: &Sha256Digest,
    sig: &SignatureFile,
    trusted_keys: &[PublicKey],
    expected_name: &str,
    expected_version: Option<&str>,
) -> Result<VerifiedSignature, SignatureError> {
    if sig.sha256 != *digest {
        return Err(SignatureError::DigestMismatch {
            subject: subject.clone(),
            signed: sig.sha256.to_hex(),
            found: digest.to_hex(),
        });
    }
    if sig.name != expected_name {
        return Err(SignatureError::NameMismatch {
            subject: subject.clone(),
            signed: sig.name.clone(),
            expected: expected_name.to_owned(),
        });
    }
    if let Some(expected) = expected_version.filter(|v| *v != sig.version) {
        return Err(SignatureError::VersionMismatch {
            subject: subject.clone(),
            signed: sig.version.clone(),
            expected: expected.to_owned(),
        });
    }
    let Some(key) = trusted_keys.iter().find(|k| k.key_id() == sig.key_id) else {
        return Err(SignatureError::UntrustedKey { subject: subject.clone(), key_id: sig.key_id });
    };
    let message = signed_message(&sig.name, &sig.version, &sig.sha256).map_err(|e| SignatureError::Unparsable {
        subject: subject.clone(),
        line: 1,
        reason: e.to_string(),
    })?;
    // Strict verification refuses non-canonical signatures and small-order components,
    // so one signature has exactly one valid encoding.
    key.verifying_key()
        .verify_strict(&message, &Signature::from_bytes(&sig.signature))
        .map_err(|_| SignatureError::BadSignature { subject: subject.clone(), key_id: sig.key_id })?;
    Ok(VerifiedSignature {
        name: sig.name.clone(),
        version: sig.version.clone(),
        sha256: sig.sha256,
        key_id: sig.key_id,
    })
}

/// Loads `<binary_path>.sig` and verifies it for plugin `plugin`.
pub fn verify_beside(
    plugin: &str,
    binary_path: &Path,
    digest: &Sha256Digest,
    trusted_keys: &[PublicKey],
    expected: Expected<'_>,
) -> Result<VerifiedSignature, SignatureError> {
    let sig_path = SignatureFile::path_for(binary_path);
    let sig = SignatureFile::load(plugin, &sig_path)?;
    let subject = Subject::new(plugin, sig_path);
    verify(&subject, digest, &sig, trusted_keys, expected.name, expected.version)
}

/// What a signature must say of its binary: the name the binary declares (the
/// plugin's, unless one binary is configured under several names), and its version
/// when one is required.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub name: &'a str,
    pub version: Option<&'a str>,
}
