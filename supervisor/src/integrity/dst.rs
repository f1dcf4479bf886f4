//! Dynamic string tokens in DT_RPATH / DT_RUNPATH entries: `$ORIGIN`, `$LIB`, `$PLATFORM`.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Expands `$ORIGIN`, `$LIB` and `$PLATFORM` (bare or braced) in one search-path entry.
/// Returns `None` when a token cannot be expanded, which makes ld.so drop the entry.
pub fn expand_dst(entry: &[u8], origin: &Path, lib: &str, platform: Option<&str>) -> Option<PathBuf> {
    let mut out: Vec<u8> = Vec::with_capacity(entry.len());
    let mut rest = entry;
    while let Some((&first, tail)) = rest.split_first() {
        if first != b'$' {
            out.push(first);
            rest = tail;
            continue;
        }
        let tokens: [(&[u8], Option<&[u8]>); 3] = [
            (b"ORIGIN", Some(origin.as_os_str().as_bytes())),
            (b"LIB", Some(lib.as_bytes())),
            (b"PLATFORM", platform.map(str::as_bytes)),
        ];
        let mut matched = false;
        for (token, value) in tokens {
            if let Some(after) = match_token(tail, token) {
                out.extend_from_slice(value?);
                rest = after;
                matched = true;
                break;
            }
        }
        if !matched {
            out.push(first);
            rest = tail;
        }
    }
    Some(PathBuf::from(OsString::from_vec(out)))
}

/// True when `entry` uses `$ORIGIN`, bare or braced (`$ORIGINAL` does not).
pub fn uses_origin(entry: &[u8]) -> bool {
    entry
        .iter()
        .enumerate()
        .any(|(at, &b)| b == b'$' && entry.get(at + 1..).and_then(|tail| match_token(tail, b"ORIGIN")).is_some())
}

/// `NAME` or `{NAME}` at the start of `text`, the bare form not followed by an identifier
/// character (so `$ORIGINAL` is not `$ORIGIN`). Returns the text after the token.
fn match_token<'t>(text: &'t [u8], name: &[u8]) -> Option<&'t [u8]> {
    if let Some(braced) = text.strip_prefix(b"{") {
        return braced.strip_prefix(name)?.strip_prefix(b"}");
    }
    let after = text.strip_prefix(name)?;
    match after.first() {
        Some(c) if c.is_ascii_alphanumeric() || *c == b'_' => None,
        _ => Some(after),
    }
}
