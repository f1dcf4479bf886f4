//! What a config file, read again, would change in a running supervisor: plugins
//! added, removed and changed (which keys, and whether each applies to the running
//! processes or needs a new revision), binaries rebuilt in place, and supervisor
//! settings that only a restart applies. `supervisorctl reread` prints it.

use std::path::Path;

use super::{Config, ConfigError, PluginSpec, SupervisorSection};

/// Why the config could not be read again; what runs is untouched.
#[derive(Debug, thiserror::Error)]
pub enum RereadError {
    #[error("the supervisor was not started from a config file: there is nothing to read again")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the config again ended abnormally: {0}")]
    Aborted(String),
}

/// How a changed key reaches the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// To the running instances, without a new process.
    Live,
    /// Through a new revision (a hot reload).
    NewRevision,
}

/// One key of a plugin entry that differs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyChange {
    pub key: &'static str,
    pub apply: Apply,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginChange {
    pub name: String,
    pub keys: Vec<KeyChange>,
}

impl PluginChange {
    /// Every key applies live: no new process is needed.
    pub fn live_only(&self) -> bool {
        self.keys.iter().all(|k| k.apply == Apply::Live)
    }
}

/// Everything that differs, each list in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<PluginChange>,
    /// `[supervisor]` keys that differ, which only a restart of the supervisor applies.
    pub restart_only: Vec<&'static str>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty() && self.restart_only.is_empty()
    }
}

/// A plugin as it runs: the entry its serving revision was made from, the SHA-256 of the
/// image it executes, and the services it declared at its last handshake (None before
/// its first).
pub struct Running<'a> {
    pub spec: &'a PluginSpec,
    pub sha256: Option<&'a str>,
    pub declared: Option<&'a [String]>,
}

