//! Comparing raw encoded descriptor sets: the entry point for fuzzing and for
//! descriptors received over the wire at handshake.

use prost::Message;
use prost_types::FileDescriptorSet;

use super::compare::diff;
use super::error::{ContractError, Side};
use super::report::Report;
use super::scope::Scope;

/// Decodes both inputs as `FileDescriptorSet`s and compares everything in
/// `old`. Never panics, whatever the bytes.
pub fn diff_bytes(old: &[u8], new: &[u8]) -> Result<Report, ContractError> {
    let old = decode_descriptor_set(old, Side::Old)?;
    let new = decode_descriptor_set(new, Side::New)?;
    Ok(diff(&old, &new, Scope::All))
}

/// Decodes an encoded `FileDescriptorSet`, naming the side on failure.
pub fn decode_descriptor_set(bytes: &[u8], side: Side) -> Result<FileDescriptorSet, ContractError> {
    FileDescriptorSet::decode(bytes).map_err(|source| ContractError::DecodeBytes { side, source })
}

/// Body of a libFuzzer target (`fuzz_target!(|data: &[u8]| fuzz_one(data))`).
///
/// The first two bytes (little-endian) choose where the rest splits into the
/// old and the new set, so the fuzzer can steer both halves independently.
/// Besides "no panic" it checks the one invariant that needs no oracle: a
/// contract compared with itself never breaks.
pub fn fuzz_one(data: &[u8]) {
    let (split, rest) = match data {
        [low, high, rest @ ..] => (usize::from(u16::from_le_bytes([*low, *high])), rest),
        _ => return,
    };
    let split = split % (rest.len() + 1);
    let Some((old, new)) = rest.split_at_checked(split) else {
        return;
    };
    if let Ok(report) = diff_bytes(old, new) {
        // Rendering is part of the surface an operator sees; it must not panic either.
        let _ = report.to_string();
    }
    if let Ok(old) = FileDescriptorSet::decode(old) {
        let report = diff(&old, &old, Scope::All);
        assert!(!report.is_breaking(), "a contract compared with itself reported a break:\n{report}");
    }
}
