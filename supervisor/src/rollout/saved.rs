//! What of a rollout outlives the supervisor (kept in `state_dir` with the rest of the
//! operator's desired state): the stable revision it started from (the config text of its
//! entry, the digest of its binary, and a copy of the binary when the file was rebuilt in
//! place) and the canary's fingerprint. So the next start brings the plugin back on the
//! stable revision, never on a canary no step judged or one that was rolled back, and
//! `update` does not try a rolled-back canary again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Phase, Report, Rollout};
use crate::config::PluginSpec;
use crate::instance::{Plugin, Revision};
use crate::observe::events::EventKind;
use crate::supervisor::Shared;

/// A rollout, as kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedRollout {
    /// `running` (under way: the next start finds it interrupted), `interrupted`, or
    /// `rolled-back`.
    pub phase: Phase,
    pub stable_revision: u64,
    pub canary_revision: u64,
    pub steps: Vec<u8>,
    /// The config file the stable revision's entry was read from, and its text then.
    pub stable_config: PathBuf,
    pub stable_text: String,
    /// The SHA-256 of the binary the stable revision runs.
    pub stable_sha256: String,
    /// A copy of that binary, made when the file at its path already held another one
    /// (rebuilt in place for the canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_copy: Option<PathBuf>,
    /// The canary's [`crate::config::changes::fingerprint`].
    pub canary_fingerprint: String,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// Where stable binaries are kept during rollouts.
fn images_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("images")
}

/// The fingerprint of `rev`: its entry and the digest of the image it runs.
pub(crate) fn fingerprint_of(rev: &Revision) -> String {
    let sha = rev.image.lock().ok().and_then(|i| i.as_ref().map(|i| i.sha256.clone())).unwrap_or_default();
    crate::config::changes::fingerprint(&rev.spec(), &sha)
}

/// The fingerprint of `spec` with its binary as it is on disk now.
pub(crate) fn fingerprint_on_disk(spec: &PluginSpec) -> String {
    crate::config::changes::fingerprint(spec, &crate::integrity::sha256_on_disk(&spec.binary).unwrap_or_default())
}

/// Keeps what a restart needs to bring `stable` back; a rollout that cannot be kept runs
/// on, and the failure is said (a restart would then bring the plugin back from its file).
pub(crate) fn keep(shared: &Shared, p: &Plugin, stable: &Revision, canary: &Revision) {
    let spec = stable.spec();
    let (Some(config), Some(text)) = (spec.origin.path(), spec.origin.text()) else {
        tracing::warn!(plugin = %p.name, "the stable revision's config text is unknown; a restart brings the plugin back from its file");
        return;
    };
    let image = stable.image.lock().ok().and_then(|i| i.clone());
    let sha = image.as_ref().map(|i| i.sha256.clone()).unwrap_or_default();
    // Already kept for an earlier rollout from the same stable revision.
    let earlier = shared.state.rollout(&p.name).and_then(|s| s.stable_copy.filter(|_| s.stable_sha256 == sha));
    let mut stable_copy = earlier.filter(|c| c.exists());
    // Kept whatever the file holds now: it may be rebuilt in place at any time during the
    // rollout, and the stable revision must come back as it ran.
    if stable_copy.is_none()
        && let Some(image) = &image
    {
        let dir = images_dir(shared.state.dir());
        let to = dir.join(format!("{}-{sha}", p.name));
        // Its owner's alone, as the state is, and the copies in it (see `save_image`).
        // Under the state's hold: a supervisor shut down must not replace the copy another
        // one on the same state_dir keeps under this very name.
        let saved = shared.state.while_held(|| {
            crate::state::make_dir(&dir).and_then(|()| match std::fs::remove_file(&to) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => shared.launcher.save_image(image, &to),
            })
        });
        match saved {
            Ok(Ok(true)) => stable_copy = Some(to),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(plugin = %p.name, path = %to.display(), error = %e, "the stable binary could not be kept");
            }
            Err(e) => {
                tracing::warn!(plugin = %p.name, error = %e, "the stable binary was not kept");
                return;
            }
        }
    }
    let saved = SavedRollout {
        phase: Phase::Running,
        stable_revision: stable.number,
        canary_revision: canary.number,
        steps: canary.spec().rollout.steps.clone(),
        stable_config: config.to_owned(),
        stable_text: text.to_owned(),
        stable_sha256: sha,
        stable_copy,
        canary_fingerprint: fingerprint_of(canary),
        why: String::new(),
    };
    if let Err(e) = shared.state.set_rollout(&p.name, Some(saved)) {
        tracing::warn!(plugin = %p.name, error = %e, "the rollout could not be kept in the state file");
        let said = format!(
            "the rollout could not be kept, so a restart of the supervisor during it starts the config file's entry (the canary's): {e}"
        );
        shared.events.emit(&p.name, "", EventKind::NotSaved, said, &[]);
    }
}

