//! The benchmark: spawn-to-ready, sequential call latency and throughput at
//! 16 concurrent callers, embedded and through the gateway, measured beside
//! the yardsticks (go-plugin and a raw socketpair ping-pong) in the same
//! run, printed with ratios and checked against the targets; and calls through the
//! gateway during 20 hot reloads against the same calls steady; and a plugin flooding
//! its stdout, then its SDK log, as fast as it can: the daemon's CPU and a sibling's p99
//! (`--only logflood`); and one daemon running 1,000 instances: the time until all are
//! ready, its resident memory and idle CPU (`--only scale [--instances N] [--named]`).
//!
//! `cargo run --release -p plugin-integration --bin bench [-- --quick] [--peers DIR] [--calls N]`;
//! `--only gateway --rounds N` repeats the gateway's measure beside go-plugin N times
//! and reports each ratio's median and spread.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plugin_integration::daemon::{Daemon, config, config_with, plugin};
use plugin_integration::pb::echo::EchoRequest;
use plugin_integration::pb::echo::echo_client::EchoClient;
use plugin_integration::procfs::{Switches, cpu_seconds, run_delay_seconds, switches};
use plugin_integration::{bins, connect};
use plugin_supervisor::Supervisor;
use serde_json::{Value, json};

struct Opts {
    quick: bool,
    peers: PathBuf,
    /// Run only this part (spawn, embedded, gateway), without yardsticks:
    /// for profiling one path.
    only: Option<String>,
    /// Instances in the `scale` measure, and whether each is a plugin of its own (else
    /// the replicas of one).
    instances: usize,
    named: bool,
    /// Calls in each throughput measure, instead of the default (a long run to profile).
    calls: Option<usize>,
    /// `--only gateway` measured this many times, each beside go-plugin again, with the
    /// ratios' spread: one run on a shared machine says little.
    rounds: usize,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        quick: false,
        peers: bins::repo().join("../shared/peers"),
        only: None,
        instances: SCALE_INSTANCES,
        named: false,
        calls: None,
        rounds: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--peers" => o.peers = PathBuf::from(args.next().context("--peers needs a directory")?),
            "--only" => o.only = Some(args.next().context(PARTS)?),
            "--instances" => o.instances = args.next().context("--instances needs a number")?.parse()?,
            "--named" => o.named = true,
            "--calls" => {
                let n: usize = args.next().context("--calls needs a number")?.parse()?;
                // go-plugin's run is measured less one of a tenth as many calls, over 16 callers.
                anyhow::ensure!(n >= 160, "--calls {n}: at least 160 (16 callers, and a tenth as many)");
                o.calls = Some(n);
            }
            "--rounds" => {
                let n: usize = args.next().context("--rounds needs a number")?.parse()?;
                anyhow::ensure!(n >= 1, "--rounds {n}: at least 1");
                o.rounds = n;
            }
            other => {
                bail!(
                    "unknown argument {other:?} (use --quick, --peers DIR, --only PART, --instances N, --named, --calls N, --rounds N)"
                )
            }
        }
    }
    anyhow::ensure!(
        o.rounds == 1 || o.only.as_deref() == Some("gateway"),
        "--rounds {} is for --only gateway",
        o.rounds
    );
    Ok(o)
}

const PARTS: &str = "--only takes spawn, embedded, gateway, reload, logflood or scale";

/// Instances in the `scale` measure, and its targets: the daemon's resident memory, its
/// idle CPU (a share of one core) and the time until all are ready.
const SCALE_INSTANCES: usize = 1000;
const SCALE_RSS_MB: f64 = 100.0;
const SCALE_IDLE_CPU: f64 = 0.02;
const SCALE_READY: Duration = Duration::from_secs(30);

/// Reloads in the `reload` measure.
const RELOADS: usize = 20;

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

/// Sequential echo calls: p50, p99 (µs) and calls/s.
async fn latency<T>(client: &mut EchoClient<T>, n: usize) -> anyhow::Result<Value>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    for _ in 0..n / 10 {
        client.echo(EchoRequest { message: "hello".into() }).await?;
    }
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        client.echo(EchoRequest { message: "hello".into() }).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    Ok(json!({
        "p50_us": pct(&mut lat, 0.5),
        "p90_us": pct(&mut lat, 0.9),
        "p99_us": pct(&mut lat, 0.99),
        "p999_us": pct(&mut lat, 0.999),
        "calls_per_s": rate
    }))
}

