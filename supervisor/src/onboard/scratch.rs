//! The scratch supervisor's config: the operator's file with everything that
//! could touch the host's running supervisor moved aside (its own state and
//! runtime directories, its own cgroup subtree, the daemon left where it
//! is, no metrics listener) and only the plugin under test, once; or, for
//! `onboard --binary`, a config made from a binary and a tier.

use std::path::{Path, PathBuf};

use super::OnboardError;
use super::faults::BURST_LIMIT;
use crate::config::protection::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_QUEUED};
use crate::config::{Config, parse};

/// One scratch supervisor's run.
pub struct Run {
    /// Its state, runtime and data directories go here.
    pub dir: PathBuf,
    /// Names its cgroup subtree.
    pub name: &'static str,
    /// The tier to run the plugin under rather than its own.
    pub tier: Option<String>,
    /// The burst fault runs in it: its limits are lowered to [`BURST_LIMIT`].
    pub burst: bool,
}

fn parse_doc(path: &Path, text: &str) -> Result<toml::Table, OnboardError> {
    text.parse()
        .map_err(|e: toml::de::Error| OnboardError::Config { path: path.to_owned(), message: e.message().to_owned() })
}

/// Plugin `name`'s entry in the config `doc` (read from `path`), taken out of it.
fn take_entry(doc: &mut toml::Table, path: &Path, name: &str) -> Result<toml::Table, OnboardError> {
    let plugins = match doc.remove("plugin") {
        Some(toml::Value::Array(plugins)) => plugins,
        _ => Vec::new(),
    };
    plugins
        .into_iter()
        .filter_map(|p| match p {
            toml::Value::Table(t) => Some(t),
            _ => None,
        })
        .find(|t| t.get("name").and_then(toml::Value::as_str) == Some(name))
        .ok_or_else(|| OnboardError::NoSuchPlugin { plugin: name.to_owned(), path: path.to_owned() })
}

/// The entry's `max_in_flight` and `max_queued` for the burst: its own (or the defaults),
/// at most [`BURST_LIMIT`] each; and whether either was lowered.
fn burst_limits(entry: &toml::Table) -> (u32, u32, bool) {
    let own = |key: &str, default: u32| {
        entry.get(key).and_then(toml::Value::as_integer).and_then(|v| u32::try_from(v).ok()).unwrap_or(default)
    };
    let (in_flight, queued) = (own("max_in_flight", DEFAULT_MAX_IN_FLIGHT), own("max_queued", DEFAULT_MAX_QUEUED));
    (in_flight.min(BURST_LIMIT), queued.min(BURST_LIMIT), in_flight > BURST_LIMIT || queued > BURST_LIMIT)
}

/// Whether the burst's run lowers plugin `name`'s limits (see [`Run::burst`]).
pub fn burst_lowered(path: &Path, text: &str, name: &str) -> Result<bool, OnboardError> {
    let mut doc = parse_doc(path, text)?;
    Ok(burst_limits(&take_entry(&mut doc, path, name)?).2)
}

/// `text` (read from `path`) reduced to plugin `name`, for `run`: in its directory (its
/// `data_dir` too), under its tier when it names one rather than the plugin's own.
/// Relative paths keep resolving against `path`'s directory.
pub fn config(path: &Path, text: &str, name: &str, run: &Run) -> Result<Config, OnboardError> {
    let invalid = |message: String| OnboardError::Config { path: path.to_owned(), message };
    let mut doc = parse_doc(path, text)?;
    let mut entry = take_entry(&mut doc, path, name)?;
    let scratch = run.dir.as_path();
    entry.insert("replicas".into(), 1.into());
    entry.insert("autostart".into(), true.into());
    // Other plugins are not there to call or be called by (and naming one that is not
    // there is refused); the scratch supervisor calls through its embedded channel.
    entry.remove("calls");
    entry.remove("callers");
    // The plugin's own data stays the running daemon's.
    if entry.contains_key("data_dir") {
        entry.insert("data_dir".into(), scratch.join("data").display().to_string().into());
    }
    if let Some(tier) = &run.tier {
        entry.insert("tier".into(), tier.as_str().into());
    }
    if run.burst {
        let (in_flight, queued, _) = burst_limits(&entry);
        entry.insert("max_in_flight".into(), i64::from(in_flight).into());
        entry.insert("max_queued".into(), i64::from(queued).into());
    }
    doc.insert("plugin".into(), toml::Value::Array(vec![toml::Value::Table(entry)]));
    with_scratch_supervisor(&mut doc, scratch, run.name);
    let text = toml::to_string(&doc).map_err(|e| invalid(e.to_string()))?;
    parse(&text, path).map_err(|e| invalid(e.to_string()))
}

