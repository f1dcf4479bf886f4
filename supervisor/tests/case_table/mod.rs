//! Reads the case table in `contract-cases/` (see its `README.md` for the
//! layout), shared by every test that replays it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use plugin_supervisor::contract::{Report, Scope, diff, load_contract};
use prost_types::FileDescriptorSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Breaking,
    Compatible,
}

#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub old: PathBuf,
    pub new: PathBuf,
    pub verdict: Verdict,
    pub rules: BTreeSet<String>,
    pub services: Option<Vec<String>>,
}

impl Case {
    pub fn scope(&self) -> Scope {
        match &self.services {
            Some(services) => Scope::services(services),
            None => Scope::All,
        }
    }

    pub fn load(&self) -> Result<(FileDescriptorSet, FileDescriptorSet), String> {
        let old = load_contract(&self.old).map_err(|error| error.to_string())?;
        let new = load_contract(&self.new).map_err(|error| error.to_string())?;
        Ok((old, new))
    }

    pub fn run(&self) -> Result<Report, String> {
        let (old, new) = self.load()?;
        Ok(diff(&old, &new, self.scope()))
    }
}

/// The supervisor's tests and the integration tests (another crate, which
/// replays the table through `supervisorctl`) both include this module, so
/// the path goes through the workspace root.
pub fn cases_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../supervisor/tests/contract-cases");
    dir.canonicalize().unwrap_or(dir)
}

pub fn load_cases() -> Result<Vec<Case>, String> {
    let dir = cases_dir();
    let entries = fs::read_dir(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let mut cases = Vec::new();
    for entry in entries {
        let path = entry.map_err(|error| error.to_string())?.path();
        if path.is_dir() {
            cases.push(load_case(&path)?);
        }
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

fn load_case(dir: &Path) -> Result<Case, String> {
    let name = dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let expect_path = dir.join("expect.toml");
    let text = fs::read_to_string(&expect_path).map_err(|error| format!("{}: {error}", expect_path.display()))?;
    let table: toml::Table = text.parse().map_err(|error| format!("{}: {error}", expect_path.display()))?;
    let verdict = match table.get("verdict").and_then(toml::Value::as_str) {
        Some("breaking") => Verdict::Breaking,
        Some("compatible") => Verdict::Compatible,
        other => {
            return Err(format!("{name}: verdict must be breaking or compatible, got {other:?}"));
        }
    };
    let rules = strings(&table, "rules", &name)?
        .ok_or_else(|| format!("{name}: expect.toml needs a rules list (may be empty)"))?;
    if table.get("summary").and_then(toml::Value::as_str).is_none() {
        return Err(format!("{name}: expect.toml needs a summary"));
    }
    Ok(Case {
        old: side(dir, "old")?,
        new: side(dir, "new")?,
        verdict,
        rules: rules.into_iter().collect(),
        services: strings(&table, "services", &name)?,
        name,
    })
}

/// `old.proto` if present, else the `old/` directory of several files.
fn side(dir: &Path, side: &str) -> Result<PathBuf, String> {
    let file = dir.join(format!("{side}.proto"));
    let directory = dir.join(side);
    if file.is_file() {
        Ok(file)
    } else if directory.is_dir() {
        Ok(directory)
    } else {
        Err(format!("{}: has neither {side}.proto nor {side}/", dir.display()))
    }
}

fn strings(table: &toml::Table, key: &str, case: &str) -> Result<Option<Vec<String>>, String> {
    let Some(value) = table.get(key) else {
        return Ok(None);
    };
    let array = value.as_array().ok_or_else(|| format!("{case}: {key} must be a list of strings"))?;
    array
        .iter()
        .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| format!("{case}: {key} must be a list of strings")))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