/// `conc` callers sharing one channel, `total` calls in all: calls/s.
async fn throughput<T>(client: EchoClient<T>, total: usize, conc: usize) -> anyhow::Result<f64>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Future: Send,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let mut c = client.clone();
        let each = total / conc;
        tasks.push(tokio::spawn(async move {
            for _ in 0..each {
                c.echo(EchoRequest { message: "hello".into() }).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((total / conc * conc) as f64 / t0.elapsed().as_secs_f64())
}

fn write_config(dir: &Path, text: &str) -> anyhow::Result<plugin_supervisor::config::Config> {
    let p = dir.join("bench.toml");
    std::fs::write(&p, text)?;
    Ok(plugin_supervisor::config::Config::load(&p)?)
}

/// Start → running → first call answered, `n` times (the instance is
/// stopped between starts); p50/p99 in µs.
async fn spawn_to_ready(tier: &str, n: usize) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let entry = format!("autostart = false\ntier = {tier:?}");
    let text = config_with("sandbox.allow_unsandboxed = true", &plugin("echo", &bins::example("echo"), &entry));
    // In this process: the benchmark must not move itself into a cgroup.
    let cfg =
        write_config(dir.path(), &text.replace("[supervisor.cgroup]\n", "[supervisor.cgroup]\nmove_self = false\n"))?;
    let sup = Supervisor::start(cfg).await?;
    let mut lat = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let state = sup.start_plugin("echo", Duration::from_secs(10)).await?;
        anyhow::ensure!(state == "running", "echo did not start: {state}");
        EchoClient::new(sup.channel("echo")?).echo(EchoRequest { message: "warm".into() }).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        sup.stop_plugin("echo").await?;
    }
    sup.shutdown().await;
    Ok(json!({"p50_us": pct(&mut lat, 0.5), "p99_us": pct(&mut lat, 0.99)}))
}

async fn embedded(n: usize, total: usize) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let text = config(&plugin("echo", &bins::example("echo"), ""));
    let cfg =
        write_config(dir.path(), &text.replace("[supervisor.cgroup]\n", "[supervisor.cgroup]\nmove_self = false\n"))?;
    let sup = Supervisor::start(cfg).await?;
    sup.wait_running("echo", Duration::from_secs(20)).await?;
    let mut c = EchoClient::new(sup.channel("echo")?);
    let mut out = latency(&mut c, n).await?;
    out["throughput_16"] = throughput(c, total, 16).await?.into();
    sup.shutdown().await;
    Ok(out)
}

async fn gateway(n: usize, total: usize) -> anyhow::Result<Value> {
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    let echo = d.wait_state("echo-0", "running", Duration::from_secs(20));
    let plugin_pid = echo["pid"].as_i64().and_then(|p| i32::try_from(p).ok()).context("echo-0 has no pid")?;
    let mut c = EchoClient::new(connect(&d.gateway()).await?);
    // Every process a call runs in: the caller (this one), the daemon and the plugin.
    let pids = [("client", i32::try_from(std::process::id())?), ("daemon", d.pid()), ("plugin", plugin_pid)];
    let before = pids.map(|(_, pid)| cpu_seconds(pid));
    let asleep = Asleep::now(&pids);
    let mut out = latency(&mut c, n).await?;
    // The latency run's warm-up calls count too: a tenth as many again.
    let sequential = cpu_per_call(&pids, before, n + n / 10);
    out["asleep_per_sequential_call"] = asleep.per_call(&pids, n + n / 10);
    let before = pids.map(|(_, pid)| cpu_seconds(pid));
    let rate = throughput(c, total, 16).await?;
    out["throughput_16"] = rate.into();
    out["cpu_per_call_us"] = cpu_per_call(&pids, before, total / 16 * 16);
    out["cpu_per_sequential_call_us"] = sequential;
    Ok(out)
}

/// What each process's main thread (its runtime's) had switched and waited for a CPU
/// at one moment.
struct Asleep([(Option<Switches>, Option<f64>); 3]);

impl Asleep {
    fn now(pids: &[(&str, i32); 3]) -> Self {
        Self(pids.map(|(_, pid)| (switches(pid), run_delay_seconds(pid))))
    }

