//! `supervisorctl config [NAME]`: the configuration in force, per plugin, every
//! key with its effective value (defaults applied, paths resolved) and where
//! that value comes from, so an operator sees at once what the file says, what
//! a default filled in, and what was changed at run time.

use plugin_proto::control::v1::{PluginSettings, Setting};
use serde_json::{Value, json};

use crate::config::units::format_duration;
use crate::config::{PluginSpec, QuotaConfig, RestartPolicy, leaks, rollout};
use crate::instance::Plugin;
use crate::sandbox::quota;
use crate::{Supervisor, SupervisorError};

/// Where a setting's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The plugin's entry in the config file.
    File,
    /// The entry says nothing: `[supervisor.defaults]` or the built-in default.
    Default,
    /// The tier's default quota.
    Tier,
    /// Changed at run time (`supervisorctl quota`), kept across restarts.
    Runtime,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Default => "default",
            Self::Tier => "tier",
            Self::Runtime => "runtime",
        }
    }
}

/// Every plugin's settings, or `name`'s.
pub fn of(sup: &Supervisor, name: &str) -> Result<Vec<PluginSettings>, SupervisorError> {
    let plugins = if name.is_empty() { sup.plugins() } else { vec![sup.plugin(name)?] };
    let mut entries = Entries::default();
    Ok(plugins.iter().map(|p| plugin_settings(sup, p, &mut entries)).collect())
}

/// Each config text's `[[plugin]]` tables by name, parsed once however many plugins came
/// from it (plugins loaded together share their origin's text).
#[derive(Default)]
struct Entries(Vec<(Text, ByName)>);

/// A config text as plugins keep it: its path and contents.
type Text = std::sync::Arc<(std::path::PathBuf, String)>;
/// A text's `[[plugin]]` tables by name.
type ByName = std::collections::HashMap<String, toml::Table>;

impl Entries {
    /// The plugin's own `[[plugin]]` table in the text it was loaded from, to tell the
    /// keys it sets from those a default filled in.
    fn of(&mut self, spec: &PluginSpec) -> Option<toml::Table> {
        let origin = spec.origin.0.as_ref()?;
        let i = match self.0.iter().position(|(o, _)| std::sync::Arc::ptr_eq(o, origin)) {
            Some(i) => i,
            None => {
                self.0.push((origin.clone(), tables(&origin.1)));
                self.0.len() - 1
            }
        };
        self.0[i].1.get(&spec.name).cloned()
    }
}

fn tables(text: &str) -> ByName {
    let Ok(doc) = text.parse::<toml::Table>() else { return Default::default() };
    let Some(entries) = doc.get("plugin").and_then(toml::Value::as_array) else { return Default::default() };
    entries
        .iter()
        .filter_map(toml::Value::as_table)
        .filter_map(|t| Some((t.get("name")?.as_str()?.to_owned(), t.clone())))
        .collect()
}

fn plugin_settings(sup: &Supervisor, p: &Plugin, entries: &mut Entries) -> PluginSettings {
    let spec = p.spec();
    let tier = sup.shared().launcher.tier_quota(&spec.tier);
    let overrides = (**p.overrides.load()).clone();
    let entry = entries.of(&spec);
    let settings = settings(&spec, tier.as_ref(), &overrides, entry.as_ref())
        .into_iter()
        .map(|(key, value, source)| Setting { key, value_json: value.to_string(), source: source.as_str().to_owned() })
        .collect();
    PluginSettings {
        name: spec.name.clone(),
        file: spec.origin.path().map(|f| f.display().to_string()).unwrap_or_default(),
        settings,
    }
}

/// Whether the entry sets the dotted `key` (`quota.memory_max`).
fn sets(entry: Option<&toml::Table>, key: &str) -> bool {
    let mut table = entry;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some(v) = table.and_then(|t| t.get(part)) else { return false };
        if parts.peek().is_none() {
            return true;
        }
        table = v.as_table();
    }
    false
}

fn duration(d: std::time::Duration) -> Value {
    format_duration(d).into()
}

fn restart(r: RestartPolicy) -> &'static str {
    match r {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "never",
    }
}

