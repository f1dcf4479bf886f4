//! The gateway measured under attack, in a test binary of its own so that
//! no other test shares the machine with it: a well-behaved caller's p99
//! through `gateway.sock` beside 20,000 idle connections and beside a
//! caller that never reads, against its baseline in the same run, and the
//! daemon's RSS and descriptors before, during and after.

use std::time::{Duration, Instant};

use plugin_integration::daemon::{config, plugin};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::raw::{IdleCrowd, StalledCaller, grpc_frame};
use plugin_integration::{Daemon, bins, connect, procfs};

const UP: Duration = Duration::from_secs(30);

/// p99 of `n` sequential echo calls, in µs.
async fn p99_us(echo: &mut EchoClient<plugin_proto::transport::H2Channel>, n: usize) -> f64 {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = echo.echo(EchoRequest { message: "hello".into() }).await.expect("a well-behaved call failed");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(r.into_inner().message, "hello");
    }
    lat.sort_by(f64::total_cmp);
    lat[(n - 1) * 99 / 100]
}

/// The lowest p99 of three rounds of 1000 calls: the machine is shared,
/// and one noisy round is not the gateway's doing. `under` says whether the
/// attack still stood through them.
async fn p99_best_of_3(echo: &mut EchoClient<plugin_proto::transport::H2Channel>, under: impl Fn() -> bool) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        best = best.min(p99_us(echo, 1000).await);
    }
    assert!(under(), "the attack ended during the measurement");
    best
}

fn rss_kib(pid: i32) -> u64 {
    procfs::status_field(pid, "VmRSS").and_then(|v| v.trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_caller_keeps_its_p99_and_the_daemon_its_memory_under_attack() {
    const IDLE: usize = 20_000;
    // The daemon as the issue found it: 20,000 descriptors, default gateway limits.
    let d =
        Daemon::start_with_nofile(&config(&plugin("echo", &bins::example("echo"), "call_timeout = \"30s\"")), 20_000);
    d.wait_state("echo-0", "running", UP);
    let pid = d.pid();
    let mut echo = EchoClient::new(connect(&d.gateway()).await.unwrap());
    p99_us(&mut echo, 500).await;
    let mut base = vec![p99_best_of_3(&mut echo, || true).await];
    let (rss0, fds0) = (rss_kib(pid), procfs::open_fds(pid).len());

    // 20,000 idle connections, opened while the caller keeps calling (an
    // idle caller's connection is fair game for eviction; a real client
    // would reconnect, this one cannot).
    let gw = d.gateway();
    let flood_started = Instant::now();
    let flood = std::thread::spawn(move || IdleCrowd::open(&gw, IDLE));
    let mut during = Vec::new();
    while !flood.is_finished() {
        let t = Instant::now();
        echo.echo(EchoRequest { message: "hello".into() }).await.expect("a call failed during the flood");
        during.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let flood_took = flood_started.elapsed();
    let idle = flood.join().unwrap().unwrap();
    assert_eq!(idle.opened, IDLE);
    during.sort_by(f64::total_cmp);
    let (during_p50, during_p99) = (during[(during.len() - 1) / 2], during[(during.len() - 1) * 99 / 100]);
    p99_us(&mut echo, 200).await;
    let (rss1, fds1) = (rss_kib(pid), procfs::open_fds(pid).len());
    let idle_p99 = p99_best_of_3(&mut echo, || true).await;
    assert!(d.control_answers(), "the control socket stopped answering");
    tokio::task::block_in_place(|| drop(idle));
    let mut settled = (0, 0);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        settled = (rss_kib(pid), procfs::open_fds(pid).len());
        if settled.1 <= fds0 && settled.0 <= rss0 + 8 * 1024 {
            break;
        }
    }
    base.push(p99_best_of_3(&mut echo, || true).await);

    // A caller that never reads ten 1 MB answers.
    let big = grpc_frame(&EchoRequest { message: "x".repeat(1 << 20) });
    let mut stalled = StalledCaller::start(&d.gateway(), "/echo.v1.Echo/Echo", big, 10).await.unwrap();
    let bodies = stalled.answered().await.unwrap();
    let (rss2, fds2) = (rss_kib(pid), procfs::open_fds(pid).len());
    let stall_started = Instant::now();
    let stall_p99 = p99_best_of_3(&mut echo, || stall_started.elapsed() < Duration::from_secs(29)).await;
    drop(bodies);
    drop(stalled);
    // The heap is trimmed at most every few seconds: wait for it, a while.
    let mut left = (0, 0);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = (rss_kib(pid), procfs::open_fds(pid).len());
        if left.0 <= rss0 + 8 * 1024 && left.1 <= fds0 + 2 {
            break;
        }
    }
    let (rss3, fds3) = left;
    base.push(p99_best_of_3(&mut echo, || true).await);

    // Against the baseline measured before, between and after the attacks.
    let baseline = base.iter().sum::<f64>() / base.len() as f64;
    let (idle_ratio, stall_ratio) = (idle_p99 / baseline, stall_p99 / baseline);
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    eprintln!(
        "gateway under attack ({profile} build): baseline p99 {baseline:.0} µs ({base:.0?}); while {IDLE} idle connections arrived \
         (in {flood_took:.1?}) p50 {during_p50:.0} µs, p99 {during_p99:.0} µs over {} calls; with them open p99 {idle_p99:.0} µs (x{idle_ratio:.2}); with a stalled \
         caller p99 {stall_p99:.0} µs (x{stall_ratio:.2})\n\
         daemon RSS / fds: baseline {rss0} KiB / {fds0}; {IDLE} idle connections open {rss1} KiB / {fds1}; \
         after they closed {} KiB / {}; stalled caller {rss2} KiB / {fds2}; after it left {rss3} KiB / {fds3}",
        during.len(),
        settled.0,
        settled.1
    );
    assert!(idle_ratio <= 2.0, "p99 under {IDLE} idle connections is {idle_ratio:.2}x the baseline");
    assert!(stall_ratio <= 2.0, "p99 beside a stalled caller is {stall_ratio:.2}x the baseline");
    assert!(fds1 <= 1024 + fds0 + 16, "{fds1} descriptors with {IDLE} idle connections: more than max_connections");
    assert!(settled.1 <= fds0 + 2, "descriptors did not return: {} after, {fds0} before", settled.1);
    assert!(fds3 <= fds0 + 2, "descriptors did not return after the stalled caller: {fds3}, {fds0} before");
    assert!(settled.0 <= rss0 + 8 * 1024, "RSS did not return: {} KiB after, {rss0} KiB before", settled.0);
    assert!(rss3 <= rss0 + 8 * 1024, "RSS did not return after the stalled caller: {rss3} KiB, {rss0} KiB before");
}
