//! The tier file (`policies/<TIER>.toml`): its schema and the checks that
//! need nothing but the file itself.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::error::TierError;
use super::quota::Quota;
use super::settings::{Landlock, Limits, Namespaces};

/// The largest tier file or seccomp policy read: the shipped ones are a few
/// KiB, and the bound keeps a file planted in the directory (or a link to
/// /dev/zero) from taking the supervisor's memory.
pub(super) const MAX_POLICY_FILE: u64 = 1 << 20;

/// The bytes of the tier file or seccomp policy at `path`, which must be a
/// regular file of at most [`MAX_POLICY_FILE`] bytes. Opened without waiting,
/// so a FIFO at the path is refused rather than waited on for ever.
pub(super) fn read_bounded(path: &Path) -> Result<Vec<u8>, TierError> {
    use std::io::Read;
    let (file, _) = crate::integrity::open_regular(path).map_err(|e| match e {
        crate::integrity::NotOpened::Kind(kind) => TierError::NotRegularFile { path: path.to_owned(), kind },
        crate::integrity::NotOpened::Io(source) => TierError::Read { path: path.to_owned(), source },
    })?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file at the limit from a larger one, also
    // one that grows while it is read.
    file.take(MAX_POLICY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TierError::Read { path: path.to_owned(), source })?;
    if bytes.len() as u64 > MAX_POLICY_FILE {
        return Err(TierError::TooLarge { path: path.to_owned(), limit: MAX_POLICY_FILE });
    }
    Ok(bytes)
}

/// A tier file as written. There is deliberately no `on_violation` key: the
/// seccomp policy's `mismatch_action` is the single place that says what a
/// violation does, so the two can never disagree.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TierFile {
    pub name: String,
    pub description: String,
    /// The seccompiler JSON policy, relative to the tier file's directory.
    pub seccomp: PathBuf,
    /// The tier this one must be strictly tighter than.
    #[serde(default)]
    pub tighter_than: Option<String>,
    pub landlock: Landlock,
    #[serde(default)]
    pub namespaces: Namespaces,
    pub quota: Quota,
    pub limits: Limits,
}

impl TierFile {
    /// Reads and checks the tier file at `path`.
    pub fn read(path: &Path) -> Result<Self, TierError> {
        let text = String::from_utf8(read_bounded(path)?).map_err(|e| TierError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
        })?;
        let file: Self = toml::from_str(&text)
            .map_err(|e| TierError::Toml { path: path.to_owned(), message: e.to_string().trim_end().to_owned() })?;
        file.check(path)?;
        Ok(file)
    }

    /// The seccomp policy's path, resolved against the tier file's
    /// directory.
    pub fn seccomp_path(&self, tier_path: &Path) -> PathBuf {
        tier_path.parent().unwrap_or_else(|| Path::new(".")).join(&self.seccomp)
    }

    fn check(&self, path: &Path) -> Result<(), TierError> {
        let setting =
            |field: &'static str, message: String| TierError::Setting { path: path.to_owned(), field, message };
        // The name is what configs and reports use; tying it to the file
        // name lets a reader find the file from a report.
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if self.name != stem {
            return Err(setting("name", format!("{:?} must match the file name {stem:?}", self.name)));
        }
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(setting("name", format!("{:?} must be letters, digits, '-' or '_'", self.name)));
        }
        // Relative and inside the directory, so a tier directory can be
        // moved or reviewed as one unit.
        if !self.seccomp.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(setting(
                "seccomp",
                format!("{} must be a relative path inside the tier directory", self.seccomp.display()),
            ));
        }
        self.landlock
            .check()
            .and_then(|()| self.namespaces.check())
            .and_then(|()| self.quota.check())
            .and_then(|()| self.limits.check())
            .map_err(|(field, message)| setting(field, message))
    }
}
