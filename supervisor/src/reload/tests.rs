//! Reload as a specification, run without root over the fake launcher: a new revision
//! replaces the serving one under load without a failed call, and every kind of broken new
//! version is refused with its cause while the old one keeps serving.

use std::time::Duration;

use super::{ReloadError, ReloadOptions};
use crate::Supervisor;
use crate::instance::fake::{
    Behaviour, FakeLauncher, Load, UP, echo, fixture, fixture_over, one_revision_left, plugin,
};
use crate::instance::state::State;

fn pids(sup: &Supervisor) -> Vec<i32> {
    sup.plugin("fake").unwrap().serving().instances.iter().filter_map(|i| i.status().pid).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_replace_every_instance_under_load_without_a_failed_call() {
    let f = fixture(&plugin("fake", "replicas = 2"), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let load = Load::start(&f.sup);
    let mut seen = pids(&f.sup);
    for round in 1..=5u64 {
        let done = f.sup.reload("fake", ReloadOptions::default()).await.expect("reload");
        assert_eq!((done.from, done.to), (round, round + 1));
        assert_eq!(done.pids.len(), 2);
        assert!(done.pids.iter().all(|p| !seen.contains(p)), "new processes: {:?} after {seen:?}", done.pids);
        seen.extend(done.pids.iter());
        assert_eq!(pids(&f.sup), done.pids);
        one_revision_left(&f.sup).await;
    }
    let (calls, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(calls > 20, "the load kept calling: {calls}");
    // Instance ids are new with every revision, and status says which revision runs.
    let p = f.sup.plugin("fake").unwrap();
    let ids: Vec<String> = p.instances().iter().map(|i| i.id.clone()).collect();
    assert_eq!(ids, ["fake-10", "fake-11"]);
    assert!(p.instances().iter().all(|i| i.revision == 6));
    let kinds: Vec<String> = f.sup.events().subscribe().0.into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "reloaded").count(), 5);
    f.sup.shutdown().await;
}

/// Reloads into `broken`, expecting a refusal; checks that the serving revision, its
/// processes and calls were left as they were, and that the new one went away.
async fn refused(broken: Behaviour, replicas: usize) -> ReloadError {
    let f = fixture(&plugin("fake", &format!("replicas = {replicas}")), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let before = pids(&f.sup);
    f.fake.script("fake", &vec![broken; replicas]);
    let load = Load::start(&f.sup);
    // Calls are under way when the reload begins (a refusal can come sooner than a call).
    load.made(1).await;
    let err = f.sup.reload("fake", ReloadOptions::default()).await.unwrap_err();
    one_revision_left(&f.sup).await;
    let (calls, failures) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(calls > 0);
    let p = f.sup.plugin("fake").unwrap();
    assert_eq!(p.serving().number, 1, "the old revision still serves");
    assert_eq!(pids(&f.sup), before, "and its processes were not touched");
    assert!(p.instances().iter().all(|i| i.status().state == State::Running));
    assert_eq!(echo(f.sup.channel("fake").unwrap(), "after").await.unwrap(), "after");
    let refusals: Vec<String> =
        f.sup.events().subscribe().0.into_iter().filter(|e| e.kind == "reload-refused").map(|e| e.message).collect();
    assert_eq!(refusals, [err.to_string()]);
    f.sup.shutdown().await;
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_answering_as_another_plugin_is_refused() {
    let err = refused(Behaviour::Serve { name: "other".into() }, 2).await;
    assert!(matches!(err, ReloadError::NotStarted { .. }), "{err}");
    assert!(
        err.to_string().contains("plugin answered the handshake as \"other\", but the config names it \"fake\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_does_not_start_is_refused() {
    let err = refused(Behaviour::Exit { code: 3 }, 1).await;
    assert!(err.to_string().contains("exited with code 3 before answering the handshake"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_hangs_at_its_handshake_is_refused() {
    let err = refused(Behaviour::Hang, 1).await;
    assert!(err.to_string().contains("no handshake within 1s"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_crashes_after_its_handshake_is_refused() {
    let err = refused(Behaviour::ServeThenExit { after: Duration::from_millis(100) }, 1).await;
    assert!(matches!(err, ReloadError::Unsteady { .. } | ReloadError::NotStarted { .. }), "{err}");
    assert!(err.to_string().contains("exited with code 1"), "{err}");
}

/// An exit 0 is no failure to `restart = "on-failure"`, which leaves the instance stopped:
/// switched to, the revision would serve nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_exits_cleanly_after_its_handshake_is_refused() {
    let err = refused(Behaviour::ServeThenExitZero { after: Duration::from_millis(150) }, 1).await;
    // Unsteady, or not started where the exit came before the checks ended (a loaded host).
    assert!(matches!(err, ReloadError::Unsteady { .. } | ReloadError::NotStarted { .. }), "{err}");
    assert!(err.to_string().contains("exited with code 0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaking_contract_is_refused_and_listed_unless_allowed() {
    let err = refused(Behaviour::ServeBreaking { name: "fake".into() }, 1).await;
    let ReloadError::Breaking { breaks, .. } = &err else { panic!("{err}") };
    assert_eq!(breaks.len(), 1, "{breaks:?}");
    assert!(breaks[0].contains("fake.v1.Text.text"), "{breaks:?}");
    assert!(err.to_string().ends_with("(reload with --allow-breaking to accept)"), "{err}");

    // Allowed, it is switched to, and the break is reported.
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    f.fake.script("fake", &[Behaviour::ServeBreaking { name: "fake".into() }]);
    let done = f.sup.reload("fake", ReloadOptions { allow_breaking: true, ..ReloadOptions::default() }).await.unwrap();
    assert_eq!(done.to, 2);
    assert!(done.changes.iter().any(|c| c.contains("fake.v1.Text.text")), "{:?}", done.changes);
    assert_eq!(f.sup.plugin("fake").unwrap().serving().instances[0].status().declared.version, "2.0.0");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_reload_reads_the_config_entry_again() {
    let f = fixture(&plugin("fake", "replicas = 1"), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let file = f.sup.config().source.clone().unwrap();
    let text = std::fs::read_to_string(&file).unwrap().replace("replicas = 1", "replicas = 3");
    std::fs::write(&file, text).unwrap();
    let done = f.sup.reload("fake", ReloadOptions::default()).await.unwrap();
    assert_eq!(done.pids.len(), 3);
    assert_eq!(f.sup.plugin("fake").unwrap().spec().replicas, 3);

    // A config that no longer validates changes nothing.
    std::fs::write(&file, "[[plugin]]\nname = \"fake\"\n").unwrap();
    let err = f.sup.reload("fake", ReloadOptions::default()).await.unwrap_err();
    assert!(matches!(err, ReloadError::Config(_)), "{err}");
    assert_eq!(f.sup.plugin("fake").unwrap().serving().number, 2);
    f.sup.shutdown().await;
}

#[tokio::test]
async fn one_reload_at_a_time_and_a_stopped_plugin_switches_without_starting() {
    let fake = FakeLauncher::new();
    fake.hold();
    let f = fixture_over(fake, &plugin("fake", "autostart = false"), &[]);
    let done = f.sup.reload("fake", ReloadOptions::default()).await.expect("reload of a stopped plugin");
    assert!(done.pids.is_empty());
    assert_eq!(f.fake.launches("fake"), 0, "nothing was started");
    assert_eq!(f.sup.plugin("fake").unwrap().serving().number, 2);

    // Started, a reload waits on a held launch; a second one meanwhile is turned away.
    f.fake.release();
    f.sup.start_plugin("fake", UP).await.unwrap();
    f.fake.hold();
    let sup = &f.sup;
    let first = sup.reload("fake", ReloadOptions::default());
    let second = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = sup.reload("fake", ReloadOptions::default()).await.unwrap_err();
        sup.plugin("fake").unwrap();
        f.fake.release();
        err
    };
    let (first, second) = tokio::join!(first, second);
    assert!(matches!(second, ReloadError::InProgress(_)), "{second}");
    assert_eq!(first.unwrap().to, 3);
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_stop_or_restart_while_the_new_revision_starts_ends_the_reload_at_once() {
    for (restart, by) in [(false, "the operator stopped it"), (true, "the operator restarted it")] {
        let f = fixture(&plugin("fake", ""), &[]);
        f.sup.wait_running("fake", UP).await.unwrap();
        // The new revision's instance waits in its launch.
        f.fake.hold();
        let sup = &f.sup;
        let reload = async {
            let began = std::time::Instant::now();
            (sup.reload("fake", ReloadOptions::default()).await, began.elapsed())
        };
        let command = async {
            // Once the new revision's launch waits (a fixed 100 ms was not always enough
            // for the reload to get there on a loaded machine: the command then came
            // before the reload began, and was no interruption of it).
            let until = std::time::Instant::now() + UP;
            while f.fake.launches("fake") < 2 {
                assert!(std::time::Instant::now() < until, "the new revision never launched");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sup.plugin("fake").unwrap().set_desired(restart, restart);
        };
        let ((reloaded, took), ()) = tokio::join!(reload, command);
        let err = reloaded.unwrap_err();
        assert!(matches!(&err, ReloadError::Interrupted { by: b, .. } if *b == by), "{err}");
        assert!(
            err.to_string()
                .ends_with("while its new revision was starting: the new revision is not taken (update again)")
        );
        // Not the wait for a start that would never count (twice the handshake timeout and 5 s).
        assert!(took < Duration::from_secs(3), "took {took:?}");
        assert_eq!(sup.plugin("fake").unwrap().serving().number, 1, "the old revision stays the plugin's");
        f.fake.release();
        f.sup.shutdown().await;
    }
}

#[tokio::test]
async fn the_old_revisions_teardown_sees_the_new_one_alive_and_leaves_the_shared_uid_be() {
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    f.sup.reload("fake", ReloadOptions::default()).await.expect("reload");
    one_revision_left(&f.sup).await;
    let lives: Vec<usize> = f.fake.teardowns().iter().map(|(_, o)| o.live).collect();
    assert_eq!(lives, [1], "the new instance runs as the same uid while the old one is torn down");
    f.sup.stop_plugin("fake").await.unwrap();
    let lives: Vec<usize> = f.fake.teardowns().iter().map(|(_, o)| o.live).collect();
    assert_eq!(lives, [1, 0], "the last one's teardown may sweep the uid");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_replacement_runs_the_serving_image_again_and_switches_at_once_even_for_a_canary_plugin() {
    let f = fixture(&plugin("fake", "[plugin.rollout]\nstrategy = \"canary\"\nsteps = [10, 100]\n"), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let p = f.sup.plugin("fake").unwrap().clone();
    let image = |rev: &crate::instance::Revision| rev.image.lock().unwrap().clone().expect("a verified image");
    let before = image(&p.serving());
    let source = super::Source::Replace;
    let done = super::spawned(f.sup.shared().clone(), p.clone(), source, ReloadOptions::default()).await.unwrap();
    assert_eq!((done.from, done.to, done.canary), (1, 2, None), "new processes at once, not a canary");
    assert!(std::sync::Arc::ptr_eq(&before, &image(&p.serving())), "the image it ran, not the file read again");
    assert!(p.rollout().is_none());
    f.sup.shutdown().await;
}

/// A new instance that takes the health check's stream and never answers (its runtime
/// blocked after its init) fails the check once its time is up: the reload ends, and
/// the updates and reloads queued behind it go on.
#[tokio::test(start_paused = true)]
async fn a_health_check_the_new_instance_never_answers_fails_in_its_time() {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    tokio::spawn(async move {
        let mut conn = h2::server::handshake(theirs).await.unwrap();
        let mut held = Vec::new();
        while let Some(Ok(stream)) = conn.accept().await {
            held.push(stream);
        }
    });
    let (channel, conn) = plugin_proto::transport::H2Channel::handshake(ours).await.unwrap();
    tokio::spawn(conn);
    let checked = tokio::time::timeout(Duration::from_secs(60), super::serving(channel)).await;
    assert_eq!(checked, Ok(Err("health check not answered within 5s".to_owned())));
}

/// A contract that is a FIFO is refused at once, naming it, as any contract that is not a
/// regular file: it waited for a writer for ever (and, read on the runtime's thread as the
/// reload's config was then, held every call the daemon routes meanwhile).
#[tokio::test]
async fn a_reload_whose_contract_is_a_fifo_is_refused_at_once_and_calls_go_on() {
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let file = f.sup.config().source.clone().unwrap();
    let slow = file.with_file_name("slow.proto");
    let c = std::ffi::CString::new(slow.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path in the fixture's temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // The entry is the file's last table.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}contract = [\"slow.proto\"]\n")).unwrap();
    let reloaded = tokio::time::timeout(Duration::from_secs(10), f.sup.reload("fake", ReloadOptions::default()))
        .await
        .expect("refused at once, not waiting for a writer");
    match reloaded {
        Err(ReloadError::Config(e @ crate::config::ConfigError::Invalid { .. })) => {
            assert!(e.to_string().contains(&format!("{}: not a regular file", slow.display())), "{e}")
        }
        other => panic!("expected the contract's config error, got {other:?}"),
    }
    assert_eq!(echo(f.sup.channel("fake").unwrap(), "after").await.unwrap(), "after");
    assert_eq!(f.sup.plugin("fake").unwrap().serving().number, 1, "the old revision still serves");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_failed_health_check_keeps_the_plugins_words_to_one_escaped_line() {
    // The new revision answers the reload's health check with a status whose message
    // would start a line of its own in the daemon's log (and the refusal's event).
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let served = tokio::spawn(async move {
        let mut conn = h2::server::handshake(theirs).await.unwrap();
        while let Some(Ok((_req, mut respond))) = conn.accept().await {
            let answer = http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "14")
                .header("grpc-message", "bye%0A2026-12-06T00:00:00Z  INFO supervisor: all is well%1B[31m")
                .body(())
                .unwrap();
            respond.send_response(answer, true).unwrap();
        }
    });
    let (channel, conn) = plugin_proto::transport::H2Channel::handshake(ours).await.unwrap();
    tokio::spawn(conn);
    let why = super::serving(channel).await.unwrap_err();
    assert_eq!(
        why,
        "health check failed: Unavailable: bye\\n2026-12-06T00:00:00Z  INFO supervisor: all is well\\u{1b}[31m"
    );
    served.abort();
}
