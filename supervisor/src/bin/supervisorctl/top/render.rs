//! A view as text (the same lines on the live screen and for `--once`) and as
//! JSON.

use std::time::Duration;

use serde_json::json;

use super::view::{InstanceRow, PluginRow, View};
use crate::colour;
use crate::output::{clock, mib};

const HEADER: [&str; 10] =
    ["PLUGIN/INSTANCE", "STATE", "REV", "PID", "CPU%", "MEMORY", "TASKS", "CALLS/S", "ERR%", "P99"];
/// The columns aligned right: the numbers.
const RIGHT: [bool; 10] = [false, false, true, true, true, true, true, true, true, true];
const STATE: usize = 1;

fn or_dash<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

fn percent(v: f64) -> String {
    format!("{v:.1}")
}

/// A latency as people read it: 0.42ms, 12.3ms, 1.50s.
pub fn latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    match ms {
        ms if ms < 10.0 => format!("{ms:.2}ms"),
        ms if ms < 1000.0 => format!("{ms:.1}ms"),
        ms => format!("{:.2}s", ms / 1e3),
    }
}

/// The sum of `values`, 0 for none (f64's `Sum` starts at -0.0, which prints "-0.0").
fn total(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, |sum, v| sum + v)
}

/// The first line: when, what is shown and its totals.
fn summary(v: &View) -> String {
    let (instances, running) = v.instance_counts();
    let sum_f = |f: fn(&PluginRow) -> Option<f64>| total(v.plugins.iter().filter_map(f));
    let sum_u = |f: fn(&PluginRow) -> Option<u64>| v.plugins.iter().filter_map(f).sum::<u64>();
    format!(
        "{}  plugins {}  instances {instances} ({running} running)  cpu {}%  memory {}  tasks {}  calls {}/s",
        clock(v.unix_nanos),
        v.plugins.len(),
        percent(sum_f(|p| p.cpu)),
        mib(sum_u(|p| p.memory)),
        sum_u(|p| p.tasks),
        percent(total(v.plugins.iter().map(|p| p.calls.per_second))),
    )
}

fn plugin_cells(p: &PluginRow) -> [String; 10] {
    [
        p.name.clone(),
        p.state.clone(),
        String::new(),
        String::new(),
        or_dash(p.cpu, percent),
        or_dash(p.memory, mib),
        or_dash(p.tasks, |n| n.to_string()),
        percent(p.calls.per_second),
        or_dash(p.calls.error_rate, |r| percent(r * 100.0)),
        or_dash(p.calls.p99, latency),
    ]
}

fn instance_cells(i: &InstanceRow) -> [String; 10] {
    [
        format!("  {}", i.instance),
        i.state.clone(),
        i.revision.to_string(),
        or_dash(i.pid, |p| p.to_string()),
        or_dash(i.cpu, percent),
        or_dash(i.memory, mib),
        or_dash(i.tasks, |n| n.to_string()),
        // Calls are counted per plugin: on its row.
        String::new(),
        String::new(),
        String::new(),
    ]
}

/// The view as lines: the summary, the column names, then each plugin (by CPU)
/// followed by its instances, indented. States are coloured when `colour`.
pub fn lines(v: &View, colour: bool) -> Vec<String> {
    let rows: Vec<[String; 10]> = v
        .plugins
        .iter()
        .flat_map(|p| std::iter::once(plugin_cells(p)).chain(p.instances.iter().map(instance_cells)))
        .collect();
    let mut widths = HEADER.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 10], paint: bool| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths[i];
            if i == STATE {
                s.push_str(&colour::state_padded(cell, w, paint));
            } else if RIGHT[i] {
                s.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
                s.push_str(cell);
            } else {
                s.push_str(&crate::output::padded(cell, w));
            }
            s.push_str("  ");
        }
        s.trim_end().to_owned()
    };
    let mut out = vec![summary(v), line(&HEADER.map(String::from), false)];
    out.extend(rows.iter().map(|r| line(r, colour)));
    out
}

