//! Many instances in one daemon, measured: how long until all are ready, the daemon's
//! resident memory and its idle CPU, with the default stack on (the sampler, leak
//! detection, every routing layer). Shared by `bench --only scale` and the `scale` test.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::{config, plugin};
use crate::procfs::{cpu_seconds, status_field};
use crate::{Daemon, bins};

/// How the instances are configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One plugin with `replicas = n`.
    Replicas,
    /// `n` plugins from the same binary under their own names (`echo-0`, `echo-1`, ...),
    /// for when a binary may be configured under many names.
    Named,
}

/// The plugin entry each instance runs as: the example config's echo (tier L1, its
/// quota), so each instance has its cgroup with memory, CPU and task limits.
const ENTRY: &str =
    "restart = \"always\"\ntier = \"L1\"\n[plugin.quota]\nmemory_max = \"128M\"\ncpu = \"50%\"\npids_max = 32";

/// A config running `n` echo instances laid out as `layout`.
pub fn config_for(n: usize, layout: Layout) -> String {
    let echo = bins::example("echo");
    let plugins = match layout {
        Layout::Replicas => plugin("echo", &echo, &format!("replicas = {n}\n{ENTRY}")),
        Layout::Named => {
            (0..n).map(|i| plugin(&format!("echo-{i}"), &echo, &format!("declared_name = \"echo\"\n{ENTRY}"))).collect()
        }
    };
    config(&plugins)
}

/// The ids of the instances [`config_for`] makes.
pub fn instance_ids(n: usize, layout: Layout) -> Vec<String> {
    match layout {
        Layout::Replicas => (0..n).map(|i| format!("echo-{i}")).collect(),
        Layout::Named => (0..n).map(|i| format!("echo-{i}-0")).collect(),
    }
}

/// What one daemon with `instances` instances measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub instances: usize,
    /// From the daemon's start until every instance was running.
    pub ready: Duration,
    /// `VmRSS` once settled, bytes.
    pub rss: u64,
    /// Of which anonymous memory (the heap, stacks), bytes; the rest is the
    /// binary's and libraries' pages.
    pub rss_anon: u64,
    /// CPU time over the idle window per second of it: a share of one core.
    pub idle_cpu: f64,
    pub threads: u64,
    pub fds: usize,
}

impl Figures {
    pub fn json(&self) -> Value {
        json!({
            "instances": self.instances,
            "ready_s": self.ready.as_secs_f64(),
            "rss_mb": self.rss as f64 / f64::from(1 << 20),
            "rss_anon_mb": self.rss_anon as f64 / f64::from(1 << 20),
            "idle_cpu_pct": self.idle_cpu * 100.0,
            "threads": self.threads,
            "fds": self.fds,
        })
    }
}

/// The running instances' count in a `status --json`.
fn running(d: &Daemon) -> usize {
    let out = d.ctl(&["status", "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    rows.iter().filter(|r| r["state"] == "running").count()
}

/// Starts a daemon with `n` instances laid out as `layout`, waits (up to `up`) until all
/// run, lets it settle for `settle`, then measures its resident memory and its CPU over
/// `idle`. The daemon is returned, still running, for more measures.
pub fn measure(
    n: usize,
    layout: Layout,
    up: Duration,
    settle: Duration,
    idle: Duration,
) -> anyhow::Result<(Figures, Daemon)> {
    let t0 = Instant::now();
    let d = Daemon::start(&config_for(n, layout));
    let ready = loop {
        let now = running(&d);
        if now == n {
            break t0.elapsed();
        }
        if t0.elapsed() >= up {
            let tail = d.log_tail(20);
            stop(d);
            anyhow::bail!("{now} of {n} instances running after {up:?}; the daemon's log ends:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(settle);
    let pid = d.pid();
    let (c0, t) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(idle);
    let idle_cpu = (cpu_seconds(pid) - c0) / t.elapsed().as_secs_f64();
    let kib = |field: &str| {
        status_field(pid, field).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0)
    };
    let figures = Figures {
        instances: n,
        ready,
        rss: kib("VmRSS") * 1024,
        rss_anon: kib("RssAnon") * 1024,
        idle_cpu,
        threads: kib("Threads"),
        fds: crate::procfs::open_fds(pid).len(),
    };
    Ok((figures, d))
}

/// Stops a daemon [`measure`] started, waiting for every instance to drain and go: a
/// thousand take longer than a dropped [`Daemon`] waits before it kills the daemon, which
/// would leave their cgroups behind.
pub fn stop(mut d: Daemon) {
    d.stop_with(libc::SIGTERM, Duration::from_secs(300));
}

/// What each instance past the first costs: `many` over `one`, per instance (bytes of RSS,
/// share of a core).
pub fn per_instance(one: &Figures, many: &Figures) -> (f64, f64) {
    let extra = (many.instances - one.instances).max(1) as f64;
    ((many.rss as f64 - one.rss as f64) / extra, (many.idle_cpu - one.idle_cpu) / extra)
}