/// Compares what runs (plugins as their serving revisions run, under the config the
/// supervisor `started` with) with `next` (a config loaded, so validated, whole). `digest` hashes
/// a binary as it is on disk now (None when it cannot be read: the reload that would
/// follow reports why), so a binary rebuilt in place under the same path counts as a
/// change.
pub fn changes<'a>(
    started: &Config,
    running: impl IntoIterator<Item = Running<'a>>,
    next: &Config,
    digest: impl Fn(&Path) -> Option<String>,
) -> Changes {
    let running: Vec<Running<'a>> = running.into_iter().collect();
    let next_specs = next.specs();
    let mut restart_only = section_changes(&started.supervisor, &next.supervisor);
    // The sandbox compiles its tiers once, at start: an edited tier file reaches no
    // plugin before a restart.
    if format!("{:?}", started.tiers()) != format!("{:?}", next.tiers()) && !restart_only.contains(&"policies_dir") {
        restart_only.push("tiers");
    }
    let mut out = Changes { restart_only, ..Changes::default() };
    for spec in &next_specs {
        match running.iter().find(|r| r.spec.name == spec.name) {
            None => out.added.push(spec.name.clone()),
            Some(r) => {
                let keys = plugin_changes(r, spec, &digest);
                if !keys.is_empty() {
                    out.changed.push(PluginChange { name: spec.name.clone(), keys });
                }
            }
        }
    }
    out.removed = running
        .iter()
        .filter(|r| !next_specs.iter().any(|s| s.name == r.spec.name))
        .map(|r| r.spec.name.clone())
        .collect();
    out.added.sort();
    out.removed.sort();
    out.changed.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What differs between a plugin as it runs and its entry `spec`: the keys, and its
/// binary when rebuilt in place (see [`changes`]).
pub fn plugin_changes(r: &Running<'_>, spec: &PluginSpec, digest: impl Fn(&Path) -> Option<String>) -> Vec<KeyChange> {
    let mut keys = spec_changes(r.spec, spec);
    // A list that still admits every service the plugin declared changes nothing the
    // running processes did: it is checked at their next handshake. One that drops a
    // declared service needs a new revision, whose handshake then says so, while the one
    // serving keeps its calls. So does any list while nothing was declared yet: a plugin
    // refused for its services waits for the operator, and a start under way checks the
    // list it began with; a new revision starts afresh on the new one.
    if admits(spec.services.as_deref(), r.declared)
        && let Some(k) = keys.iter_mut().find(|k| k.key == "services")
    {
        k.apply = Apply::Live;
    }
    let rebuilt = r.spec.binary == spec.binary
        && r.sha256.is_some_and(|now| digest(&spec.binary).is_some_and(|disk| disk != now));
    if rebuilt {
        keys.insert(0, KeyChange { key: "binary (rebuilt in place)", apply: Apply::NewRevision });
    }
    keys
}

/// Whether an entry's `services` is known to let a plugin declare what it `declared`
/// (nothing known before its first accepted handshake).
fn admits(services: Option<&[String]>, declared: Option<&[String]>) -> bool {
    match (services, declared) {
        (None, Some(_)) => true,
        (Some(allowed), Some(declared)) => declared.iter().all(|s| allowed.contains(s)),
        (_, None) => false,
    }
}

/// The keys of a plugin entry (after defaults) that differ, named as the config names them.
fn spec_changes(a: &PluginSpec, b: &PluginSpec) -> Vec<KeyChange> {
    use Apply::{Live, NewRevision};
    let differs = [
        ("binary", a.binary != b.binary, NewRevision),
        ("args", a.args != b.args, NewRevision),
        ("env", a.env != b.env, NewRevision),
        ("config", a.config_json != b.config_json, NewRevision),
        ("replicas", a.replicas != b.replicas, NewRevision),
        // Only read when the supervisor starts.
        ("autostart", a.autostart != b.autostart, Live),
        ("restart", a.restart != b.restart, NewRevision),
        ("backoff", a.backoff != b.backoff, NewRevision),
        ("handshake_timeout", a.handshake_timeout != b.handshake_timeout, NewRevision),
        // Read by the routing stack at each call.
        ("call_timeout", a.call_timeout != b.call_timeout, Live),
        ("stop_timeout", a.stop_timeout != b.stop_timeout, NewRevision),
        ("sha256", a.integrity.sha256 != b.integrity.sha256, NewRevision),
        ("require_signature", a.integrity.require_signature != b.integrity.require_signature, NewRevision),
        ("trusted_keys", a.integrity.trusted_keys != b.integrity.trusted_keys, NewRevision),
        ("version", a.version_req != b.version_req, NewRevision),
        ("contract", a.contract.as_deref() != b.contract.as_deref(), NewRevision),
        ("tier", a.tier != b.tier, NewRevision),
        // Written into the running instances' cgroups.
        ("quota", a.quota != b.quota, Live),
        ("user", a.ids != b.ids, NewRevision),
        ("data_dir", a.data_dir != b.data_dir, NewRevision),
        ("landlock_required", a.landlock_required != b.landlock_required, NewRevision),
        ("network_namespace", a.network_namespace != b.network_namespace, NewRevision),
        // Read when a change is rolled out.
        ("rollout", a.rollout != b.rollout, Live),
        // Read by the sampler at each judgement.
        ("leaks", a.leaks != b.leaks, Live),
        // Set in the plugin's log buffer.
        ("log_rate", a.log_limit.rate != b.log_limit.rate, Live),
        ("log_burst", a.log_limit.burst != b.log_limit.burst, Live),
        // Read by the gateway at each call.
        ("callers", a.callers != b.callers, Live),
        // Read by the host channel at each call.
        ("calls", a.calls != b.calls, Live),
        ("declared_name", a.declared_name != b.declared_name, NewRevision),
        // Checked at the handshake; in place when the running processes' declared
        // services are within it (`plugin_changes`).
        ("services", a.services != b.services, NewRevision),
        // Read by the routing stack at each call.
        ("max_in_flight", a.protection.max_in_flight != b.protection.max_in_flight, Live),
        ("max_queued", a.protection.max_queued != b.protection.max_queued, Live),
        ("max_request_bytes", a.protection.max_request_bytes != b.protection.max_request_bytes, Live),
        ("max_response_bytes", a.protection.max_response_bytes != b.protection.max_response_bytes, Live),
        ("breaker", a.protection.breaker != b.protection.breaker, Live),
    ];
    differs.into_iter().filter(|(_, d, _)| *d).map(|(key, _, apply)| KeyChange { key, apply }).collect()
}

/// `base` with every key of `from` that applies live ([`spec_changes`]'s `Live` ones):
/// what a revision other than the serving one (a canary, a reload's new one) takes from an
/// entry whose live keys changed, keeping the keys that make it a revision of its own. A
/// canary left with the old values would bring them back when promoted: a caller the
/// operator removed from `callers` could call again. `services` stays the revision's own:
/// in place, it is only checked against the serving revision's declared services.
pub fn with_live_keys(base: &PluginSpec, from: &PluginSpec) -> PluginSpec {
    PluginSpec {
        autostart: from.autostart,
        call_timeout: from.call_timeout,
        quota: from.quota.clone(),
        rollout: from.rollout.clone(),
        leaks: from.leaks.clone(),
        log_limit: from.log_limit,
        callers: from.callers.clone(),
        calls: from.calls.clone(),
        protection: from.protection,
        ..base.clone()
    }
}

/// What makes a revision what it is: every key that may need a new process, and the digest
/// of the binary it runs. A rolled-back revision is remembered by it, so that `update`
/// does not try the same entry and binary again.
pub fn fingerprint(spec: &PluginSpec, sha256: &str) -> String {
    let keys = format!(
        "{:?}",
        (
            (&spec.binary, &spec.args, &spec.env, &spec.config_json, spec.replicas, spec.restart, spec.backoff),
            (spec.handshake_timeout, spec.stop_timeout, &spec.integrity.sha256, spec.integrity.require_signature),
            (&spec.integrity.trusted_keys, &spec.version_req, spec.contract.as_deref(), &spec.tier, spec.ids),
            (&spec.data_dir, spec.landlock_required, spec.network_namespace),
        )
    );
    // Only a `declared_name` other than the name is added, so that the fingerprints of
    // entries without one stay what earlier versions saved.
    let declared =
        if spec.declared_name == spec.name { String::new() } else { format!("\ndeclared {}", spec.declared_name) };
    // Likewise `services`, only when set.
    let services = spec.services.as_ref().map_or(String::new(), |s| format!("\nservices {s:?}"));
    crate::integrity::Sha256Digest::of_bytes(format!("{keys}\n{sha256}{declared}{services}").as_bytes()).to_hex()
}

/// `[supervisor]` keys that differ and are fixed for the supervisor's life: its sockets,
/// cgroup subtree, state and buffers are set up once. The keys that feed plugin entries
/// (`defaults`, `trusted_keys`, `require_signatures*`) are not here: their effect shows
/// in the plugins they change.
fn section_changes(a: &SupervisorSection, b: &SupervisorSection) -> Vec<&'static str> {
    // The sections' types compare by their Debug form: every field is in it, and none of
    // them holds anything that prints the same for different values.
    fn ne(a: &impl std::fmt::Debug, b: &impl std::fmt::Debug) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let differs = [
        ("runtime_dir", ne(&a.runtime_dir, &b.runtime_dir)),
        ("control_socket_mode", ne(&a.control_socket_mode, &b.control_socket_mode)),
        ("gateway_socket_mode", ne(&a.gateway_socket_mode, &b.gateway_socket_mode)),
        ("control_allowed_uids", ne(&a.control_allowed_uids, &b.control_allowed_uids)),
        ("metrics_listen", ne(&a.metrics_listen, &b.metrics_listen)),
        ("log_lines", ne(&a.log_lines, &b.log_lines)),
        ("event_history", ne(&a.event_history, &b.event_history)),
        ("leak_window", ne(&a.leak_window, &b.leak_window)),
        ("policies_dir", ne(&a.policies_dir, &b.policies_dir)),
        ("state_dir", ne(&a.state_dir, &b.state_dir)),
        ("cgroup", ne(&a.cgroup, &b.cgroup)),
        ("sandbox", ne(&a.sandbox, &b.sandbox)),
        ("gateway", ne(&a.gateway, &b.gateway)),
    ];
    differs.into_iter().filter(|(_, d)| *d).map(|(key, _)| key).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both configs in one directory, so that their binary is the same file.
    fn load_both(before: &str, after: &str) -> (Config, Config) {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("p");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let load = |file: &str, text: &str| {
            let path = dir.path().join(file);
            std::fs::write(&path, text).unwrap();
            Config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"))
        };
        (load("before.toml", before), load("after.toml", after))
    }

    const HEAD: &str = "[supervisor]\nstate_dir = \"s\"\n[supervisor.sandbox]\nallow_unsandboxed = true\n";

    fn entry(name: &str, extra: &str) -> String {
        format!("[[plugin]]\nname = \"{name}\"\nbinary = \"p\"\ntier = \"none\"\n{extra}\n")
    }

    fn diff(before: &str, after: &str, rebuilt: bool) -> Changes {
        diff_declared(before, after, rebuilt, None)
    }

    /// [`diff`], with every running plugin having declared `declared` at its handshake.
    fn diff_declared(before: &str, after: &str, rebuilt: bool, declared: Option<&[String]>) -> Changes {
        let (old, new) = load_both(before, after);
        let specs = old.specs();
        let running = specs.iter().map(|spec| Running { spec, sha256: Some("old"), declared });
        changes(&old, running, &new, |_| Some(if rebuilt { "new" } else { "old" }.to_owned()))
    }

    fn keys(c: &Changes, name: &str) -> Vec<(&'static str, Apply)> {
        let p = c.changed.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("{name} unchanged: {c:?}"));
        p.keys.iter().map(|k| (k.key, k.apply)).collect()
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let text = format!("{HEAD}{}{}", entry("a", ""), entry("b", "replicas = 2"));
        assert_eq!(diff(&text, &text, false), Changes::default());
        assert!(diff(&text, &text, false).is_empty());
    }

    #[test]
    fn plugins_added_and_removed_are_named_in_order() {
        let before = format!("{HEAD}{}{}", entry("a", ""), entry("gone", ""));
        let after = format!("{HEAD}{}{}{}", entry("z", ""), entry("a", ""), entry("new", ""));
        let c = diff(&before, &after, false);
        assert_eq!(c.added, ["new", "z"]);
        assert_eq!(c.removed, ["gone"]);
        assert!(c.changed.is_empty(), "{c:?}");
    }

    #[test]
    fn each_changed_key_is_named_with_how_it_applies() {
        let before = format!("{HEAD}{}", entry("a", "call_timeout = \"5s\"\nargs = [\"x\"]"));
        let after = format!(
            "{HEAD}{}",
            entry("a", "call_timeout = \"9s\"\nargs = [\"y\"]\nreplicas = 3\n[plugin.quota]\nmemory_max = \"64M\"")
        );
        let c = diff(&before, &after, false);
        assert_eq!(
            keys(&c, "a"),
            [
                ("args", Apply::NewRevision),
                ("replicas", Apply::NewRevision),
                ("call_timeout", Apply::Live),
                ("quota", Apply::Live)
            ]
        );
        assert!(!c.changed[0].live_only());
        let live = diff(&before, &before.replace("5s", "7s"), false);
        assert!(live.changed[0].live_only(), "{live:?}");
    }

    #[test]
    fn a_leak_watch_changed_applies_live_and_makes_no_new_revision() {
        let before = format!("{HEAD}{}", entry("a", "call_timeout = \"5s\""));
        let after = before.replace("call_timeout = \"5s\"", "call_timeout = \"5s\"\n[plugin.leaks]\nwindow = \"1m\"");
        let c = diff(&before, &after, false);
        assert_eq!(keys(&c, "a"), [("leaks", Apply::Live)]);
        assert!(c.changed[0].live_only());
        let (old, new) = load_both(&before, &after);
        assert_eq!(fingerprint(&old.specs()[0], "d"), fingerprint(&new.specs()[0], "d"));
        let c =
            diff(&before, &before.replace("state_dir = \"s\"\n", "state_dir = \"s\"\nleak_window = \"2h\"\n"), false);
        assert_eq!(c.restart_only, ["leak_window"]);
    }

    #[test]
    fn calls_change_in_place() {
        let head = format!("{HEAD}{}", entry("b", ""));
        let before = format!("{head}{}", entry("a", "calls = [\"b\"]"));
        let c = diff(&before, &format!("{head}{}", entry("a", "")), false);
        assert_eq!(keys(&c, "a"), [("calls", Apply::Live)]);
        assert!(c.changed[0].live_only());
    }

    #[test]
    fn callers_change_in_place_and_a_declared_name_through_a_new_revision() {
        let before = format!("{HEAD}{}", entry("a", "callers = [\"uid:1\"]"));
        let c = diff(&before, &before.replace("uid:1", "uid:2"), false);
        assert_eq!(keys(&c, "a"), [("callers", Apply::Live)]);
        let c = diff(&before, &format!("{HEAD}{}", entry("a", "")), false);
        assert_eq!(keys(&c, "a"), [("callers", Apply::Live)], "no key: open to everyone again");
        let c = diff(&before, &format!("{before}declared_name = \"b\"\n"), false);
        assert_eq!(keys(&c, "a"), [("declared_name", Apply::NewRevision)]);
    }

    #[test]
    fn services_change_in_place_while_they_admit_what_runs_and_otherwise_through_a_new_revision() {
        let before = format!("{HEAD}{}", entry("a", ""));
        let after = format!("{before}services = [\"echo.v1.Echo\"]\n");
        let echo = ["echo.v1.Echo".to_owned()];
        let both = ["echo.v1.Echo".to_owned(), "b.v1.B".to_owned()];
        let apply = |before: &str, after: &str, declared: Option<&[String]>| {
            keys(&diff_declared(before, after, false, declared), "a")
        };
        // What runs declared only what the new list admits: the next handshake checks it.
        assert_eq!(apply(&before, &after, Some(&echo)), [("services", Apply::Live)]);
        // Nothing declared yet (never started, refused, or starting): a new revision, which
        // starts afresh on the new list.
        assert_eq!(apply(&before, &after, None), [("services", Apply::NewRevision)]);
        assert_eq!(apply(&after, &before, None), [("services", Apply::NewRevision)], "the key removed, likewise");
        // A service the list drops: a new revision, whose handshake refuses it.
        assert_eq!(
            apply(&before, &after, Some(&both)),
            [("services", Apply::NewRevision)],
            "b.v1.B runs and is no longer admitted"
        );
        let narrower = format!("{before}services = []\n");
        assert_eq!(apply(&after, &narrower, Some(&echo)), [("services", Apply::NewRevision)]);
        // Widened, or the key removed: whatever runs is admitted.
        let wider = format!("{before}services = [\"echo.v1.Echo\", \"b.v1.B\"]\n");
        assert_eq!(apply(&after, &wider, Some(&echo)), [("services", Apply::Live)]);
        assert_eq!(apply(&after, &before, Some(&both)), [("services", Apply::Live)]);
        // With another key that needs a process, the whole change is a new revision.
        let c = diff_declared(&before, &format!("{after}args = [\"x\"]\n"), false, Some(&echo));
        assert!(!c.changed[0].live_only(), "{c:?}");
        let (plain, listed) = load_both(&before, &after);
        let (plain, listed) = (plain.specs().remove(0), listed.specs().remove(0));
        assert_ne!(fingerprint(&plain, "d"), fingerprint(&listed, "d"));
        // A set: another order, or a name twice, is the same entry.
        let reordered = format!("{before}services = [\"b.v1.B\", \"echo.v1.Echo\"]\n");
        let same = format!("{before}services = [\"echo.v1.Echo\", \"b.v1.B\", \"echo.v1.Echo\"]\n");
        assert!(diff(&reordered, &same, false).changed.is_empty());
    }

    #[test]
    fn a_revision_of_its_own_takes_every_live_key_and_keeps_the_rest() {
        let live = "autostart = false\ncall_timeout = \"9s\"\nlog_rate = 20\nlog_burst = 5\ncallers = [\"uid:2\"]\n\
                    calls = []\nmax_in_flight = 3\nmax_queued = 1\nmax_request_bytes = \"1K\"\n\
                    max_response_bytes = \"2K\"\n[plugin.quota]\nmemory_max = \"64M\"\n[plugin.rollout]\n\
                    strategy = \"canary\"\n[plugin.leaks]\nwindow = \"1m\"\n[plugin.breaker]\nfailures = 3";
        let head = format!("{HEAD}{}", entry("b", ""));
        let (canary, file) = load_both(
            &format!("{head}{}", entry("a", "args = [\"--canary\"]\ncalls = [\"b\"]\ncallers = [\"uid:1\"]")),
            &format!("{head}{}", entry("a", live)),
        );
        let (canary, file) = (canary.specs().remove(1), file.specs().remove(1));
        let before = spec_changes(&canary, &file);
        assert!(before.iter().filter(|k| k.apply == Apply::Live).count() >= 14, "every live key differs: {before:?}");
        let merged = with_live_keys(&canary, &file);
        let left: Vec<_> = spec_changes(&merged, &file).into_iter().map(|k| (k.key, k.apply)).collect();
        assert_eq!(left, [("args", Apply::NewRevision)], "only what made it a revision of its own");
    }

    #[test]
    fn a_log_limit_changes_in_place() {
        let before = format!("{HEAD}{}", entry("a", "log_rate = 10"));
        let c = diff(&before, &format!("{HEAD}{}", entry("a", "log_rate = 20\nlog_burst = 5")), false);
        assert_eq!(keys(&c, "a"), [("log_rate", Apply::Live), ("log_burst", Apply::Live)]);
        assert!(c.changed[0].live_only(), "{c:?}");
    }

    #[test]
    fn a_default_changed_changes_the_plugins_that_take_it() {
        let before = format!("{HEAD}{}{}", entry("a", ""), entry("own", "stop_timeout = \"3s\""));
        let after = before.replace(HEAD, &format!("{HEAD}[supervisor.defaults]\nstop_timeout = \"9s\"\n"));
        let c = diff(&before, &after, false);
        assert_eq!(keys(&c, "a"), [("stop_timeout", Apply::NewRevision)]);
        assert_eq!(c.changed.len(), 1, "a plugin with its own value is untouched: {c:?}");
        assert!(c.restart_only.is_empty(), "defaults are not a restart-only key: {c:?}");
    }

    #[test]
    fn a_binary_rebuilt_under_the_same_path_is_a_change() {
        let text = format!("{HEAD}{}", entry("a", ""));
        let c = diff(&text, &text, true);
        assert_eq!(keys(&c, "a"), [("binary (rebuilt in place)", Apply::NewRevision)]);
    }

    #[test]
    fn a_fingerprint_changes_with_every_key_that_makes_a_new_revision_and_with_the_binary_only() {
        let base = entry("a", "args = [\"x\"]\ncall_timeout = \"5s\"");
        let edits = [
            ("args = [\"x\"]", "args = [\"y\"]", true),
            ("args = [\"x\"]", "args = [\"x\"]\nreplicas = 2", true),
            ("args = [\"x\"]", "args = [\"x\"]\nstop_timeout = \"9s\"", true),
            ("args = [\"x\"]", "args = [\"x\"]\nenv = [\"HOME\"]", true),
            ("args = [\"x\"]", "args = [\"x\"]\n[plugin.config]\nk = 1", true),
            ("call_timeout = \"5s\"", "call_timeout = \"6s\"", false),
            ("call_timeout = \"5s\"", "call_timeout = \"5s\"\n[plugin.quota]\npids_max = 9", false),
            ("call_timeout = \"5s\"", "call_timeout = \"5s\"\n[plugin.rollout]\nstrategy = \"canary\"", false),
            ("args = [\"x\"]", "args = [\"x\"]\ndeclared_name = \"b\"", true),
            ("call_timeout = \"5s\"", "call_timeout = \"5s\"\ncallers = [\"uid:7\"]", false),
        ];
        for (from, to, differs) in edits {
            let (old, new) = load_both(&format!("{HEAD}{base}"), &format!("{HEAD}{}", base.replace(from, to)));
            let (a, b) = (fingerprint(&old.specs()[0], "d1"), fingerprint(&new.specs()[0], "d1"));
            assert_eq!(a != b, differs, "{to}");
            // Whatever the entry, the same one is the same fingerprint, read again or not.
            assert_eq!(fingerprint(&new.specs()[0], "d1"), b);
        }
        let (old, _) = load_both(&format!("{HEAD}{base}"), &format!("{HEAD}{base}"));
        assert_ne!(fingerprint(&old.specs()[0], "d1"), fingerprint(&old.specs()[0], "d2"), "the binary's digest");
    }

    #[test]
    fn supervisor_settings_fixed_for_its_life_are_listed_apart() {
        let before = format!("{HEAD}{}", entry("a", ""));
        let after = before
            .replace(HEAD, &format!("{HEAD}[supervisor.gateway]\nmax_connections = 99\n"))
            .replace("state_dir = \"s\"\n", "state_dir = \"s\"\nlog_lines = 77\n");
        let c = diff(&before, &after, false);
        assert_eq!(c.restart_only, ["log_lines", "gateway"]);
        assert!(c.changed.is_empty() && c.added.is_empty() && c.removed.is_empty(), "{c:?}");
    }
}