/// A config running only the echo example at `binary` under L3, with the
/// supervisor settings (policies, users) of `path`'s.
pub fn echo_config(path: &Path, text: &str, binary: &Path, scratch: &Path, run: &str) -> Result<Config, OnboardError> {
    let invalid = |message: String| OnboardError::Config { path: path.to_owned(), message };
    let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| invalid(e.message().to_owned()))?;
    doc.remove("plugin");
    let mut echo = toml::Table::new();
    echo.insert("name".into(), "echo".into());
    echo.insert("binary".into(), binary.display().to_string().into());
    echo.insert("tier".into(), "L3".into());
    doc.insert("plugin".into(), toml::Value::Array(vec![toml::Value::Table(echo)]));
    with_scratch_supervisor(&mut doc, scratch, run);
    let text = toml::to_string(&doc).map_err(|e| invalid(e.to_string()))?;
    parse(&text, path).map_err(|e| invalid(format!("the echo baseline's config: {e}")))
}

/// The config `onboard --binary BINARY --tier TIER` checks: plugin `name` running `binary`
/// under `tier` of the tier files in `policies`, every other setting the default. `none`
/// runs it unsandboxed, which the config then allows.
pub fn binary_config(binary: &Path, tier: &str, policies: &Path, name: &str) -> Result<String, OnboardError> {
    let bad_binary = |reason: String| OnboardError::Binary { path: binary.to_owned(), reason };
    match std::fs::metadata(binary) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(bad_binary("not a file".into())),
        Err(e) => return Err(bad_binary(e.to_string())),
    }
    let unsandboxed = tier == crate::config::UNSANDBOXED;
    if !unsandboxed && !policies.join(format!("{tier}.toml")).is_file() {
        let mut known: Vec<String> = std::fs::read_dir(policies)
            .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".toml").map(str::to_owned)).collect())
            .unwrap_or_default();
        known.sort();
        let reason = if known.is_empty() {
            format!("{} holds no tier files (pass --policies DIR)", policies.display())
        } else {
            format!("no such tier in {} (it has {}, or none to run unsandboxed)", policies.display(), known.join(", "))
        };
        return Err(OnboardError::UnknownTier { tier: tier.to_owned(), reason });
    }
    let mut sup = toml::Table::new();
    sup.insert("policies_dir".into(), policies.display().to_string().into());
    if unsandboxed {
        let mut sandbox = toml::Table::new();
        sandbox.insert("allow_unsandboxed".into(), true.into());
        sup.insert("sandbox".into(), sandbox.into());
    }
    let mut entry = toml::Table::new();
    entry.insert("name".into(), name.into());
    entry.insert("binary".into(), binary.display().to_string().into());
    entry.insert("tier".into(), tier.into());
    let mut doc = toml::Table::new();
    doc.insert("supervisor".into(), sup.into());
    doc.insert("plugin".into(), toml::Value::Array(vec![toml::Value::Table(entry)]));
    toml::to_string(&doc).map_err(|e| bad_binary(e.to_string()))
}

fn with_scratch_supervisor(doc: &mut toml::Table, scratch: &Path, run: &str) {
    let sup = doc.entry("supervisor").or_insert_with(|| toml::Table::new().into());
    let Some(sup) = sup.as_table_mut() else { return };
    sup.insert("state_dir".into(), scratch.join("state").display().to_string().into());
    sup.insert("runtime_dir".into(), scratch.join("run").display().to_string().into());
    sup.remove("metrics_listen");
    let cgroup = sup.entry("cgroup").or_insert_with(|| toml::Table::new().into());
    if let Some(cgroup) = cgroup.as_table_mut() {
        // Named after the configured subtree, so what finds that one's leftovers finds these.
        let base = cgroup.get("name").and_then(toml::Value::as_str).map(|n| format!("{n}-")).unwrap_or_default();
        cgroup.insert("name".into(), format!("{base}onboard-{}-{run}", std::process::id()).into());
        cgroup.insert("move_self".into(), false.into());
    }
}
