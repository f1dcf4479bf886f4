//! What each command prints: tables for people, JSON for scripts.

use std::process::ExitCode;
use std::time::Duration;

use plugin_proto::control::v1::{
    ActionResponse, CallRequest, ConfigRequest, ConfigResponse, EventsRequest, InstanceStatus, LogLine, MetricsRequest,
    Quota, QuotaRequest, RereadRequest, RereadResponse, StatusRequest, TailRequest, UpdateResponse,
};
use plugin_supervisor::observe::forward::{clean, json_for_terminal};
use serde_json::json;

use super::client::{Client, Wait};
use crate::exit::{Exit, Failure};
use crate::stdout::{out, outln};

fn uptime(s: u64) -> String {
    match s {
        0 => "-".into(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn row_json(i: &InstanceStatus) -> serde_json::Value {
    json!({
        "name": i.name,
        "instance": i.instance,
        "revision": i.revision,
        "state": i.state,
        "reason": i.reason,
        "pid": if i.pid == 0 { serde_json::Value::Null } else { i.pid.into() },
        "restarts": i.restarts,
        "version": i.version,
        "uptime_s": i.uptime_s,
        "sdk_version": i.sdk_version,
        "protocol_version": i.protocol_version,
        "services": i.services,
        "sha256": i.sha256,
        "tier": i.tier,
        "quota": i.quota.as_ref().map(quota_json),
        "usage": i.usage.as_ref().map(|u| json!({
            "memory_current": u.memory_current,
            "cpu_usage_usec": u.cpu_usage_usec,
            "cpu_nr_throttled": u.cpu_nr_throttled,
            "cpu_throttled_usec": u.cpu_throttled_usec,
            "pids_current": u.pids_current,
            "oom_kills": u.oom_kills,
            "pids_max_hits": u.pids_max_hits,
            "read_unix_nanos": u.read_unix_nanos,
        })),
        "notes": i.notes,
        "leaks": i.leaks,
        "circuit": i.circuit,
        "serving": i.serving,
        "phases": i.phases.iter().map(|p| json!({"phase": p.phase, "micros": p.micros})).collect::<Vec<_>>(),
        "teardown": i.teardown.as_ref().map(|t| json!({
            "result": t.result,
            "micros": t.micros,
            "found": t.found,
            "unchecked": t.unchecked,
            "unix_nanos": t.unix_nanos,
            "time": clock(t.unix_nanos),
        })),
    })
}

/// `status --phases`: each instance's last start and stop, phase by phase, in ms.
fn phases_table(rows: &[InstanceStatus]) {
    use plugin_supervisor::observe::phases::Phase;
    let mut header = vec!["INSTANCE".to_owned(), "REV".to_owned()];
    header.extend(Phase::ALL.iter().map(|p| p.as_str().to_uppercase()));
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|i| {
            let mut row = vec![i.instance.clone(), i.revision.to_string()];
            row.extend(Phase::ALL.iter().map(|p| {
                i.phases
                    .iter()
                    .find(|t| t.phase == p.as_str())
                    .map_or("-".into(), |t| format!("{:.1}", t.micros as f64 / 1e3))
            }));
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in &table {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in std::iter::once(&header).chain(&table) {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| padded(c, *w)).collect();
        outln!("{}", cells.join("  ").trim_end());
    }
}

/// `cell` padded with spaces to `width` characters. Not `format!("{cell:<width$}")`: a
/// width past 65,535 (a cell as long, in an answer from any daemon) panics there.
pub fn padded(cell: &str, width: usize) -> String {
    let pad = width.saturating_sub(cell.chars().count());
    let mut s = String::with_capacity(cell.len() + pad);
    s.push_str(cell);
    s.extend(std::iter::repeat_n(' ', pad));
    s
}

fn quota_json(q: &Quota) -> serde_json::Value {
    let v = |s: &str| if s.is_empty() { serde_json::Value::Null } else { s.into() };
    json!({"memory_max": v(&q.memory_max), "memory_high": v(&q.memory_high), "cpu": v(&q.cpu), "pids_max": v(&q.pids_max)})
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / f64::from(1 << 20))
}

pub async fn status(c: &mut Client, w: &Wait, name: String, as_json: bool, phases: bool) -> Result<ExitCode, Failure> {
    let rows = w.answer(c.status(w.request(StatusRequest { name }))).await?.instances;
    // As systemctl and supervisord: 3 unless every instance shown runs and serves.
    let done = if rows.iter().all(|i| i.serving) { ExitCode::SUCCESS } else { Exit::NotRunning.into() };
    if phases && !as_json {
        outln!("last start and stop of each instance, in ms:");
        phases_table(&rows);
        return Ok(done);
    }
    if as_json {
        let arr: Vec<_> = rows.iter().map(row_json).collect();
        // Its reasons, notes and leaks may quote a plugin, as the table's cells do.
        outln!("{}", json_for_terminal(serde_json::to_string_pretty(&arr).map_err(|e| e.to_string())?));
        return Ok(done);
    }
    let header = [
        "NAME",
        "INSTANCE",
        "REV",
        "STATE",
        "PID",
        "RESTARTS",
        "VERSION",
        "UPTIME",
        "TIER",
        "MEMORY",
        "TASKS",
        "THROTTLED",
        "TEARDOWN",
        "REASON",
    ];
    let table: Vec<[String; 14]> = rows
        .iter()
        .map(|i| {
            let q = i.quota.clone().unwrap_or_default();
            let used = |v: Option<u64>, limit: &str, f: fn(u64) -> String| match (v, limit) {
                (Some(v), "") => f(v),
                (Some(v), l) => format!("{}/{l}", f(v)),
                (None, _) => "-".into(),
            };
            let u = i.usage;
            [
                i.name.clone(),
                i.instance.clone(),
                i.revision.to_string(),
                i.state.clone(),
                if i.pid == 0 { "-".into() } else { i.pid.to_string() },
                i.restarts.to_string(),
                if i.version.is_empty() { "-".into() } else { i.version.clone() },
                uptime(i.uptime_s),
                if i.tier.is_empty() { "-".into() } else { i.tier.clone() },
                used(u.map(|u| u.memory_current), &q.memory_max, mib),
                used(u.map(|u| u.pids_current), &q.pids_max, |n| n.to_string()),
                u.map_or("-".into(), |u| u.cpu_nr_throttled.to_string()),
                i.teardown.as_ref().map_or("-".into(), |t| t.result.clone()),
                {
                    // What the last teardown left is worth the operator's eye.
                    let mut notes: Vec<String> = i.notes.iter().chain(&i.leaks).cloned().collect();
                    if let Some(t) = i.teardown.as_ref().filter(|t| t.result == "leftover") {
                        notes.extend(t.found.iter().map(|f| format!("teardown: {f}")));
                    }
                    let shown = if notes.is_empty() {
                        i.reason.clone()
                    } else {
                        format!("{} [{}]", i.reason, notes.join("; "))
                    };
                    // Reasons and notes may quote a plugin.
                    clean(&shown)
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &table {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    // The state column is coloured on a terminal; the text is the same.
    const STATE: usize = 3;
    let colour = crate::colour::wanted();
    let line = |cells: &[String], colour: bool| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else if i == STATE {
                s.push_str(&crate::colour::state_padded(cell, w, colour));
                s.push_str("  ");
            } else {
                s.push_str(&padded(cell, w));
                s.push_str("  ");
            }
        }
        outln!("{}", s.trim_end());
    };
    line(&header.map(String::from), false);
    for r in &table {
        line(r, colour);
    }
    Ok(done)
}

/// An action's answer, exit 0 only when it got what it asked: "echo: failed (refused:
/// ...)" is an answer but no success, nor is "echo: starting" from a start whose `--wait`
/// ran out first.
pub fn action(r: Result<ActionResponse, Failure>) -> Result<ExitCode, Failure> {
    let answer = r?;
    let msg = answer.message;
    outln!("{}", action_text(&msg));
    // A daemon older than `reached` is judged by its words, as before.
    let reached = answer.reached.unwrap_or_else(|| !(msg.contains(": failed") || msg.contains(": backoff")));
    Ok(if reached { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// An action's answer as shown: it may quote a plugin (why its start failed).
fn action_text(msg: &str) -> String {
    super::client::terminal_text(msg)
}

/// A time with its date and zone (RFC 3339, UTC, ms): the same on every host and
/// whatever the reader's locale, and sortable as text.
pub fn clock(nanos: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(nanos);
    humantime::format_rfc3339_millis(t).to_string()
}

fn line_json(l: &LogLine) -> serde_json::Value {
    json!({
        "time": clock(l.unix_nanos),
        "unix_nanos": l.unix_nanos,
        "instance": l.instance,
        "stream": l.stream,
        "level": l.level,
        "text": l.text,
        "fields": l.fields,
    })
}

/// A plugin's line as text, on one line. What the plugin wrote (its text, its fields' names and values,
/// its level) has its control characters escaped: a line of its cannot clear or retitle
/// the operator's terminal, nor start a line that looks like another instance's or the
/// supervisor's (`--json` keeps it exact, JSON escaping it).
fn line_text(l: &LogLine) -> String {
    let mut fields: Vec<_> = l.fields.iter().collect();
    fields.sort();
    let extra: String = fields.iter().map(|(k, v)| format!(" {}={}", clean(k), clean(v))).collect();
    let level = if l.level.is_empty() { String::new() } else { format!(" {}", clean(&l.level.to_uppercase())) };
    format!("{} {} {}{level} {}{extra}", clock(l.unix_nanos), l.instance, l.stream, clean(&l.text))
}

pub async fn tail(
    c: &mut Client,
    w: &Wait,
    name: String,
    follow: bool,
    lines: u32,
    as_json: bool,
) -> Result<ExitCode, Failure> {
    let mut stream = w.answer(c.tail(w.request(TailRequest { name, follow, lines: Some(lines) }))).await?;
    while let Some(line) = w.next(&mut stream, follow).await? {
        if as_json {
            outln!("{}", json_for_terminal(line_json(&line).to_string()));
        } else {
            outln!("{}", line_text(&line));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn events(c: &mut Client, w: &Wait, name: String, follow: bool, as_json: bool) -> Result<ExitCode, Failure> {
    let mut stream = w.answer(c.events(w.request(EventsRequest { follow, name }))).await?;
    while let Some(ev) = w.next(&mut stream, follow).await? {
        if as_json {
            let v = json!({"time": clock(ev.unix_nanos), "unix_nanos": ev.unix_nanos, "plugin": ev.plugin, "instance": ev.instance, "kind": ev.kind, "message": ev.message, "fields": ev.fields});
            outln!("{}", json_for_terminal(v.to_string()));
        } else {
            let who = if ev.instance.is_empty() { ev.plugin.clone() } else { ev.instance.clone() };
            // A message may quote a plugin (a process name it chose, what it said).
            outln!("{} {:<12} {:<14} {}", clock(ev.unix_nanos), who, ev.kind, clean(&ev.message));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The largest request `call` reads: the daemon's control socket takes no larger one.
const MAX_REQUEST: u64 = plugin_supervisor::control::MAX_CALL_JSON as u64;

/// `--data` as given, or read from the file `@FILE` names (`@-`: stdin).
fn request_json(data: String) -> Result<String, String> {
    match data.strip_prefix('@') {
        Some("-") => bounded(std::io::stdin(), "-"),
        Some(path) => bounded(std::fs::File::open(path).map_err(|e| format!("--data @{path}: {e}"))?, path),
        None => Ok(data),
    }
}

/// What `from` holds, read no further than the daemon would take (a request is at most
/// that): `@/dev/zero`, or a pipe that never ends, is refused once past it.
fn bounded(from: impl std::io::Read, name: &str) -> Result<String, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    from.take(MAX_REQUEST + 1).read_to_end(&mut bytes).map_err(|e| format!("--data @{name}: cannot read it: {e}"))?;
    // The size first: the cut may fall inside a character.
    if bytes.len() as u64 > MAX_REQUEST {
        return Err(format!("--data @{name}: the request is over {MAX_REQUEST} bytes"));
    }
    String::from_utf8(bytes).map_err(|e| format!("--data @{name}: not UTF-8 text: {e}"))
}

/// What `call` says of a call that ended with `status`: on one line, since the message is
/// usually the plugin's own (a line break in it would start a line that looks like ours).
fn call_error_text(status: &tonic::Status) -> String {
    clean(&super::client::reason(status))
}

/// Exit status for a call that ended with `status`: 64 + its gRPC code, as grpcurl;
/// but 5 when the supervisor refused us or the connection failed, as for every command.
fn call_failed(status: &tonic::Status) -> ExitCode {
    eprintln!("supervisorctl: {}", call_error_text(status));
    if crate::exit::refused_or_cut(status) {
        return Exit::Unreachable.into();
    }
    // The supervisor's own word on the method or the request (the plugin never saw it),
    // not the call's status.
    if crate::exit::bad_argument(status) {
        return Exit::Usage.into();
    }
    ExitCode::from(64 + status.code() as u8)
}

/// `call`'s request as JSON text: `--data` as given or read from `@FILE` (`@-`: stdin),
/// checked to be JSON, so a typo is reported before any round trip. Read before the
/// command connects: the daemon closes a connection that asks nothing for long (stdin may
/// be a person typing, or a slow producer).
pub fn call_request(data: String) -> Result<String, Failure> {
    // Where it came from, for the error: `@FILE`'s line and column are the file's.
    let from = match data.strip_prefix('@') {
        Some(file) => format!("--data @{file}"),
        None => "--data".to_owned(),
    };
    let json = request_json(data).map_err(|e| Failure::new(Exit::Usage, e))?;
    serde_json::from_str::<serde_json::Value>(&json)
        .map_err(|e| Failure::new(Exit::Usage, format!("{from} is not valid JSON: {e}")))?;
    Ok(json)
}

/// Calls `plugin`'s `method` with `json` (from [`call_request`]).
pub async fn call(
    c: &mut Client,
    w: &Wait,
    plugin: String,
    method: String,
    json: String,
    timeout: Option<Duration>,
) -> Result<ExitCode, Failure> {
    // The call's deadline: --timeout, else the plugin's call_timeout, asked for first and
    // sent with the call, so that the daemon holds the call to the deadline waited for
    // here even should an update change call_timeout meanwhile.
    let timeout = match timeout {
        Some(t) => t,
        None => {
            // Its refusal (no such plugin) exits as the call's would: 64 + its code.
            let asked = c.config(w.request(ConfigRequest { name: plugin.clone() }));
            match tokio::time::timeout(w.limit, asked).await {
                Ok(Ok(answer)) => call_timeout(&answer.into_inner())?,
                Ok(Err(status)) => return Ok(call_failed(&status)),
                Err(_) => return Err(w.silent()),
            }
        }
    };
    let timeout_ms = timeout.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
    let request = CallRequest { plugin, method, json, timeout_ms };
    // The deadline, and then the usual wait for the answer.
    let limit = timeout.saturating_add(w.limit);
    let silent = || w.silent_after(limit);
    let started = tokio::time::Instant::now();
    let mut answers = match tokio::time::timeout(limit, c.call_stream(request)).await {
        Ok(Ok(answers)) => answers.into_inner(),
        Ok(Err(status)) => return Ok(call_failed(&status)),
        Err(_) => return Err(silent()),
    };
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, answers.message()).await {
            Ok(Ok(Some(resp))) => {
                let pretty = serde_json::from_str::<serde_json::Value>(&resp.json)
                    .and_then(|v| serde_json::to_string_pretty(&v))
                    .unwrap_or(resp.json);
                outln!("{}", json_for_terminal(pretty));
            }
            Ok(Ok(None)) => return Ok(ExitCode::SUCCESS),
            Ok(Err(status)) => return Ok(call_failed(&status)),
            Err(_) => return Err(silent()),
        }
    }
}

/// The plugin's `call_timeout`, from its config as the daemon runs it: how long the daemon
/// lets a call without a deadline of its own run. Without it the CLI waited up to a year
/// on a daemon that took the call and then stalled.
fn call_timeout(config: &ConfigResponse) -> Result<Duration, Failure> {
    let value = config
        .plugins
        .first()
        .and_then(|p| p.settings.iter().find(|s| s.key == "call_timeout"))
        .and_then(|s| serde_json::from_str::<String>(&s.value_json).ok());
    let missing = || Failure::new(Exit::Failure, "the supervisor did not say the plugin's call_timeout".to_owned());
    let value = value.ok_or_else(missing)?;
    plugin_supervisor::config::units::parse_duration(&value)
        .map_err(|e| Failure::new(Exit::Failure, format!("the plugin's call_timeout {value:?}: {e}")))
}

pub async fn quota(
    c: &mut Client,
    w: &Wait,
    name: String,
    values: [Option<String>; 4],
    force: bool,
    as_json: bool,
) -> Result<ExitCode, Failure> {
    let [memory_max, memory_high, cpu, pids_max] = values.map(Option::unwrap_or_default);
    let set = Quota { memory_max, memory_high, cpu, pids_max };
    let resp = w.answer(c.quota(w.request(QuotaRequest { name: name.clone(), set: Some(set), force }))).await?;
    let q = resp.quota.unwrap_or_default();
    if as_json {
        let changed = (resp.message != "unchanged").then_some(resp.message);
        outln!("{}", json!({"name": name, "quota": quota_json(&q), "message": changed}));
        return Ok(ExitCode::SUCCESS);
    }
    let show = |v: &str| if v.is_empty() { "unlimited".to_owned() } else { v.to_owned() };
    if resp.message != "unchanged" {
        outln!("{}", resp.message);
    }
    outln!(
        "{name}: memory {}, memory-high {}, cpu {}, pids {}",
        show(&q.memory_max),
        show(&q.memory_high),
        show(&q.cpu),
        show(&q.pids_max)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn metrics(c: &mut Client, w: &Wait) -> Result<ExitCode, Failure> {
    let text = w.answer(c.metrics(w.request(MetricsRequest {}))).await?.text;
    out!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// What the config file would change: one line per plugin added, removed or changed
/// (its keys, "(live)" where no new process is needed), and the supervisor keys only a
/// restart applies.
pub async fn reread(c: &mut Client, w: &Wait, json: bool) -> Result<ExitCode, Failure> {
    let r = w.answer(c.reread(w.request(RereadRequest {}))).await?;
    if json {
        outln!("{}", reread_json(&r));
    } else {
        for line in reread_lines(&r) {
            outln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn reread_json(r: &RereadResponse) -> serde_json::Value {
    let changed: Vec<_> = r
        .changed
        .iter()
        .map(|p| {
            let keys: Vec<_> = p.keys.iter().map(|k| json!({"key": k.key, "live": k.live})).collect();
            json!({"name": p.name, "keys": keys})
        })
        .collect();
    json!({
        "file": r.file,
        "added": r.added,
        "removed": r.removed,
        "changed": changed,
        "restart_only": r.restart_only,
    })
}

fn reread_lines(r: &RereadResponse) -> Vec<String> {
    let mut lines: Vec<String> = r.added.iter().map(|n| format!("{n}: added")).collect();
    lines.extend(r.removed.iter().map(|n| format!("{n}: removed")));
    for p in &r.changed {
        let keys: Vec<String> =
            p.keys.iter().map(|k| if k.live { format!("{} (live)", k.key) } else { k.key.clone() }).collect();
        lines.push(format!("{}: changed: {}", p.name, keys.join(", ")));
    }
    if !r.restart_only.is_empty() {
        lines.push(format!("supervisor: only a restart applies: {}", r.restart_only.join(", ")));
    }
    if lines.is_empty() {
        lines.push(format!("{}: no changes", r.file));
    }
    lines
}

/// One line per plugin the update touched; exit 1 when any of their changes failed.
pub fn update(r: Result<UpdateResponse, Failure>) -> Result<ExitCode, Failure> {
    let r = r?;
    // A line may quote a plugin (why its new revision was refused).
    for line in &r.lines {
        outln!("{}", super::client::terminal_text(line));
    }
    Ok(if r.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// A rollout's answer: what was done (or the report as text), or the report as JSON.
pub fn rollout(
    r: Result<plugin_proto::control::v1::RolloutResponse, Failure>,
    json: bool,
) -> Result<ExitCode, Failure> {
    out!("{}", rollout_text(&r?, json));
    Ok(ExitCode::SUCCESS)
}

fn rollout_text(r: &plugin_proto::control::v1::RolloutResponse, json: bool) -> String {
    match (json, r.report_json.is_empty()) {
        // The report may quote a plugin (why its canary failed), as the text does.
        (true, false) => format!("{}\n", json_for_terminal(r.report_json.clone())),
        // An action with no report to show (pause, promote...): what was done.
        (true, true) => format!("{}\n", json_for_terminal(json!({"message": r.message.trim_end()}).to_string())),
        // The report may quote a plugin (why its canary failed).
        (false, _) if r.message.ends_with('\n') => super::client::terminal_text(&r.message),
        (false, _) => format!("{}\n", super::client::terminal_text(&r.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin's line that holds terminal escapes and a newline (to forge a line of the
    /// supervisor's) is shown on one line, escaped.
    #[test]
    fn a_plugins_line_cannot_move_the_terminal_nor_forge_another_line() {
        let line = LogLine {
            unix_nanos: 0,
            instance: "zoo-0".into(),
            stream: "sdk".into(),
            level: "info".into(),
            text: "\u{1b}]0;PWNED\u{7}\u{1b}[2J".into(),
            fields: [("k\nx".to_owned(), "v\n1970-01-01T00:00:00.000Z zoo-0 supervisor [teardown clean]".to_owned())]
                .into(),
        };
        assert_eq!(
            line_text(&line),
            "1970-01-01T00:00:00.000Z zoo-0 sdk INFO \\u{1b}]0;PWNED\\u{7}\\u{1b}[2J \
             k\\nx=v\\n1970-01-01T00:00:00.000Z zoo-0 supervisor [teardown clean]"
        );
    }

    /// What a plugin wrote reaches `--json` output as the same JSON, but with no character
    /// a terminal may act on left raw.
    #[test]
    fn json_output_escapes_what_a_terminal_may_act_on_and_stays_the_same_json() {
        let line = LogLine {
            unix_nanos: 0,
            instance: "zoo-0".into(),
            stream: "stdout".into(),
            text: "a\u{1b}[2J b\u{9b}2J c\u{7f} d\u{202e}e ü".into(),
            ..Default::default()
        };
        let shown = json_for_terminal(line_json(&line).to_string());
        assert!(!shown.chars().any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)), "{shown:?}");
        assert!(shown.contains(r"b\u009b2J c\u007f d\u202ee ü"), "{shown}");
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["text"], line.text, "the same JSON");
        let pretty = serde_json::to_string_pretty(&json!({"k": "v\u{9b}"})).unwrap();
        assert_eq!(json_for_terminal(pretty), "{\n  \"k\": \"v\\u009b\"\n}", "its own line breaks stay");
    }

    /// A call's error status is the plugin's own words, relayed by the daemon: its escapes
    /// and line breaks reach the operator's terminal escaped, on the one line.
    #[test]
    fn a_plugins_error_status_cannot_move_the_terminal_nor_forge_another_line() {
        let status = tonic::Status::internal("bad\u{1b}[2J\u{1b}]0;PWNED\u{7}\rsupervisorctl: ok\nforged");
        assert_eq!(
            call_error_text(&status),
            "bad\\u{1b}[2J\\u{1b}]0;PWNED\\u{7}\\rsupervisorctl: ok\\nforged (Internal)"
        );
    }

    /// Any failed command's reason may quote a plugin (a reason it gave, a name it chose):
    /// escapes are shown escaped; the daemon's own line breaks (a config's problems) stay.
    #[test]
    fn a_commands_failure_cannot_move_the_terminal() {
        let status = tonic::Status::failed_precondition("zoo: \u{1b}]0;PWNED\u{7}\u{9b}2J\nnext problem");
        assert_eq!(
            crate::client::reason(&status),
            "zoo: \\u{1b}]0;PWNED\\u{7}\\u{9b}2J\nnext problem (FailedPrecondition)"
        );
    }

    /// An action's answer may quote a plugin (why it failed to start): escapes are shown
    /// escaped; the daemon's own line breaks stay.
    #[test]
    fn an_actions_answer_cannot_move_the_terminal() {
        assert_eq!(action_text("echo: failed (\u{1b}[2Jgone)\nsecond"), "echo: failed (\\u{1b}[2Jgone)\nsecond");
    }

    #[test]
    fn a_request_over_the_limit_is_said_so_even_when_the_cut_falls_inside_a_character() {
        let mut big = vec![b'"'; MAX_REQUEST as usize - 1];
        big.extend("é\"".as_bytes());
        let e = bounded(big.as_slice(), "big.json").unwrap_err();
        assert_eq!(e, format!("--data @big.json: the request is over {MAX_REQUEST} bytes"));
        assert_eq!(bounded(&b"{}"[..], "-").unwrap(), "{}");
        let e = bounded(&b"\xff"[..], "-").unwrap_err();
        assert!(e.starts_with("--data @-: not UTF-8 text: "), "{e}");
    }

    #[test]
    fn a_request_that_is_not_json_is_named_by_where_it_came_from() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "{\n  oops\n}").unwrap();
        let from_file = call_request(format!("@{}", file.path().display())).unwrap_err();
        assert_eq!(
            from_file.reason,
            format!("--data @{} is not valid JSON: key must be a string at line 2 column 3", file.path().display())
        );
        let inline = call_request("{oops}".into()).unwrap_err();
        assert_eq!(inline.reason, "--data is not valid JSON: key must be a string at line 1 column 2");
    }

    use plugin_proto::control::v1::RolloutResponse;

    #[test]
    fn every_rollout_answer_is_json_with_json() {
        let done = RolloutResponse { message: "zoo: revision 2 promoted\n".into(), report_json: String::new() };
        let v: serde_json::Value = serde_json::from_str(&rollout_text(&done, true)).unwrap();
        assert_eq!(v, json!({"message": "zoo: revision 2 promoted"}));
        assert_eq!(rollout_text(&done, false), "zoo: revision 2 promoted\n");
        let report = RolloutResponse { message: "text".into(), report_json: r#"{"phase":"running"}"#.into() };
        assert_eq!(rollout_text(&report, true), "{\"phase\":\"running\"}\n");
        // Why a canary failed may quote it: what a terminal acts on is escaped, the
        // same JSON.
        let quoted = RolloutResponse {
            message: "text".into(),
            report_json: json!({"why": "canary said \u{9b}2J\u{202e}"}).to_string(),
        };
        let shown = rollout_text(&quoted, true);
        assert_eq!(shown, "{\"why\":\"canary said \\u009b2J\\u202e\"}\n");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&shown).unwrap()["why"], "canary said \u{9b}2J\u{202e}");
        let done = RolloutResponse { message: "paused \u{7f}".into(), report_json: String::new() };
        assert_eq!(rollout_text(&done, true), "{\"message\":\"paused \\u007f\"}\n");
    }

    #[test]
    fn cells_are_padded_to_any_width() {
        assert_eq!(padded("é", 3), "é  ");
        assert_eq!(padded("long", 2), "long");
        let wide = padded("v", 70_000);
        assert_eq!((wide.len(), wide.trim_end()), (70_000, "v"));
    }

    #[test]
    fn times_carry_date_and_zone() {
        assert_eq!(clock(1_796_316_305_123_000_000), "2026-12-03T16:45:05.123Z");
    }
}