/// The view as one JSON document.
pub fn json(v: &View) -> serde_json::Value {
    let (instances, running) = v.instance_counts();
    let plugins: Vec<_> = v
        .plugins
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "state": p.state,
                "cpu_percent": p.cpu,
                "memory_bytes": p.memory,
                "tasks": p.tasks,
                "calls_per_second": p.calls.per_second,
                "error_rate": p.calls.error_rate,
                "p99_seconds": p.calls.p99.map(|d| d.as_secs_f64()),
                "instances": p.instances.iter().map(|i| json!({
                    "instance": i.instance,
                    "revision": i.revision,
                    "state": i.state,
                    "pid": i.pid,
                    "cpu_percent": i.cpu,
                    "memory_bytes": i.memory,
                    "tasks": i.tasks,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "time": clock(v.unix_nanos),
        "unix_nanos": v.unix_nanos,
        "interval_seconds": v.interval.as_secs_f64(),
        "totals": {
            "plugins": v.plugins.len(),
            "instances": instances,
            "running": running,
            "cpu_percent": total(v.plugins.iter().filter_map(|p| p.cpu)),
            "memory_bytes": v.plugins.iter().filter_map(|p| p.memory).sum::<u64>(),
            "tasks": v.plugins.iter().filter_map(|p| p.tasks).sum::<u64>(),
            "calls_per_second": total(v.plugins.iter().map(|p| p.calls.per_second)),
        },
        "plugins": plugins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::calls::Rates;

    fn view() -> View {
        let instance = |n: u32, state: &str, cpu: Option<f64>| InstanceRow {
            instance: format!("echo-{n}"),
            revision: 2,
            state: state.into(),
            pid: cpu.map(|_| 4200 + n),
            cpu,
            memory: cpu.map(|_| 3 << 20),
            tasks: cpu.map(|_| 4),
        };
        View {
            unix_nanos: 1_796_316_305_123_000_000,
            interval: Duration::from_secs(1),
            plugins: vec![PluginRow {
                name: "echo".into(),
                state: "1/2 running".into(),
                cpu: Some(12.5),
                memory: Some(3 << 20),
                tasks: Some(4),
                calls: Rates { per_second: 250.0, error_rate: Some(0.02), p99: Some(Duration::from_micros(420)) },
                instances: vec![instance(0, "running", Some(12.5)), instance(1, "backoff", None)],
            }],
        }
    }

    #[test]
    fn the_text_has_a_dated_summary_then_each_plugin_and_its_instances() {
        let lines = lines(&view(), false);
        assert_eq!(
            lines,
            [
                "2026-12-03T16:45:05.123Z  plugins 1  instances 2 (1 running)  cpu 12.5%  memory 3.0M  tasks 4  calls 250.0/s",
                "PLUGIN/INSTANCE  STATE        REV   PID  CPU%  MEMORY  TASKS  CALLS/S  ERR%     P99",
                "echo             1/2 running             12.5    3.0M      4    250.0   2.0  0.42ms",
                "  echo-0         running        2  4200  12.5    3.0M      4",
                "  echo-1         backoff        2     -     -       -      -",
            ]
        );
    }

    #[test]
    fn on_a_terminal_only_the_states_are_coloured() {
        let coloured = lines(&view(), true);
        assert!(coloured[3].contains("\x1b[32mrunning\x1b[0m"), "{:?}", coloured[3]);
        assert!(coloured[4].contains("\x1b[31mbackoff\x1b[0m"), "{:?}", coloured[4]);
        let stripped: Vec<String> = coloured.iter().map(|l| colour::strip(l)).collect();
        assert_eq!(stripped, lines(&view(), false));
    }

    #[test]
    fn the_json_has_the_same_figures() {
        let j = json(&view());
        assert_eq!(j["time"], "2026-12-03T16:45:05.123Z");
        assert_eq!(j["totals"]["instances"], 2);
        assert_eq!(j["totals"]["running"], 1);
        let echo = &j["plugins"][0];
        assert_eq!(echo["calls_per_second"], 250.0);
        assert_eq!(echo["error_rate"], 0.02);
        assert_eq!(echo["p99_seconds"], 0.00042);
        assert_eq!(echo["instances"][0]["cpu_percent"], 12.5);
        assert_eq!(echo["instances"][1]["cpu_percent"], serde_json::Value::Null);
        assert_eq!(echo["instances"][1]["pid"], serde_json::Value::Null);
    }

    #[test]
    fn totals_of_nothing_known_are_zero_not_minus_zero() {
        let mut v = view();
        v.plugins[0].cpu = None;
        assert!(lines(&v, false)[0].contains("  cpu 0.0%  "), "{}", lines(&v, false)[0]);
        assert_eq!(json(&v)["totals"]["cpu_percent"].as_f64().map(f64::is_sign_negative), Some(false));
    }

    #[test]
    fn latencies_read_as_people_read_them() {
        assert_eq!(latency(Duration::from_micros(420)), "0.42ms");
        assert_eq!(latency(Duration::from_micros(12_340)), "12.3ms");
        assert_eq!(latency(Duration::from_millis(1500)), "1.50s");
    }
}
