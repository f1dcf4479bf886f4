//! The task that owns one instance: it starts it, watches it, applies the
//! restart policy with backoff, and obeys start/stop/restart and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::backoff::Restarts;
use super::start::{self, StartError};
use super::state::State;
use super::{Contract, Instance, Live, Plugin};
use crate::config::RestartPolicy;
use crate::config::units::format_duration;
use crate::sandbox::pidfd::ExitStatus;
use crate::supervisor::Shared;

/// What ended a running instance.
enum Ended {
    /// The process exited on its own.
    Exited(ExitStatus, Duration),
    /// The operator asked for a stop or restart.
    Commanded,
    /// The supervisor is shutting down.
    Shutdown,
}

pub(crate) async fn run(plugin: Arc<Plugin>, inst: Arc<Instance>, shared: Arc<Shared>) {
    let mut desired = plugin.desired.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let mut restarts = Restarts::new(plugin.spec.load().backoff);
    let mut started_before = false;
    // Set when the instance must not start again until the operator acts
    // (refused, or ended under the restart policy): the generation it waits past.
    let mut held: Option<u64> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let want = *desired.borrow_and_update();
        if !want.run || held.is_some_and(|g| g == want.generation) {
            inst.update(|s| {
                if !want.run && (s.state != State::Failed || s.reason.is_empty()) {
                    s.state = State::Stopped;
                    s.reason = "stopped by request".into();
                    s.pid = None;
                }
                s.generation = want.generation;
            });
            tokio::select! {
                _ = desired.changed() => { restarts.reset(); held = None; continue; }
                _ = shutdown.changed() => return,
            }
        }
        held = None;
        if started_before {
            inst.update(|s| s.restarts += 1);
        }
        started_before = true;
        inst.update(|s| {
            s.state = State::Starting;
            s.reason = String::new();
            s.pid = None;
            s.generation = want.generation;
        });

        let started = tokio::select! {
            r = start::start(&plugin, &inst, &shared) => r,
            _ = shutdown.changed() => return,
        };
        let failure = match started {
            Err(StartError::Refused(reason)) => {
                shared.events.emit(&plugin.name, &inst.id, "refused", reason.clone(), &[]);
                inst.update(|s| {
                    s.state = State::Failed;
                    s.reason = format!("refused: {reason}");
                    s.pid = None;
                });
                held = Some(want.generation);
                continue;
            }
            Err(StartError::Failed(reason)) => {
                shared.events.emit(&plugin.name, &inst.id, "start-failed", reason.clone(), &[]);
                reason
            }
            Ok(mut running) => {
                let declared = running.accepted.declared.clone();
                inst.update(|s| {
                    s.state = State::Running;
                    s.reason = String::new();
                    s.running_since = Some(Instant::now());
                    s.declared = declared.clone();
                });
                plugin.contract.store(Some(Arc::new(Contract {
                    pool: running.accepted.pool.clone(),
                    services: declared.services.clone(),
                })));
                inst.live.store(Some(Arc::new(Live { channel: running.channel.clone(), pid: running.pid })));
                shared.events.emit(
                    &plugin.name,
                    &inst.id,
                    "ready",
                    format!(
                        "pid {} ready: version {}, services {}",
                        running.pid,
                        declared.version,
                        declared.services.join(", ")
                    ),
                    &[("pid", running.pid.to_string()), ("version", declared.version.clone())],
                );
                let mut acked = want.generation;
                let ended = loop {
                    tokio::select! {
                        status = running.exited() => break Ended::Exited(status, running.since.elapsed()),
                        _ = changed_generation(&mut desired, acked) => {
                            let d = *desired.borrow_and_update();
                            if d.run && !d.restart {
                                // Already running: a start is acknowledged, not acted on.
                                acked = d.generation;
                                inst.update(|s| s.generation = d.generation);
                                continue;
                            }
                            break Ended::Commanded;
                        }
                        _ = shutdown.changed() => break Ended::Shutdown,
                    }
                };
                inst.live.store(None);
                let spec = plugin.spec.load_full();
                let ended = match ended {
                    Ended::Exited(status, ran) => Ended::Exited(status, ran),
                    other => {
                        inst.update(|s| {
                            s.state = State::Stopping;
                            s.reason = "draining".into();
                        });
                        let why =
                            if matches!(other, Ended::Shutdown) { "supervisor shutdown" } else { "operator request" };
                        let status = super::stop::stop(&mut running, spec.stop_timeout, why).await;
                        shared.events.emit(
                            &plugin.name,
                            &inst.id,
                            "stopped",
                            format!("pid {} stopped ({why}): {status}", running.pid),
                            &[],
                        );
                        running.release();
                        inst.update(|s| {
                            s.state = State::Stopped;
                            s.reason = format!("stopped: {why}");
                            s.pid = None;
                            s.running_since = None;
                        });
                        if matches!(other, Ended::Shutdown) {
                            return;
                        }
                        continue;
                    }
                };
                let Ended::Exited(status, ran) = ended else {
                    continue;
                };
                let pid = running.pid;
                running.release();
                restarts.ran_for(ran);
                let reason = status.to_string();
                shared.events.emit(&plugin.name, &inst.id, "exited", format!("pid {pid} {reason}"), &[]);
                let restart = match spec.restart {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => !status.success(),
                    RestartPolicy::Never => false,
                };
                if !restart {
                    inst.update(|s| {
                        s.state = if status.success() { State::Stopped } else { State::Failed };
                        s.reason = reason;
                        s.pid = None;
                        s.running_since = None;
                    });
                    held = Some(want.generation);
                    continue;
                }
                reason
            }
        };

        // Back off, then try again; the operator can cut the wait short.
        let delay = restarts.next_delay(Instant::now(), rand::random::<f64>());
        let looping = restarts.crash_loop();
        let shown = match looping {
            Some(n) => format!(
                "crash loop: {n} failures in the last 2 minutes; last: {failure}; next attempt in {}",
                format_duration(round(delay))
            ),
            None => format!("{failure}; next attempt in {}", format_duration(round(delay))),
        };
        inst.update(|s| {
            s.state = State::Backoff;
            s.reason = shown.clone();
            s.pid = None;
            s.running_since = None;
        });
        shared.events.emit(
            &plugin.name,
            &inst.id,
            if looping.is_some() { "crash-loop" } else { "backoff" },
            shown,
            &[],
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = changed_generation(&mut desired, want.generation) => { restarts.reset(); }
            _ = shutdown.changed() => return,
        }
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Resolves when the operator issues a new command.
async fn changed_generation(rx: &mut watch::Receiver<super::Desired>, current: u64) {
    let _ = rx.wait_for(|d| d.generation != current).await;
}