    /// Per call since `self`, for each process's runtime thread: how often it slept
    /// (`voluntary`), was preempted or yielded (`involuntary`), and the µs it waited
    /// runnable for a CPU (`run_delay_us`); null where the kernel does not say or the
    /// process is gone. On hosts where waking a CPU is dear, the sequential p50's fast
    /// mode came with the plugin sleeping less (0.74-1.09 times a call in the rounds
    /// measured) than its slow mode (1.11-2.20; see the README's Benchmarks).
    fn per_call(&self, pids: &[(&str, i32); 3], calls: usize) -> Value {
        let per_call = |now: f64, was: f64| (now - was) / calls as f64;
        let mut out = serde_json::Map::new();
        for ((name, pid), (was, waited)) in pids.iter().zip(&self.0) {
            let switched = switches(*pid).zip(*was);
            let delay = run_delay_seconds(*pid).zip(*waited);
            out.insert(
                (*name).into(),
                json!({
                    "voluntary": switched.map(|(now, was)| per_call(now.voluntary as f64, was.voluntary as f64)),
                    "involuntary": switched.map(|(now, was)| per_call(now.involuntary as f64, was.involuntary as f64)),
                    "run_delay_us": delay.map(|(now, was)| per_call(now, was) * 1e6),
                }),
            );
        }
        Value::Object(out)
    }
}

/// Each process's CPU time since `before` over `calls`, and their sum, in µs.
fn cpu_per_call(pids: &[(&str, i32); 3], before: [f64; 3], calls: usize) -> Value {
    let mut per_call = serde_json::Map::new();
    let mut sum = 0.0;
    for ((name, pid), was) in pids.iter().zip(before) {
        let us = (cpu_seconds(*pid) - was) / calls as f64 * 1e6;
        sum += us;
        per_call.insert((*name).into(), us.into());
    }
    per_call.insert("total".into(), sum.into());
    Value::Object(per_call)
}

/// The gateway beside go-plugin in the same run (sequential p50 and 16 callers' calls/s
/// and CPU per call), with the ratios the targets are on: `--only gateway`.
async fn gateway_beside_go(o: &Opts, n: usize, total: usize) -> anyhow::Result<Value> {
    let (go, _) = yardsticks(&o.peers)?;
    let go_lat = go_latency(&go, n)?;
    let go_tput = go_throughput(&go, total)?;
    let gw = gateway(n, total).await?;
    let ratios = gateway_ratios(&gw, &go_lat, &go_tput);
    eprintln!("{}", ratios.1);
    Ok(json!({"gateway": gw, "go_plugin": {"latency": go_lat, "throughput": go_tput}, "ratios": ratios.0}))
}

