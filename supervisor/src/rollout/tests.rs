//! Canary rollout as a specification, run without root over the fake launcher: a good
//! canary is promoted step by step under load; one that fails calls, is slower or crashes
//! is rolled back on its own with the numbers it was judged on; the operator can pause,
//! resume, promote and abort it.

use std::time::{Duration, Instant};

use super::{Action, Phase, RolloutError};
use crate::Supervisor;
use crate::instance::fake::{Behaviour, Fixture, Load, UP, echo, fixture, one_revision_left, plugin};
use crate::reload::{ReloadError, ReloadOptions};

/// A plugin rolled out as a canary in quick steps. Latencies are not judged (a p99 under
/// a second is taken as one): a loaded test machine makes the p99 of a few calls anything.
fn canary(steps: &str, min_calls: u64) -> String {
    plugin(
        "fake",
        &format!(
            "[plugin.rollout]\nstrategy = \"canary\"\nsteps = {steps}\nstep_interval = \"300ms\"\nmin_calls = {min_calls}\np99_floor = \"1s\"\n"
        ),
    )
}

async fn started(plugins: &str, script: &[Behaviour]) -> Fixture {
    let f = fixture(plugins, &[("fake", script)]);
    f.sup.wait_running("fake", UP).await.unwrap();
    f
}

