//! A log flood measured: a plugin writing to one stream (stdout, stderr or its SDK log) as
//! fast as it can, beside a sibling called through the gateway. Gives the daemon's CPU
//! time over the flood as a share of a core (against the same daemon idle), and the
//! sibling's call p99 in windows with and without the flood, taken in turn so that both
//! see the same machine (the flooding instance is held with SIGSTOP between them).
//! Shared by the `logs` test, which checks the bounds, and `bench --only logflood`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::{config, plugin};
use crate::pb::echo::EchoRequest;
use crate::pb::echo::echo_client::EchoClient;
use crate::procfs::cpu_seconds;
use crate::{Daemon, bins, connect};

const UP: Duration = Duration::from_secs(30);
/// Windows with and without the flood, taken in turn.
const ROUNDS: usize = 10;
const WINDOW: Duration = Duration::from_millis(600);

/// What a flood cost.
#[derive(Debug)]
pub struct Figures {
    /// The daemon's CPU time over the flood per second, less the same idle.
    pub daemon_cpu: f64,
    /// The sibling's p99 with the flood over its p99 without.
    pub p99_ratio: f64,
    /// Lines the limit kept and dropped, from the metrics.
    pub kept: f64,
    pub dropped: f64,
    /// The most lines the limit may have kept in the run.
    pub most_kept: f64,
    /// Everything, for the record.
    pub json: Value,
}

/// The flooding instance is held (SIGSTOP) or let go (SIGCONT): the flood starts and
/// stops at once, without a start's or stop's own cost in the window.
fn flood(pid: i32, on: bool) -> anyhow::Result<()> {
    let sig = if on { libc::SIGCONT } else { libc::SIGSTOP };
    // SAFETY: signals a plugin process the measure's own daemon started.
    anyhow::ensure!(unsafe { libc::kill(pid, sig) } == 0, "signalling the flooding zoo {pid}");
    Ok(())
}

fn p99(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get((v.len().saturating_sub(1)) * 99 / 100).copied().unwrap_or(f64::NAN)
}

/// Sequential sibling calls for `window`, a millisecond apart: their latencies in µs.
async fn sibling(
    c: &mut EchoClient<plugin_proto::transport::H2Channel>,
    window: Duration,
    lat: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let end = Instant::now() + window;
    while Instant::now() < end {
        let t = Instant::now();
        let r = c.echo(EchoRequest { message: "sibling".into() }).await?;
        anyhow::ensure!(r.into_inner().message == "sibling", "a sibling call answered wrong");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The daemon's CPU time and the wall time, in seconds, while `during` runs.
async fn cpu_over<T>(pid: i32, during: impl std::future::Future<Output = T>) -> (T, f64, f64) {
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    let out = during.await;
    (out, cpu_seconds(pid) - c0, t0.elapsed().as_secs_f64())
}

/// The value of `series` in a metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The machine's load averages, to read the figures by.
pub fn machine_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts a daemon with an `echo` sibling and a zoo called `flood` flooding `stream`, and
/// measures. The daemon is handed back for a look at its tail and log.
pub async fn measure(stream: &str) -> anyhow::Result<(Figures, Daemon)> {
    // The SDK flood spins in the plugin (its SDK drops records once the supervisor reads
    // them slowly): its own CPU is held to a tenth of a core by its quota, as an
    // operator would, so that on a 2-core machine the sibling measures the supervisor,
    // not a plugin burning a core beside it. (The stdout flood blocks in write().)
    let flooder = plugin(
        "flood",
        &bins::zoo(),
        &format!("args = [\"--name\", \"flood\", \"--flood\", {stream:?}]\n[plugin.quota]\ncpu = \"10%\"\n"),
    );
    // The flood begins as the plugin starts, before it is running: the limit's bucket is
    // no older than the daemon, so the bound counts from the daemon's start.
    let started = Instant::now();
    let d = Daemon::start(&config(&format!("{}{flooder}", plugin("echo", &bins::example("echo"), ""))));
    d.wait_state("echo-0", "running", UP);
    let pid = d.wait_state("flood-0", "running", UP)["pid"].as_i64().unwrap_or(0) as i32;
    let daemon = d.pid();
    flood(pid, false)?;
    let mut c = EchoClient::new(connect(&d.gateway()).await?);
    sibling(&mut c, Duration::from_millis(300), &mut Vec::new()).await?;

    // The daemon's cost, the sibling idle: flood on against flood off.
    let ((), idle_cpu, idle_wall) = cpu_over(daemon, tokio::time::sleep(WINDOW * 2)).await;
    flood(pid, true)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ((), flood_cpu, flood_wall) = cpu_over(daemon, tokio::time::sleep(WINDOW * 5)).await;
    flood(pid, false)?;
    let cost = flood_cpu / flood_wall - idle_cpu / idle_wall;

    // The sibling, under load, in windows without and with the flood, in turn.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut off_cpu, mut on_cpu) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        let (r, cpu, _) = cpu_over(daemon, sibling(&mut c, WINDOW, &mut off)).await;
        r?;
        off_cpu += cpu;
        flood(pid, true)?;
        let (r, cpu, _) = cpu_over(daemon, sibling(&mut c, WINDOW, &mut on)).await;
        flood(pid, false)?;
        r?;
        on_cpu += cpu;
    }
    flood(pid, true)?;
    let wall = ROUNDS as f64 * WINDOW.as_secs_f64();
    let (p99_off, p99_on) = (p99(&mut off), p99(&mut on));
    let p99_ratio = p99_on / p99_off;

    let metrics = String::from_utf8_lossy(&d.ctl(&["metrics"]).stdout).into_owned();
    let series = |name: &str| format!("supervisor_{name}{{plugin=\"flood\",stream=\"{stream}\"}}");
    let kept = metric(&metrics, &series("log_lines_total")).unwrap_or(f64::NAN);
    let dropped = metric(&metrics, &series("log_lines_dropped_total")).unwrap_or(f64::NAN);
    // The default limit (1000 a second after a burst of 2000) refills while the flood is
    // held, so the bound is over the whole run.
    let most_kept = 2000.0 + 1000.0 * started.elapsed().as_secs_f64();
    let json = json!({
        "stream": stream,
        "daemon_cpu_share_of_a_core": cost,
        "daemon_cpu_idle": idle_cpu / idle_wall,
        "with_sibling": {"daemon_cpu_off": off_cpu / wall, "daemon_cpu_on": on_cpu / wall},
        "sibling_p99_us": {"off": p99_off, "on": p99_on, "ratio": p99_ratio},
        "sibling_calls": {"off": off.len(), "on": on.len()},
        "lines": {"kept": kept, "dropped": dropped},
        "load": machine_load(),
    });
    Ok((Figures { daemon_cpu: cost, p99_ratio, kept, dropped, most_kept, json }, d))
}
