//! The signature file written beside a plugin binary as `<binary>.sig`.
//!
//! Format 1 is TOML so a person can read it and a diff shows what changed:
//!
//! ```toml
//! # plugin-supervisor plugin signature. Check it with `supervisorctl plugin verify BINARY`.
//! format = 1
//! algorithm = "ed25519"
//! name = "echo"
//! version = "1.2.0"
//! sha256 = "<64 hex digits: SHA-256 of the binary>"
//! key_id = "<16 hex digits: id of the signing key>"
//! signature = "<128 hex digits: ed25519 signature of the message in `message`>"
//! ```
//!
//! `format` is read first and on its own, so a file from a newer format is reported as
//! such rather than as a list of unknown fields. Unknown fields in format 1 are refused: a
//! field this version ignores could be one a later version treats as signed.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::digest::Sha256Digest;
use super::hex;
use super::keyfile::line_of;
use super::keys::KeyId;
use super::message::check_field;
use super::signature_error::SignatureError;
use super::subject::Subject;
use super::verified::NotOpened;

pub const SIGNATURE_FORMAT: i64 = 1;
pub const SIGNATURE_SUFFIX: &str = ".sig";
/// A format-1 file is under 1 KiB; the bound keeps a hostile file from costing memory.
pub const MAX_SIGNATURE_FILE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    pub name: String,
    pub version: String,
    pub sha256: Sha256Digest,
    pub key_id: KeyId,
    pub signature: [u8; 64],
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {reason}")]
pub struct SigFileParseError {
    pub line: usize,
    pub reason: String,
}

impl SignatureFile {
    /// Where the signature of `binary` lives: the same path with `.sig` appended.
    pub fn path_for(binary: &Path) -> PathBuf {
        let mut path = binary.as_os_str().to_owned();
        path.push(SIGNATURE_SUFFIX);
        PathBuf::from(path)
    }

    pub fn parse(text: &str) -> Result<Self, SigFileParseError> {
        if text.len() > MAX_SIGNATURE_FILE {
            return Err(error(1, format!("{} bytes is too large", text.len())));
        }
        check_format(text)?;

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[allow(dead_code, reason = "checked by check_format; listed so it is not unknown")]
            format: i64,
            algorithm: toml::Spanned<String>,
            name: toml::Spanned<String>,
            version: toml::Spanned<String>,
            sha256: toml::Spanned<String>,
            key_id: toml::Spanned<String>,
            signature: toml::Spanned<String>,
        }
        let raw: Raw = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let at = |field: &toml::Spanned<String>| line_of(text, field.span().start);

        if raw.algorithm.get_ref() != "ed25519" {
            return Err(error(
                at(&raw.algorithm),
                format!("unsupported algorithm {:?} (expected \"ed25519\")", raw.algorithm.get_ref()),
            ));
        }
        check_field("name", raw.name.get_ref()).map_err(|e| error(at(&raw.name), e.to_string()))?;
        check_field("version", raw.version.get_ref()).map_err(|e| error(at(&raw.version), e.to_string()))?;
        let sha256 =
            Sha256Digest::from_hex(raw.sha256.get_ref()).map_err(|e| error(at(&raw.sha256), format!("sha256: {e}")))?;
        let key_id = KeyId::parse(raw.key_id.get_ref()).map_err(|e| error(at(&raw.key_id), e.to_string()))?;
        let signature = hex::decode_array::<64>(raw.signature.get_ref())
            .map_err(|e| error(at(&raw.signature), format!("signature: {e}")))?;
        Ok(Self { name: raw.name.into_inner(), version: raw.version.into_inner(), sha256, key_id, signature })
    }

    /// Parses bytes, reporting invalid UTF-8 with its line.
    pub fn parse_bytes(data: &[u8]) -> Result<Self, SigFileParseError> {
        let text = std::str::from_utf8(data).map_err(|e| {
            let line = data.get(..e.valid_up_to()).map_or(0, |head| head.iter().filter(|&&b| b == b'\n').count()) + 1;
            error(line, "not UTF-8 text".to_owned())
        })?;
        Self::parse(text)
    }

    pub fn render(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            format: i64,
            algorithm: &'a str,
            name: &'a str,
            version: &'a str,
            sha256: String,
            key_id: String,
            signature: String,
        }
        let body = toml::to_string(&Out {
            format: SIGNATURE_FORMAT,
            algorithm: "ed25519",
            name: &self.name,
            version: &self.version,
            sha256: self.sha256.to_hex(),
            key_id: self.key_id.to_string(),
            signature: hex::encode(&self.signature),
        })
        // Serializing a flat struct of strings and an integer has no failure mode; fall
        // back to an empty body (which parse refuses) rather than panic.
        .unwrap_or_default();
        format!("# plugin-supervisor plugin signature. Check it with `supervisorctl plugin verify BINARY`.\n{body}")
    }

    /// Reads and parses the signature file at `sig_path` for `plugin`.
    pub fn load(plugin: &str, sig_path: &Path) -> Result<Self, SignatureError> {
        let subject = Subject::new(plugin, sig_path);
        // As the binary is opened: a FIFO planted at the path must not hang the
        // verification, nor a device be read as a signature.
        let file = match super::verified::open_regular(sig_path) {
            Ok((file, _)) => file,
            Err(NotOpened::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SignatureError::Missing { subject });
            }
            Err(NotOpened::Kind(kind)) => return Err(SignatureError::NotRegularFile { subject, kind }),
            Err(NotOpened::Io(source)) => return Err(SignatureError::Unreadable { subject, source }),
        };
        let mut data = Vec::new();
        let limit = MAX_SIGNATURE_FILE as u64 + 1;
        if let Err(source) = file.take(limit).read_to_end(&mut data) {
            return Err(SignatureError::Unreadable { subject, source });
        }
        Self::parse_bytes(&data).map_err(|e| SignatureError::Unparsable { subject, line: e.line, reason: e.reason })
    }

    /// Writes the file atomically (temporary file, fsync, rename), so a verifier never
    /// sees half a signature and an existing one is replaced only by a complete one.
    pub fn write(&self, sig_path: &Path) -> io::Result<()> {
        let mut tmp = sig_path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let result = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
            file.write_all(self.render().as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, sig_path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Parses arbitrary bytes as a signature file; whatever parses must render and parse back
/// to the same value.
pub fn fuzz_one(data: &[u8]) {
    if let Ok(sig) = SignatureFile::parse_bytes(data) {
        let again = SignatureFile::parse(&sig.render());
        assert_eq!(again.as_ref(), Ok(&sig), "signature file did not round-trip");
    }
}

fn check_format(text: &str) -> Result<(), SigFileParseError> {
    #[derive(Deserialize)]
    struct Probe {
        format: Option<toml::Spanned<i64>>,
    }
    let probe: Probe = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    match probe.format {
        None => Err(error(1, "missing field `format`".to_owned())),
        Some(f) if *f.get_ref() == SIGNATURE_FORMAT => Ok(()),
        Some(f) => Err(error(
            line_of(text, f.span().start),
            format!("unsupported signature format {} (this version reads format {SIGNATURE_FORMAT})", f.get_ref()),
        )),
    }
}

fn toml_error(text: &str, e: &toml::de::Error) -> SigFileParseError {
    let line = e.span().map_or(1, |span| line_of(text, span.start));
    error(line, e.message().trim().to_owned())
}

fn error(line: usize, reason: String) -> SigFileParseError {
    SigFileParseError { line, reason }
}