/// `--only gateway --rounds N`: N runs of [`gateway_beside_go`], one after the other,
/// and each ratio's lowest, median and highest over them.
async fn gateway_rounds(o: &Opts, n: usize, total: usize) -> anyhow::Result<Value> {
    let mut rounds = Vec::with_capacity(o.rounds);
    for _ in 0..o.rounds {
        rounds.push(gateway_beside_go(o, n, total).await?);
    }
    let mut spread = serde_json::Map::new();
    for key in ["throughput_16", "p50", "cpu_per_call"] {
        let mut v: Vec<f64> = rounds.iter().map(|r| f(&r["ratios"], key)).collect();
        spread.insert(key.into(), json!({"min": pct(&mut v, 0.0), "median": median(&mut v), "max": pct(&mut v, 1.0)}));
    }
    let ratios = Value::Object(spread);
    let (tput, p50, cpu) = (&ratios["throughput_16"], &ratios["p50"], &ratios["cpu_per_call"]);
    eprintln!(
        "over {} rounds, median (lowest-highest): calls/s at 16 callers {:.2}x ({:.2}-{:.2}), p50 {:.2}x ({:.2}-{:.2}), CPU per call {:.2}x ({:.2}-{:.2})",
        o.rounds,
        f(tput, "median"),
        f(tput, "min"),
        f(tput, "max"),
        f(p50, "median"),
        f(p50, "min"),
        f(p50, "max"),
        f(cpu, "median"),
        f(cpu, "min"),
        f(cpu, "max"),
    );
    Ok(json!({"rounds": rounds, "ratios": ratios}))
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The gateway's figures over go-plugin's, and a line saying them against the targets:
/// calls/s at 16 callers at least 1.0x, sequential p50 at most 0.75x, CPU per call at
/// most 1.0x.
fn gateway_ratios(gw: &Value, go_lat: &Value, go_tput: &Value) -> (Value, String) {
    let tput = f(gw, "throughput_16") / f(go_tput, "calls_per_s");
    let p50 = f(gw, "p50_us") / f(go_lat, "p50_us");
    let cpu = f(&gw["cpu_per_call_us"], "total") / f(go_tput, "cpu_per_call_us");
    let ok = |good: bool| if good { "ok" } else { "MISSED" };
    let line = format!(
        "gateway over go-plugin: calls/s at 16 callers {tput:.2}x (≥1.0 {}), p50 {p50:.2}x (≤0.75 {}), CPU per call {cpu:.2}x (≤1.0 {}; {:.1} µs against {:.1} µs); sequential CPU per call {:.1} µs against {:.1} µs; the plugin slept {:.2} times a sequential call",
        ok(tput >= 1.0),
        ok(p50 <= 0.75),
        ok(cpu <= 1.0),
        f(&gw["cpu_per_call_us"], "total"),
        f(go_tput, "cpu_per_call_us"),
        f(&gw["cpu_per_sequential_call_us"], "total"),
        f(go_lat, "cpu_per_call_us"),
        f(&gw["asleep_per_sequential_call"]["plugin"], "voluntary"),
    );
    (json!({"throughput_16": tput, "p50": p50, "cpu_per_call": cpu}), line)
}

/// User and system CPU time of this process's children that have ended and been waited
/// for, their own waited-for children included, in seconds.
fn children_cpu() -> f64 {
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to an owned rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return f64::NAN;
    }
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// go-plugin's sequential calls, with its CPU per call as [`go_throughput`] takes it.
fn go_latency(go: &Path, n: usize) -> anyhow::Result<Value> {
    let small = n / 10;
    let c0 = children_cpu();
    run_json(go, &["-mode", "latency", "-n", &small.to_string()])?;
    let c1 = children_cpu();
    let mut out = run_json(go, &["-mode", "latency", "-n", &n.to_string()])?;
    let c2 = children_cpu();
    out["cpu_per_call_us"] = (((c2 - c1) - (c1 - c0)) / (n - small) as f64 * 1e6).into();
    Ok(out)
}

/// go-plugin's throughput at 16 callers, and its CPU time per call over both its
/// processes (the host, which calls, and its plugin, which it waits for): a run of
/// `total` calls less one of a tenth as many, so the start and the stop cancel out.
fn go_throughput(go: &Path, total: usize) -> anyhow::Result<Value> {
    let small = total / 10;
    let c0 = children_cpu();
    run_json(go, &["-mode", "throughput", "-n", &small.to_string(), "-c", "16"])?;
    let c1 = children_cpu();
    let mut out = run_json(go, &["-mode", "throughput", "-n", &total.to_string(), "-c", "16"])?;
    let c2 = children_cpu();
    let calls = (total / 16 * 16 - small / 16 * 16) as f64;
    out["cpu_per_call_us"] = (((c2 - c1) - (c1 - c0)) / calls * 1e6).into();
    Ok(out)
}

/// One caller through the gateway until `stop`: each call's latency (µs), and how many
/// calls failed.
fn caller(
    client: EchoClient<plugin_proto::transport::H2Channel>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<f64>, usize)> {
    tokio::spawn(async move {
        let (mut lat, mut failed) = (Vec::new(), 0);
        let mut c = client;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            match c.echo(EchoRequest { message: "hello".into() }).await {
                Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e6),
                Err(_) => failed += 1,
            }
        }
        (lat, failed)
    })
}

/// Calls through the gateway, steady and then during `rounds` reloads of the plugin
/// they call, in the same run: calls/s, p99, failed calls, and the time from `reload`
/// to the new revision serving.
async fn reloads(rounds: usize) -> anyhow::Result<Value> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = Daemon::start(&config(&plugin("echo", &bins::example("echo"), "")));
    d.wait_state("echo-0", "running", Duration::from_secs(20));
    let client = EchoClient::new(connect(&d.gateway()).await?);
    let measure = |lat: &mut Vec<f64>, failed: usize, took: Duration| json!({"calls_per_s": lat.len() as f64 / took.as_secs_f64(), "p99_us": pct(lat, 0.99), "failed": failed});
    // Steady, for as long as the reloads will take (about a second each).
    let stop = Arc::new(AtomicBool::new(false));
    let task = caller(client.clone(), stop.clone());
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(800) * u32::try_from(rounds)?).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, failed) = task.await?;
    let steady = measure(&mut lat, failed, t0.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let task = caller(client, stop.clone());
    let t0 = Instant::now();
    let mut to_serving = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let out = tokio::task::spawn_blocking({
            let (socket, ctl) = (d.control(), bins::supervisorctl());
            move || Command::new(ctl).arg("--socket").arg(socket).args(["reload", "echo"]).output()
        })
        .await??;
        anyhow::ensure!(out.status.success(), "reload failed: {}", String::from_utf8_lossy(&out.stderr));
        to_serving.push(t.elapsed().as_secs_f64() * 1e3);
    }
    stop.store(true, Ordering::Relaxed);
    let (mut lat, failed) = task.await?;
    let during = measure(&mut lat, failed, t0.elapsed());
    Ok(json!({
        "steady": steady,
        "during": during,
        "reload_to_serving_ms": {"p50": pct(&mut to_serving.clone(), 0.5), "max": pct(&mut to_serving, 1.0)},
    }))
}

