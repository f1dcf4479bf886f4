//! The scratch supervisor's config: the operator's file with everything that
//! could touch the host's running supervisor moved aside (its own state and
//! runtime directories, its own cgroup subtree, the daemon left where it
//! is, no metrics listener) and only the plugin under test, once.

use std::path::Path;

use super::OnboardError;
use crate::config::{Config, parse};

/// `text` (read from `path`) reduced to plugin `name`, in `scratch` (its
/// `data_dir` too), under `tier` when given rather than its own. Relative paths keep resolving
/// against `path`'s directory.
pub fn config(
    path: &Path,
    text: &str,
    name: &str,
    tier: Option<&str>,
    scratch: &Path,
    run: &str,
) -> Result<Config, OnboardError> {
    let invalid = |message: String| OnboardError::Config { path: path.to_owned(), message };
    let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| invalid(e.message().to_owned()))?;
    let plugins = match doc.remove("plugin") {
        Some(toml::Value::Array(plugins)) => plugins,
        _ => Vec::new(),
    };
    let mut entry = plugins
        .into_iter()
        .filter_map(|p| match p {
            toml::Value::Table(t) => Some(t),
            _ => None,
        })
        .find(|t| t.get("name").and_then(toml::Value::as_str) == Some(name))
        .ok_or_else(|| OnboardError::NoSuchPlugin { plugin: name.to_owned(), path: path.to_owned() })?;
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
    if let Some(tier) = tier {
        entry.insert("tier".into(), tier.into());
    }
    doc.insert("plugin".into(), toml::Value::Array(vec![toml::Value::Table(entry)]));
    with_scratch_supervisor(&mut doc, scratch, run);
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
