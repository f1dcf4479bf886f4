//! `Signal` on the control API (`supervisorctl signal SIG NAME`): which signal the
//! operator meant, and its sending to each running instance of a plugin: its main process
//! through the instance's own process handle, then the rest of its cgroup (see
//! [`crate::instance::signal`]).

use crate::Supervisor;
use crate::instance::state::State;
use crate::sandbox::pidfd::signal_name;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("unknown plugin {}", crate::config::shown_name(.0))]
    UnknownPlugin(String),
    #[error("{given:?} is not a signal to send: give a name (TERM, SIGHUP, USR1, ...) or a number from 1 to {max}")]
    NotASignal { given: String, max: i32 },
    #[error("plugin {0:?} has no running instance to signal")]
    NoneRunning(String),
    #[error("plugin {plugin:?}: instance {instance} (pid {pid}): pidfd_send_signal({signal}): {source}")]
    Send { plugin: String, instance: String, pid: i32, signal: String, source: std::io::Error },
}

/// The signal `given` names: a name with or without "SIG", in any case, or a number.
/// 0 (which only probes) and numbers past the last real-time signal are none.
pub fn parse(given: &str) -> Result<i32, SignalError> {
    let max = libc::SIGRTMAX();
    let bad = || SignalError::NotASignal { given: given.to_owned(), max };
    let word = given.trim().to_ascii_uppercase();
    let number = if word.bytes().all(|b| b.is_ascii_digit()) && !word.is_empty() {
        word.parse::<i32>().map_err(|_| bad())?
    } else {
        let name = if word.starts_with("SIG") { word } else { format!("SIG{word}") };
        name.parse::<nix::sys::signal::Signal>().map_err(|_| bad())? as i32
    };
    if (1..=max).contains(&number) { Ok(number) } else { Err(bad()) }
}

/// One instance signalled: its id, its main process's pid, how many processes got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signalled {
    pub instance: String,
    pub pid: i32,
    pub processes: usize,
}

/// Sends `sig` to every running instance of `name`; the instances signalled.
pub fn send(sup: &Supervisor, name: &str, sig: i32) -> Result<Vec<Signalled>, SignalError> {
    let p = sup.plugin(name).map_err(|_| SignalError::UnknownPlugin(name.to_owned()))?;
    let mut signalled = Vec::new();
    for inst in p.instances() {
        if inst.status().state != State::Running {
            continue;
        }
        let Some(live) = inst.live.load_full() else { continue };
        let sent = match live.signals.send(sig) {
            Ok(sent) => sent,
            // Exited a moment ago, before its instance said so: nothing to signal there,
            // and the other instances still get theirs.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
            Err(source) => {
                return Err(SignalError::Send {
                    plugin: name.to_owned(),
                    instance: inst.id.clone(),
                    pid: live.pid,
                    signal: signal_name(sig),
                    source,
                });
            }
        };
        if let Some(processes) = sent {
            tracing::info!(plugin = name, instance = %inst.id, pid = live.pid, processes, signal = %signal_name(sig), "signalled by the operator");
            signalled.push(Signalled { instance: inst.id.clone(), pid: live.pid, processes });
        }
    }
    if signalled.is_empty() {
        return Err(SignalError::NoneRunning(name.to_owned()));
    }
    Ok(signalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_are_signals() {
        for (given, sig) in
            [("TERM", libc::SIGTERM), ("SIGTERM", libc::SIGTERM), ("hup", libc::SIGHUP), ("Usr1", libc::SIGUSR1)]
        {
            assert_eq!(parse(given).unwrap(), sig, "{given}");
        }
        assert_eq!(parse("9").unwrap(), libc::SIGKILL);
        assert_eq!(parse(&libc::SIGRTMAX().to_string()).unwrap(), libc::SIGRTMAX());
    }

    #[test]
    fn what_is_no_signal_is_refused_naming_it() {
        let max = libc::SIGRTMAX();
        for given in ["0", "-1", &(max + 1).to_string(), "99999999999", "NOPE", "SIG", ""] {
            let e = parse(given).unwrap_err();
            assert!(matches!(&e, SignalError::NotASignal { given: g, .. } if g == given), "{given}: {e:?}");
            assert!(e.to_string().starts_with(&format!("{given:?} is not a signal")), "{e}");
        }
    }
}
