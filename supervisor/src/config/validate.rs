//! The checks a parsed config must pass before anything runs: names,
//! binaries, counts and ranges that serde's types cannot express.

use std::os::unix::fs::PermissionsExt;

use std::sync::Arc;

use super::load::{Problems, Reach, Seg, counts};
use super::{Backoff, Config, IntegritySpec, PluginConfig, PluginSpec};
use crate::contract;
use crate::integrity::{PublicKey, Sha256Digest};

/// A plugin name as an error shows it, quoted: one longer than any plugin's can be (a
/// caller's or an operator's input) is cut, with its length, so that the error (sent back
/// as `grpc-message`) stays small.
pub fn shown_name(name: &str) -> String {
    // As a plugin's own declarations are shown.
    plugin_proto::declared::shown(name)
}

/// Plugin names become parts of paths (cgroups, data directories) and
/// instance ids, so they are kept to a portable alphabet.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("plugin name must not be empty".into());
    }
    if name.len() > 64 {
        return Some(format!("plugin name {name:?} is longer than 64 characters"));
    }
    let ok_first = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    let ok_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !(ok_first && ok_rest) {
        return Some(format!(
            "plugin name {name:?} may use only letters, digits, '-', '_' and '.', and must start with a letter or digit"
        ));
    }
    super::kernel::cgroup_name_problem(name)
}

/// The most lines `tail` keeps per plugin: a flooding plugin fills its buffer, which
/// also holds at most this many × `LOG_BYTES_PER_LINE` bytes (an SDK record may be
/// ~96 KiB).
pub const MAX_LOG_LINES: usize = 10_000;
/// The most lifecycle events `events` keeps.
pub const MAX_EVENT_HISTORY: usize = 100_000;

fn check_buffers(config: &Config, p: &mut Problems<'_>) {
    let s = &config.supervisor;
    for (key, value, max) in
        [("log_lines", s.log_lines, MAX_LOG_LINES), ("event_history", s.event_history, MAX_EVENT_HISTORY)]
    {
        if value > max {
            p.at(&[Seg::Key("supervisor"), Seg::Key(key)], format!("{value} is more than the {max} kept at most"));
        }
    }
    super::leaks::check_window(s.leak_window, &[Seg::Key("supervisor"), Seg::Key("leak_window")], p);
}