/// Forgets the kept rollouts of plugins `configured` does not name (removed from the file
/// while the supervisor was down), with the stable binaries kept for them, as `update`
/// forgets a plugin it removes: a plugin of that name added back later starts from its
/// new entry, and no later restart brings back a revision the config no longer names.
pub(crate) fn forget_unconfigured(shared: &Shared, configured: &[Arc<Plugin>]) {
    let gone: Vec<(String, SavedRollout)> =
        shared.state.rollouts().into_iter().filter(|(name, _)| !configured.iter().any(|p| &p.name == name)).collect();
    for (name, saved) in gone {
        let said = format!(
            "not in the config file at start: its {} rollout (revision {} beside revision {}) and what was kept for it are forgotten",
            saved.phase, saved.canary_revision, saved.stable_revision
        );
        forget(shared, &name);
        // One that could not be written stays, said by `forget`, and is tried again at the
        // next start; meanwhile it brings nothing back, as the plugin is not configured.
        if shared.state.rollout(&name).is_none() {
            tracing::info!(plugin = %name, "{said}");
            shared.events.emit(&name, "", EventKind::Removed, said, &[]);
        }
    }
}

/// Removes kept stable binaries no kept rollout points at (left by a rollout whose record
/// was forgotten while its copy could not be removed, or written by a keep whose record
/// could not be saved).
pub(crate) fn sweep_images(shared: &Shared) {
    let dir = images_dir(shared.state.dir());
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    // By file name (`<plugin>-<sha>`): the state directory may be spelled differently
    // from the run that kept them (a symlink, another path to the config).
    let kept: std::collections::HashSet<std::ffi::OsString> =
        shared.state.rollout_copies().iter().filter_map(|c| c.file_name().map(ToOwned::to_owned)).collect();
    for entry in entries.flatten() {
        let path = entry.path();
        if !kept.contains(&entry.file_name()) {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed a kept binary no rollout needs"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "a kept binary no rollout needs could not be removed")
                }
            }
        }
    }
}

/// The rollout was rolled back, or interrupted by the operator: what is kept of it says
/// so, and why.
pub(crate) fn set_phase(shared: &Shared, plugin: &str, phase: Phase, why: &str) {
    let Some(mut saved) = shared.state.rollout(plugin) else { return };
    saved.phase = phase;
    saved.why = why.to_owned();
    if let Err(e) = shared.state.set_rollout(plugin, Some(saved)) {
        tracing::warn!(plugin, error = %e, "the rollout's end could not be kept in the state file");
        shared.events.emit(
            plugin,
            "",
            EventKind::NotSaved,
            format!("the rollout's {phase} could not be kept: {e}"),
            &[],
        );
    }
}

/// Nothing of the plugin's rollout is kept any more: the canary was promoted, or a reload
/// replaced the revisions it knew.
pub(crate) fn forget(shared: &Shared, plugin: &str) {
    let copy = shared.state.rollout(plugin).and_then(|s| s.stable_copy);
    match shared.state.set_rollout(plugin, None) {
        // The copy goes only once nothing kept points at it.
        Ok(()) => {
            if let Some(copy) = copy {
                let _ = std::fs::remove_file(copy);
            }
        }
        Err(e) => tracing::warn!(plugin, error = %e, "the rollout's end could not be kept in the state file"),
    }
}