/// `(key, value, source)` for every key of a `[[plugin]]` entry, in the config
/// reference's order; optional keys that are unset have `null`.
pub fn settings(
    spec: &PluginSpec,
    tier: Option<&crate::sandbox::tier::Quota>,
    overrides: &QuotaConfig,
    entry: Option<&toml::Table>,
) -> Vec<(String, Value, Source)> {
    let path = |p: &std::path::Path| Value::from(p.display().to_string());
    let opt = |v: Option<Value>| v.unwrap_or(Value::Null);
    let r = &spec.rollout;
    let l = &spec.leaks;
    let b = &spec.protection.breaker;
    let out: Vec<(&str, Value)> = vec![
        ("name", spec.name.clone().into()),
        ("declared_name", spec.declared_name.clone().into()),
        ("services", opt(spec.services.as_ref().map(|s| json!(s)))),
        ("binary", path(&spec.binary)),
        ("args", json!(spec.args)),
        ("env", json!(spec.env)),
        // Its keys only: `[plugin.config]` is where tokens and connection strings go, and
        // every uid the control socket admits may ask.
        ("config", hidden(serde_json::from_str(&spec.config_json).unwrap_or(Value::Null))),
        ("replicas", spec.replicas.into()),
        ("autostart", spec.autostart.into()),
        ("restart", restart(spec.restart).into()),
        ("backoff.initial", duration(spec.backoff.initial)),
        ("backoff.max", duration(spec.backoff.max)),
        ("backoff.multiplier", spec.backoff.multiplier.into()),
        ("backoff.jitter", spec.backoff.jitter.into()),
        ("backoff.reset_after", duration(spec.backoff.reset_after)),
        ("handshake_timeout", duration(spec.handshake_timeout)),
        ("call_timeout", duration(spec.call_timeout)),
        ("stop_timeout", duration(spec.stop_timeout)),
        ("sha256", opt(spec.integrity.sha256.as_ref().map(|d| d.to_string().into()))),
        ("version", opt(spec.version_req.as_ref().map(|v| v.to_string().into()))),
        ("contract", entry.and_then(|e| e.get("contract")).map_or(json!([]), toml_json)),
        ("require_signature", spec.integrity.require_signature.into()),
        ("tier", spec.tier.clone().into()),
        ("uid", spec.ids.0.into()),
        ("gid", spec.ids.1.into()),
        ("data_dir", opt(spec.data_dir.as_deref().map(path))),
        ("landlock_required", opt(spec.landlock_required.map(Value::from))),
        ("network_namespace", spec.network_namespace.into()),
        ("log_rate", spec.log_limit.rate.into()),
        ("log_burst", spec.log_limit.burst.into()),
        // The rules in force, resolved (`uid:1000` for `uid:alice`), not the text the entry
        // came from: an update applies `callers` in place (during a rollout, or beside a
        // change refused), and the text then still said the old list of who may call.
        (
            "callers",
            spec.callers
                .as_ref()
                .map_or(Value::Null, |c| json!(c.0.iter().map(ToString::to_string).collect::<Vec<_>>())),
        ),
        ("calls", spec.calls.clone().into()),
        ("max_in_flight", spec.protection.max_in_flight.into()),
        ("max_queued", spec.protection.max_queued.into()),
        ("max_request_bytes", spec.protection.max_request_bytes.into()),
        ("max_response_bytes", spec.protection.max_response_bytes.into()),
        ("breaker.failures", b.failures.into()),
        ("breaker.min_backoff", duration(b.min_backoff)),
        ("breaker.max_backoff", duration(b.max_backoff)),
        ("breaker.jitter", b.jitter.into()),
        (
            "rollout.strategy",
            match r.strategy {
                rollout::Strategy::Replace => "replace",
                rollout::Strategy::Canary => "canary",
            }
            .into(),
        ),
        ("rollout.steps", json!(r.steps)),
        ("rollout.step_interval", duration(r.step_interval)),
        ("rollout.min_calls", r.min_calls.into()),
        ("rollout.max_error_rate", r.max_error_rate.into()),
        ("rollout.max_p99_ratio", r.max_p99_ratio.into()),
        ("rollout.p99_floor", duration(r.p99_floor)),
        ("leaks.window", duration(l.window)),
        ("leaks.memory_per_min", l.memory_per_min.to_string().into()),
        ("leaks.fds_per_min", l.fds_per_min.into()),
        ("leaks.tasks_per_min", l.tasks_per_min.into()),
        ("leaks.cpu_per_min", l.cpu_per_min.into()),
        ("leaks.significance", l.significance.into()),
        (
            "leaks.action",
            match l.action {
                leaks::Action::Report => "report",
                leaks::Action::Replace => "replace",
            }
            .into(),
        ),
    ];
    // The uid and gid are the file's when it names the account (user, or uid and gid).
    let account = sets(entry, "user") || sets(entry, "uid");
    let mut settings: Vec<(String, Value, Source)> = out
        .into_iter()
        .map(|(key, value)| {
            let file = match key {
                "uid" | "gid" => account,
                // Only a file sets them (everyone may call, by default), whichever file it was.
                "callers" => spec.callers.is_some(),
                _ => sets(entry, key),
            };
            (key.to_owned(), value, if file { Source::File } else { Source::Default })
        })
        .collect();
    settings.extend(quota_settings(spec, tier, overrides, entry));
    settings
}

