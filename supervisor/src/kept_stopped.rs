//! Plugins the operator stopped stay stopped: `supervisorctl stop` is kept in the state
//! file until `start` or `restart`, and a plugin kept so is not started when the
//! supervisor starts again (or `update` adds it back), whatever `autostart` says.

use crate::instance::Plugin;
use crate::observe::events::EventKind;
use crate::supervisor::Shared;

/// What `status` notes on a plugin kept stopped.
pub const NOTE: &str =
    "stopped by the operator (supervisorctl stop): kept stopped across supervisor restarts until start or restart";

/// A plugin joining the supervisor (at its start, or added by `update`) that the operator
/// had stopped is not started.
pub(crate) fn restore(p: &Plugin, shared: &Shared) {
    if shared.state.stopped(&p.name) {
        // Not a new command (its generation stays): the operator's last one, still in force.
        p.desired.send_modify(|d| d.run = false);
        tracing::info!(plugin = %p.name, "kept stopped, as the operator left it");
    }
}

/// Issues a start (`run`), restart or stop of `p`, and records whether it leaves the
/// plugin stopped by the operator. Returns the command's generation, and the words the
/// answer adds when the record could not be saved.
///
/// A record that cannot be saved (a full disk, a state directory gone read-only) does not
/// hold the command back: the command is what the operator needs now (a stop is most often
/// of a plugin that misbehaves), and the record only matters at the next start. Docker
/// does the same with a container it stops (its state is set in memory, and a failed write
/// to disk is reported, not undone); Kubernetes, which writes first and refuses otherwise,
/// has a replicated store behind it that a single host does not. The operator is told, in
/// the answer, an event and the log, what a restart will do instead.
pub(crate) fn command(shared: &Shared, p: &Plugin, run: bool, restart: bool) -> (u64, Option<String>) {
    let (generation, saved) = shared.state.set_stopped(&p.name, !run, || p.set_desired(run, restart));
    let unsaved = saved.err().map(|e| {
        let instead = if run {
            "a supervisor restart keeps it stopped"
        } else {
            "a supervisor restart starts it again if its config says autostart"
        };
        tracing::warn!(plugin = %p.name, error = %e, stop = !run, "the command applies now but could not be saved");
        let said = format!("not saved, so {instead}: {e}");
        shared.events.emit(&p.name, "", EventKind::NotSaved, said.clone(), &[]);
        said
    });
    (generation, unsaved)
}

#[cfg(test)]
mod tests {
    use super::NOTE;
    use crate::Supervisor;
    use crate::instance::fake::{UP, echo, fixture, plugin, restart, until};
    use crate::instance::state::State;
    use crate::reload::ReloadOptions;

    /// The notes `status` shows on `plugin`'s first instance.
    fn notes(sup: &Supervisor, plugin: &str) -> Vec<String> {
        crate::control::status_rows(sup, plugin).unwrap()[0].notes.clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plugin_the_operator_stopped_stays_stopped_across_restarts_until_started() {
        let f = fixture(&plugin("fake", ""), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        assert_eq!(f.sup.stop_plugin("fake").await.unwrap(), "stopped (stopped by request)");
        assert_eq!(notes(&f.sup, "fake"), [NOTE]);

        // Both say autostart (and serve the same service): only the one not stopped runs.
        let both = format!("{}{}", plugin("fake", ""), plugin("other", ""));
        let (sup, fake) = restart(f.sup, &both).await;
        sup.wait_running("other", UP).await.unwrap();
        assert_eq!(echo(sup.channel("other").unwrap(), "hi").await.unwrap(), "hi");
        // Its instance's task has seen it is not to run, and says so.
        until(&sup, "fake", "held", |s| s.reason == "stopped by request").await;
        let held = sup.plugin("fake").unwrap().instances()[0].status();
        assert_eq!((held.state, held.pid), (State::Stopped, None));
        assert_eq!(fake.launches("fake"), 0);
        assert_eq!(notes(&sup, "fake"), [NOTE]);
        assert!(notes(&sup, "other").is_empty());

        // Out of the config for a while, its stop is kept for when it comes back.
        let (sup, _) = restart(sup, &plugin("other", "")).await;
        sup.wait_running("other", UP).await.unwrap();
        let (sup, fake) = restart(sup, &plugin("fake", "")).await;
        until(&sup, "fake", "held", |s| s.reason == "stopped by request").await;
        assert_eq!(sup.plugin("fake").unwrap().instances()[0].status().state, State::Stopped);
        assert_eq!(fake.launches("fake"), 0);

        // A start ends it: the next supervisor starts the plugin as its config says.
        assert_eq!(sup.start_plugin("fake", UP).await.unwrap(), "running");
        assert!(notes(&sup, "fake").is_empty());
        let (sup, _) = restart(sup, &plugin("fake", "")).await;
        sup.wait_running("fake", UP).await.unwrap();
        sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_also_ends_a_kept_stop() {
        let f = fixture(&plugin("fake", ""), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        f.sup.stop_plugin("fake").await.unwrap();
        assert_eq!(f.sup.restart_plugin("fake", UP).await.unwrap(), "running");
        let (sup, _) = restart(f.sup, &plugin("fake", "")).await;
        sup.wait_running("fake", UP).await.unwrap();
        assert!(notes(&sup, "fake").is_empty());
        sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_plugin_that_update_removes_and_adds_back_starts_from_its_config() {
        let idle = plugin("idle", "autostart = false");
        let f = fixture(&format!("{}{idle}", plugin("fake", "")), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        f.sup.stop_plugin("fake").await.unwrap();
        let path = f.sup.config().source.clone().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(&plugin("fake", ""), "")).unwrap();
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["fake: removed"]);
        std::fs::write(&path, &text).unwrap();
        let done = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
        assert_eq!(done.lines(), ["fake: added"]);
        f.sup.wait_running("fake", UP).await.unwrap();
        f.sup.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_that_cannot_be_saved_still_stops_and_says_so() {
        let f = fixture(&plugin("fake", ""), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        // The state directory is gone and a file has its name: nothing can be saved there.
        let dir = f.sup.config().resolve(&f.sup.config().supervisor.state_dir);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, "").unwrap();
        let said = f.sup.stop_plugin("fake").await.unwrap();
        let unsaved = format!(
            "not saved, so a supervisor restart starts it again if its config says autostart: state file {}: ",
            dir.join("state.json").display()
        );
        assert!(said.starts_with(&format!("stopped (stopped by request); {unsaved}")), "{said}");
        let events = f.sup.events().subscribe().0;
        let told: Vec<_> = events.iter().filter(|e| e.kind == "not-saved").collect();
        assert_eq!(told.len(), 1, "{events:?}");
        assert!(told[0].plugin == "fake" && told[0].message.starts_with(&unsaved), "{:?}", told[0]);
        // Nothing claims it is kept.
        assert!(notes(&f.sup, "fake").is_empty());
        f.sup.shutdown().await;
    }
}
