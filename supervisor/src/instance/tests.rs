//! The lifecycle as a specification, run without root: plugins are SDK plugins served in
//! this process by the fake launcher, and everything above the launcher (the state
//! machine, the handshake and init, the restart policy, refusals, stops, shutdown) is the
//! real code.

use std::time::{Duration, Instant};

use super::fake::{Behaviour, FakeLauncher, Fixture, UP, echo, fixture, fixture_over, plugin, until};
use super::state::State;
use crate::Supervisor;

fn kinds(sup: &Supervisor, plugin: &str) -> Vec<String> {
    sup.events().subscribe().0.into_iter().filter(|e| e.plugin == plugin).map(|e| e.kind).collect()
}

fn messages(sup: &Supervisor, kind: &str) -> Vec<String> {
    sup.events().subscribe().0.into_iter().filter(|e| e.kind == kind).map(|e| e.message).collect()
}

#[tokio::test]
async fn a_plugin_starts_serves_and_drains_when_stopped() {
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    assert_eq!(echo(f.sup.channel("fake").unwrap(), "hello").await.unwrap(), "hello");
    let status = f.sup.plugin("fake").unwrap().instances()[0].status();
    let digest = crate::integrity::Sha256Digest::of_file(&std::fs::File::open("/bin/true").unwrap()).unwrap();
    assert_eq!(
        (status.state, status.sha256.as_str(), status.declared.version.as_str()),
        (State::Running, digest.to_hex().as_str(), "1.0.0")
    );
    assert_eq!(status.declared.services, ["fake.v1.Fake"]);
    assert_eq!(kinds(&f.sup, "fake"), ["spawned", "ready"]);

    let said = f.sup.stop_plugin("fake").await.unwrap();
    assert_eq!(said, "stopped (stopped by request)");
    // It drained on the Shutdown call and ended on its own, cleanly.
    let stopped = messages(&f.sup, "stopped");
    assert!(stopped[0].contains("stopped (operator request): exited with code 0 (drain "), "{stopped:?}");
    let err = echo(f.sup.channel("fake").unwrap(), "late").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "plugin \"fake\" is stopped (stopped by request)");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn every_phase_of_a_start_and_a_stop_is_timed_in_order_and_counted() {
    use crate::observe::phases::Phase;
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let inst = f.sup.plugin("fake").unwrap().instances()[0].clone();
    let started: Vec<Phase> = inst.status().phases.0.iter().map(|(p, _)| *p).collect();
    assert_eq!(started, [Phase::Verify, Phase::Spawn, Phase::Handshake, Phase::Init, Phase::Health]);
    let ready = messages(&f.sup, "ready");
    assert!(ready[0].contains(" ready in ") && ready[0].contains(" ms (verify "), "{ready:?}");
    assert!(ready[0].contains(", health ") && ready[0].contains("): version 1.0.0"), "{ready:?}");
    f.sup.stop_plugin("fake").await.unwrap();
    let all: Vec<Phase> = inst.status().phases.0.iter().map(|(p, _)| *p).collect();
    assert_eq!(&all[5..], [Phase::Drain, Phase::Teardown], "the stop's after the start's");
    // A start again replaces the start's; the stop's stay until the next stop.
    f.sup.start_plugin("fake", UP).await.unwrap();
    assert_eq!(inst.status().phases.0.len(), 7);
    let metrics = f.sup.metrics_text();
    for (phase, count) in [("verify", 2), ("spawn", 2), ("health", 2), ("drain", 1), ("teardown", 1)] {
        let line = format!("supervisor_phase_duration_seconds_count{{plugin=\"fake\",phase=\"{phase}\"}} {count}\n");
        assert!(metrics.contains(&line), "{line}{metrics}");
    }
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_crash_is_named_and_restarted_after_a_backoff() {
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let first = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
    f.fake.crash(first, 3);
    until(&f.sup, "fake", "running anew", |s| s.state == State::Running && s.pid != Some(first)).await;
    let status = f.sup.plugin("fake").unwrap().instances()[0].status();
    assert_eq!(status.restarts, 1);
    assert_eq!(f.fake.launches("fake"), 2);
    let exited = messages(&f.sup, "exited");
    assert_eq!(exited.len(), 1, "{exited:?}");
    assert!(exited[0].starts_with(&format!("pid {first} exited with code 3 (teardown ")), "{exited:?}");
    assert!(messages(&f.sup, "backoff")[0].starts_with("exited with code 3; next attempt in "));
    // How it ended outlives the restart, which cleared the status's reason (onboard's
    // fault checks read it there: a look after a quick restart found "" in CI).
    assert_eq!(status.reason, "");
    let last = status.last_exit.expect("how the first process ended");
    assert_eq!((last.pid, last.reason.as_str()), (first, "exited with code 3"));
    assert_eq!(echo(f.sup.channel("fake").unwrap(), "again").await.unwrap(), "again");
    f.sup.shutdown().await;
}

/// A revision is its image: a binary rebuilt in place is not what an instance of it runs
/// after a crash (in a canary, the stable side would run the canary's code, and after a
/// rollback the code rolled back), nor after the operator's restart or an acknowledged
/// start; a reload takes it, as a new revision checked as any.
#[tokio::test]
async fn a_revision_restarts_into_its_own_image_and_a_reload_takes_the_file_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("plugin");
    std::fs::write(&binary, b"version 1").unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let digest = |bytes: &[u8]| crate::integrity::Sha256Digest::of_bytes(bytes).to_hex();
    let f = fixture(&format!("[[plugin]]\nname = \"fake\"\nbinary = {:?}\n", binary.display().to_string()), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let sha = || f.sup.plugin("fake").unwrap().instances()[0].status().sha256;
    assert_eq!(sha(), digest(b"version 1"));
    std::fs::write(&binary, b"version 2").unwrap();
    // A start of the running plugin is acknowledged (the command generation moves on).
    f.sup.start_plugin("fake", UP).await.unwrap();
    let first = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
    f.fake.crash(first, 3);
    until(&f.sup, "fake", "running anew", |s| s.state == State::Running && s.pid != Some(first)).await;
    assert_eq!(sha(), digest(b"version 1"), "after a crash: the revision's image, not the file rebuilt since");
    f.sup.restart_plugin("fake", UP).await.unwrap();
    assert_eq!(sha(), digest(b"version 1"), "after the operator's restart too");
    f.sup.reload("fake", crate::reload::ReloadOptions::default()).await.unwrap();
    assert_eq!(sha(), digest(b"version 2"), "a reload takes the file, as a new revision");
    f.sup.shutdown().await;
}

/// A plugin whose first process does `first` and ends, and how that one ended, once a
/// second process of it runs.
async fn restarted_after(first: Behaviour) -> (Fixture, super::state::LastExit) {
    let f = fixture(&plugin("fake", ""), &[("fake", &[first])]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let pid = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
    until(&f.sup, "fake", "running anew", |s| s.state == State::Running && s.pid != Some(pid)).await;
    assert_eq!(f.fake.launches("fake"), 2);
    let last = f.sup.plugin("fake").unwrap().instances()[0].status().last_exit.expect("how the first one ended");
    assert_eq!(last.pid, pid);
    (f, last)
}

#[tokio::test]
async fn a_process_that_closes_its_connection_and_lives_on_is_stopped_and_restarted() {
    let (f, last) = restarted_after(Behaviour::ServeThenHangUp { after: Duration::from_millis(300) }).await;
    assert!(
        last.reason.starts_with(
            "its connection to the supervisor closed (it closed the connection) and it did not exit within 1s; "
        ),
        "{}",
        last.reason
    );
    // Stopped: the process was made to end, not left behind.
    assert!(last.reason.contains("killed by signal") || last.reason.contains("SIGTERM"), "{}", last.reason);
    assert_eq!(echo(f.sup.channel("fake").unwrap(), "again").await.unwrap(), "again");
    f.sup.shutdown().await;
}

/// A plugin whose h2 ended the connection with an error (it took what it was sent for an
/// attack) exits 0 once nobody can call it: a failure all the same, restarted as such.
#[tokio::test]
async fn a_process_whose_connection_failed_is_restarted_though_it_exits_zero() {
    let (f, last) = restarted_after(Behaviour::ServeThenBreakAndExitZero { after: Duration::from_millis(300) }).await;
    assert!(
        last.reason
            .starts_with("exited with code 0, after its connection to the supervisor failed (the connection failed: "),
        "{}",
        last.reason
    );
    assert_eq!(echo(f.sup.channel("fake").unwrap(), "again").await.unwrap(), "again");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_shutdown_during_a_disconnected_plugins_grace_says_it_did_not_wait_it_out() {
    let hang_up = Behaviour::ServeThenHangUp { after: Duration::from_millis(300) };
    let f = fixture(&plugin("fake", "stop_timeout = \"60s\""), &[("fake", &[hang_up])]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let pid = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
    until(&f.sup, "fake", "in its grace", |s| {
        s.state == State::Stopping && s.reason.starts_with("its connection closed")
    })
    .await;
    let started = Instant::now();
    f.sup.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(30), "the shutdown waited out the 60s grace");
    let exited = messages(&f.sup, "exited");
    let said = exited.iter().find(|m| m.starts_with(&format!("pid {pid} "))).unwrap_or_else(|| panic!("{exited:?}"));
    // Not "did not exit within 60s": it was not given them.
    assert!(
        said.contains(
            "its connection to the supervisor closed (it closed the connection) and it was stopped before it \
             exited (supervisor shutdown); "
        ),
        "{said}"
    );
}

#[tokio::test]
async fn what_a_plugin_says_when_it_refuses_is_kept_cut_and_escaped() {
    // Tens of kilobytes (within what the supervisor takes of an answer's trailers), with a
    // line of the daemon's log forged after a newline.
    let message = format!("bye\n2026-12-04T21:07:16Z  INFO supervisor stopping\x1b[31m{}", "x".repeat(40 << 10));
    let said_all = format!("... ({} bytes in all)", message.len());
    let f = fixture(&plugin("fake", ""), &[("fake", &[Behaviour::RefuseInit { message }])]);
    until(&f.sup, "fake", "refused", |s| s.state == State::Failed).await;
    let status = f.sup.plugin("fake").unwrap().instances()[0].status();
    assert!(
        status.reason.starts_with(
            "refused: init refused: InvalidArgument: bye\\n2026-12-04T21:07:16Z  INFO supervisor stopping\\u{1b}[31mxxx"
        ),
        "{}",
        &status.reason[..status.reason.len().min(200)]
    );
    assert!(status.reason.ends_with(&said_all), "{}", &status.reason[status.reason.len() - 60..]);
    assert!(status.reason.len() < 1200, "{} bytes kept", status.reason.len());
    let refused = messages(&f.sup, "refused");
    assert!(refused.iter().all(|m| !m.contains('\n') && m.len() < 1200), "{refused:?}");
    f.sup.shutdown().await;
    // Megabytes: past what the supervisor takes, its connection ends before the message
    // is held. That is no answer of the plugin's to wait on as a refusal, but a start
    // that failed, tried again under its restart policy (the next launch serves).
    let message = "x".repeat(5 << 20);
    let f = fixture(&plugin("fake", ""), &[("fake", &[Behaviour::RefuseInit { message }])]);
    f.sup.wait_running("fake", UP).await.unwrap();
    assert_eq!(f.fake.launches("fake"), 2);
    let backoff = messages(&f.sup, "backoff");
    assert!(
        backoff[0].starts_with(
            "init failed: HTTP/2: connection error detected: detected excessive load generating behavior \
             (b\"too_many_continuations\"); next attempt in "
        ),
        "{backoff:?}"
    );
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_plugin_answering_as_another_is_refused_and_waits_for_the_operator() {
    let f = fixture(&plugin("fake", ""), &[("fake", &[Behaviour::Serve { name: "other".into() }])]);
    until(&f.sup, "fake", "failed", |s| s.state == State::Failed).await;
    let status = f.sup.plugin("fake").unwrap().instances()[0].status();
    assert_eq!(status.reason, "refused: plugin answered the handshake as \"other\", but the config names it \"fake\"");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.fake.launches("fake"), 1, "a refusal is not retried by itself");
    // The operator's start tries again; this time the process answers as itself.
    let said = f.sup.start_plugin("fake", UP).await.unwrap();
    assert_eq!(said, "running");
    assert_eq!(f.fake.launches("fake"), 2);
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_start_answers_for_every_replica_and_one_failed_makes_it_a_failure() {
    // The second launch answers as another plugin: refused, failed; the first runs.
    let script: &[Behaviour] = &[Behaviour::Serve { name: "fake".into() }, Behaviour::Serve { name: "other".into() }];
    let f = fixture(&plugin("fake", "replicas = 2\nautostart = false"), &[("fake", script)]);
    let said = f.sup.start_plugin("fake", UP).await.unwrap();
    // It answered for the first replica alone: "running", with its other failed.
    assert!(said.starts_with("failed (1 of 2): "), "{said}");
    let failed = "failed (refused: plugin answered the handshake as \"other\", but the config names it \"fake\")";
    let (running, refused) = (said.contains("fake-0 running"), said.contains(&format!("fake-0 {failed}")));
    assert!(running != refused, "{said}");
    assert!(
        said.contains("fake-1 running") == refused && said.contains(&format!("fake-1 {failed}")) == running,
        "{said}"
    );
    // A stop stops what runs, and says so first: the failed replica stays failed, named
    // after (led by "failed", the answer made supervisorctl stop exit 1).
    let stopped = f.sup.stop_plugin("fake").await.unwrap();
    assert!(stopped.starts_with("stopped (1 of 2 had failed): "), "{stopped}");
    assert!(stopped.contains(failed) && stopped.contains("stopped (stopped by request)"), "{stopped}");
    // Alike, they are said once.
    let again = f.sup.start_plugin("fake", UP).await.unwrap();
    assert_eq!(again, "running");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_process_that_never_answers_is_refused_at_the_handshake_timeout() {
    let f = fixture(&plugin("fake", ""), &[("fake", &[Behaviour::Hang])]);
    until(&f.sup, "fake", "failed", |s| s.state == State::Failed).await;
    let reason = f.sup.plugin("fake").unwrap().instances()[0].status().reason;
    assert_eq!(reason, "refused: no handshake within 1s: not a plugin, or hung at start");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_process_that_dies_before_the_handshake_is_refused_with_its_status() {
    let f = fixture(&plugin("fake", ""), &[("fake", &[Behaviour::Exit { code: 3 }])]);
    until(&f.sup, "fake", "failed", |s| s.state == State::Failed).await;
    let reason = f.sup.plugin("fake").unwrap().instances()[0].status().reason;
    assert_eq!(
        reason,
        "refused: exited with code 3 before answering the handshake: not a plugin, or it crashed at start"
    );
    assert_eq!(messages(&f.sup, "refused"), [reason.trim_start_matches("refused: ").to_owned()]);
    f.sup.shutdown().await;
}

#[tokio::test]
async fn restart_never_leaves_a_crashed_instance_failed() {
    let f = fixture(&plugin("fake", "restart = \"never\""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let pid = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
    f.fake.crash(pid, 1);
    until(&f.sup, "fake", "failed", |s| s.state == State::Failed).await;
    assert_eq!(f.sup.plugin("fake").unwrap().instances()[0].status().reason, "exited with code 1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.fake.launches("fake"), 1);
    f.sup.shutdown().await;
}

/// A `start` of a running plugin is acknowledged, not a command to act on at its end: the
/// crash after it leaves the instance failed under `restart = "never"` (it was started
/// again), and under `on-failure` waits its backoff (it started again at once).
#[tokio::test]
async fn a_start_acknowledged_while_running_changes_nothing_at_the_next_end() {
    let f = fixture(&plugin("fake", "restart = \"never\""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    assert_eq!(f.sup.start_plugin("fake", UP).await.unwrap(), "running");
    let pid = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
    f.fake.crash(pid, 1);
    until(&f.sup, "fake", "failed", |s| s.state == State::Failed).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.fake.launches("fake"), 1, "started again after a start acknowledged long before");
    f.sup.shutdown().await;

    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    assert_eq!(f.sup.start_plugin("fake", UP).await.unwrap(), "running");
    let pid = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
    f.fake.crash(pid, 1);
    until(&f.sup, "fake", "in backoff", |s| s.state == State::Backoff).await;
    f.sup.shutdown().await;
}

#[tokio::test]
async fn failing_again_and_again_is_a_crash_loop_still_retried() {
    // A process that serves and crashes at once, six times: each is a failure after a
    // successful start, which the restart policy retries.
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    for _ in 0..6 {
        let pid = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
        f.fake.crash(pid, 1);
        until(&f.sup, "fake", "running anew", |s| s.state == State::Running && s.pid != Some(pid)).await;
    }
    let loops = messages(&f.sup, "crash-loop");
    assert!(!loops.is_empty(), "{:?}", kinds(&f.sup, "fake"));
    assert!(
        loops[0].starts_with("crash loop: 5 failures in the last 2 minutes; last: exited with code 1"),
        "{loops:?}"
    );
    assert_eq!(f.sup.plugin("fake").unwrap().instances()[0].status().state, State::Running, "still retried");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_shutdown_right_after_start_starts_nothing() {
    let f = fixture(&format!("{}{}", plugin("a", ""), plugin("b", "replicas = 2")), &[]);
    tokio::time::timeout(UP, f.sup.shutdown()).await.expect("shutdown returns");
    assert_eq!(f.fake.launches("a") + f.fake.launches("b"), 0);
}

#[tokio::test]
async fn replicas_starting_together_verify_their_image_once() {
    let f = fixture(&plugin("fake", "replicas = 16"), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let p = f.sup.plugin("fake").unwrap().clone();
    assert!(p.instances().iter().all(|i| i.status().state == State::Running));
    assert_eq!(f.fake.images_made(), 1, "each replica verified the binary for itself");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn replicas_share_the_calls_and_each_restarts_on_its_own() {
    let f = fixture(&plugin("fake", "replicas = 2"), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let p = f.sup.plugin("fake").unwrap().clone();
    let pids: Vec<i32> = p.instances().iter().map(|i| i.status().pid.unwrap()).collect();
    assert_ne!(pids[0], pids[1]);
    for i in 0..4 {
        assert_eq!(echo(f.sup.channel("fake").unwrap(), &format!("m{i}")).await.unwrap(), format!("m{i}"));
    }
    f.fake.crash(pids[1], 9);
    let deadline = Instant::now() + UP;
    while p.instances()[1].status().pid == Some(pids[1]) || p.instances()[1].status().state != State::Running {
        assert!(Instant::now() < deadline, "{:?}", p.instances()[1].status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(p.instances()[0].status().pid, Some(pids[0]), "the other replica was left alone");
    assert_eq!(p.instances()[0].status().restarts, 0);
    f.sup.shutdown().await;
}

#[tokio::test]
async fn a_quota_changed_while_an_instance_launches_reaches_it_too() {
    let fake = FakeLauncher::with_cgroups();
    fake.hold();
    let f = fixture_over(fake, &plugin("fake", "[plugin.quota]\npids_max = 64"), &[]);
    let deadline = Instant::now() + UP;
    while f.fake.launches("fake") == 0 {
        assert!(Instant::now() < deadline, "no launch");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The process is being launched: its cgroup is not there yet for the change to reach.
    let change = crate::quotas::QuotaChange::parse("", "", "", "32").unwrap();
    let (_, said) = f.sup.change_quota("fake", &change, false).unwrap();
    assert!(said.ends_with("(persisted; applied to 0 running instance(s))"), "{said}");
    f.fake.release();
    f.sup.wait_running("fake", UP).await.unwrap();
    let inst = &f.sup.plugin("fake").unwrap().instances()[0];
    let cg = inst.cgroup.load_full().expect("its cgroup");
    assert_eq!(cg.limits().unwrap().pids_max, Some(32), "the change reached the instance launched meanwhile");
    assert_eq!(inst.status().quota.pids_max, Some(32));
    f.sup.shutdown().await;
}

/// A call the router gave an instance just before the instance was told to stop, but that
/// goes out only after: the drain would have closed the connection under it (a broken
/// pipe the caller sees). The stop waits for it instead, and it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_routed_to_an_instance_before_it_stops_is_answered_even_when_sent_after() {
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let live = f.sup.plugin("fake").unwrap().pick().expect("a ready instance");
    let admitted = live.admit().expect("admitted");
    let sup = std::sync::Arc::new(f.sup);
    let stopping = tokio::spawn({
        let sup = sup.clone();
        async move { sup.stop_plugin("fake").await }
    });
    // Its drain begun, time for it to close the connection, had the stop not waited.
    until(&sup, "fake", "draining", |s| s.state == State::Stopping).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "the instance stopped under a call routed to it");
    let late = echo(live.channel.clone(), "late").await;
    drop(admitted);
    assert_eq!(late.unwrap(), "late");
    let said = stopping.await.unwrap().unwrap();
    assert!(said.starts_with("stopped"), "{said}");
    assert!(live.admit().is_none(), "a stopped instance admits no call");
    // The wait for the call routed to it is part of the drain.
    let status = sup.plugin("fake").unwrap().instances()[0].status();
    let drain = status.phases.get(crate::observe::phases::Phase::Drain).expect("a drain");
    assert!(drain >= Duration::from_millis(200), "the call was held 200 ms into the drain: {drain:?}");
}

/// A stop waits for the calls routed to an instance until the plugin has them (their
/// answers begun), not until they end: a stream the plugin took is let run on by its
/// drain, and hears of it (the SDK's shutdown signal) only once the drain is asked for.
#[tokio::test]
async fn a_close_waits_for_calls_until_they_reach_the_plugin_not_until_they_end() {
    let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
    let (channel, _conn) = plugin_proto::transport::H2Channel::handshake(ours).await.unwrap();
    let live = std::sync::Arc::new(super::Live::new(channel, 1));
    let mut stream = live.admit().expect("admitted");
    stream.sent();
    let unsent = live.admit().expect("admitted");
    let closing = tokio::spawn({
        let live = live.clone();
        async move { live.close(Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!closing.is_finished(), "it waits for the call not yet sent");
    drop(unsent);
    tokio::time::timeout(Duration::from_secs(1), closing)
        .await
        .expect("the stream under way does not hold it")
        .unwrap();
    assert!(live.admit().is_none(), "closed to new calls");
    drop(stream);
}

/// The teardown events' results, in order, for `plugin`.
fn teardowns(sup: &Supervisor, plugin: &str) -> Vec<String> {
    sup.events()
        .subscribe()
        .0
        .into_iter()
        .filter(|e| e.plugin == plugin && e.kind == "teardown")
        .map(|e| e.fields["result"].clone())
        .collect()
}

#[tokio::test]
async fn every_end_of_an_instance_is_checked_and_the_verdict_told_in_an_event_a_metric_and_status() {
    use super::launcher::Others;
    let f = fixture(&plugin("fake", ""), &[("fake", &[Behaviour::Serve { name: "other".into() }])]);
    // A refusal at the handshake.
    until(&f.sup, "fake", "failed", |s| s.state == State::Failed).await;
    assert_eq!(teardowns(&f.sup, "fake"), ["clean"]);
    // A crash.
    f.sup.start_plugin("fake", UP).await.unwrap();
    let pid = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
    f.fake.crash(pid, 3);
    until(&f.sup, "fake", "running anew", |s| s.state == State::Running && s.pid != Some(pid)).await;
    // A stop.
    f.sup.stop_plugin("fake").await.unwrap();
    let status = f.sup.plugin("fake").unwrap().instances()[0].status();
    let last = status.teardown.expect("the stop's verdict is kept");
    assert_eq!(last.verdict.to_string(), "teardown clean in 0.0 ms");
    // A shutdown.
    f.sup.start_plugin("fake", UP).await.unwrap();
    f.sup.shutdown().await;
    assert_eq!(teardowns(&f.sup, "fake"), ["clean"; 4]);
    // Each saw no other instance of the plugin alive: the last one may sweep its uid.
    assert_eq!(f.fake.teardowns(), vec![("fake".to_owned(), Others::default()); 4]);
    let metrics = f.sup.metrics_text();
    for line in [
        "supervisor_teardowns_total{plugin=\"fake\",result=\"clean\"} 4\n",
        "supervisor_teardown_duration_seconds_count{plugin=\"fake\",result=\"clean\"} 4\n",
    ] {
        assert!(metrics.contains(line), "{line}{metrics}");
    }
}

#[tokio::test]
async fn what_a_teardown_found_is_told_with_what_was_done_about_it() {
    use crate::observe::teardown::{Done, Found, Leftover};
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    f.fake.leave("fake", Found { leftover: Leftover::Outlived { pid: 7, comm: "sleep".into() }, done: Done::Killed });
    f.sup.stop_plugin("fake").await.unwrap();
    let said = messages(&f.sup, "teardown");
    assert_eq!(said, ["teardown cleaned in 0.0 ms: process 7 (sleep) outlived the instance (killed)"]);
    f.sup.start_plugin("fake", UP).await.unwrap();
    f.fake
        .leave("fake", Found { leftover: Leftover::Cgroup { path: "/x".into() }, done: Done::Retrying("busy".into()) });
    f.sup.stop_plugin("fake").await.unwrap();
    let status = f.sup.plugin("fake").unwrap().instances()[0].status();
    assert_eq!(status.teardown.unwrap().verdict.outcome(), crate::observe::teardown::Outcome::Leftover);
    let metrics = f.sup.metrics_text();
    for result in ["cleaned", "leftover"] {
        let line = format!("supervisor_teardowns_total{{plugin=\"fake\",result=\"{result}\"}} 1\n");
        assert!(metrics.contains(&line), "{line}{metrics}");
    }
    f.sup.shutdown().await;
}

#[tokio::test]
async fn replicas_ending_together_leave_the_uid_to_the_last_one_torn_down() {
    let f = fixture(&plugin("fake", "replicas = 2"), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    f.sup.stop_plugin("fake").await.unwrap();
    let lives: Vec<usize> = f.fake.teardowns().iter().map(|(_, o)| o.live).collect();
    assert_eq!(lives.len(), 2);
    assert!(lives.contains(&0), "one of the two saw no other alive: {lives:?}");
    f.sup.shutdown().await;
}

#[tokio::test]
async fn an_instance_still_starting_when_the_supervisor_stops_is_torn_down_with_a_verdict() {
    let f = fixture(&plugin("fake", ""), &[("fake", &[Behaviour::Hang])]);
    until(&f.sup, "fake", "spawned and greeting", |s| s.state == State::Starting && s.pid.is_some()).await;
    tokio::time::timeout(UP, f.sup.shutdown()).await.expect("the shutdown does not wait for the handshake timeout");
    assert_eq!(teardowns(&f.sup, "fake"), ["clean"]);
    assert_eq!(f.fake.teardowns().len(), 1);
    assert!(messages(&f.sup, "start-failed").is_empty(), "a cancelled start is not a failure");
}

/// The operator's stop of an instance still in its handshake ends the start at once (it
/// waited for the handshake timeout, three of them through init and health), and is not
/// a failed start; a restart likewise starts afresh.
#[tokio::test]
async fn a_stop_or_restart_ends_a_start_that_hangs_at_once() {
    let hangs = "handshake_timeout = \"30s\"\nstop_timeout = \"1s\"";
    let f = fixture(&plugin("fake", hangs), &[("fake", &[Behaviour::Hang, Behaviour::Hang])]);
    until(&f.sup, "fake", "spawned and greeting", |s| s.state == State::Starting && s.pid.is_some()).await;
    let began = std::time::Instant::now();
    let restarted = tokio::time::timeout(Duration::from_millis(500), f.sup.restart_plugin("fake", UP)).await;
    assert!(restarted.is_err(), "the second launch hangs too");
    until(&f.sup, "fake", "started again", |s| s.state == State::Starting && s.restarts == 1).await;
    assert_eq!(f.fake.launches("fake"), 2);
    let said = f.sup.stop_plugin("fake").await.unwrap();
    assert_eq!(said, "stopped (stopped by request)");
    assert!(began.elapsed() < Duration::from_secs(5), "took {:?}", began.elapsed());
    assert!(messages(&f.sup, "start-failed").is_empty(), "a cancelled start is not a failure");
    f.sup.shutdown().await;
}

/// A canary that declares a service the serving revision does not keeps it routed while it
/// is promoted, even when the routes are set again from elsewhere meanwhile (another
/// instance's handshake does that): the promotion's switches (no canary, the canary
/// serving) are never seen half done, the old revision serving with no canary, whose
/// routes lack the new service.
#[test]
fn a_service_only_the_canary_declares_stays_routed_while_it_is_promoted() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

    use crate::routing::table::RouteTable;

    let config: crate::config::Config =
        "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\n"
            .parse()
            .unwrap();
    let plugin = Arc::new(super::Plugin::new(config.specs().remove(0), 10));
    let declares = |services: &[&str]| {
        let services = services.iter().map(|s| s.to_string()).collect();
        Some(Arc::new(super::Contract { pool: Default::default(), services, descriptor_set: Vec::new() }))
    };
    let (a, b) = (plugin.serving(), plugin.new_revision(plugin.spec()));
    a.contract.store(declares(&["both.Both", "only.A"]));
    b.contract.store(declares(&["both.Both", "only.B"]));
    let routes = Arc::new(RouteTable::default());
    plugin.route_by(Some(routes.clone()));
    assert!(routes.serves("p", "only.A") && !routes.serves("p", "only.B"));

    // Which revision's own service must be routed now (set once its canary split is in
    // force, cleared just before the other one is promoted), and a count of the clearings,
    // so a check that crossed one is not judged.
    let (need_a, need_b, cleared) =
        (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let rollouts = std::thread::spawn({
        let (plugin, a, b, stop) = (plugin.clone(), a.clone(), b.clone(), stop.clone());
        let (need_a, need_b, cleared) = (need_a.clone(), need_b.clone(), cleared.clone());
        move || {
            let mut rounds = 0u64;
            while !stop.load(SeqCst) {
                for (new, need_new, need_old) in [(&b, &need_b, &need_a), (&a, &need_a, &need_b)] {
                    plugin.set_split(Some((new, 50)));
                    need_new.store(true, SeqCst);
                    cleared.fetch_add(1, SeqCst);
                    need_old.store(false, SeqCst);
                    plugin.promote(new);
                }
                rounds += 1;
            }
            rounds
        }
    });
    let _stopping = Stop(stop.clone());
    let started = Instant::now();
    let (mut checks, mut dropped) = (0u64, Vec::new());
    while started.elapsed() < Duration::from_millis(500) {
        let before = cleared.load(SeqCst);
        let needed = [("only.A", need_a.load(SeqCst)), ("only.B", need_b.load(SeqCst))];
        plugin.reroute();
        let routed = needed.map(|(s, _)| routes.serves("p", s));
        if cleared.load(SeqCst) != before {
            continue;
        }
        checks += 1;
        for ((service, needed), routed) in needed.into_iter().zip(routed) {
            if needed && !routed && dropped.len() < 5 {
                dropped.push(service);
            }
        }
    }
    drop(_stopping);
    let rounds = rollouts.join().unwrap();
    assert!(rounds > 100, "only {rounds} rollouts ran beside the reroutes");
    assert!(
        dropped.is_empty(),
        "in {checks} checks over {rounds} rollouts, a service the revision taking calls declares was not routed: {dropped:?}"
    );
}

/// A restart and a start landing together (two operators, or a script's two commands
/// before the instance task ran) restart it. The command channel keeps only the latest
/// command, which said "start": the restart was lost, and the restart command answered
/// "running" for the process it was asked to replace.
#[tokio::test]
async fn a_start_landing_right_after_a_restart_leaves_the_restart_to_happen() {
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let first = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
    // Each command is recorded at its first poll, before either waits: the instance task
    // sees both at once.
    let (restarted, started) = tokio::join!(f.sup.restart_plugin("fake", UP), f.sup.start_plugin("fake", UP));
    assert!(restarted.unwrap().starts_with("running"));
    assert!(started.unwrap().starts_with("running"));
    let now = f.sup.plugin("fake").unwrap().instances()[0].status();
    assert_ne!(now.pid, Some(first), "the restart was lost: {now:?}");
    assert_eq!(f.fake.launches("fake"), 2);
    assert_eq!(kinds(&f.sup, "fake").iter().filter(|k| *k == "ready").count(), 2, "{:?}", kinds(&f.sup, "fake"));
    f.sup.shutdown().await;
}

/// `stop_timeout` bounds the whole drain: the wait for calls routed to the instance to
/// reach it and the plugin's own drain share it, and then SIGTERM comes. Each had all
/// of it, so a plugin slow to take a call and slower to finish it kept its SIGTERM
/// twice `stop_timeout` away, and `stop` answered "still stopping".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_for_routed_calls_and_the_drain_share_one_stop_timeout() {
    let slow = [Behaviour::ServeFlawed { fail_every: 0, delay: Duration::from_secs(60) }];
    let f = fixture(&plugin("fake", "stop_timeout = \"2s\""), &[("fake", &slow)]);
    f.sup.wait_running("fake", UP).await.unwrap();
    // A call the plugin holds without answering: its answer never begins, so the stop
    // waits for it to reach the plugin, and the plugin's drain waits for it to end.
    let live = f.sup.plugin("fake").unwrap().pick().expect("a ready instance");
    let call = tokio::spawn(echo(f.sup.channel("fake").unwrap(), "slow"));
    let deadline = Instant::now() + UP;
    while live.in_flight() == 0 {
        assert!(Instant::now() < deadline, "the call was never admitted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let asked = Instant::now();
    let said = f.sup.stop_plugin("fake").await.unwrap();
    let took = asked.elapsed();
    assert!(said.starts_with("stopped"), "{said}");
    // Its 2 s, the drain's floor (a tenth of it) and the quarter second after the drain
    // deadline, a SIGTERM's end: not 4 s.
    assert!(took >= Duration::from_secs(2) && took < Duration::from_millis(3500), "the stop took {took:?}");
    let status = f.sup.plugin("fake").unwrap().instances()[0].status();
    let drain = status.phases.get(crate::observe::phases::Phase::Drain).expect("a drain");
    assert!(drain < Duration::from_millis(3500), "the drain took {drain:?}");
    assert!(call.await.unwrap().is_err(), "the call held past the drain was cut");
    f.sup.shutdown().await;
}

/// A stop and a start landing together make a restart, as they would one after the
/// other: the start after the stop erased it (the channel keeps the latest command), so
/// the process asked to stop ran on, and the stop waited its stop_timeout out and
/// answered "still stopping". The stop answers at once that a later command overrode it.
#[tokio::test]
async fn a_stop_and_a_start_landing_together_restart_it_and_the_stop_says_it_was_overridden() {
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let first = f.sup.plugin("fake").unwrap().instances()[0].status().pid.unwrap();
    let began = Instant::now();
    let (stopped, started) = tokio::join!(f.sup.stop_plugin("fake"), f.sup.start_plugin("fake", UP));
    let stopped = stopped.unwrap();
    assert!(stopped.starts_with("overridden by a later start or restart, now "), "{stopped}");
    assert!(started.unwrap().starts_with("running"));
    assert!(began.elapsed() < Duration::from_secs(5), "took {:?}", began.elapsed());
    let now = f.sup.plugin("fake").unwrap().instances()[0].status();
    assert_ne!(now.pid, Some(first), "the stop was lost: {now:?}");
    assert_eq!(f.fake.launches("fake"), 2);
    f.sup.shutdown().await;
}

/// The sampler walks the plugins for their instances only when this count moved (each
/// test runs in a process of its own under nextest, so the count is this test's alone):
/// it moves when a plugin joins the set and when an instance's process ends.
#[tokio::test]
async fn the_count_the_sampler_walks_by_moves_as_plugins_join_and_processes_end() {
    let before = super::instances_generation();
    let f = fixture(&plugin("fake", ""), &[]);
    f.sup.wait_running("fake", UP).await.unwrap();
    let running = super::instances_generation();
    assert!(running > before, "the plugin joined the set: {before} -> {running}");
    f.sup.stop_plugin("fake").await.unwrap();
    let stopped = super::instances_generation();
    assert!(stopped > running, "its process ended: {running} -> {stopped}");
}
