//! `pid` and `signal`: a plugin's running processes, and the signals an operator sends
//! them (by the supervisor, which holds their process handles, never by pid from here).

use std::process::ExitCode;

use plugin_proto::control::v1::{SignalRequest, StatusRequest};
use serde_json::json;

use crate::client::{Client, Wait};
use crate::exit::{Exit, Failure};
use crate::stdout::outln;

/// `supervisorctl pid NAME`: the pid of each running instance, one a line.
pub async fn pid(c: &mut Client, w: &Wait, name: String, as_json: bool) -> Result<ExitCode, Failure> {
    let rows = w.answer(c.status(w.request(StatusRequest { name: name.clone() }))).await?.instances;
    let running: Vec<_> = rows.iter().filter(|i| i.state == "running" && i.pid != 0).collect();
    if running.is_empty() {
        let states: Vec<String> = rows.iter().map(|i| format!("{} {}", i.instance, i.state)).collect();
        return Err(Failure::new(
            Exit::Failure,
            format!(
                "{name}: no running instance ({})",
                if states.is_empty() { "none".into() } else { states.join(", ") }
            ),
        ));
    }
    if as_json {
        let arr: Vec<_> = running.iter().map(|i| json!({"instance": i.instance, "pid": i.pid})).collect();
        outln!("{}", serde_json::Value::Array(arr));
    } else {
        for i in running {
            outln!("{}", i.pid);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `supervisorctl signal SIG NAME`: one line per instance signalled.
pub async fn signal(
    c: &mut Client,
    w: &Wait,
    signal: String,
    name: String,
    as_json: bool,
) -> Result<ExitCode, Failure> {
    let sent = w.answer(c.signal(w.request(SignalRequest { name, signal }))).await?;
    if as_json {
        let arr: Vec<_> = sent
            .instances
            .iter()
            .map(|i| json!({"instance": i.instance, "pid": i.pid, "processes": i.processes}))
            .collect();
        outln!("{}", json!({"signal": sent.signal, "instances": arr}));
    } else {
        for i in &sent.instances {
            match i.processes.saturating_sub(1) {
                0 => outln!("{}: {} sent to pid {}", i.instance, sent.signal, i.pid),
                1 => outln!("{}: {} sent to pid {} and 1 more process in its cgroup", i.instance, sent.signal, i.pid),
                n => {
                    outln!("{}: {} sent to pid {} and {n} more processes in its cgroup", i.instance, sent.signal, i.pid)
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
