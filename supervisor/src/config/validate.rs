//! The checks a parsed config must pass before anything runs: names,
//! binaries, counts and ranges that serde's types cannot express.

use std::os::unix::fs::PermissionsExt;

use std::sync::Arc;

use super::load::{Problems, Reach, Seg, counts};
use super::{Backoff, Config, IntegritySpec, PluginConfig, PluginSpec};
use crate::contract;
use crate::integrity::{PublicKey, Sha256Digest};

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
    None
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
        if plugin.replicas == 0 || plugin.replicas > 64 {
            p.at(&at("replicas"), format!("replicas must be between 1 and 64, not {}", plugin.replicas));
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
        for (j, arg) in plugin.args.iter().enumerate() {
            if arg.contains('\0') {
                p.at(
                    &[Seg::Key("plugin"), Seg::Index(i), Seg::Key("args"), Seg::Index(j)],
                    "arguments cannot contain NUL characters",
                );
            }
        }
        if let Some(b) = &plugin.backoff {
            check_backoff(b, &at("backoff"), p);
        }
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
        if tier == super::UNSANDBOXED {
            if !config.supervisor.sandbox.allow_unsandboxed {
                p.at(&at("tier"), format!("plugin {:?}: tier \"none\" runs it unsandboxed; set [supervisor.sandbox] allow_unsandboxed = true to permit that", plugin.name));
            }
        } else if let Some(set) = &tiers
            && set.get(&tier).is_none()
        {
            let known: Vec<&str> = set.iter().map(|t| t.name.as_str()).collect();
            p.at(
                &at("tier"),
                format!(
                    "unknown tier {tier:?} (in {}: {})",
                    config.resolve(&config.supervisor.policies_dir).display(),
                    known.join(", ")
                ),
            );
        }
        check_quota(&plugin.quota, &at("quota"), p);
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
        specs.push(spec);
    }
    (specs, tiers)
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

fn check_quota(q: &super::QuotaConfig, at: &[Seg<'_>], p: &mut Problems<'_>) {
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
        data_dir: p.data_dir.as_ref().map(|d| config.resolve(d)),
        landlock_required: p.landlock_required,
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
}
