//! The tier set: every tier file of a directory, loaded and checked as one,
//! accepted whole or not at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::definition::Tier;
use super::error::TierError;
use super::order::check_tighter;

/// All tiers of a policies directory, by name.
#[derive(Clone, Debug, Default)]
pub struct TierSet {
    tiers: BTreeMap<String, Tier>,
}

impl TierSet {
    /// Loads every `*.toml` tier file in `dir` with the policy each names
    /// (each must be a regular file, or a link to one),
    /// then checks each tier that names a `tighter_than` tier against it.
    /// The first error found is returned, naming its file.
    pub fn load_dir(dir: &Path) -> Result<Self, TierError> {
        let read_dir = |source| TierError::ReadDir { dir: dir.to_owned(), source };
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_dir)? {
            let path = entry.map_err(read_dir)?.path();
            // Every `*.toml` is a tier file, whatever its kind: skipping one
            // that is no regular file (a FIFO, a link to a device) made its
            // tier vanish, to fail later as "unknown tier"; reading it
            // refuses it by name and kind instead.
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        // Sorted, so the same directory always reports the same first error.
        paths.sort();

        let mut tiers = BTreeMap::new();
        for path in paths {
            let tier = Tier::load(&path)?;
            tiers.insert(tier.name.clone(), tier);
        }
        for tier in tiers.values() {
            if let Some(parent_name) = &tier.tighter_than {
                let parent = tiers
                    .get(parent_name)
                    .ok_or_else(|| TierError::UnknownParent { path: tier.path.clone(), parent: parent_name.clone() })?;
                check_tighter(tier, parent)?;
            }
        }
        Ok(Self { tiers })
    }

    /// The tier called `name`.
    pub fn get(&self, name: &str) -> Option<&Tier> {
        self.tiers.get(name)
    }

    /// The tiers, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Tier> {
        self.tiers.values()
    }

    /// The number of tiers.
    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    /// Whether the directory held no tier.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }
}
