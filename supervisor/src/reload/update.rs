//! `update` (and SIGHUP): the config file read again, validated whole, and applied to what
//! runs. Removed plugins drain, stop and go; added ones start; changed ones take keys that
//! apply live in place and are hot-reloaded for the rest. An invalid file changes nothing,
//! and plugins the change does not name are not touched.

use std::sync::Arc;
use std::time::Duration;

use crate::config::PluginSpec;
use crate::config::changes::{Changes, RereadError};
use crate::instance::Plugin;
use crate::instance::state::State;
use crate::observe::events::EventKind;
use crate::reload::{ReloadError, ReloadOptions, Reloaded, Source};
use crate::supervisor::spawn_revision;
use crate::{Supervisor, SupervisorError};

/// Why an update applied nothing.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Reread(#[from] RereadError),
    #[error("{0:?} is neither running nor in {1}")]
    UnknownPlugin(String, String),
}

/// What went wrong with one plugin of an update; the others were applied.
#[derive(Debug, thiserror::Error)]
pub enum PluginUpdateError {
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error(transparent)]
    Live(#[from] SupervisorError),
    #[error("plugin {plugin:?}: its instances did not stop within {} ms; it stays", .waited.as_millis())]
    NotStopped { plugin: String, waited: Duration },
}

/// What an update did, plugin by plugin.
#[derive(Debug, Default)]
pub struct Updated {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Changed in place: the plugin and the keys (quotas with the ones now in force).
    pub live: Vec<(String, String)>,
    pub reloaded: Vec<Reloaded>,
    pub failed: Vec<PluginUpdateError>,
    /// `[supervisor]` keys that differ, left as they are until a restart.
    pub restart_only: Vec<&'static str>,
}

impl Updated {
    /// One line per plugin touched, then the keys left for a restart.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.removed.iter().map(|n| format!("{n}: removed")).collect();
        lines.extend(self.added.iter().map(|n| format!("{n}: added")));
        lines.extend(self.live.iter().map(|(n, keys)| format!("{n}: applied in place: {keys}")));
        lines.extend(self.reloaded.iter().map(ToString::to_string));
        lines.extend(self.failed.iter().map(ToString::to_string));
        if !self.restart_only.is_empty() {
            lines.push(format!("supervisor: left until a restart: {}", self.restart_only.join(", ")));
        }
        if lines.is_empty() {
            lines.push("no changes".to_owned());
        }
        lines
    }
}

impl Supervisor {
    /// Applies the config file to what runs: all of its changes, or (with `names`) those
    /// of the plugins named. The file is validated whole first; an invalid one changes
    /// nothing. One update runs at a time. A plugin whose change fails (a refused reload,
    /// say) keeps running as it was; the others are applied, and the answer lists both.
    pub async fn update(&self, names: &[String], opts: ReloadOptions) -> Result<Updated, UpdateError> {
        let _one = self.shared().updating.lock().await;
        let (file, next, mut changes) = self.read_again().await?;
        if !names.is_empty() {
            for n in names {
                if self.plugin(n).is_err() && !changes.added.contains(n) {
                    return Err(UpdateError::UnknownPlugin(n.clone(), file.display().to_string()));
                }
            }
            keep_only(&mut changes, names);
        }
        let specs: Vec<PluginSpec> = next.specs();
        let entry = |name: &str| specs.iter().find(|s| s.name == name).cloned();
        let mut done = Updated { restart_only: changes.restart_only.clone(), ..Updated::default() };
        // Removed first: their services are then free for plugins added in the same change.
        for name in &changes.removed {
            match self.remove_plugin(name).await {
                Ok(()) => done.removed.push(name.clone()),
                Err(e) => done.failed.push(e),
            }
        }
        for name in &changes.added {
            if let Some(spec) = entry(name) {
                self.add_plugin(spec);
                done.added.push(name.clone());
            }
        }
        for change in &changes.changed {
            let (Ok(p), Some(spec)) = (self.plugin(&change.name), entry(&change.name)) else { continue };
            if change.live_only() {
                match self.apply_live(&p, Arc::new(spec)) {
                    Ok(quota) => {
                        let keys: Vec<String> = change
                            .keys
                            .iter()
                            .map(|k| if k.key == "quota" { format!("quota ({quota})") } else { k.key.to_owned() })
                            .collect();
                        let keys = keys.join(", ");
                        self.events().emit(&p.name, "", EventKind::Updated, format!("applied in place: {keys}"), &[]);
                        done.live.push((p.name.clone(), keys));
                    }
                    Err(e) => done.failed.push(e.into()),
                }
            } else {
                match self.reload_from(p, Source::Entry(Box::new(spec)), opts).await {
                    Ok(r) => done.reloaded.push(r),
                    Err(e) => done.failed.push(e.into()),
                }
            }
        }
        Ok(done)
    }

