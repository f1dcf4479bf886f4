//! Public keys as operators paste them into a config (`ed25519:<64 hex digits>`), and the
//! short key id that names a key in signature files and error messages.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::digest::Sha256Digest;
use super::hex::{self, HexError};

pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyParseError {
    #[error("public key must start with \"{PUBLIC_KEY_PREFIX}\"")]
    MissingPrefix,
    #[error("public key: {0}")]
    Hex(#[from] HexError),
    #[error("public key is not a valid ed25519 point")]
    InvalidPoint,
    #[error("public key is a weak (small-order) ed25519 key")]
    WeakKey,
    #[error("key id: {0}")]
    KeyId(HexError),
}

/// The first 8 bytes of the SHA-256 of the public key: short enough to read aloud, long
/// enough that distinct keys in one config do not collide by accident. It only selects a
/// key; trust comes from the signature check, so a forged id gains nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn parse(text: &str) -> Result<Self, KeyParseError> {
        hex::decode_array(text).map(Self).map_err(KeyParseError::KeyId)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A trusted ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses `ed25519:<64 hex digits>`, surrounding whitespace allowed. Weak keys are
    /// refused: with one, a signature could verify for many messages.
    pub fn parse(text: &str) -> Result<Self, KeyParseError> {
        let digits = text.trim().strip_prefix(PUBLIC_KEY_PREFIX).ok_or(KeyParseError::MissingPrefix)?;
        let bytes: [u8; 32] = hex::decode_array(digits)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyParseError::InvalidPoint)?;
        if key.is_weak() {
            return Err(KeyParseError::WeakKey);
        }
        Ok(Self(key))
    }

    pub fn key_id(&self) -> KeyId {
        let digest = Sha256Digest::of_bytes(self.0.as_bytes());
        let [a, b, c, d, e, f, g, h, ..] = *digest.as_bytes();
        KeyId([a, b, c, d, e, f, g, h])
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    pub(crate) fn from_verifying_key(key: VerifyingKey) -> Self {
        Self(key)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self}, id {})", self.key_id())
    }
}

impl FromStr for PublicKey {
    type Err = KeyParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// So a config can say `trusted_keys = ["ed25519:…"]`.
impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Parses arbitrary bytes as a public key string; a parsed key must print back to itself.
pub fn fuzz_one(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = PublicKey::parse(&text) {
        let again = PublicKey::parse(&key.to_string());
        assert_eq!(again.as_ref(), Ok(&key), "public key did not round-trip");
    }
    let _ = KeyId::parse(&text);
}