/// A `[plugin.config]` value goes to the plugin as JSON, which has no NaN or infinity:
/// serde_json would make them `null`, and the plugin would see a value it was not given.
/// `path` leads to `value`.
fn check_json_value<'a>(value: &'a toml::Value, path: &mut Vec<Seg<'a>>, p: &mut Problems<'_>) {
    match value {
        toml::Value::Float(f) if !f.is_finite() => {
            p.at(path, format!("{f} cannot be given to a plugin: its config is JSON, which has no NaN or infinity"));
        }
        toml::Value::Table(t) => {
            for (k, v) in t {
                path.push(Seg::Key(k));
                check_json_value(v, path, p);
                path.pop();
            }
        }
        toml::Value::Array(a) => {
            for (j, v) in a.iter().enumerate() {
                path.push(Seg::Index(j));
                check_json_value(v, path, p);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The supervisor's own directories are named.
fn check_directories(config: &Config, p: &mut Problems<'_>) {
    let s = &config.supervisor;
    for (key, dir) in [("policies_dir", &s.policies_dir), ("state_dir", &s.state_dir), ("runtime_dir", &s.runtime_dir)]
    {
        let at = [Seg::Key("supervisor"), Seg::Key(key)];
        if let Some(problem) = unusable_path(dir, "must not be empty") {
            p.at(&at, problem);
        }
    }
}

/// Why a configured path cannot name anything at all, if it cannot:
/// `empty` says what an empty one would mean where it is.
pub(super) fn unusable_path(path: &std::path::Path, empty: &'static str) -> Option<&'static str> {
    if path.as_os_str().is_empty() {
        Some(empty)
    } else if path.as_os_str().as_encoded_bytes().contains(&0) {
        Some("paths cannot contain NUL characters")
    } else {
        None
    }
}

/// Checks everything and builds the plugin specs (meaningful only when no
/// problem was recorded).
pub(super) fn check(
    config: &Config,
    p: &mut Problems<'_>,
    reach: Reach,
) -> (Vec<PluginSpec>, Option<Arc<crate::sandbox::tier::TierSet>>) {
    let names = counts(config.plugins.iter().map(|pl| pl.name.as_str()));
    let mut seen = std::collections::HashSet::new();
    check_buffers(config, p);
    check_directories(config, p);
    for (key, d) in [
        ("handshake_timeout", config.supervisor.defaults.handshake_timeout),
        ("call_timeout", config.supervisor.defaults.call_timeout),
    ] {
        if d.is_zero() {
            p.at(&[Seg::Key("supervisor"), Seg::Key("defaults"), Seg::Key(key)], "must be longer than zero");
        }
    }
    super::kernel::check_cgroup_section(config, p);
    check_backoff(
        &config.supervisor.defaults.backoff,
        &[Seg::Key("supervisor"), Seg::Key("defaults"), Seg::Key("backoff")],
        p,
    );
    super::gateway::check(&config.supervisor.gateway, p);
    let mut keys = Vec::new();
    for (j, k) in config.supervisor.trusted_keys.iter().enumerate() {
        match k.parse::<PublicKey>() {
            Ok(key) => keys.push(key),
            Err(e) => p.at(&[Seg::Key("supervisor"), Seg::Key("trusted_keys"), Seg::Index(j)], e.to_string()),
        }
    }
    let keys = Arc::new(keys);
    let tiers = match reach {
        Reach::Files => load_tiers(config, p),
        Reach::TextOnly => None,
    };
    let ids = super::users::assign(config, p);
    let mut guarded = super::data_dir::Guarded::of(config, reach);
    let mut specs = Vec::new();
    for (i, plugin) in config.plugins.iter().enumerate() {
        let at = |key: &'static str| [Seg::Key("plugin"), Seg::Index(i), Seg::Key(key)];
        if let Some(msg) = name_problem(&plugin.name) {
            p.at(&at("name"), msg);
        }
        if names.get(plugin.name.as_str()).copied().unwrap_or(0) > 1 && !seen.insert(plugin.name.as_str()) {
            p.at(&at("name"), format!("duplicate plugin name {:?}: each plugin needs its own name", plugin.name));
        }
        let binary = config.resolve(&plugin.binary);
        let metadata = match reach {
            Reach::Files => Some(std::fs::metadata(&binary)),
            Reach::TextOnly => None,
        };
        match metadata {
            None => {}
            Some(Err(e)) => p.at(
                &at("binary"),
                format!("plugin {:?}: binary {} cannot be used: {e}", plugin.name, binary.display()),
            ),
            Some(Ok(m)) if !m.is_file() => p.at(
                &at("binary"),
                format!("plugin {:?}: binary {} is not a regular file", plugin.name, binary.display()),
            ),
            Some(Ok(m)) if m.permissions().mode() & 0o111 == 0 => {
                p.at(&at("binary"), format!("plugin {:?}: binary {} is not executable", plugin.name, binary.display()))
            }
            Some(Ok(_)) => {}
        }
        if plugin.replicas == 0 || plugin.replicas > super::MAX_REPLICAS {
            let most = super::MAX_REPLICAS;
            p.at(&at("replicas"), format!("replicas must be between 1 and {most}, not {}", plugin.replicas));
        }
        for (j, var) in plugin.env.iter().enumerate() {
            if var.is_empty() || var.contains(['=', '\0']) {
                p.at(
                    &[Seg::Key("plugin"), Seg::Index(i), Seg::Key("env"), Seg::Index(j)],
                    format!("{var:?} is not an environment variable name"),
                );
            }
        }
        for (key, d) in [("handshake_timeout", plugin.handshake_timeout), ("call_timeout", plugin.call_timeout)] {
            if d.is_some_and(|d| d.is_zero()) {
                p.at(&at(key), "must be longer than zero");
            }
        }
        guarded.check(config, plugin, i, p);
        let mut path = vec![Seg::Key("plugin"), Seg::Index(i), Seg::Key("config")];
        for (key, value) in &plugin.config {
            path.push(Seg::Key(key));
            check_json_value(value, &mut path, p);
            path.pop();
        }
        for (j, arg) in plugin.args.iter().enumerate() {
            if arg.contains('\0') {
                p.at(
                    &[Seg::Key("plugin"), Seg::Index(i), Seg::Key("args"), Seg::Index(j)],
                    "arguments cannot contain NUL characters",
                );
            }
        }
        super::kernel::check_exec_strings(config, plugin, i, p);
        if let Some(b) = &plugin.backoff {
            check_backoff(b, &at("backoff"), p);
        }
        super::rollout::check(&plugin.rollout, &at("rollout"), p);
        super::leaks::check(&plugin.leaks, &at("leaks"), p);
        check_log_limit(plugin, |key, msg| p.at(&at(key), msg));
        super::protection::check(plugin, i, p);
        let sha256 = plugin.sha256.as_deref().and_then(|h| match h.parse::<Sha256Digest>() {
            Ok(d) => Some(d),
            Err(e) => {
                p.at(&at("sha256"), format!("{e}"));
                None
            }
        });
        let version_req = plugin.version.as_deref().and_then(|v| match semver::VersionReq::parse(v) {
            Ok(r) => Some(r),
            Err(e) => {
                p.at(&at("version"), format!("{v:?} is not a semver range (e.g. \">=1.2, <2\"): {e}"));
                None
            }
        });
        let tier = plugin.tier.clone().unwrap_or_else(|| config.supervisor.defaults.tier.clone());
        // A tier the entry takes from the defaults is at fault there.
        let tier_at = match plugin.tier {
            Some(_) => at("tier"),
            None => [Seg::Key("supervisor"), Seg::Key("defaults"), Seg::Key("tier")],
        };
        if tier == super::UNSANDBOXED {
            if !config.supervisor.sandbox.allow_unsandboxed {
                let whom = match plugin.tier {
                    Some(_) => format!("plugin {:?}: tier \"none\" runs it", plugin.name),
                    None => "tier \"none\" runs every plugin without a tier of its own".into(),
                };
                p.at(
                    &tier_at,
                    format!("{whom} unsandboxed; set [supervisor.sandbox] allow_unsandboxed = true to permit that"),
                );
            }
            if plugin.network_namespace {
                p.at(
                    &at("network_namespace"),
                    format!("plugin {:?}: tier \"none\" has no namespaces; choose a sandbox tier", plugin.name),
                );
            }
        } else if let Some(set) = &tiers
            && set.get(&tier).is_none()
        {
            let known: Vec<&str> = set.iter().map(|t| t.name.as_str()).collect();
            p.at(
                &tier_at,
                format!(
                    "unknown tier {tier:?} (in {}: {})",
                    config.resolve(&config.supervisor.policies_dir).display(),
                    known.join(", ")
                ),
            );
        }
        let tier_quota = tiers.as_ref().and_then(|set| set.get(&tier)).map(|t| &t.quota);
        check_quota(&plugin.quota, tier_quota, &at("quota"), p);
        let require_signature = plugin.require_signature.unwrap_or(
            config.supervisor.require_signatures || config.supervisor.require_signatures_for_tiers.contains(&tier),
        );
        if require_signature && keys.is_empty() {
            p.at(&at("require_signature"), "signatures are required but [supervisor] trusted_keys is empty");
        }
        let contract = match reach {
            Reach::Files => load_contract(config, plugin, &at("contract"), p),
            Reach::TextOnly => None,
        };
        let mut spec = spec(
            config,
            plugin,
            IntegritySpec { sha256, require_signature, trusted_keys: keys.clone() },
            version_req,
            contract,
        );
        spec.tier = tier;
        spec.ids = ids.get(&plugin.name).copied().unwrap_or((0, 0));
        spec.callers = check_callers(config, plugin, i, p);
        for (j, name) in plugin.calls.iter().enumerate() {
            let at = [Seg::Key("plugin"), Seg::Index(i), Seg::Key("calls"), Seg::Index(j)];
            if name == &plugin.name {
                // Its handlers would wait in its own queue for places its own calls hold.
                p.at(&at, format!("plugin {:?}: calls entry {name:?}: a plugin may not call itself", plugin.name));
            } else if !config.plugins.iter().any(|pl| &pl.name == name) {
                p.at(
                    &at,
                    format!("plugin {:?}: calls entry {name:?}: no plugin of that name is configured", plugin.name),
                );
            }
        }
        if let Some(declared) = &plugin.declared_name
            && let Some(msg) = name_problem(declared)
        {
            p.at(&at("declared_name"), msg);
        }
        for (j, service) in plugin.services.iter().flatten().enumerate() {
            if let Err(e) = plugin_proto::declared::service(service) {
                let said = e.to_string().replacen("plugin declares service", "service", 1);
                p.at(&[Seg::Key("plugin"), Seg::Index(i), Seg::Key("services"), Seg::Index(j)], said);
            }
        }
        specs.push(spec);
    }
    super::call_graph::check(config, p);
    (specs, tiers)
}

/// Resolves a plugin's `callers` to numbers; an entry that does not resolve is a
/// problem naming the plugin and the entry.
fn check_callers(
    config: &Config,
    plugin: &PluginConfig,
    i: usize,
    p: &mut Problems<'_>,
) -> Option<crate::routing::callers::Callers> {
    use crate::routing::callers::{Callers, resolve};
    let entries = plugin.callers.as_ref()?;
    // Only whether the plugin exists and runs as a host account: its uid is learnt at
    // call time (a dynamic one may move when plugins are added).
    let plugin_ids = |name: &str| {
        let entry = config.plugins.iter().find(|pl| pl.name == name)?;
        Some(entry.user.is_some() || entry.uid.is_some())
    };
    let mut rules = Vec::with_capacity(entries.len());
    for (j, entry) in entries.iter().enumerate() {
        match resolve(entry, &plugin_ids) {
            Ok(rule) => rules.push(rule),
            Err(e) => p.at(
                &[Seg::Key("plugin"), Seg::Index(i), Seg::Key("callers"), Seg::Index(j)],
                format!("plugin {:?}: callers entry {e}", plugin.name),
            ),
        }
    }
    Some(Callers(rules))
}

/// Loads the tier files when any plugin is sandboxed; a broken tier file is
/// a config problem, reported with the tier file's own message.
fn load_tiers(config: &Config, p: &mut Problems<'_>) -> Option<Arc<crate::sandbox::tier::TierSet>> {
    let default_tier = &config.supervisor.defaults.tier;
    let sandboxed = config.plugins.iter().any(|pl| pl.tier.as_ref().unwrap_or(default_tier) != super::UNSANDBOXED);
    if !sandboxed {
        return None;
    }
    let dir = config.resolve(&config.supervisor.policies_dir);
    match crate::sandbox::tier::TierSet::load_dir(&dir) {
        Ok(set) => Some(Arc::new(set)),
        Err(e) => {
            p.at(&[Seg::Key("supervisor"), Seg::Key("policies_dir")], format!("cannot load the tiers: {e}"));
            None
        }
    }
}

fn check_quota(
    q: &super::QuotaConfig,
    tier: Option<&crate::sandbox::tier::Quota>,
    at: &[Seg<'_>],
    p: &mut Problems<'_>,
) {
    let before = p.count();
    if q.memory_max.is_some_and(|m| m.bytes() < 1 << 20) {
        p.at(at, "memory_max below 1M cannot run any plugin");
    }
    if let (Some(high), Some(max)) = (q.memory_high, q.memory_max)
        && high > max
    {
        p.at(at, format!("memory_high {high} is above memory_max {max}"));
    }
    if q.pids_max == Some(0) {
        p.at(at, "pids_max 0 leaves no task for the plugin itself");
    }
    if p.count() == before
        && let Some(problem) = super::kernel::quota_problem(tier, q)
    {
        p.at(at, problem);
    }
}

fn load_contract(
    config: &Config,
    plugin: &PluginConfig,
    at: &[Seg<'_>],
    p: &mut Problems<'_>,
) -> Option<Arc<prost_types::FileDescriptorSet>> {
    if plugin.contract.is_empty() {
        return None;
    }
    let includes: Vec<_> = plugin.contract_includes.iter().map(|d| config.resolve(d)).collect();
    let mut merged = prost_types::FileDescriptorSet::default();
    for path in &plugin.contract {
        let path = config.resolve(path);
        let set = if path.extension().is_some_and(|e| e == "proto") {
            let mut inc = includes.clone();
            if let Some(dir) = path.parent() {
                inc.push(dir.to_path_buf());
            }
            contract::load_protos(&[&path], &inc)
        } else {
            contract::load_contract(&path)
        };
        match set {
            Ok(set) => {
                for f in set.file {
                    if !merged.file.iter().any(|m| m.name == f.name) {
                        merged.file.push(f);
                    }
                }
            }
            Err(e) => p.at(at, format!("plugin {:?}: pinned contract: {e}", plugin.name)),
        }
    }
    Some(Arc::new(merged))
}

fn spec(
    config: &Config,
    p: &PluginConfig,
    integrity: IntegritySpec,
    version_req: Option<semver::VersionReq>,
    contract: Option<Arc<prost_types::FileDescriptorSet>>,
) -> PluginSpec {
    let d = &config.supervisor.defaults;
    PluginSpec {
        name: p.name.clone(),
        binary: config.resolve(&p.binary),
        args: p.args.clone(),
        env: p.env.clone(),
        config_json: serde_json::to_string(&super::toml_to_json(&p.config)).unwrap_or_else(|_| "{}".into()),
        replicas: p.replicas,
        autostart: p.autostart,
        restart: p.restart.unwrap_or(d.restart),
        backoff: p.backoff.unwrap_or(d.backoff),
        handshake_timeout: p.handshake_timeout.unwrap_or(d.handshake_timeout),
        call_timeout: p.call_timeout.unwrap_or(d.call_timeout),
        stop_timeout: p.stop_timeout.unwrap_or(d.stop_timeout),
        integrity,
        version_req,
        contract,
        tier: String::new(),
        quota: p.quota.clone(),
        ids: (0, 0),
        uid_shared: p.user.is_some() || p.uid.is_some(),
        data_dir: p.data_dir.as_ref().map(|d| config.resolve(d)),
        landlock_required: p.landlock_required,
        network_namespace: p.network_namespace,
        rollout: p.rollout.clone(),
        leaks: p.leaks.clone(),
        log_limit: {
            let d = crate::observe::limit::LogLimit::default();
            crate::observe::limit::LogLimit {
                rate: p.log_rate.unwrap_or(d.rate),
                burst: p.log_burst.unwrap_or(d.burst),
            }
        },
        protection: super::protection::Protection::of(p),
        origin: config.text.clone(),
        callers: None,
        calls: p.calls.clone(),
        declared_name: p.declared_name.clone().unwrap_or_else(|| p.name.clone()),
        // A set: listed in another order, or twice, it is the same entry (no new revision).
        services: p.services.clone().map(|mut s| {
            s.sort();
            s.dedup();
            s
        }),
    }
}

/// A limit of 0 would keep nothing (not even a crash's last words); one beyond the
/// maximum would no longer bound what a flood costs the supervisor.
fn check_log_limit(plugin: &PluginConfig, mut problem: impl FnMut(&'static str, String)) {
    use crate::observe::limit::{MAX_LOG_BURST, MAX_LOG_RATE};
    for (key, value, max, unit) in [
        ("log_rate", plugin.log_rate, MAX_LOG_RATE, "lines a second"),
        ("log_burst", plugin.log_burst, MAX_LOG_BURST, "lines"),
    ] {
        match value {
            Some(0) => {
                problem(key, format!("must be at least 1 (in {unit}): 0 would keep no line of the plugin's output"))
            }
            Some(v) if v > max => problem(key, format!("{v} is more than the {max} {unit} allowed")),
            _ => {}
        }
    }
}

fn check_backoff(b: &Backoff, at: &[Seg<'_>], p: &mut Problems<'_>) {
    if b.initial.is_zero() || b.initial > b.max {
        p.at(at, format!("backoff.initial ({:?}) must be above zero and at most backoff.max ({:?})", b.initial, b.max));
    }
    if !(b.multiplier >= 1.0 && b.multiplier <= 100.0) {
        p.at(at, format!("backoff.multiplier must be between 1 and 100, not {}", b.multiplier));
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        p.at(at, format!("backoff.jitter must be between 0 and 1, not {}", b.jitter));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, load};

    /// Parses `text` with plugins unsandboxed (the tiers are tested
    /// elsewhere); the appended tables leave the line numbers as written.
    fn parse(text: &str) -> Result<Config, super::super::ConfigError> {
        let mut t = text.to_owned();
        if !t.contains("[supervisor.defaults]") {
            t.push_str("\n[supervisor.defaults]\ntier = \"none\"\n");
        }
        t.push_str("\n[supervisor.sandbox]\nallow_unsandboxed = true\n");
        load::parse(&t, Path::new("/etc/ps/test.toml"))
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse(
            "[supervisor]\nlog_lines = 10\n\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\ncolour = \"red\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/ps/test.toml:7: plugin[0]"), "{text}");
        assert!(text.contains("unknown field `colour`"), "{text}");
    }

    #[test]
    fn log_limits_default_and_out_of_range_ones_name_file_line_and_key() {
        let c = parse("[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\n").unwrap();
        assert_eq!(c.specs()[0].log_limit, crate::observe::limit::LogLimit { rate: 1000, burst: 2000 });
        let c = parse("[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\nlog_rate = 5\nlog_burst = 7\n").unwrap();
        assert_eq!(c.specs()[0].log_limit, crate::observe::limit::LogLimit { rate: 5, burst: 7 });
        let err = parse("[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\nlog_rate = 0\nlog_burst = 2000000\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/ps/test.toml:4: plugin[0].log_rate: must be at least 1 (in lines a second)"),
            "{err}"
        );
        assert!(
            err.contains("/etc/ps/test.toml:5: plugin[0].log_burst: 2000000 is more than the 1000000 lines allowed"),
            "{err}"
        );
        let err =
            parse("[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\nlog_rate = -1\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/ps/test.toml:4: plugin[0].log_rate:"), "{err}");
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        let err = parse("[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\nreplicas = \"two\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/ps/test.toml:4: plugin[0].replicas:"), "{text}");
        assert!(text.contains("invalid type"), "{text}");
    }

    #[test]
    fn a_bad_metrics_address_names_the_key() {
        let err = parse("[supervisor]\nmetrics_listen = \"localhost\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/ps/test.toml:2: supervisor.metrics_listen:"), "{text}");
        assert!(text.contains("socket address"), "{text}");
        let ok = parse("[supervisor]\nmetrics_listen = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(ok.supervisor.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn zero_timeouts_are_refused_in_the_defaults_as_in_a_plugin_s_entry() {
        let text = "[supervisor.defaults]\ntier = \"none\"\nhandshake_timeout = \"0s\"\ncall_timeout = \"0s\"\n";
        let err = parse(text).unwrap_err().to_string();
        for key in ["3: supervisor.defaults.handshake_timeout", "4: supervisor.defaults.call_timeout"] {
            assert!(err.contains(&format!("/etc/ps/test.toml:{key}: must be longer than zero")), "{err}");
        }
    }

    #[test]
    fn the_supervisor_s_directories_must_be_named() {
        let text = "[supervisor]\npolicies_dir = \"\"\nstate_dir = \"\"\nruntime_dir = \"\"\n";
        let err = parse(text).unwrap_err().to_string();
        for key in ["2: supervisor.policies_dir", "3: supervisor.state_dir", "4: supervisor.runtime_dir"] {
            assert!(err.contains(&format!("/etc/ps/test.toml:{key}: must not be empty")), "{err}");
        }
    }

    #[test]
    fn a_size_of_the_wrong_type_says_what_was_given_and_what_a_size_is() {
        let entry = "[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\n";
        let cases = [
            ("max_request_bytes = -1\n", "plugin[0].max_request_bytes: -1 bytes: a size cannot be negative"),
            (
                "max_response_bytes = []\n",
                "plugin[0].max_response_bytes: invalid type: sequence, expected a size such as \"128M\" or a number of bytes",
            ),
            (
                "[plugin.quota]\nmemory_max = 1.5\n",
                "plugin[0].quota.memory_max: invalid type: floating point `1.5`, expected a size such as \"128M\"",
            ),
        ];
        for (extra, expected) in cases {
            let err = parse(&format!("{entry}{extra}")).unwrap_err().to_string();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        let ok = parse(&format!("{entry}max_request_bytes = 1024\n[plugin.quota]\nmemory_max = \"64M\"\n"));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn a_plugin_config_value_json_cannot_carry_is_refused_where_it_is() {
        let text = "[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\n[plugin.config]\nx = nan\n\
                    [plugin.config.deep]\nlist = [1.0, -inf]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("/etc/ps/test.toml:5: plugin[0].config.x: NaN cannot be given to a plugin"), "{err}");
        assert!(err.contains("plugin[0].config.deep.list[1]: -inf cannot be given to a plugin"), "{err}");
        assert!(parse("[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\n[plugin.config]\nx = 1.5\n").is_ok());
    }

    #[test]
    fn a_default_tier_at_fault_is_said_once_where_it_is_set() {
        let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
        let two =
            "[[plugin]]\nname = \"a\"\nbinary = \"/bin/true\"\n[[plugin]]\nname = \"b\"\nbinary = \"/bin/true\"\n";
        let text = format!("[supervisor]\npolicies_dir = {policies:?}\n[supervisor.defaults]\ntier = \"L9\"\n{two}");
        let problems: Vec<_> = parse(&text).unwrap_err().to_string().lines().map(str::to_owned).collect();
        let tier: Vec<_> = problems.iter().filter(|l| l.contains("tier")).collect();
        assert_eq!(tier.len(), 1, "{problems:?}");
        assert!(tier[0].starts_with("/etc/ps/test.toml:4: supervisor.defaults.tier: unknown tier \"L9\""), "{tier:?}");
        // A plugin's own tier is at fault in its entry.
        let own = format!(
            "[supervisor]\npolicies_dir = {policies:?}\n[supervisor.defaults]\ntier = \"L1\"\n{two}tier = \"L9\"\n"
        );
        let err = parse(&own).unwrap_err().to_string();
        assert!(err.contains("/etc/ps/test.toml:11: plugin[1].tier: unknown tier \"L9\""), "{err}");
    }

    #[test]
    fn bad_unit_is_reported_with_the_expected_form() {
        let err = parse("[supervisor.defaults]\ncall_timeout = \"soon\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/ps/test.toml:2: supervisor.defaults.call_timeout:"), "{text}");
        assert!(text.contains("\"5s\""), "{text}");
    }

    #[test]
    fn missing_binary_and_duplicate_name_are_all_reported() {
        let text = "[[plugin]]\nname = \"echo\"\nbinary = \"/nonexistent/echo\"\n\n[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\n";
        let err = parse(text).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 2, "{err}");
        assert_eq!(problems[0].line, Some(3));
        assert_eq!(problems[0].key, "plugin[0].binary");
        assert!(problems[0].message.contains("/nonexistent/echo"));
        assert_eq!(problems[1].line, Some(6));
        assert_eq!(problems[1].key, "plugin[1].name");
        assert!(problems[1].message.contains("duplicate plugin name \"echo\""));
    }

    #[test]
    fn a_duplicate_key_is_named() {
        let err = parse("[supervisor]\nlog_lines = 1\nlog_lines = 2\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/ps/test.toml:3: log_lines: duplicate key"), "{err}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let err = parse("[[plugin]\nname = \"x\"\n").unwrap_err();
        assert!(err.to_string().starts_with("/etc/ps/test.toml:1:"), "{err}");
    }

    #[test]
    fn bad_names_and_ranges_are_refused() {
        let err = parse("[[plugin]]\nname = \"../etc\"\nbinary = \"/bin/true\"\nreplicas = 0\n").unwrap_err();
        let keys: Vec<_> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["plugin[0].name", "plugin[0].replicas"]);
    }

    #[test]
    fn one_plugin_may_run_a_thousand_replicas_and_no_more_than_the_cap() {
        let entry = |n: u32| format!("[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\nreplicas = {n}\n");
        assert_eq!(parse(&entry(1000)).unwrap().plugins[0].replicas, 1000);
        let most = super::super::MAX_REPLICAS;
        assert_eq!(
            problems(&entry(most + 1)),
            [("plugin[0].replicas".to_owned(), format!("replicas must be between 1 and {most}, not {}", most + 1))]
        );
    }

    /// The (key, message) of each problem in `text`.
    fn problems(text: &str) -> Vec<(String, String)> {
        let err = parse(text).unwrap_err();
        err.problems().iter().map(|p| (p.key.clone(), p.message.clone())).collect()
    }

    #[test]
    fn plugin_names_that_would_be_cgroup_control_files_are_refused() {
        for name in ["cgroup.procs", "memory.max", "pids.max", "cpu.weight"] {
            let found = problems(&format!("[[plugin]]\nname = {name:?}\nbinary = \"/bin/true\"\n"));
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].0, "plugin[0].name");
            assert!(found[0].1.contains("looks like a control file name"), "{found:?}");
        }
    }

    #[test]
    fn quotas_the_kernel_would_refuse_are_refused() {
        let found = problems("[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\n[plugin.quota]\npids_max = 4194305\n");
        assert_eq!(
            found,
            [(
                "plugin[0].quota".to_owned(),
                "invalid limit pids_max: 4194305 tasks is above the kernel's maximum of 4194304".to_owned()
            )]
        );
        let found =
            problems("[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\n[plugin.quota]\nmemory_max = \"9000000T\"\n");
        assert_eq!(found[0].0, "plugin[0].quota");
        assert!(found[0].1.starts_with("invalid limit memory_max"), "{found:?}");
        parse("[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\n[plugin.quota]\npids_max = 4194304\n").unwrap();
    }

    #[test]
    fn the_subtree_name_must_be_one_directory_and_the_parent_stay_in_the_cgroup_filesystem() {
        for (name, why) in [("..", "starts with a dot"), ("a/b", "only ASCII letters"), ("", "empty")] {
            let found = problems(&format!("[supervisor.cgroup]\nname = {name:?}\n"));
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].0, "supervisor.cgroup.name");
            assert!(found[0].1.contains(why), "{name:?}: {found:?}");
        }
        for parent in ["/../../../../tmp/x", "relative/x"] {
            let found = problems(&format!("[supervisor.cgroup]\nparent = {parent:?}\n"));
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].0, "supervisor.cgroup.parent");
            assert!(found[0].1.starts_with(&format!("invalid parent name {parent:?}")), "{found:?}");
        }
        parse("[supervisor.cgroup]\nname = \"sup\"\nparent = \"/system.slice/x.service\"\n").unwrap();
    }

    #[test]
    fn buffers_are_bounded() {
        let text = "[supervisor]\nlog_lines = 1000000000000\nevent_history = 1000000000000\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains("test.toml:2: supervisor.log_lines: 1000000000000 is more than the 10000 kept at most"),
            "{err}"
        );
        assert!(err.contains("test.toml:3: supervisor.event_history: 1000000000000 is more than the 100000"), "{err}");
        parse("[supervisor]\nlog_lines = 10000\nevent_history = 100000\n").unwrap();
    }

    #[test]
    fn absurd_configs_are_refused_before_the_expensive_checks() {
        let entry = "[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\n";
        let many = entry.repeat(super::super::MAX_PLUGINS + 1);
        let err = parse(&many).unwrap_err();
        assert_eq!(err.problems().len(), 1, "refused before the duplicate names are looked at: {err}");
        let text = err.to_string();
        assert!(
            text.starts_with("/etc/ps/test.toml:3073: plugin[1024]: 1025 plugins; a config may have at most 1024"),
            "{text}"
        );
        let huge = format!("# {}\n", "x".repeat(super::super::MAX_CONFIG_BYTES));
        let text = parse(&huge).unwrap_err().to_string();
        assert!(text.starts_with("/etc/ps/test.toml: (size): the config is 41943"), "{text}");
        assert!(text.ends_with(" bytes; at most 4 MiB is read"), "{text}");
        // A file is refused by its size, before it is read.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        std::fs::write(&path, &huge).unwrap();
        let text = load::load(&path).unwrap_err().to_string();
        assert!(text.ends_with("big.toml: (size): the config is 4194307 bytes; at most 4 MiB is read"), "{text}");
    }

    #[test]
    fn a_valid_config_gets_defaults_and_resolved_paths() {
        let c =
            parse("[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\n[plugin.config]\ngreeting = \"hi\"\nn = 3\n")
                .unwrap();
        let spec = &c.specs()[0];
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.config_json, r#"{"greeting":"hi","n":3}"#);
        assert_eq!(spec.handshake_timeout, std::time::Duration::from_secs(5));
        // Relative binaries resolve against the config file's directory.
        let rel = load::parse(
            "[[plugin]]\nname = \"t\"\nbinary = \"../bin/true\"\ntier = \"none\"\n[supervisor.sandbox]\nallow_unsandboxed = true\n",
            Path::new("/etc/test.toml"),
        );
        assert_eq!(rel.unwrap().specs()[0].binary, Path::new("/etc/../bin/true"));
    }

    #[test]
    fn a_network_namespace_needs_a_sandbox_tier() {
        let err = parse("[[plugin]]\nname = \"echo\"\nbinary = \"/bin/true\"\nnetwork_namespace = true\n").unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 1, "{err}");
        assert_eq!(problems[0].key, "plugin[0].network_namespace");
        assert!(problems[0].message.contains("tier \"none\" has no namespaces"), "{err}");
    }

    const PLUGIN: &str = "binary = \"/bin/true\"\ntier = \"none\"\n";

    #[test]
    fn callers_resolve_to_numbers_at_load() {
        use crate::routing::callers::Rule;
        let text = format!(
            "[[plugin]]\nname = \"auth\"\n{PLUGIN}[[plugin]]\nname = \"a\"\n{PLUGIN}callers = [\"uid:root\", \"uid:1000\", \"gid:root\", \"plugin:auth\"]\n"
        );
        let specs = parse(&text).unwrap().specs();
        assert_eq!(specs[0].callers, None, "no key: everyone who can open gateway.sock");
        let rules = specs[1].callers.as_ref().unwrap();
        assert_eq!(rules.0, [Rule::Uid(0), Rule::Uid(1000), Rule::Gid(0), Rule::Plugin("auth".into())]);
    }

    #[test]
    fn calls_name_configured_plugins() {
        let text = format!(
            "[[plugin]]\nname = \"auth\"\n{PLUGIN}[[plugin]]\nname = \"a\"\n{PLUGIN}calls = [\"auth\", \"ghost\"]\n"
        );
        let err = parse(&text).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 1, "{err}");
        assert_eq!(problems[0].key, "plugin[1].calls[1]");
        assert_eq!(problems[0].message, "plugin \"a\": calls entry \"ghost\": no plugin of that name is configured");
        let own = parse(&text.replace("\"ghost\"", "\"a\"")).unwrap_err();
        assert_eq!(own.problems()[0].message, "plugin \"a\": calls entry \"a\": a plugin may not call itself");
        let specs = parse(&text.replace(", \"ghost\"", "")).unwrap().specs();
        assert_eq!((specs[0].calls.as_slice(), specs[1].calls.as_slice()), (&[][..], &["auth".to_owned()][..]));
    }

    #[test]
    fn a_plugin_callers_entry_does_not_depend_on_uids_being_assigned() {
        let text = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\nuid_range = [70000, 70000]\n[[plugin]]\nname = \"auth\"\n{PLUGIN}[[plugin]]\nname = \"a\"\n{PLUGIN}callers = [\"plugin:auth\"]\n"
        );
        let err = load::parse(&text, Path::new("/etc/ps/test.toml")).unwrap_err().to_string();
        assert!(err.contains("uid_range [70000, 70000] is too small for 2 plugins"), "{err}");
        assert!(!err.contains("callers"), "auth is there; only the range is wrong: {err}");
    }

    #[test]
    fn a_callers_entry_that_does_not_resolve_names_the_plugin_and_the_entry() {
        let text = format!(
            "[[plugin]]\nname = \"host\"\n{PLUGIN}uid = 1000\n[[plugin]]\nname = \"a\"\n{PLUGIN}callers = [\n  \"uid:1\",\n  \"uid:no-such-user-x\",\n  \"gid:no-such-group-x\",\n  \"plugin:ghost\",\n  \"plugin:host\",\n  \"everyone\",\n]\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        for expected in [
            ":12: plugin[1].callers[1]: plugin \"a\": callers entry \"uid:no-such-user-x\": no such user \"no-such-user-x\"",
            ":13: plugin[1].callers[2]: plugin \"a\": callers entry \"gid:no-such-group-x\": no such group",
            ":14: plugin[1].callers[3]: plugin \"a\": callers entry \"plugin:ghost\": no plugin is named \"ghost\"",
            ":15: plugin[1].callers[4]: plugin \"a\": callers entry \"plugin:host\": plugin \"host\" runs as a host account",
            ":16: plugin[1].callers[5]: plugin \"a\": callers entry \"everyone\" is not uid:USER, gid:GROUP or plugin:NAME",
        ] {
            assert!(err.contains(expected), "{err}\nshould contain {expected}");
        }
        assert!(!err.contains("callers[0]"), "{err}");
    }

    #[test]
    fn services_are_full_names_and_none_of_the_supervisors_own() {
        let good = format!("[[plugin]]\nname = \"a\"\nservices = [\"echo.v1.Echo\", \"Bare\"]\n{PLUGIN}");
        let specs = parse(&good).unwrap().specs();
        // Kept as a set: sorted, each once.
        assert_eq!(specs[0].services.as_deref(), Some(&["Bare".to_owned(), "echo.v1.Echo".to_owned()][..]));
        assert_eq!(parse(&format!("[[plugin]]\nname = \"a\"\n{PLUGIN}")).unwrap().specs()[0].services, None);
        let bad = format!(
            "[[plugin]]\nname = \"a\"\nservices = [\"echo.v1.Echo\", \"a..b\", \"grpc.health.v1.Health\"]\n{PLUGIN}"
        );
        let err = parse(&bad).unwrap_err().to_string();
        for expected in [
            "plugin[0].services[1]: service \"a..b\" which is not a protobuf full name",
            "plugin[0].services[2]: service \"grpc.health.v1.Health\", which is the supervisor's own",
        ] {
            assert!(err.contains(expected), "{err}\nshould contain {expected}");
        }
        assert!(!err.contains("services[0]"), "{err}");
    }

    #[test]
    fn declared_name_is_a_plugin_name_and_defaults_to_name() {
        let text =
            format!("[[plugin]]\nname = \"a\"\n{PLUGIN}[[plugin]]\nname = \"b\"\ndeclared_name = \"a\"\n{PLUGIN}");
        let specs = parse(&text).unwrap().specs();
        assert_eq!((specs[0].declared_name.as_str(), specs[1].declared_name.as_str()), ("a", "a"));
        let bad = format!("[[plugin]]\nname = \"b\"\ndeclared_name = \"a/b\"\n{PLUGIN}");
        assert!(
            parse(&bad).unwrap_err().to_string().contains("plugin[0].declared_name: plugin name \"a/b\" may use only")
        );
    }

    #[test]
    fn a_name_longer_than_any_plugins_is_shown_cut_with_its_length() {
        use super::shown_name;
        assert_eq!(shown_name("echo"), "\"echo\"");
        let long = "é".repeat(50_000);
        let shown = shown_name(&long);
        assert!(shown.ends_with("\"... (100000 bytes)") && shown.len() < 100, "{shown}");
        assert_eq!(shown_name(&"a".repeat(64)), format!("{:?}", "a".repeat(64)));
    }
}