    /// Starts `spec` as a new plugin (when it says `autostart`), routed to like the others.
    fn add_plugin(&self, spec: PluginSpec) {
        let shared = self.shared();
        let p = Arc::new(Plugin::new(spec, self.config().supervisor.log_lines));
        crate::quotas::restore(&p, shared);
        shared.plugins.insert(p.clone());
        self.gateway().add(&p, &shared.metrics);
        spawn_revision(shared, &p, &p.serving());
        shared.events.emit(&p.name, "", EventKind::Added, "added from the config file", &[]);
    }

    /// Drains and stops every instance of `name`, then forgets the plugin: its routes,
    /// its cgroup set. Calls to it are then answered as to an unknown service.
    async fn remove_plugin(&self, name: &str) -> Result<(), PluginUpdateError> {
        let shared = self.shared();
        let Ok(p) = self.plugin(name) else { return Ok(()) };
        // No reload of it may start a revision that would outlive it.
        let _no_reload = p.reload_lock.lock().await;
        p.set_desired(false, false);
        for rev in p.revisions() {
            rev.retire();
        }
        let waited = p.spec().stop_timeout.saturating_add(Duration::from_secs(5));
        let stopped =
            |p: &Plugin| p.instances().iter().all(|i| matches!(i.status().state, State::Stopped | State::Failed));
        if !p.wait_until(waited, stopped).await {
            return Err(PluginUpdateError::NotStopped { plugin: name.to_owned(), waited });
        }
        shared.plugins.remove(name);
        self.gateway().remove(name);
        shared.launcher.forget_plugin(name).await;
        shared.events.emit(name, "", EventKind::Removed, "removed from the config file: drained and stopped", &[]);
        Ok(())
    }
}

