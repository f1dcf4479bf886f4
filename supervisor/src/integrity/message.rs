//! The exact bytes a format-1 plugin signature covers.
//!
//! ```text
//! plugin-supervisor signature v1\n
//! <name>\n
//! <version>\n
//! <sha256 as 64 lower-case hex digits>\n
//! ```
//!
//! The first line keeps a signature made here from being valid for any other protocol that
//! uses the same key, and names the version of this encoding. Names and versions may not
//! contain control characters, so the newline separators are unambiguous: a signature for
//! ("a", "1\nb") cannot be replayed as one for ("a\n1", "b").

use thiserror::Error;

use super::digest::Sha256Digest;

pub const DOMAIN: &str = "plugin-supervisor signature v1\n";
pub const MAX_FIELD_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FieldError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes long (at most {MAX_FIELD_LEN})")]
    TooLong { field: &'static str, len: usize },
    #[error("{field} contains the control character {found:?}")]
    ControlCharacter { field: &'static str, found: char },
}

pub fn check_field(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::Empty { field });
    }
    if value.len() > MAX_FIELD_LEN {
        return Err(FieldError::TooLong { field, len: value.len() });
    }
    if let Some(found) = value.chars().find(|c| c.is_control()) {
        return Err(FieldError::ControlCharacter { field, found });
    }
    Ok(())
}

pub fn signed_message(name: &str, version: &str, digest: &Sha256Digest) -> Result<Vec<u8>, FieldError> {
    check_field("name", name)?;
    check_field("version", version)?;
    Ok(format!("{DOMAIN}{name}\n{version}\n{digest}\n").into_bytes())
}