/// A canary refused by its reload's checks never began its rollout: what was kept of the
/// plugin's rollouts before it (`before`) is kept again, and a stable binary copied for it
/// alone goes.
pub(crate) fn put_back(shared: &Shared, plugin: &str, before: Option<SavedRollout>) {
    let made = shared.state.rollout(plugin).and_then(|s| s.stable_copy);
    let still = before.as_ref().and_then(|s| s.stable_copy.clone());
    match shared.state.set_rollout(plugin, before) {
        Ok(()) => {
            if let Some(made) = made.filter(|m| Some(m) != still.as_ref()) {
                let _ = std::fs::remove_file(made);
            }
        }
        Err(e) => {
            tracing::warn!(plugin, error = %e, "the rollout kept for a refused canary could not be put back in the state file")
        }
    }
}

/// Why `update` must not try `spec` (its entry, with its binary as on disk now): it is
/// the canary last rolled back.
pub(crate) fn rolled_back_as(shared: &Shared, spec: &PluginSpec) -> Option<SavedRollout> {
    let saved = shared.state.rollout(&spec.name)?;
    (saved.phase == Phase::RolledBack && fingerprint_on_disk(spec) == saved.canary_fingerprint).then_some(saved)
}

/// Why a kept stable revision cannot be brought back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The kept entry is read from text made of it alone, which no operator wrote: its
    /// problems are said by key, without that text's lines.
    #[error("its stable entry kept from {} no longer validates: {}", file.display(), kept_problems(error))]
    Config { file: PathBuf, error: crate::config::ConfigError },
    #[error("the config text kept from {0} has no valid entry for it")]
    Missing(String),
    #[error("the kept digest {0:?} is not a SHA-256")]
    Digest(String),
}

/// The problems of a kept entry, by key: its only `[[plugin]]` is `plugin[0]` there,
/// which is not its place in any file, so that part of a key is left out.
fn kept_problems(error: &crate::config::ConfigError) -> String {
    let problems = error.problems();
    if problems.is_empty() {
        return error.to_string();
    }
    let mut said: Vec<String> = problems
        .iter()
        .map(|p| match p.key.strip_prefix("plugin[0]") {
            Some("") => format!("its entry: {}", p.message),
            Some(rest) => format!("{}: {}", rest.trim_start_matches('.'), p.message),
            None => format!("{}: {}", p.key, p.message),
        })
        .collect();
    match error {
        crate::config::ConfigError::Invalid { more: 1, .. } => said.push("and 1 more problem".into()),
        crate::config::ConfigError::Invalid { more: more @ 2.., .. } => said.push(format!("and {more} more problems")),
        _ => {}
    }
    said.join("; ")
}

/// The entry `name` ran as its stable revision, from what was kept: the config text of
/// then (its `[supervisor]` section and this plugin's entry: the other plugins' entries
/// may name files long gone), and the kept copy of its binary, pinned to the digest it
/// had (without a copy, the file at its path must still be that binary, or it is refused
/// with its cause rather than run).
///
/// The keys that apply live (who may call it and whom it calls, its quotas, limits and
/// timeouts) and the ids it runs as are the config in force's (`in_force`), as for any
/// revision beside the serving one ([`crate::config::changes::with_live_keys`]). Its
/// `callers` and `calls` are dropped from the kept entry before it is read: they name
/// plugins whose entries are not kept, and are not properties of the revision.
fn stable_spec(saved: &SavedRollout, in_force: &PluginSpec) -> Result<PluginSpec, RestoreError> {
    let name = in_force.name.as_str();
    let missing = || RestoreError::Missing(saved.stable_config.display().to_string());
    let mut doc: toml::Table = saved.stable_text.parse().map_err(|_| missing())?;
    if let Some(toml::Value::Array(entries)) = doc.get_mut("plugin") {
        entries.retain(|e| e.get("name").and_then(toml::Value::as_str) == Some(name));
        for e in entries.iter_mut().filter_map(toml::Value::as_table_mut) {
            e.remove("callers");
            e.remove("calls");
        }
    }
    let text = toml::to_string(&doc).map_err(|_| missing())?;
    let config = crate::config::parse(&text, &saved.stable_config)
        .map_err(|error| RestoreError::Config { file: saved.stable_config.clone(), error })?;
    let kept = config.specs().into_iter().find(|s| s.name == name).ok_or_else(missing)?;
    let mut spec = crate::config::changes::with_live_keys(&kept, in_force);
    if let Some(copy) = &saved.stable_copy {
        spec.binary = copy.clone();
    }
    let pin = saved.stable_sha256.parse().map_err(|_| RestoreError::Digest(saved.stable_sha256.clone()))?;
    spec.integrity.sha256 = Some(pin);
    // The ids the config in force reserves for this name: they cannot clash with the
    // other plugins' (the kept text was assigned among the plugins of then).
    spec.ids = in_force.ids;
    // Its origin stays the text it was kept from, whole.
    spec.origin = crate::config::Origin(Some(Arc::new((saved.stable_config.clone(), saved.stable_text.clone()))));
    Ok(spec)
}