/// Only the changes of the plugins `names` names (supervisor keys are still reported).
fn keep_only(c: &mut Changes, names: &[String]) {
    c.added.retain(|n| names.contains(n));
    c.removed.retain(|n| names.contains(n));
    c.changed.retain(|p| names.contains(&p.name));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::instance::fake::{UP, echo, fixture, plugin};

    /// Rewrites the fixture's config file: `edit` turns the text into the new one.
    fn edit(sup: &Supervisor, edit: impl FnOnce(String) -> String) {
        let path = sup.config().source.clone().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let new = edit(text.clone());
        assert_ne!(new, text, "the edit changes the file");
        std::fs::write(&path, new).unwrap();
    }

    fn pid(sup: &Supervisor, name: &str) -> Option<i32> {
        sup.plugin(name).unwrap().serving().instances[0].status().pid
    }

    fn kinds(sup: &Supervisor, plugin: &str) -> Vec<String> {
        sup.events().subscribe().0.into_iter().filter(|e| e.plugin == plugin).map(|e| e.kind).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_keys_apply_in_place_and_the_rest_through_a_reload() {
        let f = fixture(&plugin("fake", "call_timeout = \"5s\""), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let before = pid(&f.sup, "fake");
        edit(&f.sup, |t| t.replace("call_timeout = \"5s\"", "call_timeout = \"7s\""));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["fake: applied in place: call_timeout"], "{done:?}");
        let p = f.sup.plugin("fake").unwrap();
        assert_eq!(
            (p.spec().call_timeout, p.serving().number, pid(&f.sup, "fake")),
            (Duration::from_secs(7), 1, before)
        );
        assert_eq!(kinds(&f.sup, "fake").last().map(String::as_str), Some("updated"));

        edit(&f.sup, |t| t.replace("call_timeout = \"7s\"", "call_timeout = \"7s\"\nargs = [\"--new\"]"));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.reloaded.len(), 1, "{done:?}");
        assert_eq!(p.serving().number, 2);
        assert_eq!(p.spec().args, ["--new"]);
        assert_ne!(pid(&f.sup, "fake"), before);
        assert_eq!(echo(f.sup.channel("fake").unwrap(), "after").await.unwrap(), "after");

        // Read again, the same file changes nothing.
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["no changes"]);
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removed_plugin_drains_and_goes_and_frees_its_service_for_one_added() {
        let f = fixture(&plugin("fake", ""), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let old = f.sup.plugin("fake").unwrap();
        // "other" serves the same service: it can only start once "fake" has let it go.
        edit(&f.sup, |t| t.replace("name = \"fake\"", "name = \"other\""));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["fake: removed", "other: added"]);
        assert!(matches!(f.sup.plugin("fake"), Err(SupervisorError::UnknownPlugin(n)) if n == "fake"));
        assert!(old.instances().iter().all(|i| i.status().state == State::Stopped), "drained and stopped");
        assert_eq!(f.fake.forgotten(), ["fake"]);
        assert_eq!(kinds(&f.sup, "fake").last().map(String::as_str), Some("removed"));
        f.sup.wait_running("other", UP).await.unwrap();
        assert_eq!(echo(f.sup.channel("other").unwrap(), "moved").await.unwrap(), "moved");
        let names: Vec<String> = f.sup.plugins().iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, ["other"]);
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalid_file_changes_nothing() {
        let f = fixture(&plugin("fake", ""), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let before = pid(&f.sup, "fake");
        edit(&f.sup, |t| t.replace("name = \"fake\"", "name = \"fake\"\nreplicas = \"two\""));
        let err = f.sup.update(&[], ReloadOptions::default()).await.unwrap_err();
        assert!(matches!(err, UpdateError::Reread(RereadError::Config(_))), "{err:?}");
        assert!(err.to_string().contains("replicas"), "{err}");
        assert_eq!(pid(&f.sup, "fake"), before);
        assert_eq!(f.sup.plugin("fake").unwrap().serving().number, 1);
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_limit_an_update_to_those_plugins() {
        let plugins = format!("{}{}", plugin("fake", "call_timeout = \"5s\""), plugin("idle", "autostart = false"));
        let f = fixture(&plugins, &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        edit(&f.sup, |t| {
            t.replace("call_timeout = \"5s\"", "call_timeout = \"6s\"")
                .replace("autostart = false", "autostart = false\ncall_timeout = \"9s\"")
        });
        let done = f.sup.update(&["idle".to_owned()], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["idle: applied in place: call_timeout"]);
        assert_eq!(f.sup.plugin("fake").unwrap().spec().call_timeout, Duration::from_secs(5), "not named");
        assert_eq!(f.sup.plugin("idle").unwrap().spec().call_timeout, Duration::from_secs(9));

        let err = f.sup.update(&["nope".to_owned()], ReloadOptions::default()).await.unwrap_err();
        assert!(matches!(&err, UpdateError::UnknownPlugin(n, _) if n == "nope"), "{err:?}");
        assert_eq!(f.sup.plugin("fake").unwrap().spec().call_timeout, Duration::from_secs(5), "nothing applied");
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quota_changed_in_the_file_reaches_the_running_cgroups_under_the_operators_override() {
        use crate::instance::fake::{FakeLauncher, fixture_over};
        let f = fixture_over(FakeLauncher::with_cgroups(), &plugin("fake", "[plugin.quota]\npids_max = 64"), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        let before = pid(&f.sup, "fake");
        let limits = |sup: &Supervisor| {
            let inst = sup.plugin("fake").unwrap().instances()[0].clone();
            (inst.cgroup.load_full().unwrap().limits().unwrap().pids_max, inst.status().quota.pids_max)
        };
        edit(&f.sup, |t| t.replace("pids_max = 64", "pids_max = 48"));
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["fake: applied in place: quota (pids 48)"]);
        assert_eq!(limits(&f.sup), (Some(48), Some(48)));
        assert_eq!(pid(&f.sup, "fake"), before, "no new process");

        // The operator's run-time word keeps winning over the file's.
        let change = crate::quotas::QuotaChange::parse("", "", "", "32").unwrap();
        f.sup.change_quota("fake", &change, false).unwrap();
        edit(&f.sup, |t| t.replace("pids_max = 48", "pids_max = 40"));
        f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(limits(&f.sup), (Some(32), Some(32)));
        f.sup.shutdown().await;
    }
}