/// A plugin flooding stdout, then its SDK log: the daemon's CPU (share of a core) and the
/// sibling's p99 with the flood over without, against the bounds (10%, 1.5x).
async fn logflood() -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for stream in ["stdout", "sdk"] {
        let (f, _daemon) = plugin_integration::flood::measure(stream).await?;
        let ok = f.daemon_cpu <= 0.10 && f.p99_ratio <= 1.5;
        eprintln!(
            "log flood on {stream}: daemon {:.1}% of a core (≤10%), sibling p99 {:.2}x (≤1.5x): {}",
            f.daemon_cpu * 100.0,
            f.p99_ratio,
            if ok { "ok" } else { "MISSED" }
        );
        out.insert(stream.into(), f.json);
    }
    Ok(Value::Object(out))
}

/// One daemon with `o.instances` instances (and one with a single instance, the base the
/// per-instance costs are taken from): ready time, resident memory and idle CPU against
/// the targets.
async fn scale(o: &Opts) -> anyhow::Result<Value> {
    use plugin_integration::scale::{Layout, measure, per_instance, stop};
    let (n, layout) = (o.instances, if o.named { Layout::Named } else { Layout::Replicas });
    let idle = if o.quick { Duration::from_secs(10) } else { Duration::from_secs(20) };
    let settle = Duration::from_secs(5);
    tokio::task::spawn_blocking(move || {
        let (one, daemon) = measure(1, layout, SCALE_READY, settle, idle)?;
        stop(daemon);
        let (many, daemon) = measure(n, layout, SCALE_READY * 4, settle, idle)?;
        stop(daemon);
        let (rss, cpu) = per_instance(&one, &many);
        let rss_mb = many.rss as f64 / f64::from(1 << 20);
        let ok = |good: bool| if good { "ok" } else { "MISSED" };
        eprintln!(
            "{n} instances ({layout:?}): ready in {:.1} s (≤{} s {}), RSS {rss_mb:.1} MB (≤{SCALE_RSS_MB} MB {}; {:.1} MB anonymous, {:.1} MB one instance), idle CPU {:.2}% of a core (≤{}% {}); per instance {:.1} KiB, {:.4}% of a core; {} threads, {} fds",
            many.ready.as_secs_f64(),
            SCALE_READY.as_secs(),
            ok(many.ready <= SCALE_READY),
            ok(rss_mb <= SCALE_RSS_MB),
            many.rss_anon as f64 / f64::from(1 << 20),
            one.rss as f64 / f64::from(1 << 20),
            many.idle_cpu * 100.0,
            SCALE_IDLE_CPU * 100.0,
            ok(many.idle_cpu <= SCALE_IDLE_CPU),
            rss / 1024.0,
            cpu * 100.0,
            many.threads,
            many.fds,
        );
        let mut missed = Vec::new();
        if many.ready > SCALE_READY {
            missed.push("ready time");
        }
        if rss_mb > SCALE_RSS_MB {
            missed.push("daemon RSS");
        }
        if many.idle_cpu > SCALE_IDLE_CPU {
            missed.push("daemon idle CPU");
        }
        Ok(json!({
            "one": one.json(),
            "many": many.json(),
            "per_instance": {"rss_kib": rss / 1024.0, "idle_cpu_pct": cpu * 100.0},
            "targets": {"rss_mb": SCALE_RSS_MB, "idle_cpu_pct": SCALE_IDLE_CPU * 100.0, "ready_s": SCALE_READY.as_secs()},
            "missed": missed,
        }))
    })
    .await?
}

