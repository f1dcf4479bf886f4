//! Once a second, each running instance's cgroup is read: status shows the
//! usage, and hitting the task limit or being throttled to the CPU quota
//! becomes an event. The periodic timer also keeps the runtime's timer
//! wheel awake, so per-call deadline timers do not have to wake it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::instance::Plugin;
use crate::observe::events::EventKind;
use crate::supervisor::Shared;

const PERIOD: Duration = Duration::from_secs(1);
/// At most one throttling event per instance in this long.
const THROTTLE_EVENT_GAP: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Seen {
    pids_max_hits: u64,
    nr_throttled: u64,
    last_throttle_event: Option<Instant>,
}

pub(crate) async fn run(plugins: Vec<Arc<Plugin>>, shared: Arc<Shared>) {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        for p in &plugins {
            for inst in &p.instances() {
                let Some(cg) = inst.cgroup.load_full() else {
                    seen.remove(&inst.id);
                    // No process, no usage: what the last one used is not kept.
                    if inst.status().usage.is_some() {
                        inst.update(|st| st.usage = None);
                    }
                    continue;
                };
                let Ok(stats) = cg.stats() else { continue };
                let s = seen.entry(inst.id.clone()).or_default();
                let quota = inst.status().quota;
                if let Some(hits) = stats.pids_max_hits
                    && hits > s.pids_max_hits
                {
                    let limit = quota.pids_max.map_or_else(|| "?".into(), |n| n.to_string());
                    shared.events.emit(
                        &p.name,
                        &inst.id,
                        EventKind::PidsLimit,
                        format!("task limit reached: pids.max {limit} refused {} fork(s)", hits - s.pids_max_hits),
                        &[("pids_max_hits", hits.to_string())],
                    );
                    s.pids_max_hits = hits;
                }
                if let Some(n) = stats.cpu_nr_throttled
                    && n > s.nr_throttled
                {
                    let due = s.last_throttle_event.is_none_or(|t| t.elapsed() >= THROTTLE_EVENT_GAP);
                    if due {
                        let cpu = quota.cpu.map_or_else(|| "?".into(), |c| c.to_string());
                        shared.events.emit(
                            &p.name,
                            &inst.id,
                            EventKind::CpuThrottled,
                            format!("held to its CPU quota ({cpu}): throttled in {} scheduling periods so far", n),
                            &[("nr_throttled", n.to_string())],
                        );
                        s.last_throttle_event = Some(Instant::now());
                    }
                    s.nr_throttled = n;
                }
                inst.update(|st| st.usage = Some(stats));
            }
        }
    }
}
