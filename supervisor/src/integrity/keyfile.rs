//! Key files: generating a key pair, and reading the secret and public key files.
//!
//! Secret key file (TOML, mode 0600, never overwritten):
//!
//! ```toml
//! # plugin-supervisor ed25519 secret key. Anyone who holds this file can sign plugins.
//! format = 1
//! algorithm = "ed25519"
//! key_id = "<16 hex digits>"
//! public_key = "ed25519:<64 hex digits>"
//! secret_key = "<64 hex digits: the 32-byte ed25519 seed>"
//! ```
//!
//! Public key file: the single line `ed25519:<64 hex digits>`, ready to paste into a
//! config's `trusted_keys = [...]`.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use serde::Deserialize;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use super::hex;
use super::keys::{KeyId, KeyParseError, PublicKey};
use super::verified::NotOpened;

pub const KEY_FILE_FORMAT: i64 = 1;
const MAX_KEY_FILE: u64 = 16 * 1024;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{} already exists; refusing to overwrite a key", .path.display())]
    Exists { path: PathBuf },
    #[error("{} is given for both the secret and the public key; give each its own file", .path.display())]
    SamePath { path: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot read a key from it: it is a {kind}, not a regular file", .path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },
    #[error("{}: line {line}: {reason}", .path.display())]
    Parse { path: PathBuf, line: usize, reason: String },
    #[error(
        "{}: secret key file is accessible by group or others (mode {mode:04o}); run chmod 600",
        .path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("{}: public_key does not belong to secret_key; the file is damaged", .path.display())]
    Mismatch { path: PathBuf },
    #[error("cannot get random bytes from the kernel: {0}")]
    Random(getrandom::Error),
}

/// An ed25519 signing key; zeroed when dropped (ed25519-dalek's `zeroize` feature).
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Reads a secret key file, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        // The mode is the opened file's own, so the file read is the one judged.
        let (file, meta) = open_key_file(path)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions { path: path.to_path_buf(), mode });
        }
        let text = Zeroizing::new(read_bounded(path, file)?);
        Self::parse(&text)
            .map_err(|(line, reason)| KeyError::Parse { path: path.to_path_buf(), line, reason })
            .and_then(|(key, public)| {
                if key.public_key() == public { Ok(key) } else { Err(KeyError::Mismatch { path: path.to_path_buf() }) }
            })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_verifying_key(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(KeyError::Random)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    fn parse(text: &str) -> Result<(Self, PublicKey), (usize, String)> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            format: i64,
            algorithm: String,
            key_id: String,
            public_key: String,
            secret_key: String,
        }
        let mut raw: Raw = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            (line, e.message().to_owned())
        })?;
        let line = |field: &str| line_of_key(text, field);
        let result = (|| {
            if raw.format != KEY_FILE_FORMAT {
                return Err((
                    line("format"),
                    format!("unsupported key file format {} (this version reads {KEY_FILE_FORMAT})", raw.format),
                ));
            }
            if raw.algorithm != "ed25519" {
                return Err((line("algorithm"), format!("unsupported algorithm {:?}", raw.algorithm)));
            }
            let public = PublicKey::parse(&raw.public_key).map_err(|e| (line("public_key"), e.to_string()))?;
            let key_id = KeyId::parse(&raw.key_id).map_err(|e| (line("key_id"), e.to_string()))?;
            if key_id != public.key_id() {
                return Err((
                    line("key_id"),
                    format!("key_id {key_id} does not match public_key (id {})", public.key_id()),
                ));
            }
            let seed = Zeroizing::new(
                hex::decode_array::<32>(&raw.secret_key)
                    .map_err(|e| (line("secret_key"), format!("secret_key: {e}")))?,
            );
            Ok((Self(SigningKey::from_bytes(&seed)), public))
        })();
        raw.secret_key.zeroize();
        result
    }

    fn render(&self) -> Zeroizing<String> {
        let public = self.public_key();
        let secret = Zeroizing::new(hex::encode(self.0.as_bytes()));
        Zeroizing::new(format!(
            "# plugin-supervisor ed25519 secret key. Anyone who holds this file can sign plugins.\n\
             format = {KEY_FILE_FORMAT}\n\
             algorithm = \"ed25519\"\n\
             key_id = \"{}\"\n\
             public_key = \"{public}\"\n\
             secret_key = \"{}\"\n",
            public.key_id(),
            secret.as_str()
        ))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(id {})", self.public_key().key_id())
    }
}

