//! The "who and what" every integrity error names: the plugin and the file concerned.

use std::fmt;
use std::path::{Path, PathBuf};

/// The plugin an error is about and the file that caused it.
///
/// Operators read these messages in logs and `supervisorctl` output, where several plugins
/// interleave; naming both lets them act without cross-referencing the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub plugin: String,
    pub path: PathBuf,
}

impl Subject {
    pub fn new(plugin: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self { plugin: plugin.into(), path: path.into() }
    }

    /// The same plugin, about another file (its signature file, one of its libraries).
    pub fn with_path(&self, path: impl Into<PathBuf>) -> Self {
        Self::new(self.plugin.clone(), path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for Subject {
    /// Renders `plugin "name"`. Debug-quoting escapes control characters, so a hostile name
    /// cannot forge extra log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {:?}", self.plugin)
    }
}