/// Waits until the rollout is `phase`.
async fn until_phase(sup: &Supervisor, phase: Phase) -> super::Report {
    let p = sup.plugin("fake").unwrap();
    let deadline = Instant::now() + UP;
    loop {
        let report = p.rollout().expect("a rollout").report();
        if report.phase == phase {
            return report;
        }
        assert!(Instant::now() < deadline, "the rollout never became {phase}: {report}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn kinds(sup: &Supervisor) -> Vec<String> {
    sup.events().subscribe().0.into_iter().filter(|e| e.plugin == "fake").map(|e| e.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_is_promoted_step_by_step_without_a_failed_call() {
    let f = started(&canary("[10, 50, 100]", 5), &[]).await;
    let load = Load::start(&f.sup);
    let done = f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    assert_eq!(done.canary, Some(10));
    assert!(done.to_string().starts_with("fake: revision 2 takes 10% of calls as a canary (pid "), "{done}");
    // Both revisions serve while it runs.
    let p = f.sup.plugin("fake").unwrap();
    assert_eq!(p.serving().number, 1);
    assert_eq!(p.split().map(|s| (s.canary.number, s.share)), Some((2, 10)));
    let report = until_phase(&f.sup, Phase::Promoted).await;
    let (calls, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let shares: Vec<(usize, u8, bool)> = report.judged.iter().map(|s| (s.step, s.share, s.passed)).collect();
    assert_eq!(shares, [(1, 10, true), (2, 50, true), (3, 100, true)], "{report}");
    assert!(report.judged.iter().all(|s| s.numbers.canary_calls >= 5), "{report}");
    assert_eq!(p.serving().number, 2);
    assert!(p.split().is_none());
    assert_eq!(one_revision_left(&f.sup).await, 2, "the old revision drained away");
    let k = kinds(&f.sup);
    assert_eq!(k.iter().filter(|k| *k == "rollout-step").count(), 3, "{k:?}");
    assert!(k.contains(&"promoted".to_owned()), "{k:?}");
    // Each step gave the canary its share: more calls at 50% than at 10% of as long a step.
    assert!(report.judged[1].numbers.canary_calls > report.judged[0].numbers.canary_calls, "{report}");
    f.sup.shutdown().await;
}

/// Starts a rollout to `canary_behaviour` beside `stable_behaviour` under load, waits for
/// the rollback, and checks the stable revision took every call again.
async fn rolled_back(stable: Behaviour, canary_behaviour: Behaviour) -> super::Report {
    // Scheduling on a busy machine adds to both p99s: a threshold of 1.5 keeps five
    // times slower well apart from noise.
    let plugins = canary("[20, 100]", 20)
        .replace("min_calls", "max_p99_ratio = 1.5\nmin_calls")
        .replace("\"300ms\"", "\"1s\"")
        .replace("p99_floor = \"1s\"", "p99_floor = \"1ms\"");
    let f = started(&plugins, &[stable]).await;
    f.fake.script("fake", &[canary_behaviour]);
    let loads = [Load::start(&f.sup), Load::start(&f.sup), Load::start(&f.sup)];
    let done = f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    assert_eq!(done.canary, Some(20));
    let report = until_phase(&f.sup, Phase::RolledBack).await;
    let p = f.sup.plugin("fake").unwrap();
    assert_eq!(p.serving().number, 1, "the stable revision still serves");
    assert!(p.split().is_none(), "and takes every call");
    assert_eq!(one_revision_left(&f.sup).await, 1, "the canary drained away");
    for load in loads {
        load.finish().await;
    }
    assert_eq!(echo(f.sup.channel("fake").unwrap(), "after").await.unwrap(), "after");
    assert!(kinds(&f.sup).contains(&"rolled-back".to_owned()));
    // A new reload may run now: the rollout is over.
    f.fake.script("fake", &[]);
    let again = f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    assert_eq!(again.canary, Some(20));
    f.sup.shutdown().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_one_call_in_ten_is_rolled_back_with_its_error_rate() {
    let report = rolled_back(
        Behaviour::Serve { name: "fake".into() },
        Behaviour::ServeFlawed { fail_every: 10, delay: Duration::ZERO },
    )
    .await;
    let step = &report.judged[0];
    assert!(!step.passed, "{report}");
    // Calls that began before the window and ended in it make the rate only about 10%.
    assert!(
        step.verdict.starts_with("error rate ") && step.verdict.ends_with("% over max_error_rate 1.0%"),
        "{report}"
    );
    assert!((0.07..0.13).contains(&step.numbers.error_rate), "{report}");
    assert!(report.note.contains(&format!("step 1 (20%): {}", step.verdict)), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_five_times_slower_is_rolled_back_on_its_p99() {
    // Five times: the stable revision's p99 would have to be delayed by 23 ms, not 10 as
    // at three times, for noise to pass the canary.
    let report = rolled_back(
        Behaviour::ServeFlawed { fail_every: 0, delay: Duration::from_millis(10) },
        Behaviour::ServeFlawed { fail_every: 0, delay: Duration::from_millis(50) },
    )
    .await;
    let step = &report.judged[0];
    assert!(step.verdict.starts_with("p99 "), "{report}");
    // Judged on the threshold it was over. No tighter bound above: a step's p99 is one of
    // its slowest few calls, which a loaded machine delays by as much as it likes (the
    // test, with a bound of 4.5 and a canary three times slower, failed once in a full
    // run). A unit mixed up (µs against ms) would not stay under 20.
    let ratio = step.numbers.p99_ratio.unwrap();
    assert!(ratio > 1.5 && ratio < 20.0, "{report}");
}

/// A canary that never answers, called by callers whose own deadlines are short: each of
/// its calls ends for the caller's sake, none as its answer. It was paused for having
/// too few calls, keeping its share of calls failing until somebody acted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_callers_all_give_up_on_it_is_rolled_back() {
    let plugins = canary("[20, 100]", 20).replace("\"300ms\"", "\"1s\"");
    let f = started(&plugins, &[Behaviour::Serve { name: "fake".into() }]).await;
    f.fake.script("fake", &[Behaviour::ServeFlawed { fail_every: 0, delay: Duration::from_secs(60) }]);
    let within = Some(Duration::from_millis(200));
    let loads: Vec<Load> = (0..6).map(|_| Load::start_within(&f.sup, within)).collect();
    let done = f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    assert_eq!(done.canary, Some(20));
    let report = until_phase(&f.sup, Phase::RolledBack).await;
    let step = &report.judged[0];
    assert!(!step.passed, "{report}");
    assert!(step.verdict.starts_with("callers gave up on 100.0% of its calls ("), "{report}");
    assert!(step.verdict.ends_with("against 0.0% of the stable revision's: over the 10.0% allowed"), "{report}");
    assert_eq!(step.numbers.canary_calls, 0, "it answered none: {report}");
    for load in loads {
        load.finish().await;
    }
    assert_eq!(f.sup.plugin("fake").unwrap().serving().number, 1, "the stable revision serves on");
    f.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_crashes_is_rolled_back_at_once() {
    let report = rolled_back(
        Behaviour::Serve { name: "fake".into() },
        Behaviour::ServeThenExit { after: Duration::from_millis(700) },
    )
    .await;
    assert!(report.judged.is_empty(), "rolled back before its step was judged: {report}");
    assert!(report.note.contains("canary instance fake-1 failed: exited with code 1"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_pauses_resumes_and_promotes_and_no_other_reload_runs_meanwhile() {
    let f = started(&canary("[10, 50, 100]", 1), &[]).await;
    let load = Load::start(&f.sup);
    f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    let (said, _) = f.sup.rollout("fake", Action::Pause).await.unwrap();
    assert_eq!(said, "fake: paused by the operator at step 1");
    // Paused, no step is judged however long it waits, and the canary keeps its share.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (text, report) = f.sup.rollout("fake", Action::Status).await.unwrap();
    let report = report.unwrap();
    assert_eq!((report.phase, report.share, report.judged.len()), (Phase::Paused, 10, 0), "{text}");
    assert!(text.contains("revision 2 (canary) beside revision 1 (stable)"), "{text}");
    let err = f.sup.rollout("fake", Action::Pause).await.unwrap_err();
    assert!(matches!(err, RolloutError::NotNow { action: "pause", phase: Phase::Paused, .. }), "{err}");
    // The metrics say which revision takes which share, and what each one's calls came to.
    let metrics = f.sup.metrics_text();
    assert!(metrics.contains("supervisor_revision_share{plugin=\"fake\",revision=\"2\"} 10\n"), "{metrics}");
    assert!(metrics.contains("supervisor_revision_share{plugin=\"fake\",revision=\"1\"} 90\n"), "{metrics}");
    assert!(
        metrics.contains("supervisor_revision_failed_calls_total{plugin=\"fake\",revision=\"2\"} 0\n"),
        "{metrics}"
    );
    let calls = metrics
        .lines()
        .find_map(|l| l.strip_prefix("supervisor_revision_calls_total{plugin=\"fake\",revision=\"2\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(calls.is_some_and(|n| n > 0), "{metrics}");
    let err = f.sup.reload("fake", ReloadOptions::default()).await.unwrap_err();
    assert!(matches!(err, ReloadError::RolloutUnderWay(_)), "{err}");

    let (said, _) = f.sup.rollout("fake", Action::Resume).await.unwrap();
    assert_eq!(said, "fake: rollout resumed at step 1");
    let p = f.sup.plugin("fake").unwrap();
    assert!(p.wait_until(UP, |p| p.split().is_some_and(|s| s.share == 50)).await, "the next step came");
    let (said, _) = f.sup.rollout("fake", Action::Promote).await.unwrap();
    assert_eq!(said, "fake: revision 2 promoted");
    let report = until_phase(&f.sup, Phase::Promoted).await;
    assert!(report.note.contains("promoted by the operator"), "{report}");
    let (_, failures) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    // Over, it takes no more commands.
    let err = f.sup.rollout("fake", Action::Abort).await.unwrap_err();
    assert!(err.to_string().starts_with("plugin \"fake\": cannot abort: the rollout is promoted"), "{err}");
    f.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_rolls_back_and_a_step_without_calls_pauses_after_three_intervals() {
    let f = started(&canary("[10, 100]", 1000), &[]).await;
    f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    // Nobody calls: the step extends twice, then pauses with a note.
    let report = until_phase(&f.sup, Phase::Paused).await;
    assert!(
        report.note.starts_with("paused: step 1 saw 0 canary calls in three step_intervals, fewer than min_calls 1000"),
        "{report}"
    );
    assert!(kinds(&f.sup).contains(&"rollout-paused".to_owned()));
    let (said, _) = f.sup.rollout("fake", Action::Abort).await.unwrap();
    assert_eq!(said, "fake: rolled back to revision 1");
    let report = until_phase(&f.sup, Phase::RolledBack).await;
    assert!(report.note.contains("aborted by the operator"), "{report}");
    assert_eq!(one_revision_left(&f.sup).await, 1);
    let err = f.sup.rollout("nope", Action::Status).await.unwrap_err();
    assert!(matches!(err, RolloutError::UnknownPlugin(_)), "{err}");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn without_a_rollout_status_says_so_and_a_replace_plugin_never_starts_one() {
    let f = started(&plugin("fake", ""), &[]).await;
    let err = f.sup.rollout("fake", Action::Status).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"fake\": no rollout to show (none has run since the supervisor started, or a reload replaced it)"
    );
    let done = f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    assert_eq!(done.canary, None);
    assert!(f.sup.plugin("fake").unwrap().rollout().is_none());
    f.sup.shutdown().await;
}

/// The plugin's entry with the rollout in slow steps (nothing is judged during the test).
fn slow_canary(args: &str) -> String {
    plugin(
        "fake",
        &format!(
            "args = {args}\n[plugin.rollout]\nstrategy = \"canary\"\nsteps = [10, 100]\nstep_interval = \"60s\"\n"
        ),
    )
}

/// Writes `plugins` as the config file's entries.
fn rewrite(sup: &Supervisor, plugins: &str) {
    let path = sup.config().source.clone().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let head = &text[..text.find("[[plugin]]").unwrap()];
    std::fs::write(&path, format!("{head}{plugins}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_brings_a_rollout_back_interrupted_on_the_stable_revision_until_resumed() {
    let f = started(&slow_canary("[\"old\"]"), &[]).await;
    rewrite(&f.sup, &slow_canary("[\"new\"]"));
    let done = f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    assert_eq!(done.canary, Some(10));
    // The supervisor restarts with the canary's entry in its file.
    let (sup, fake) = crate::instance::fake::restart(f.sup, &slow_canary("[\"new\"]")).await;
    sup.wait_running("fake", UP).await.unwrap();
    let p = sup.plugin("fake").unwrap();
    assert_eq!(p.spec().args, ["old"], "it came back on the stable revision's entry");
    assert_eq!((p.revisions().len(), fake.launches("fake")), (1, 1), "and only on it");
    let report = p.rollout().unwrap().report();
    assert_eq!(report.phase, Phase::Interrupted, "{report}");
    assert!(
        report.note.starts_with("interrupted by a restart of the supervisor: the stable revision serves"),
        "{report}"
    );
    let notes = crate::control::status_rows(&sup, "fake").unwrap()[0].notes.clone();
    let interrupted = format!("rollout of revision {}: {}", report.canary_revision, report.note);
    assert!(notes.contains(&interrupted), "{notes:?}");
    assert!(interrupted.contains("`supervisorctl rollout resume fake` starts the canary again"), "{interrupted}");
    assert!(kinds(&sup).contains(&"rollout-interrupted".to_owned()));
    // An update leaves it to the operator.
    let updated = sup.update(&[], ReloadOptions::default()).await.unwrap();
    assert_eq!(
        updated.lines(),
        [
            "fake: not changed: its rollout was interrupted; `supervisorctl rollout resume fake` or `rollout abort fake` first"
        ]
    );
    assert_eq!(p.spec().args, ["old"]);

    // Restarted again before anyone resumed it, it is still interrupted, on the stable one.
    let (sup, _) = crate::instance::fake::restart(sup, &slow_canary("[\"new\"]")).await;
    sup.wait_running("fake", UP).await.unwrap();
    let p = sup.plugin("fake").unwrap();
    assert_eq!(
        (p.spec().args.clone(), p.rollout().unwrap().report().phase),
        (vec!["old".to_owned()], Phase::Interrupted)
    );
    let (said, report) = sup.rollout("fake", Action::Resume).await.unwrap();
    assert!(said.starts_with("fake: revision 2 takes 10% of calls as a canary"), "{said}");
    assert_eq!(report.unwrap().phase, Phase::Running);
    assert_eq!(p.split().unwrap().canary.spec().args, ["new"]);
    let (said, _) = sup.rollout("fake", Action::Promote).await.unwrap();
    assert_eq!(said, "fake: revision 2 promoted");
    until_phase(&sup, Phase::Promoted).await;
    // Over, nothing of it is kept: the next start runs the file's entry as it is.
    let (sup, _) = crate::instance::fake::restart(sup, &slow_canary("[\"new\"]")).await;
    sup.wait_running("fake", UP).await.unwrap();
    let p = sup.plugin("fake").unwrap();
    assert_eq!(p.spec().args, ["new"]);
    assert!(p.rollout().is_none());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_revision_is_not_tried_again_by_update_until_its_entry_changes() {
    let f = started(&canary("[20, 100]", 20), &[]).await;
    let path = f.sup.config().source.clone().unwrap();
    let original = std::fs::read_to_string(&path).unwrap();
    rewrite(&f.sup, &canary("[20, 100]", 20).replace("binary", "args = [\"v2\"]\nbinary"));
    f.fake.script("fake", &[Behaviour::ServeFlawed { fail_every: 5, delay: Duration::ZERO }]);
    let load = Load::start(&f.sup);
    let updated = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
    assert!(updated.lines()[0].starts_with("fake: revision 2 takes 20% of calls as a canary"), "{:?}", updated.lines());
    until_phase(&f.sup, Phase::RolledBack).await;
    load.finish().await;
    one_revision_left(&f.sup).await;
    // The same entry and binary again: not tried, and said why.
    let again = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
    let line = &again.lines()[0];
    assert!(
        line.starts_with(
            "fake: not tried again: revision 2 with this entry and binary was rolled back (step 1 (20%): error rate"
        ),
        "{line}"
    );
    assert_eq!(f.sup.plugin("fake").unwrap().revisions().len(), 1);
    // Nor by a restart: the stable revision comes back, not the file's rolled-back entry.
    let text = std::fs::read_to_string(&path).unwrap();
    let entries = &text[text.find("[[plugin]]").unwrap()..];
    let (sup, _) = crate::instance::fake::restart(f.sup, entries).await;
    sup.wait_running("fake", UP).await.unwrap();
    let p = sup.plugin("fake").unwrap();
    assert!(p.spec().args.is_empty(), "{:?}", p.spec().args);
    let report = p.rollout().unwrap().report();
    assert_eq!(report.phase, Phase::RolledBack);
    assert!(
        report.note.starts_with("the config file still names the canary rolled back (step 1 (20%): error rate"),
        "{report}"
    );
    let again = sup.update(&[], ReloadOptions::default()).await.unwrap();
    assert!(again.lines()[0].starts_with("fake: not tried again"), "{:?}", again.lines());
    // An explicit reload tries it (here, a good one now).
    let done = sup.reload("fake", ReloadOptions::default()).await.unwrap();
    assert_eq!(done.canary, Some(20));
    sup.rollout("fake", Action::Abort).await.unwrap();
    until_phase(&sup, Phase::RolledBack).await;
    one_revision_left(&sup).await;
    // An edit makes it another revision: update tries that one.
    rewrite(&sup, &canary("[20, 100]", 20).replace("binary", "args = [\"v3\"]\nbinary"));
    let tried = sup.update(&[], ReloadOptions::default()).await.unwrap();
    assert!(tried.lines()[0].contains("takes 20% of calls as a canary"), "{:?}", tried.lines());
    // Edited back to the stable entry, the next start runs the file and keeps nothing.
    sup.rollout("fake", Action::Abort).await.unwrap();
    until_phase(&sup, Phase::RolledBack).await;
    let (sup, _) = crate::instance::fake::restart(sup, &original[original.find("[[plugin]]").unwrap()..]).await;
    sup.wait_running("fake", UP).await.unwrap();
    assert!(sup.plugin("fake").unwrap().rollout().is_none());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_restart_or_stop_interrupts_a_rollout_without_judging_the_canary() {
    let f = started(&slow_canary("[\"old\"]"), &[]).await;
    rewrite(&f.sup, &slow_canary("[\"new\"]"));
    f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    // An update meanwhile leaves the rollout alone, and says so (not a failure).
    let updated = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
    assert_eq!(
        updated.lines(),
        [
            "fake: not changed: a rollout is under way (`supervisorctl rollout status fake`); it is promoted or rolled back first"
        ]
    );
    assert!(updated.failed.is_empty());

    // A start of the running plugin is acknowledged, and changes nothing.
    assert_eq!(f.sup.start_plugin("fake", UP).await.unwrap(), "running");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(f.sup.plugin("fake").unwrap().rollout().unwrap().report().phase, Phase::Running);
    // A restart of the plugin is the operator's, not the canary's failing.
    assert_eq!(f.sup.restart_plugin("fake", UP).await.unwrap(), "running");
    let report = until_phase(&f.sup, Phase::Interrupted).await;
    assert!(report.note.contains("the operator restarted the plugin"), "{report}");
    assert_eq!(one_revision_left(&f.sup).await, 1, "the canary went, the stable revision stays");
    let p = f.sup.plugin("fake").unwrap();
    assert_eq!(p.spec().args, ["old"]);
    assert_eq!(f.sup.shared().state.rollout("fake").map(|s| s.phase), Some(Phase::Interrupted), "kept as interrupted");
    let updated = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
    assert!(updated.lines()[0].starts_with("fake: not changed: its rollout was interrupted"), "{:?}", updated.lines());

    let (said, _) = f.sup.rollout("fake", Action::Resume).await.unwrap();
    assert!(said.starts_with("fake: revision 3 takes 10% of calls as a canary"), "{said}");
    assert!(kinds(&f.sup).contains(&"rollout-resumed".to_owned()));
    // A stop too; then a resume waits for a start.
    f.sup.stop_plugin("fake").await.unwrap();
    let report = until_phase(&f.sup, Phase::Interrupted).await;
    assert!(report.note.contains("the operator stopped the plugin"), "{report}");
    // Status says the same, not a restart of the supervisor.
    let notes = crate::control::status_rows(&f.sup, "fake").unwrap()[0].notes.clone();
    let stopped = notes.iter().find(|n| n.starts_with("rollout of revision 3: ")).expect("a rollout note");
    assert!(
        stopped.contains("the operator stopped the plugin") && !stopped.contains("restart of the supervisor"),
        "{notes:?}"
    );
    let err = f.sup.rollout("fake", Action::Resume).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"fake\": cannot resume: the rollout is interrupted (the plugin is not running; `supervisorctl start fake` first)"
    );
    // Given up, it is rolled back: the canary is not tried again by update.
    let (said, report) = f.sup.rollout("fake", Action::Abort).await.unwrap();
    assert_eq!(said, "fake: the interrupted rollout was given up; the stable revision serves on");
    assert_eq!(report.unwrap().phase, Phase::RolledBack);
    f.sup.start_plugin("fake", UP).await.unwrap();
    let updated = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
    assert!(updated.lines()[0].starts_with("fake: not tried again: revision 3"), "{:?}", updated.lines());
    assert_eq!(f.sup.plugin("fake").unwrap().spec().args, ["old"]);
    f.sup.shutdown().await;
}

/// A stop that lands after the reload's checks, while `begin` is still keeping the
/// rollout, is the operator's: the rollout is interrupted, the canary not judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_rollout_begins_interrupts_it_without_judging_the_canary() {
    use crate::instance::state::State;
    let f = started(&slow_canary("[\"old\"]"), &[]).await;
    let (shared, p) = (f.sup.shared().clone(), f.sup.plugin("fake").unwrap());
    let stable = p.serving();
    // The canary as the reload starts it, beside the stable revision, once the reload took
    // the operator's command then in force.
    let canary = p.new_revision(stable.spec().clone());
    let image = stable.image.lock().unwrap().clone();
    *canary.image.lock().unwrap() = image;
    let generation = p.desired.borrow().generation;
    crate::supervisor::spawn_revision(&shared, &p, &canary);
    let all = |rev: &crate::instance::Revision, state: State| rev.instances.iter().all(|i| i.status().state == state);
    assert!(p.wait_until(UP, |_| all(&canary, State::Running)).await, "the canary never ran");
    // Checked, the canary is about to begin its rollout when the operator stops the plugin.
    f.sup.stop_plugin("fake").await.unwrap();
    assert!(p.wait_until(UP, |_| all(&canary, State::Stopped)).await, "the canary never stopped");
    assert_eq!(super::begin(&shared, &p, stable, canary, generation).await, 10);
    let deadline = Instant::now() + UP;
    let report = loop {
        let report = p.rollout().expect("a rollout").report();
        if report.phase != Phase::Running || Instant::now() >= deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(report.phase, Phase::Interrupted, "{report}");
    assert!(report.note.contains("the operator stopped the plugin"), "{report}");
    assert_eq!(f.sup.shared().state.rollout("fake").map(|s| s.phase), Some(Phase::Interrupted));
    f.sup.shutdown().await;
}

/// A rollout kept for `plugin` as if a rollout from `text`'s entry had been under way.
fn kept_for(
    sup: &Supervisor,
    plugin: &str,
    text: String,
    copy: Option<std::path::PathBuf>,
) -> super::saved::SavedRollout {
    let saved = super::saved::SavedRollout {
        phase: Phase::Running,
        stable_revision: 1,
        canary_revision: 2,
        steps: vec![10, 100],
        stable_config: sup.config().source.clone().unwrap(),
        stable_text: text,
        stable_sha256: "0".repeat(64),
        stable_copy: copy,
        canary_fingerprint: "x".into(),
        why: String::new(),
    };
    sup.shared().state.set_rollout(plugin, Some(saved.clone())).unwrap();
    saved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_rollouts_of_plugins_gone_from_the_config_and_binaries_no_rollout_points_at_go() {
    let f = started(&slow_canary("[\"old\"]"), &[]).await;
    rewrite(&f.sup, &slow_canary("[\"new\"]"));
    f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    let state = f.sup.shared().state.dir().to_owned();
    let images = state.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (kept, gone_copy, orphan) = (images.join("fake-aaaa"), images.join("gone-bbbb"), images.join("fake-cccc"));
    for file in [&kept, &gone_copy, &orphan] {
        std::fs::write(file, b"binary").unwrap();
    }
    // The rollout under way points at its stable binary's copy.
    let mut saved = f.sup.shared().state.rollout("fake").unwrap();
    saved.stable_copy = Some(kept.clone());
    f.sup.shared().state.set_rollout("fake", Some(saved)).unwrap();
    // A plugin under rollout when the supervisor stopped, removed from the file since.
    let text = std::fs::read_to_string(f.sup.config().source.as_ref().unwrap()).unwrap();
    kept_for(&f.sup, "gone", text.replace("\"fake\"", "\"gone\""), Some(gone_copy.clone()));
    let (sup, _) = crate::instance::fake::restart(f.sup, &slow_canary("[\"new\"]")).await;
    sup.wait_running("fake", UP).await.unwrap();
    assert_eq!(sup.plugin("fake").unwrap().rollout().unwrap().report().phase, Phase::Interrupted);
    assert!(kept.exists(), "a copy a kept rollout points at stays");
    assert!(!orphan.exists(), "one nothing points at goes");
    assert!(sup.shared().state.rollout("gone").is_none(), "what was kept of a plugin gone from the config goes");
    assert!(!gone_copy.exists(), "with its copy");
    let said: Vec<(String, String)> =
        sup.events().subscribe().0.into_iter().filter(|e| e.plugin == "gone").map(|e| (e.kind, e.message)).collect();
    assert_eq!(
        said,
        [(
            "removed".to_owned(),
            "not in the config file at start: its running rollout (revision 2 beside revision 1) and what was kept for it are forgotten"
                .to_owned()
        )]
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_added_by_update_starts_from_its_entry_whatever_rollout_was_kept_of_that_name() {
    let f = started(&plugin("fake", ""), &[]).await;
    // Kept of an earlier plugin "gone" whose removal could not be written: its entry ran
    // `old`.
    let text = std::fs::read_to_string(f.sup.config().source.as_ref().unwrap()).unwrap();
    let then = text.replace("name = \"fake\"", "name = \"gone\"\nargs = [\"old\"]");
    kept_for(&f.sup, "gone", then, None);
    let entries = format!("{}{}", plugin("fake", ""), plugin("gone", "args = [\"new\"]"));
    rewrite(&f.sup, &entries);
    let updated = f.sup.update(&[], ReloadOptions::default()).await.unwrap();
    assert_eq!(updated.lines(), ["gone: added"]);
    assert_eq!(f.sup.plugin("gone").unwrap().spec().args, ["new"]);
    assert!(f.sup.shared().state.rollout("gone").is_none(), "nothing kept is its");
    // Nor does a restart bring back the earlier plugin's revision.
    let (sup, _) = crate::instance::fake::restart(f.sup, &entries).await;
    sup.wait_running("gone", UP).await.unwrap();
    let p = sup.plugin("gone").unwrap();
    assert_eq!(p.spec().args, ["new"]);
    assert!(p.rollout().is_none());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_refused_keeps_nothing_but_one_cut_short_by_a_stop_comes_back_on_the_stable_revision() {
    let f = started(&slow_canary("[\"old\"]"), &[]).await;
    rewrite(&f.sup, &slow_canary("[\"new\"]"));
    // Refused by its checks: it began no rollout, and nothing of one is kept.
    f.fake.script("fake", &[Behaviour::Exit { code: 3 }]);
    let err = f.sup.reload("fake", ReloadOptions::default()).await.unwrap_err();
    assert!(matches!(err, ReloadError::NotStarted { .. }), "{err}");
    assert!(f.sup.shared().state.rollout("fake").is_none());

    // The supervisor stops while the canary is still in its handshake: no step judged it,
    // so the next start is on the stable revision, the rollout interrupted.
    f.fake.script("fake", &[Behaviour::Hang]);
    let p = f.sup.plugin("fake").unwrap();
    let stop = async {
        assert!(p.wait_until(UP, |p| p.revisions().len() == 2).await, "the canary never started");
        f.sup.shutdown().await;
    };
    let (reloaded, ()) = tokio::join!(f.sup.reload("fake", ReloadOptions::default()), stop);
    let err = reloaded.unwrap_err();
    assert!(matches!(err, ReloadError::ShuttingDown(_)), "{err}");
    let (sup, fake) = crate::instance::fake::restart(f.sup, &slow_canary("[\"new\"]")).await;
    sup.wait_running("fake", UP).await.unwrap();
    let p = sup.plugin("fake").unwrap();
    assert_eq!((p.spec().args.clone(), fake.launches("fake")), (vec!["old".to_owned()], 1));
    assert_eq!(p.rollout().unwrap().report().phase, Phase::Interrupted);
    sup.shutdown().await;
}

/// An abort of an interrupted rollout while its resume is still starting the canary is
/// refused, not said done: the resume goes on, and the canary takes its share.
#[tokio::test]
async fn an_interrupted_rollout_cannot_be_given_up_while_its_resume_starts_the_canary() {
    let f = started(&slow_canary("[\"old\"]"), &[]).await;
    rewrite(&f.sup, &slow_canary("[\"new\"]"));
    f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    assert_eq!(f.sup.restart_plugin("fake", UP).await.unwrap(), "running");
    until_phase(&f.sup, Phase::Interrupted).await;
    f.fake.hold();
    let sup = &f.sup;
    let resume = sup.rollout("fake", Action::Resume);
    let abort = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = sup.rollout("fake", Action::Abort).await.unwrap_err();
        f.fake.release();
        refused
    };
    let (resumed, refused) = tokio::join!(resume, abort);
    assert_eq!(
        refused.to_string(),
        "plugin \"fake\": cannot abort: the rollout is interrupted (a reload of it is under way, such as a resume \
         starting the canary; try again once it is over (`supervisorctl rollout status fake`))"
    );
    let (said, report) = resumed.unwrap();
    assert!(said.starts_with("fake: revision 3 takes 10% of calls as a canary"), "{said}");
    assert_eq!(report.map(|r| r.phase), Some(Phase::Running));
    f.sup.shutdown().await;
}

/// A resume's reload that begins only after an abort gave the rollout up starts nothing.
#[tokio::test]
async fn a_resume_whose_rollout_was_given_up_before_it_began_starts_nothing() {
    let f = started(&slow_canary("[\"old\"]"), &[]).await;
    rewrite(&f.sup, &slow_canary("[\"new\"]"));
    f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    assert_eq!(f.sup.restart_plugin("fake", UP).await.unwrap(), "running");
    until_phase(&f.sup, Phase::Interrupted).await;
    f.sup.rollout("fake", Action::Abort).await.unwrap();
    let resume = ReloadOptions { resume: true, ..ReloadOptions::default() };
    let err = f.sup.reload("fake", resume).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"fake\": the interrupted rollout was given up, or the plugin stopped, before its resume began; \
         nothing was started"
    );
    assert_eq!(f.sup.plugin("fake").unwrap().revisions().len(), 1, "no canary");
    f.sup.shutdown().await;
}