/// Creates a new key pair: the secret key file with mode 0600 and the public key file.
/// Refuses to overwrite either; on failure nothing it created is left behind.
pub fn generate_keypair(secret_path: &Path, public_path: &Path) -> Result<PublicKey, KeyError> {
    // One file by two names ("k", "./k", "dir/../k", a link to the directory) too: the
    // public key's creation would then find the secret's file and call it an existing key.
    fn resolved(p: &Path) -> PathBuf {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir = fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
        p.file_name().map_or(dir.clone(), |name| dir.join(name))
    }
    if resolved(secret_path) == resolved(public_path) {
        return Err(KeyError::SamePath { path: public_path.to_path_buf() });
    }
    for path in [secret_path, public_path] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(KeyError::Exists { path: path.to_path_buf() });
        }
    }
    let key = SecretKey::generate()?;
    let public = key.public_key();
    create_new(secret_path, 0o600, key.render().as_bytes())?;
    if let Err(e) = create_new(public_path, 0o644, format!("{public}\n").as_bytes()) {
        let _ = fs::remove_file(secret_path);
        return Err(e);
    }
    Ok(public)
}

/// Reads a public key file (one `ed25519:…` line).
pub fn read_public_key_file(path: &Path) -> Result<PublicKey, KeyError> {
    let (file, _) = open_key_file(path)?;
    let text = read_bounded(path, file)?;
    PublicKey::parse(&text).map_err(|e: KeyParseError| KeyError::Parse {
        path: path.to_path_buf(),
        line: 1,
        reason: e.to_string(),
    })
}

/// Fuzz entry: parses arbitrary bytes as a secret key file; must not panic.
pub fn fuzz_one(data: &[u8]) {
    let _ = SecretKey::parse(&String::from_utf8_lossy(data));
}

/// `O_CREAT|O_EXCL` with the mode given at creation, so the secret is never readable by
/// others, not even for an instant; the umask can only narrow it further.
fn create_new(path: &Path, mode: u32, contents: &[u8]) -> Result<(), KeyError> {
    let io_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists { path: path.to_path_buf() }
        } else {
            KeyError::Io { path: path.to_path_buf(), source }
        }
    };
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io_err)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = fs::remove_file(path);
        return Err(io_err(source));
    }
    Ok(())
}

/// Opens the key file at `path`, which must be a regular file, without waiting on it: a
/// FIFO would keep a plain open waiting for a writer, and a device (of size 0) would be
/// read without end.
fn open_key_file(path: &Path) -> Result<(fs::File, fs::Metadata), KeyError> {
    super::verified::open_regular(path).map_err(|e| match e {
        NotOpened::Kind(kind) => KeyError::NotRegularFile { path: path.to_path_buf(), kind },
        NotOpened::Io(source) => KeyError::Io { path: path.to_path_buf(), source },
    })
}

/// Reads the opened key file, at most [`MAX_KEY_FILE`] bytes: the bound is kept while
/// reading, so a file that grows meanwhile cannot pass it.
fn read_bounded(path: &Path, file: fs::File) -> Result<String, KeyError> {
    // Room for the whole bound up front: a buffer grown while reading would leave copies
    // of a secret key behind in freed memory, where zeroizing the text cannot reach.
    let mut bytes = Vec::with_capacity(MAX_KEY_FILE as usize + 1);
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::Parse {
            path: path.to_path_buf(),
            line: 1,
            reason: format!("more than {MAX_KEY_FILE} bytes is too large for a key file"),
        });
    }
    String::from_utf8(bytes).map_err(|e| KeyError::Parse {
        path: path.to_path_buf(),
        line: 1,
        reason: format!("not UTF-8 text: {e}"),
    })
}

/// 1-based line number of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes().get(..end).map_or(0, |head| head.iter().filter(|&&b| b == b'\n').count()) + 1
}

/// 1-based line of the first `key =` line; 1 if absent.
pub(crate) fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')))
        .map_or(1, |i| i + 1)
}
