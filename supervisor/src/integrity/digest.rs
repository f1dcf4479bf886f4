//! SHA-256 of an already-open file, read through that descriptor.
//!
//! The supervisor hashes the very descriptor it will later execute, so a path swapped after
//! the check cannot change what runs. Reading with `pread` from offset 0 makes the result
//! independent of the descriptor's file position, which other code may have moved.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use super::hex::{self, HexError};

const CHUNK: usize = 256 * 1024;

/// A SHA-256 digest; shown and parsed as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn of_bytes(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Hashes the whole file, however long it is.
    pub fn of_file(file: &File) -> io::Result<Self> {
        Self::of_file_bounded(file, u64::MAX)
    }

    /// Hashes the file, failing with [`io::ErrorKind::FileTooLarge`] past `max_len` bytes.
    ///
    /// The bound is checked while reading rather than from `fstat`, because a file that is
    /// still being appended to can outgrow the size it had when it was opened.
    pub fn of_file_bounded(file: &File, max_len: u64) -> io::Result<Self> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut offset: u64 = 0;
        loop {
            let n = match file.read_at(&mut buf, offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let chunk = buf.get(..n).ok_or_else(|| io::Error::other("read returned more bytes than requested"))?;
            offset = offset.saturating_add(n as u64);
            if offset > max_len {
                return Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!("file is larger than {max_len} bytes"),
                ));
            }
            hasher.update(chunk);
        }
        Ok(Self(hasher.finalize().into()))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    pub fn from_hex(text: &str) -> Result<Self, HexError> {
        hex::decode_array(text).map(Self)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl FromStr for Sha256Digest {
    type Err = HexError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_hex(text.trim())
    }
}