/// Builds the yardsticks into `<target>/peers` once.
fn yardsticks(peers: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let out = bins::profile_dir().join("peers");
    std::fs::create_dir_all(&out)?;
    let go = out.join("go-plugin-echo");
    if !go.exists() {
        eprintln!("building go-plugin-echo (installs Debian's go-plugin packages when missing)...");
        let st = Command::new("bash").arg(peers.join("go-plugin-echo/build.sh")).arg(&out).status()?;
        anyhow::ensure!(st.success(), "building go-plugin-echo failed");
    }
    let pp = out.join("uds-pingpong");
    if !pp.exists() {
        let st = Command::new("cc").args(["-O2", "-o"]).arg(&pp).arg(peers.join("uds-pingpong/pingpong.c")).status()?;
        anyhow::ensure!(st.success(), "building uds-pingpong failed");
    }
    Ok((go, pp))
}

fn run_json(cmd: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {}", cmd.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} {args:?} failed: {}",
        cmd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(line.trim())?)
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let o = opts()?;
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for meaningful numbers");
    }
    let (n, total, starts) = if o.quick { (2000, 8000, 10) } else { (20000, 40000, 30) };
    let total = o.calls.unwrap_or(total);
    if let Some(part) = o.only.as_deref() {
        let v = match part {
            "spawn" => {
                let (l1, l3) = (spawn_to_ready("L1", starts).await?, spawn_to_ready("L3", starts).await?);
                let none = spawn_to_ready("none", starts).await?;
                let over = |v: &Value| f(v, "p50_us") / f(&none, "p50_us");
                json!({"L1": l1, "L3": l3, "none": none, "L1_over_unsandboxed": over(&l1), "L3_over_unsandboxed": over(&l3)})
            }
            "embedded" => embedded(n, total).await?,
            "gateway" if o.rounds > 1 => gateway_rounds(&o, n, total).await?,
            "gateway" => gateway_beside_go(&o, n, total).await?,
            "reload" => reloads(RELOADS).await?,
            "logflood" => logflood().await?,
            "scale" => scale(&o).await?,
            other => bail!("{PARTS}, not {other:?}"),
        };
        println!("{v}");
        return Ok(());
    }
    let (go, pingpong) = yardsticks(&o.peers)?;

    eprintln!("measuring the yardsticks...");
    let go_start = run_json(&go, &["-mode", "start", "-n", &starts.to_string()])?;
    let go_lat = go_latency(&go, n)?;
    let go_tput = go_throughput(&go, total)?;
    let raw = run_json(&pingpong, &[&(n * 5).to_string()])?;

    eprintln!("measuring plugin-supervisor...");
    let spawn = spawn_to_ready("L1", starts).await?;
    let spawn_l3 = spawn_to_ready("L3", starts).await?;
    let unsandboxed = spawn_to_ready("none", starts).await?;
    let emb = embedded(n, total).await?;
    let gw = gateway(n, total).await?;
    let rl = reloads(RELOADS).await?;
    let lf = logflood().await?;

    let rows = [
        ("spawn-to-ready L1 p50 (ms)", f(&spawn, "p50_us") / 1e3, f(&go_start, "p50_us") / 1e3, Some(1.0)),
        ("spawn-to-ready L3 p50 (ms)", f(&spawn_l3, "p50_us") / 1e3, f(&go_start, "p50_us") / 1e3, Some(1.0)),
        ("unsandboxed spawn p50 (ms)", f(&unsandboxed, "p50_us") / 1e3, f(&go_start, "p50_us") / 1e3, None),
        ("embedded call p50 (µs)", f(&emb, "p50_us"), f(&go_lat, "p50_us"), Some(0.6)),
        ("embedded call p99 (µs)", f(&emb, "p99_us"), f(&go_lat, "p99_us"), None),
        ("gateway call p50 (µs)", f(&gw, "p50_us"), f(&go_lat, "p50_us"), Some(0.75)),
        ("gateway call p99 (µs)", f(&gw, "p99_us"), f(&go_lat, "p99_us"), None),
        ("embedded calls/s, sequential", f(&emb, "calls_per_s"), f(&go_lat, "calls_per_s"), None),
        ("embedded calls/s, 16 callers", f(&emb, "throughput_16"), f(&go_tput, "calls_per_s"), None),
        ("gateway calls/s, 16 callers", f(&gw, "throughput_16"), f(&go_tput, "calls_per_s"), None),
        ("gateway CPU per call (µs)", f(&gw["cpu_per_call_us"], "total"), f(&go_tput, "cpu_per_call_us"), Some(1.0)),
    ];
    println!("{:<32} {:>12} {:>12} {:>8} {:>8}", "metric", "ours", "go-plugin", "ratio", "target");
    let mut missed = Vec::new();
    for (name, ours, theirs, target) in rows {
        let ratio = ours / theirs;
        let verdict = match target {
            Some(t) if ratio <= t => format!("≤{t} ok"),
            Some(t) => {
                missed.push(name);
                format!("≤{t} MISSED")
            }
            None => String::new(),
        };
        println!("{name:<32} {ours:>12.1} {theirs:>12.1} {ratio:>8.2} {verdict:>8}");
    }
    let (gw_ratios, gw_line) = gateway_ratios(&gw, &go_lat, &go_tput);
    if f(&gw_ratios, "throughput_16") < 1.0 {
        missed.push("gateway calls/s at 16 callers vs go-plugin");
    }
    println!("{gw_line}");
    let cost = f(&spawn, "p50_us") / f(&unsandboxed, "p50_us");
    let cost_l3 = f(&spawn_l3, "p50_us") / f(&unsandboxed, "p50_us");
    let verdict = |c: f64| if c <= 1.5 { "≤1.5 ok" } else { "≤1.5 MISSED" };
    if cost > 1.5 {
        missed.push("sandboxed spawn (L1) vs unsandboxed");
    }
    if cost_l3 > 1.5 {
        missed.push("sandboxed spawn (L3) vs unsandboxed");
    }
    println!(
        "sandboxed spawn / unsandboxed spawn: L1 {cost:.2} ({}), L3 {cost_l3:.2} ({})",
        verdict(cost),
        verdict(cost_l3)
    );
    println!(
        "raw socketpair ping-pong p50 {:.1} µs, p99 {:.1} µs (the floor: embedded p50 is {:.2}x it)",
        f(&raw, "p50_us"),
        f(&raw, "p99_us"),
        f(&emb, "p50_us") / f(&raw, "p50_us")
    );
    let (steady, during) = (&rl["steady"], &rl["during"]);
    let p99_ratio = f(during, "p99_us") / f(steady, "p99_us");
    let failed = during["failed"].as_u64().unwrap_or(u64::MAX);
    if p99_ratio > 2.0 {
        missed.push("gateway p99 during reloads vs steady");
    }
    if failed > 0 {
        missed.push("failed calls during reloads");
    }
    println!(
        "during {RELOADS} reloads: {:.0} calls/s ({:.0} steady), p99 {:.1} µs ({:.1} steady, {p99_ratio:.2}x, {}), {failed} failed ({}); reload to serving p50 {:.0} ms, max {:.0} ms",
        f(during, "calls_per_s"),
        f(steady, "calls_per_s"),
        f(during, "p99_us"),
        f(steady, "p99_us"),
        if p99_ratio <= 2.0 { "≤2 ok" } else { "≤2 MISSED" },
        if failed == 0 { "0 ok" } else { "0 MISSED" },
        f(&rl["reload_to_serving_ms"], "p50"),
        f(&rl["reload_to_serving_ms"], "max"),
    );
    for (stream, v) in lf.as_object().into_iter().flatten() {
        let (cpu, ratio) = (f(v, "daemon_cpu_share_of_a_core"), f(&v["sibling_p99_us"], "ratio"));
        if cpu > 0.10 {
            missed.push("daemon CPU during a log flood");
        }
        if ratio > 1.5 {
            missed.push("sibling p99 during a log flood");
        }
        println!(
            "log flood on {stream}: daemon {:.1}% of a core (≤10% {}), sibling p99 {ratio:.2}x (≤1.5x {}), load {}",
            cpu * 100.0,
            if cpu <= 0.10 { "ok" } else { "MISSED" },
            if ratio <= 1.5 { "ok" } else { "MISSED" },
            v["load"].as_str().unwrap_or("?"),
        );
    }
    let all = json!({"log_flood": lf, "reload": rl, "spawn_to_ready": spawn, "spawn_to_ready_l3": spawn_l3, "unsandboxed_spawn": unsandboxed, "embedded": emb, "gateway": gw, "go_plugin": {"start": go_start, "latency": go_lat, "throughput": go_tput}, "raw_uds": raw, "missed": missed});
    println!("{all}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
