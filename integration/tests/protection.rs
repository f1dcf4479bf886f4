//! The protection layers through the gateway, with real plugin processes: the concurrency
//! limit shedding what exceeds `max_in_flight` and its queue while admitted calls succeed,
//! the circuit breaker opening on a failing plugin and closing once it answers again
//! (status, events, metrics), messages over the size limits refused both ways, and a
//! plugin that stops reading its connection costing the daemon only its flow-control
//! windows while its callers get their deadlines and other plugins their answers, and a
//! caller's short messages to a busy plugin not ending its connection.

use std::time::{Duration, Instant};

use bytes::Bytes;
use plugin_integration::daemon::{config, plugin};
use plugin_integration::pb::zoo::zoo_client::ZooClient;
use plugin_integration::pb::zoo::{CountRequest, SleepRequest, Text};
use plugin_integration::procfs::wait_asleep_in_nanosleep;
use plugin_integration::{Daemon, bins, connect};

const UP: Duration = Duration::from_secs(30);

/// The value of the series `series` in `supervisorctl metrics`.
fn metric(d: &Daemon, series: &str) -> Option<f64> {
    let out = d.ctl(&["metrics"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_limit_and_its_queue_are_shed_at_once_while_admitted_calls_succeed() {
    let d = Daemon::start(&config(&plugin(
        "zoo",
        &bins::zoo(),
        "max_in_flight = 2\nmax_queued = 1\ncall_timeout = \"30s\"",
    )));
    d.wait_state("zoo-0", "running", UP);
    let zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());

    // Two calls run, one waits in the queue, three find it full.
    let started = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut zoo = zoo.clone();
            tokio::spawn(async move {
                let r = zoo.sleep(SleepRequest { ms: 3000 }).await;
                (r.map(|_| ()), started.elapsed())
            })
        })
        .collect();
    let mut ok = 0;
    let mut shed = 0;
    for call in calls {
        match call.await.unwrap() {
            (Ok(()), _) => ok += 1,
            (Err(status), took) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert_eq!(
                    status.message(),
                    "plugin \"zoo\" is at its limit: max_in_flight 2 calls on every instance and max_queued 1 calls \
                     waiting; call shed"
                );
                assert!(took < Duration::from_millis(2500), "shed at once, not after a wait: {took:?}");
                shed += 1;
            }
        }
    }
    assert_eq!((ok, shed), (3, 3), "two admitted and one queued succeed");
    assert!(started.elapsed() >= Duration::from_millis(6000), "the queued call waited for a place");
    assert_eq!(metric(&d, r#"supervisor_calls_shed_total{plugin="zoo"}"#), Some(3.0));
    assert_eq!(
        metric(&d, r#"supervisor_calls_total{plugin="zoo",code="RESOURCE_EXHAUSTED",source="limit"}"#),
        Some(3.0)
    );
    assert_eq!(metric(&d, r#"supervisor_calls_total{plugin="zoo",code="OK",source="plugin"}"#), Some(3.0));
    // Once the crowd is gone, calls go through again.
    zoo.clone().echo(Text { text: "after".into() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_holds_its_place_within_the_limit_until_it_ends() {
    // Its headers come at once: before, the place was given back with them, so any
    // number of streams ran on an instance past max_in_flight.
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), "max_in_flight = 1\nmax_queued = 0")));
    d.wait_state("zoo-0", "running", UP);
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let mut stream = zoo
        .clone()
        // Its second message comes 3 s after the first: the call beside it is made meanwhile.
        .count(CountRequest { count: 2, interval_ms: 3000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some(), "the stream runs");
    let shed = zoo.echo(Text { text: "beside".into() }).await.unwrap_err();
    assert_eq!(shed.code(), tonic::Code::ResourceExhausted, "{shed:?}");
    while stream.message().await.unwrap().is_some() {}
    // Its end gives the place back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = zoo.echo(Text { text: "after".into() }).await {
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert!(Instant::now() < deadline, "the stream's place was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_a_failing_plugin_fails_fast_and_closes_once_a_probe_succeeds() {
    let breaker = "[plugin.breaker]\nfailures = 3\nmin_backoff = \"1s\"\nmax_backoff = \"2s\"\njitter = 0";
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), breaker)));
    d.wait_state("zoo-0", "running", UP);
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    assert_eq!(d.instance("zoo-0")["circuit"], "closed");

    // Every call fails inside the plugin (its handler panics: INTERNAL).
    for _ in 0..3 {
        let err = zoo.panic(Text { text: "boom".into() }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    }
    let opened = Instant::now();
    // Open: even a call that would succeed fails fast, without reaching the plugin.
    let err = zoo.echo(Text { text: "hi".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().starts_with("plugin \"zoo\": circuit open since "), "{}", err.message());
    assert!(err.message().contains(", next probe in "), "{}", err.message());
    let row = d.instance("zoo-0");
    assert_eq!(row["circuit"], "open");
    assert!(row["notes"].to_string().contains("circuit open since"), "{row}");
    let event = d.wait_event("circuit-opened", "circuit opened after 3 consecutive failures", UP);
    assert_eq!(event["plugin"], "zoo");
    assert_eq!(metric(&d, r#"supervisor_circuit_state{plugin="zoo"}"#), Some(1.0));
    assert_eq!(metric(&d, r#"supervisor_circuit_opened_total{plugin="zoo"}"#), Some(1.0));
    assert_eq!(metric(&d, r#"supervisor_calls_total{plugin="zoo",code="UNAVAILABLE",source="breaker"}"#), Some(1.0));
    assert_eq!(metric(&d, r#"supervisor_calls_total{plugin="zoo",code="INTERNAL",source="plugin"}"#), Some(3.0));

    // The plugin answers again: after the backoff, one probe closes the circuit.
    tokio::time::sleep((opened + Duration::from_millis(1100)).saturating_duration_since(Instant::now())).await;
    let answer = zoo.echo(Text { text: "probe".into() }).await.unwrap();
    assert_eq!(answer.into_inner().text, "probe");
    d.wait_event("circuit-closed", "circuit closed", UP);
    assert_eq!(d.instance("zoo-0")["circuit"], "closed");
    assert_eq!(metric(&d, r#"supervisor_circuit_state{plugin="zoo"}"#), Some(0.0));
    zoo.echo(Text { text: "again".into() }).await.unwrap();
}

/// A call asking `ms` of sleep with the caller's own deadline of `timeout_ms`.
fn sleep_within(ms: u32, timeout_ms: u64) -> tonic::Request<SleepRequest> {
    let mut req = tonic::Request::new(SleepRequest { ms });
    req.set_timeout(Duration::from_millis(timeout_ms));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_caller_opens_the_circuit_for_the_others_by_asking_too_little_time_or_waiting_in_the_queue() {
    // Before, each of these counted as the plugin failing: a caller with a short grpc-timeout,
    // or a crowd held in the queue past its deadline, opened the circuit for everyone.
    let keys = "call_timeout = \"5s\"\nmax_in_flight = 1\nmax_queued = 1\n[plugin.breaker]\nfailures = 2\nmin_backoff = \"10s\"";
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), keys)));
    d.wait_state("zoo-0", "running", UP);
    let zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());

    // The caller's own deadline, shorter than the plugin's call_timeout.
    for _ in 0..3 {
        let err = zoo.clone().sleep(sleep_within(1000, 100)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        assert_eq!(err.message(), "deadline of 100ms (the caller's grpc-timeout) exceeded");
    }
    assert_eq!(
        metric(&d, r#"supervisor_calls_total{plugin="zoo",code="DEADLINE_EXCEEDED",source="caller"}"#),
        Some(3.0)
    );

    // One call holds the only place; the next ones wait in the queue until their deadline.
    let holder = tokio::spawn({
        let mut zoo = zoo.clone();
        async move { zoo.sleep(SleepRequest { ms: 3500 }).await }
    });
    let queued = |ms| {
        let mut req = tonic::Request::new(Text { text: "queued".into() });
        req.set_timeout(Duration::from_millis(ms));
        let mut zoo = zoo.clone();
        async move { zoo.echo(req).await }
    };
    // Until the holder is in, a call may still find the place free.
    let within = Instant::now() + Duration::from_millis(2500);
    let mut expired = 0;
    while expired == 0 {
        assert!(Instant::now() < within, "the holder never took the place");
        if let Err(err) = queued(150).await {
            assert!(err.message().contains("queued for a place, every instance at max_in_flight 1 calls"), "{err:?}");
            expired += 1;
        }
    }
    for _ in 0..2 {
        let err = queued(150).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        assert!(err.message().contains("queued for a place, every instance at max_in_flight 1 calls"), "{err:?}");
        expired += 1;
    }
    holder.await.unwrap().expect("the call holding the place ends well");
    assert_eq!(
        metric(&d, r#"supervisor_calls_total{plugin="zoo",code="DEADLINE_EXCEEDED",source="limit"}"#),
        Some(f64::from(expired))
    );
    assert_eq!(d.instance("zoo-0")["circuit"], "closed");
    assert_eq!(metric(&d, r#"supervisor_circuit_opened_total{plugin="zoo"}"#), Some(0.0));
    zoo.clone().echo(Text { text: "through".into() }).await.expect("the circuit is closed");

    // The breaker is not blind: the plugin's own lateness, under its own call_timeout, counts.
    for _ in 0..2 {
        let err = zoo.clone().sleep(SleepRequest { ms: 6000 }).await.unwrap_err();
        assert_eq!(err.message(), "deadline of 5s (the plugin's call_timeout) exceeded");
    }
    assert_eq!(d.instance("zoo-0")["circuit"], "open");
}

/// A gRPC message's 5-byte prefix declaring `len` bytes.
fn prefix(len: u32) -> Bytes {
    let mut p = vec![0u8];
    p.extend_from_slice(&len.to_be_bytes());
    Bytes::from(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_size_limits_are_refused_both_ways_without_waiting_for_them() {
    let limits = "max_request_bytes = \"64K\"\nmax_response_bytes = \"16K\"";
    let d = Daemon::start(&config(&plugin("zoo", &bins::zoo(), limits)));
    d.wait_state("zoo-0", "running", UP);
    let mut zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());

    // A request over 64 KiB.
    let err = zoo.echo(Text { text: "x".repeat(100 << 10) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(err.message(), "plugin \"zoo\": request message of 102404 bytes is over max_request_bytes 65536");
    // A request within it whose answer (the same text) is over 16 KiB.
    let err = zoo.echo(Text { text: "y".repeat(32 << 10) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(err.message(), "plugin \"zoo\": response message of 32772 bytes is over max_response_bytes 16384");
    // Within both.
    assert_eq!(zoo.echo(Text { text: "z".repeat(1000) }).await.unwrap().into_inner().text.len(), 1000);

    // A caller announcing a 1 GiB message and sending none of it is answered at once: the
    // gateway never waits for (or holds) the message.
    let io = tokio::net::UnixStream::connect(d.gateway()).await.unwrap();
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post("http://gw/zoo.v1.Zoo/Echo")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(prefix(1 << 30), false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(2), response).await.expect("answered at once").unwrap();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let trailers = if headers.contains_key("grpc-status") { headers } else { body.trailers().await.unwrap().unwrap() };
    assert_eq!(trailers["grpc-status"], "8", "{trailers:?}");
    assert!(!trailers.contains_key("x-supervisor-source"), "the stack's own marker never leaves it");

    assert_eq!(metric(&d, r#"supervisor_calls_too_large_total{plugin="zoo",direction="request"}"#), Some(2.0));
    assert_eq!(metric(&d, r#"supervisor_calls_too_large_total{plugin="zoo",direction="response"}"#), Some(1.0));
    assert_eq!(
        metric(&d, r#"supervisor_calls_total{plugin="zoo",code="RESOURCE_EXHAUSTED",source="size"}"#),
        Some(3.0)
    );
    // The plugin was never hurt by any of it.
    assert_eq!(zoo.echo(Text { text: "still".into() }).await.unwrap().into_inner().text, "still");
    assert_eq!(d.instance("zoo-0")["restarts"], 0);
}

/// A call within `timeout_ms` (the caller's grpc-timeout).
fn within<T>(message: T, timeout_ms: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(Duration::from_millis(timeout_ms));
    r
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: i32) -> u64 {
    plugin_integration::procfs::status_field(pid, "VmRSS")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_stops_reading_its_connection_holds_only_its_windows_and_its_callers_get_their_deadlines() {
    use plugin_integration::pb::echo::{EchoRequest, echo_client::EchoClient};
    let text = config(&format!(
        "{}{}",
        plugin(
            "stuck",
            &bins::zoo(),
            "declared_name = \"zoo\"\nargs = [\"--blocking-sleep\"]\nstop_timeout = \"1s\"\ncall_timeout = \"30s\""
        ),
        plugin("other", &bins::example("echo"), "declared_name = \"echo\"")
    ));
    let d = Daemon::start(&text);
    d.wait_state("stuck-0", "running", UP);
    d.wait_state("other-0", "running", UP);
    let zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    // Its own connection: what the others send cannot use up its window.
    let mut other = EchoClient::new(connect(&d.gateway()).await.unwrap());
    let rss_before = rss_kib(d.pid());

    // The plugin's one thread blocks for 20 s: it reads nothing from the supervisor.
    let stuck = tokio::spawn({
        let mut zoo = zoo.clone();
        async move { zoo.sleep(within(SleepRequest { ms: 20_000 }, 2000)).await }
    });
    let pid = d.instance("stuck-0")["pid"].as_i64().unwrap() as i32;
    let asleep = tokio::task::spawn_blocking(move || wait_asleep_in_nanosleep(pid, UP)).await.unwrap();
    assert!(asleep, "the blocking call never reached the plugin");
    // 24 callers, each on a connection of its own, send it 3 MiB each: 72 MiB offered
    // to a plugin that reads none of it.
    const CALLS: usize = 24;
    let mut callers = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        callers.push(ZooClient::new(connect(&d.gateway()).await.unwrap()));
    }
    let started = Instant::now();
    let calls: Vec<_> = callers
        .into_iter()
        .map(|mut zoo| {
            tokio::spawn(async move {
                let r = zoo.echo(within(Text { text: "x".repeat(3 << 20) }, 8000)).await;
                (r.map(|_| ()), started.elapsed())
            })
        })
        .collect();

    // While they wait: the daemon holds what the flow-control windows let in (256 KiB a
    // stream on each side of it), not the messages; another plugin answers before their
    // deadlines; the control socket answers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let grown_mib = rss_kib(d.pid()).saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 24, "the daemon grew {grown_mib} MiB holding requests for a plugin that reads nothing");
    let answer = other.echo(EchoRequest { message: "beside".into() }).await.unwrap().into_inner();
    assert_eq!(answer.message, "beside");
    assert!(calls.iter().all(|c| !c.is_finished()), "answered only once the stuck calls had ended");
    let asked = Instant::now();
    assert_eq!(d.instance("stuck-0")["state"], "running");
    // Well before the callers' 8 s: the control socket does not wait behind the gateway.
    assert!(asked.elapsed() < Duration::from_secs(4), "status took {:?}", asked.elapsed());
    assert!(calls.iter().all(|c| !c.is_finished()), "status answered only once the stuck calls had ended");

    // Each caller gets its deadline, in about its time.
    for call in calls {
        let (r, took) = call.await.unwrap();
        let err = r.expect_err("a plugin that reads nothing answered");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        assert_eq!(err.message(), "deadline of 8s (the caller's grpc-timeout) exceeded");
        assert!(
            took >= Duration::from_secs(8) && took < Duration::from_secs(14),
            "an 8 s deadline ended after {took:?}"
        );
    }
    let err = stuck.await.unwrap().expect_err("the blocked call answered");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");

    // The stuck plugin is stopped within its stop_timeout, without waiting for it to wake.
    let asked = Instant::now();
    let stop = d.ctl(&["stop", "stuck"]);
    assert!(stop.status.success(), "stop: {}", String::from_utf8_lossy(&stop.stderr));
    assert!(asked.elapsed() < Duration::from_secs(10), "stop took {:?}", asked.elapsed());
    assert_eq!(d.instance("stuck-0")["state"], "stopped");
    assert_eq!(other.echo(EchoRequest { message: "after".into() }).await.unwrap().into_inner().message, "after");
}

/// Calls a caller gave up on before the plugin's one thread could take them are reset
/// on the plugin's connection. h2's defence against "rapid reset" attacks counted them
/// as the supervisor's attack: past 20 the plugin sent GOAWAY ENHANCE_YOUR_CALM and
/// exited 0, and was never restarted (`restart = "on-failure"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reset_before_a_busy_plugin_takes_them_leave_it_serving() {
    let text = config(&plugin("busy", &bins::zoo(), "declared_name = \"zoo\"\nargs = [\"--blocking-sleep\"]"));
    let d = Daemon::start(&text);
    d.wait_state("busy-0", "running", UP);
    let zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    // Its one thread blocks for 3 s, from when the call reaches it: then the others time
    // out behind it.
    let sleeping = tokio::spawn({
        let mut zoo = zoo.clone();
        async move { zoo.sleep(within(SleepRequest { ms: 3000 }, 8000)).await }
    });
    let pid = d.instance("busy-0")["pid"].as_i64().unwrap() as i32;
    let asleep = tokio::task::spawn_blocking(move || wait_asleep_in_nanosleep(pid, UP)).await.unwrap();
    assert!(asleep, "the blocking call never reached the plugin");
    let calls: Vec<_> = (0..60)
        .map(|_| {
            let mut zoo = zoo.clone();
            tokio::spawn(async move { zoo.echo(within(Text { text: "late".into() }, 300)).await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().expect_err("a blocked plugin answered");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    }
    sleeping.await.unwrap().expect("the sleep the plugin was busy with");
    let mut zoo = zoo.clone();
    let answer = zoo.echo(within(Text { text: "after".into() }, 5000)).await.expect("the plugin serves on");
    assert_eq!(answer.into_inner().text, "after");
    let busy = d.instance("busy-0");
    assert_eq!(busy["state"], "running", "{busy}");
    assert_eq!(busy["restarts"], 0, "{busy}");
}

/// A caller's stream of short messages, each passed on alone as it came, while the
/// plugin read nothing (its one thread busy): the plugin's h2 held every small DATA frame
/// its handler had not read, and past its budget for their overhead (about 2,000 such
/// frames on a tonic server) ended its whole connection with ENHANCE_YOUR_CALM, every
/// other call of the plugin with it, and the plugin was restarted. Past a few small
/// frames unanswered, the gateway now lets a small one wait for more to join it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_messages_a_busy_plugin_has_not_read_leave_it_serving() {
    let text = config(&plugin(
        "busy",
        &bins::zoo(),
        "declared_name = \"zoo\"\nargs = [\"--blocking-sleep\"]\ncall_timeout = \"60s\"",
    ));
    let d = Daemon::start(&text);
    d.wait_state("busy-0", "running", UP);
    let zoo = ZooClient::new(connect(&d.gateway()).await.unwrap());
    let pid = d.instance("busy-0")["pid"].as_i64().unwrap() as i32;
    // Twice what a tonic server's budget takes of them alone (about 2,090).
    const N: usize = 5_000;
    // Apart enough that the gateway passes each on alone, as it comes.
    const GAP: Duration = Duration::from_micros(150);
    // The plugin's one thread blocks for longer than the caller takes to send them all.
    let sleeping = tokio::spawn({
        let mut zoo = zoo.clone();
        async move { zoo.sleep(SleepRequest { ms: 6000 }).await }
    });
    let asleep = tokio::task::spawn_blocking(move || wait_asleep_in_nanosleep(pid, UP)).await.unwrap();
    assert!(asleep, "the blocking call never reached the plugin");
    let slept_from = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let collect = tokio::spawn({
        let mut zoo = zoo.clone();
        async move { zoo.collect(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx)).await }
    });
    for _ in 0..N {
        // The call gone (the plugin's connection with it): its answer says why.
        if tx.send(Text { text: String::new() }).await.is_err() {
            break;
        }
        let t = Instant::now();
        while t.elapsed() < GAP {
            tokio::task::yield_now().await;
        }
    }
    drop(tx);
    let sending = slept_from.elapsed();
    sleeping.await.unwrap().expect("the sleep the plugin was busy with");
    let answer = collect.await.unwrap().expect("the stream of short messages");
    assert_eq!(answer.into_inner().text, " ".repeat(N - 1));
    let busy = d.instance("busy-0");
    assert_eq!(busy["restarts"], 0, "{busy}");
    assert_eq!(busy["pid"], pid, "{busy}");
    // The scenario held only if the plugin slept through the sending.
    assert!(sending < Duration::from_millis(5500), "sending took {sending:?}");
}