/// The plugin `spec` names, as the supervisor starts. A rollout a restart interrupted
/// brings it back on its stable revision, the rollout marked so; one rolled back does too
/// while the file still names its canary. A stable revision that cannot be brought back
/// leaves the plugin stopped with why: it never comes back on a canary no step judged.
pub(crate) fn restore(shared: &Shared, spec: PluginSpec, log_lines: usize) -> Arc<Plugin> {
    let name = spec.name.clone();
    let Some(mut saved) = shared.state.rollout(&name) else { return Arc::new(Plugin::new(spec, log_lines)) };
    let (phase, what) = match saved.phase {
        Phase::RolledBack if fingerprint_on_disk(&spec) != saved.canary_fingerprint => {
            // The entry or the binary changed since: what the file says now runs.
            forget(shared, &name);
            return Arc::new(Plugin::new(spec, log_lines));
        }
        Phase::RolledBack => (
            Phase::RolledBack,
            format!(
                "the config file still names the canary rolled back ({}): the stable revision runs; `supervisorctl reload {name}` tries the file's",
                saved.why
            ),
        ),
        _ => (
            Phase::Interrupted,
            format!(
                "interrupted by a restart of the supervisor: the stable revision serves; `supervisorctl rollout resume {name}` starts the canary again, `rollout abort {name}` gives it up"
            ),
        ),
    };
    let (p, note) = match stable_spec(&saved, &spec) {
        Ok(stable) => (Plugin::new(stable, log_lines), what),
        Err(e) => {
            let p = Plugin::new(spec, log_lines);
            p.desired.send_modify(|d| d.run = false);
            let note = format!(
                "{what}; but its stable revision cannot be brought back ({e}), so the plugin is left stopped rather than run on the canary: `supervisorctl start {name}` runs the file's entry"
            );
            (p, note)
        }
    };
    if phase == Phase::Interrupted && saved.phase != Phase::Interrupted {
        saved.phase = Phase::Interrupted;
        if let Err(e) = shared.state.set_rollout(&name, Some(saved.clone())) {
            tracing::warn!(plugin = %name, error = %e, "the interrupted rollout could not be kept in the state file");
        }
    }
    p.set_rollout(report(&name, &saved, phase, note.clone()));
    let kind = if phase == Phase::Interrupted { EventKind::RolloutInterrupted } else { EventKind::RolledBack };
    shared.events.emit(&name, "", kind, note, &[]);
    Arc::new(p)
}

/// The operator gives up a rollout found interrupted: the stable revision serves on, and
/// the canary counts as rolled back.
pub(crate) fn give_up(shared: &Shared, p: &Plugin, ro: &Rollout) {
    let why = "an interrupted rollout given up by the operator";
    ro.give_up(format!("{why}; the stable revision serves on"));
    set_phase(shared, &p.name, Phase::RolledBack, why);
    shared.events.emit(&p.name, "", EventKind::RolledBack, ro.report().note, &[]);
}