/// The quotas in force: the run-time override, else the entry's, else the tier's.
fn quota_settings(
    spec: &PluginSpec,
    tier: Option<&crate::sandbox::tier::Quota>,
    overrides: &QuotaConfig,
    entry: Option<&toml::Table>,
) -> Vec<(String, Value, Source)> {
    let effective = quota::effective(tier, &spec.quota, overrides);
    let show = |v: Option<String>| v.map_or(Value::Null, Value::from);
    let source = |overridden: bool, key: &str| {
        if overridden {
            Source::Runtime
        } else if sets(entry, &format!("quota.{key}")) {
            Source::File
        } else if tier.is_some() {
            Source::Tier
        } else {
            Source::Default
        }
    };
    vec![
        (
            "memory_max",
            show(effective.memory_max.map(|v| v.to_string())),
            source(overrides.memory_max.is_some(), "memory_max"),
        ),
        (
            "memory_high",
            show(effective.memory_high.map(|v| v.to_string())),
            source(overrides.memory_high.is_some(), "memory_high"),
        ),
        ("cpu", show(effective.cpu.map(|v| v.to_string())), source(overrides.cpu.is_some(), "cpu")),
        (
            "pids_max",
            effective.pids_max.map_or(Value::Null, Value::from),
            source(overrides.pids_max.is_some(), "pids_max"),
        ),
        ("optional", spec.quota.optional.into(), source(false, "optional")),
    ]
    .into_iter()
    .map(|(k, v, s)| (format!("quota.{k}"), v, s))
    .collect()
}

fn toml_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `v` with every value that is not a table replaced by `"(hidden)"`.
fn hidden(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, hidden(v))).collect()),
        Value::Null => Value::Null,
        _ => Value::from("(hidden)"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plugins_config_shows_its_keys_and_hides_its_values() {
        let given = serde_json::json!({"token": "s3cret", "db": {"url": "postgres://u:p@h", "pool": 4}, "tags": ["a"]});
        assert_eq!(
            super::hidden(given),
            serde_json::json!({"token": "(hidden)", "db": {"url": "(hidden)", "pool": "(hidden)"}, "tags": "(hidden)"})
        );
    }

    use super::*;

    fn spec(text: &str) -> PluginSpec {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let config = crate::config::Config::load(&path).unwrap();
        config.specs().remove(0)
    }

    fn find<'a>(s: &'a [(String, Value, Source)], key: &str) -> &'a (String, Value, Source) {
        s.iter().find(|(k, ..)| k == key).unwrap_or_else(|| panic!("no {key}"))
    }

    const ENTRY: &str = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\ntier = \"none\"\n\
                         call_timeout = \"2s\"\n[plugin.quota]\nmemory_max = \"64M\"\n";

    #[test]
    fn file_keys_defaults_and_run_time_overrides_are_told_apart() {
        let spec = spec(ENTRY);
        let entry = Entries::default().of(&spec);
        let overrides = QuotaConfig { pids_max: Some(7), ..QuotaConfig::default() };
        let s = settings(&spec, None, &overrides, entry.as_ref());
        assert_eq!(find(&s, "call_timeout").1, json!("2s"));
        assert_eq!(find(&s, "call_timeout").2, Source::File);
        assert_eq!(find(&s, "stop_timeout").1, json!("5s"));
        assert_eq!(find(&s, "stop_timeout").2, Source::Default);
        assert_eq!(find(&s, "quota.memory_max").2, Source::File);
        assert_eq!(find(&s, "quota.pids_max").1, json!(7));
        assert_eq!(find(&s, "quota.pids_max").2, Source::Runtime);
        assert_eq!(find(&s, "max_in_flight").1, json!(64));
        let keys: std::collections::HashSet<_> = s.iter().map(|(k, ..)| k.as_str()).collect();
        assert_eq!(keys.len(), s.len(), "a key twice");
    }

    /// `callers` as in force, though the text the entry came from says otherwise (an
    /// update applies them in place and keeps the entry's first text).
    #[test]
    fn the_callers_shown_are_those_in_force_not_those_of_the_text() {
        let mut spec =
            spec(&format!("{ENTRY}callers = [\"uid:0\"]\n").replace("[plugin.quota]\nmemory_max = \"64M\"\n", ""));
        let entry = Entries::default().of(&spec);
        let s = settings(&spec, None, &QuotaConfig::default(), entry.as_ref());
        assert_eq!((&find(&s, "callers").1, find(&s, "callers").2), (&json!(["uid:0"]), Source::File));
        use crate::routing::callers::{Callers, Rule};
        spec.callers = Some(Callers(vec![Rule::Uid(1000), Rule::Gid(4), Rule::Plugin("auth".into())]));
        let s = settings(&spec, None, &QuotaConfig::default(), entry.as_ref());
        assert_eq!(find(&s, "callers").1, json!(["uid:1000", "gid:4", "plugin:auth"]));
        // Taken away: everyone may call again, by default.
        spec.callers = None;
        let s = settings(&spec, None, &QuotaConfig::default(), entry.as_ref());
        assert_eq!((&find(&s, "callers").1, find(&s, "callers").2), (&Value::Null, Source::Default));
    }

    #[test]
    fn plugins_from_one_text_share_its_parse_and_each_finds_its_own_entry() {
        let text = format!("{ENTRY}[[plugin]]\nname = \"other\"\nbinary = \"/bin/true\"\ntier = \"none\"\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.toml");
        std::fs::write(&path, text).unwrap();
        let specs = crate::config::Config::load(&path).unwrap().specs();
        let mut entries = Entries::default();
        assert!(entries.of(&specs[0]).unwrap().contains_key("call_timeout"));
        assert!(!entries.of(&specs[1]).unwrap().contains_key("call_timeout"));
        assert_eq!(entries.0.len(), 1, "one parse for both");
    }
}
