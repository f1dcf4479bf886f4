//! Lower-case hexadecimal, the one text encoding of digests, keys and signatures.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HexError {
    #[error("expected {expected} hex digits, found {found}")]
    Length { expected: usize, found: usize },
    #[error("invalid hex digit {found:?} at position {position}")]
    Digit { position: usize, found: char },
}

pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Decodes exactly `N` bytes; upper-case digits are accepted because people paste them.
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let found = text.chars().count();
    if found != N * 2 {
        return Err(HexError::Length { expected: N * 2, found });
    }
    let mut out = [0u8; N];
    let mut chars = text.chars().enumerate();
    for byte in out.iter_mut() {
        let (Some((p_hi, hi)), Some((p_lo, lo))) = (chars.next(), chars.next()) else {
            return Err(HexError::Length { expected: N * 2, found });
        };
        *byte = (digit(p_hi, hi)? << 4) | digit(p_lo, lo)?;
    }
    Ok(out)
}

fn digit(position: usize, found: char) -> Result<u8, HexError> {
    found.to_digit(16).and_then(|d| u8::try_from(d).ok()).ok_or(HexError::Digit { position, found })
}