/// The report of a rollout found kept at start.
fn report(name: &str, saved: &SavedRollout, phase: Phase, note: String) -> Arc<Rollout> {
    let mut report = Report::new(name, saved.stable_revision, saved.canary_revision, &saved.steps);
    report.phase = phase;
    report.share = 0;
    report.note = note;
    report.step_started = None;
    Arc::new(Rollout::interrupted(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::callers::{Callers, Rule};

    const HEAD: &str = "[supervisor.sandbox]\nallow_unsandboxed = true\n";

    fn entry(name: &str, extra: &str) -> String {
        format!("[[plugin]]\nname = {name:?}\nbinary = \"/bin/true\"\ntier = \"none\"\n{extra}\n")
    }

    fn spec_of(text: &str, name: &str) -> PluginSpec {
        let config = crate::config::parse(text, Path::new("/etc/ps.toml")).unwrap();
        config.specs().into_iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn a_kept_entry_admitting_another_plugin_comes_back_with_the_callers_in_force() {
        let then =
            format!("{HEAD}{}{}", entry("a", "callers = [\"plugin:auth\"]\nargs = [\"--old\"]"), entry("auth", ""));
        let now = format!("{HEAD}{}{}", entry("a", "callers = [\"uid:7\"]\nargs = [\"--new\"]"), entry("auth", ""));
        let in_force = spec_of(&now, "a");
        let stable = stable_spec(&kept(then), &in_force).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stable.args, ["--old"], "the kept revision");
        assert_eq!(stable.callers, Some(Callers(vec![Rule::Uid(7)])), "admitting whom the file in force says");
        assert_eq!(stable.ids, in_force.ids);
    }

    fn kept(stable_text: String) -> SavedRollout {
        SavedRollout {
            phase: Phase::Interrupted,
            stable_revision: 1,
            canary_revision: 2,
            steps: vec![50],
            stable_config: "/etc/ps.toml".into(),
            stable_text,
            stable_sha256: "0".repeat(64),
            stable_copy: None,
            canary_fingerprint: String::new(),
            why: String::new(),
        }
    }

    /// Its `calls` named a plugin whose entry was not kept: the kept entry was refused,
    /// and the plugin stayed stopped at every restart.
    #[test]
    fn a_kept_entry_calling_another_plugin_comes_back_with_the_calls_and_live_keys_in_force() {
        let then = format!(
            "{HEAD}{}{}",
            entry("a", "callers = [\"plugin:auth\"]\ncalls = [\"auth\"]\nargs = [\"--old\"]\ncall_timeout = \"1s\""),
            entry("auth", "")
        );
        let now = format!(
            "{HEAD}{}{}{}",
            entry("a", "callers = [\"uid:7\"]\ncalls = [\"auth\", \"b\"]\nargs = [\"--new\"]\ncall_timeout = \"9s\""),
            entry("auth", ""),
            entry("b", "")
        );
        let in_force = spec_of(&now, "a");
        let stable = stable_spec(&kept(then), &in_force).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stable.args, ["--old"], "the kept revision");
        assert_eq!(stable.calls, ["auth", "b"], "calling whom the file in force says");
        assert_eq!(stable.callers, Some(Callers(vec![Rule::Uid(7)])));
        assert_eq!(stable.call_timeout, std::time::Duration::from_secs(9), "a live key in force");
        assert_eq!(stable.ids, in_force.ids);
    }

    /// Its problems were said at the lines of the text re-made from the kept entry, which
    /// no one wrote (`/etc/ps.toml:3: plugin[0]...`).
    #[test]
    fn a_kept_entry_that_no_longer_validates_is_said_by_key_without_the_lines_of_a_text_no_one_wrote() {
        let then = format!("{HEAD}{}{}", entry("auth", ""), entry("a", "replicas = 0\ncalls = [\"auth\"]"));
        let in_force = spec_of(&format!("{HEAD}{}", entry("a", "")), "a");
        let err = stable_spec(&kept(then), &in_force).unwrap_err();
        assert!(matches!(err, RestoreError::Config { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "its stable entry kept from /etc/ps.toml no longer validates: replicas: replicas must be between 1 and 1024, not 0"
        );
    }
}
