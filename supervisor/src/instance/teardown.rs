//! Each end of an instance ends with its teardown proven: what else of the plugin is alive
//! (the teardown's search of the plugin's uid must leave that be), and the verdict told as
//! an event, a metric and the instance's status.

use std::sync::Arc;

use super::launcher::Others;
use super::running::Running;
use super::state::State;
use super::{Instance, Plugin, Revision};
use crate::observe::events::EventKind;
use crate::observe::teardown::{Done, LastTeardown, Leftover, Verdict};
use crate::sandbox::leftovers::held;
use crate::supervisor::Shared;

/// The plugin's other processes: how many are alive (counted from before their launch
/// until their teardown), and how many of its other instances run (or start) without a
/// cgroup.
fn others(plugin: &Plugin, inst: &str) -> Others {
    let uncgrouped = plugin
        .instances()
        .iter()
        .filter(|i| i.id != inst)
        .filter(|i| matches!(i.status().state, State::Starting | State::Running | State::Stopping))
        // One still starting may not have its cgroup yet: counted as without, so its
        // processes are never taken for strays.
        .filter(|i| i.cgroup.load().is_none())
        .count();
    Others { live: plugin.alive.load(std::sync::atomic::Ordering::SeqCst), uncgrouped }
}

/// Cleans up after `running` (whose main process has ended) and proves it; the last
/// process of a retired revision proves its image released too.
pub(super) async fn tear_down(mut running: Running, plugin: &Arc<Plugin>, rev: &Revision, inst: &Instance) -> Verdict {
    // Uncounted first: the plugin's count is then of the others.
    let last_of_revision = running.release().is_some_and(|(_, rev_left)| rev_left == 0);
    let (p, id) = (plugin.clone(), inst.id.clone());
    let mut verdict = running.clean_up(Box::new(move || others(&p, &id))).await;
    if last_of_revision && rev.is_retired() {
        let began = std::time::Instant::now();
        if let Some(what) = image_still_held(plugin, rev).await {
            verdict.add(Leftover::Held { what }, Done::LeftAlone("still in use inside the supervisor".into()));
        }
        verdict.took += began.elapsed();
    }
    verdict
}

/// Lets go of a retired revision's image (unless another revision, of this plugin or
/// another, runs the same one) and
/// checks that no descriptor of the daemon still refers to it; what is still held, if so.
async fn image_still_held(plugin: &Plugin, rev: &Revision) -> Option<&'static str> {
    let image = rev.image.lock().ok()?.take()?;
    let shared = plugin
        .revisions()
        .iter()
        .filter(|r| r.number != rev.number)
        .any(|r| r.image.lock().ok().and_then(|g| g.clone()).is_some_and(|i| Arc::ptr_eq(&i, &image)));
    let held = image.held.clone()?;
    // Held elsewhere too: by another plugin of the same binary, or a start under way.
    if shared || Arc::strong_count(&image) > 1 {
        return None;
    }
    drop(image);
    // A spawn under way may hold a duplicate for a moment; read off the runtime's thread.
    for _ in 0..50 {
        let asked = [held.clone()];
        let open = tokio::task::spawn_blocking(move || held::still_open(std::path::Path::new("/proc/self/fd"), &asked))
            .await
            .ok()?
            .ok()?;
        if open.is_empty() {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Some(held.what)
}

/// Tells `verdict`: the `teardown` event, the metric, and the instance's status.
pub(super) fn report(plugin: &Plugin, inst: &Instance, shared: &Arc<Shared>, verdict: Verdict) {
    let outcome = verdict.outcome();
    shared.metrics.record_teardown(&plugin.name, outcome, verdict.took);
    shared.events.emit(
        &plugin.name,
        &inst.id,
        EventKind::Teardown,
        verdict.to_string(),
        &[("result", outcome.as_str().to_owned()), ("micros", verdict.took.as_micros().to_string())],
    );
    inst.update(|s| s.teardown = Some(LastTeardown::now(verdict)));
}
