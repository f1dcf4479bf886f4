//! Tests of the tier module that need no kernel: loading, refusing bad
//! files, the ordering proofs, the simulator, names and reports.

mod compiled;
mod load;
mod malformed_policy;
mod malformed_tier;
mod names;
mod ordering;
mod props;
mod quota;
mod rules;
mod sim;
mod violation;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::sim::{SeccompData, run};
use super::{AUDIT_ARCH_X86_64, Tier, TierSet};

/// The shipped `policies/` directory: beside this crate's manifest while
/// the module is stand-alone, at the repository's top level once it lives
/// in the supervisor crate.
pub(super) fn policies_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("policies"))
        .find(|dir| dir.join("L1.toml").is_file())
        .unwrap_or_else(|| manifest.join("policies"))
}

/// The shipped tiers, loaded once for all tests.
pub(super) fn shipped() -> &'static TierSet {
    static SET: OnceLock<TierSet> = OnceLock::new();
    SET.get_or_init(|| match TierSet::load_dir(&policies_dir()) {
        Ok(set) => set,
        Err(e) => panic!("the shipped policies must load: {e}"),
    })
}

pub(super) fn tier(name: &str) -> &'static Tier {
    shipped().get(name).unwrap_or_else(|| panic!("tier {name} is shipped"))
}

/// The seccomp return of `tier`'s program for native call `nr(args)`.
pub(super) fn ret(tier: &Tier, nr: i64, args: [u64; 6]) -> u32 {
    let data = SeccompData::new(AUDIT_ARCH_X86_64, nr as i32, args);
    run(tier.program.instructions(), &data).expect("shipped programs run to a return")
}

pub(super) fn allows(tier: &Tier, nr: i64, args: [u64; 6]) -> bool {
    ret(tier, nr, args) == libc::SECCOMP_RET_ALLOW
}

pub(super) fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{message:?} should mention {part:?}");
    }
}

/// A copy of the shipped policies in a temporary directory, to break one
/// file at a time.
pub(super) struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        for entry in std::fs::read_dir(policies_dir()).expect("policies directory") {
            let path = entry.expect("directory entry").path();
            if path.is_file() {
                let name = path.file_name().expect("file name");
                std::fs::copy(&path, dir.path().join(name)).expect("copy policy file");
            }
        }
        Self { dir }
    }

    pub(super) fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Replaces the one occurrence of `from` in `file` by `to`.
    pub(super) fn edit(&self, file: &str, from: &str, to: &str) -> &Self {
        let path = self.path(file);
        let text = std::fs::read_to_string(&path).expect("read fixture file");
        assert_eq!(text.matches(from).count(), 1, "{from:?} occurs once in {file}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write fixture file");
        self
    }

    pub(super) fn write(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.path(file), text).expect("write fixture file");
        self
    }

    pub(super) fn remove(&self, file: &str) -> &Self {
        std::fs::remove_file(self.path(file)).expect("remove fixture file");
        self
    }

    /// Loads the directory, expecting it to be refused; returns the message.
    pub(super) fn refused(&self) -> (super::TierError, String) {
        match TierSet::load_dir(self.dir.path()) {
            Ok(_) => panic!("the broken tier directory was accepted"),
            Err(e) => {
                let message = e.to_string();
                (e, message)
            }
        }
    }
}
