//! `supervisorctl`: the operator's command line for a running
//! plugin-supervisor, over its control socket, plus the local tools plugin
//! authors and a release pipeline need (`plugin new|keygen|sign|verify`,
//! `contract diff`), which never touch the socket.

mod client;
mod colour;
mod config_cmd;
mod contract_cmd;
mod describe;
mod docs_cmd;
mod doctor;
mod exit;
mod local;
mod onboard_cmd;
mod output;
mod plugin_cmd;
mod plugin_new;
mod process_cmd;
mod stdout;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use plugin_supervisor::config::DEFAULT_RUNTIME_DIR;

#[derive(Parser)]
#[command(
    name = "supervisorctl",
    version,
    about = "Drive a plugin-supervisor, sign plugins, diff contracts",
    after_help = exit::TABLE
)]
struct Cli {
    /// The supervisor's control socket.
    #[arg(long, global = true, env = "SUPERVISORCTL_SOCKET", default_value_t = default_socket())]
    socket: String,
    /// How long to wait to reach the supervisor and for each answer, e.g.
    /// 30s; start, stop and restart wait this long for the plugin. With -f,
    /// tail and events then follow for as long as they run.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_wait, allow_hyphen_values = true)]
    wait: Duration,
    #[command(subcommand)]
    command: Command,
}

fn default_socket() -> String {
    format!("{DEFAULT_RUNTIME_DIR}/control.sock")
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Remote(Remote),
    /// Starts a new plugin crate; signs and verifies plugin binaries (local; no
    /// supervisor needed).
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
    /// Checks protobuf contracts for breaking changes (local; no supervisor needed).
    #[command(subcommand)]
    Contract(contract_cmd::ContractCommand),
    /// Checks what this host gives the sandbox and whether the configured
    /// plugins can run as configured (exit status 1 when not; local).
    Doctor {
        /// The supervisor config whose tiers and plugins to judge.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Runs a plugin of a config in a scratch supervisor and reports its
    /// integrity and contract, the tightest tier that fits the syscalls it
    /// made (recorded in a permissive learning pass), its performance
    /// baseline beside the echo example's, and how soon it runs again after a
    /// kill -9. Needs root, as the daemon does;
    /// exit status 1 when a check fails (local).
    Onboard(onboard_cmd::OnboardArgs),
    #[command(flatten)]
    Docs(plugin_supervisor::cli_docs::DocsCommand),
}

/// The commands that talk to a running supervisor.
#[derive(Subcommand)]
enum Remote {
    /// Shows every plugin instance (or one plugin's). Exits 3 unless every
    /// one shown is running and serving. On a terminal, unless NO_COLOR is
    /// set, the state is coloured: running green, starting and stopping
    /// yellow, backoff and failed red; the text is the same.
    Status {
        name: Option<String>,
        /// Print a JSON array, one object per instance.
        #[arg(long)]
        json: bool,
        /// Show how long each phase of each instance's last start and stop took
        /// (verify, spawn, handshake, init, health, drain, teardown), in ms.
        #[arg(long)]
        phases: bool,
    },
    /// Starts a plugin (also after it failed) and waits until it runs.
    Start { name: String },
    /// Stops a plugin, letting in-flight calls drain.
    Stop { name: String },
    /// Stops and starts a plugin.
    Restart { name: String },
    /// Replaces a plugin's instances with a new revision while it serves:
    /// its config entry and binary are read again, the new instances are
    /// checked (handshake, contract against the serving one, health) before
    /// calls switch to them, and the old ones drain. Exits non-zero with the
    /// reason when refused; the serving revision is then left as it was.
    Reload {
        name: String,
        /// Switch even when the new contract breaks the serving one.
        #[arg(long)]
        allow_breaking: bool,
    },
    /// Reads the config file again, validates it whole and prints what it
    /// would change: plugins added, removed and changed (which keys; "(live)"
    /// where the running instances take the change without a new process),
    /// and supervisor settings only a restart applies. Changes nothing.
    Reread {
        #[arg(long)]
        json: bool,
    },
    /// Applies the config file: removed plugins drain and stop, added ones
    /// start, changed ones take live keys in place and are hot-reloaded for
    /// the rest; with NAMEs, only those plugins' changes. An invalid file
    /// changes nothing. Exits 1 when any plugin's change failed (that plugin
    /// runs on as it was), or an added plugin's start did not end running. SIGHUP to the daemon does the same as `update`.
    Update {
        names: Vec<String>,
        /// Hot-reload even where the new contract breaks the serving one.
        #[arg(long)]
        allow_breaking: bool,
    },
    /// Follows or steers a plugin's canary rollout (`[plugin.rollout]
    /// strategy = "canary"`): `status` shows both revisions, the step and
    /// share in force and every judged step with its numbers; `pause` holds
    /// the canary at its share; `resume` goes on (also with a rollout that a
    /// restart of the supervisor interrupted); `promote` gives the canary
    /// every call now; `abort` rolls back to the stable revision.
    Rollout {
        #[arg(value_enum)]
        action: RolloutCommand,
        name: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prints a plugin's stdout, stderr and SDK logs.
    Tail {
        name: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// How many past lines to print first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Prints lifecycle events.
    Events {
        /// Keep printing new events.
        #[arg(short, long)]
        follow: bool,
        /// Only this plugin's events.
        #[arg(long)]
        plugin: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Shows or changes a plugin's quotas; a change applies to the running
    /// instances at once and is kept across restarts. "default" undoes one.
    Quota {
        name: String,
        /// memory.max, e.g. 256M.
        #[arg(long, value_parser = quota_value, allow_hyphen_values = true)]
        memory: Option<String>,
        /// memory.high, e.g. 200M.
        #[arg(long, value_parser = quota_value, allow_hyphen_values = true)]
        memory_high: Option<String>,
        /// CPU as a share of one core, e.g. 50%.
        #[arg(long, value_parser = quota_value, allow_hyphen_values = true)]
        cpu: Option<String>,
        /// Task limit (pids.max).
        #[arg(long, value_parser = quota_value, allow_hyphen_values = true)]
        pids: Option<String>,
        /// Lower memory below what an instance uses now (the kernel
        /// reclaims, or OOM-kills it); refused without this.
        #[arg(long)]
        force: bool,
        /// Print the quotas in force (and what changed) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows the configuration in force, per plugin (or one): every key with
    /// its effective value, defaults included; a comment marks values from a
    /// default or the tier, and quotas overridden at run time (`quota`).
    Config {
        name: Option<String>,
        /// Print a JSON array, one object per plugin, its settings keyed by name.
        #[arg(long)]
        json: bool,
    },
    /// Shows every plugin (or one) and its instances live, as systemd-cgtop
    /// does: CPU (percent of one CPU), memory, tasks and state per instance,
    /// with the plugin's sums, calls per second, error rate (calls failed
    /// UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED or DATA_LOSS) and p99
    /// latency on its row; busiest first, redrawn every --delay on the
    /// terminal's alternate screen; q, Esc or Ctrl-C quits. With --once or
    /// --json, or when stdout is not a terminal, prints one sample taken over
    /// one delay and exits.
    Top {
        name: Option<String>,
        /// Seconds between refreshes, as top's -d (e.g. 2 or 0.5); with
        /// --once, the time the sample is taken over.
        #[arg(short = 'd', long, value_name = "SECONDS", default_value = "1", value_parser = top::parse_delay, allow_hyphen_values = true)]
        delay: Duration,
        /// Print one sample and exit.
        #[arg(long)]
        once: bool,
        /// Print one sample as a JSON object (implies --once): time, totals,
        /// and each plugin with its instances.
        #[arg(long)]
        json: bool,
    },
    /// Prints calls, events and every instance's state and resource use
    /// as OpenMetrics text (what Prometheus scrapes from metrics_listen).
    Metrics,
    /// Lists the plugins (or one) with the services and methods their
    /// serving revision declared at its last handshake. The state is
    /// coloured as by status.
    List {
        name: Option<String>,
        /// Print a JSON array, one object per plugin.
        #[arg(long)]
        json: bool,
    },
    /// Prints a plugin's services (or one service, or one method as
    /// SERVICE/METHOD) with the message types they use, as proto text, the
    /// way `grpcurl describe` does. Unknown names exit 1, naming what there is.
    Describe {
        name: String,
        /// package.Service, or package.Service/Method.
        symbol: Option<String>,
        /// Print a JSON object: each symbol's name, kind and proto text.
        #[arg(long)]
        json: bool,
    },
    /// Prints the pid of each running instance of a plugin, one a line.
    /// Exits 1 when none runs.
    Pid {
        name: String,
        /// Print a JSON array of {instance, pid}.
        #[arg(long)]
        json: bool,
    },
    /// Sends a signal to each running instance of a plugin: to its main
    /// process (through the process handle the supervisor holds), then to
    /// every other process in its cgroup. SIG is a name (TERM, SIGHUP, usr1)
    /// or a number. Prints each instance and pid signalled.
    Signal {
        #[arg(value_name = "SIG")]
        signal: String,
        name: String,
        /// Print a JSON object: the signal and the instances signalled.
        #[arg(long)]
        json: bool,
    },
    /// Calls a plugin method with a JSON request and prints the JSON
    /// response: one JSON document per message, as they arrive, for a
    /// server-streaming method. Client- and bidirectional-streaming methods
    /// are refused (UNIMPLEMENTED, naming the kind). Exits 0 on OK, and
    /// 64 + the gRPC code on an error status (as grpcurl does: 69 NOT_FOUND,
    /// 68 DEADLINE_EXCEEDED, 78 UNAVAILABLE...).
    Call {
        name: String,
        /// The method: package.Service/Method, /package.Service/Method or
        /// package.Service.Method.
        method: String,
        /// The request as JSON; @FILE reads it from a file, @- from stdin.
        #[arg(long, short = 'd', default_value = "{}")]
        data: String,
        /// Deadline for the call, e.g. 500ms (default: the plugin's call_timeout); at
        /// most 49 days (what the control protocol carries, in milliseconds).
        #[arg(long, value_parser = parse_call_timeout, allow_hyphen_values = true)]
        timeout: Option<Duration>,
        /// Accepted as by every data command; the responses are JSON already.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RolloutCommand {
    Status,
    Pause,
    Resume,
    Promote,
    Abort,
}

/// How long `reload` waits for its answer, at least.
const RELOAD_WAIT: Duration = Duration::from_secs(300);

fn parse_duration(s: &str) -> Result<Duration, String> {
    plugin_supervisor::config::units::parse_duration(s)
}

/// A quota value as given: the daemon parses it (against the plugin's other limits), but
/// an empty one would read as "no change" and the command succeed doing nothing.
fn quota_value(s: &str) -> Result<String, String> {
    match s.trim() {
        "" => Err("is empty: give a value, or \"default\" to undo a change".into()),
        _ => Ok(s.to_owned()),
    }
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

/// A call's deadline travels in milliseconds as a u32: a longer one is refused, not cut
/// short without a word (`--timeout 100d` ran with a deadline of about 49.7 days).
fn parse_call_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_wait(s)?;
    if d.as_millis() > u128::from(u32::MAX) {
        return Err(format!("is longer than a call's deadline may be ({} ms, about 49 days)", u32::MAX));
    }
    Ok(d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Local commands must work where no supervisor runs: no socket for them.
    let command = match cli.command {
        Command::Plugin(command) => return local::finish(plugin_cmd::run(command)),
        Command::Contract(command) => return local::finish(contract_cmd::run(command)),
        Command::Doctor { config, json } => {
            return local::finish(doctor::run(config.as_deref(), json).map_err(local::Failure::input));
        }
        Command::Onboard(args) => return local::finish(onboard_cmd::run(args)),
        Command::Docs(command) => return local::finish(docs_cmd::run(command)),
        Command::Remote(command) => command,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("supervisorctl: cannot start the runtime: {e}");
            return exit::Exit::Failure.into();
        }
    };
    let wait = client::Wait { socket: PathBuf::from(&cli.socket), limit: cli.wait };
    match rt.block_on(run(&wait, command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("supervisorctl: {e}");
            e.exit.into()
        }
    }
}

impl Remote {
    /// The plugin names given, for the commands that take some.
    fn plugin_names(&self) -> Vec<&str> {
        match self {
            Remote::Status { name, .. }
            | Remote::Config { name, .. }
            | Remote::Top { name, .. }
            | Remote::List { name, .. }
            | Remote::Events { plugin: name, .. } => name.iter().map(String::as_str).collect(),
            Remote::Start { name }
            | Remote::Stop { name }
            | Remote::Restart { name }
            | Remote::Reload { name, .. }
            | Remote::Rollout { name, .. }
            | Remote::Tail { name, .. }
            | Remote::Quota { name, .. }
            | Remote::Describe { name, .. }
            | Remote::Pid { name, .. }
            | Remote::Signal { name, .. } => vec![name.as_str()],
            Remote::Update { names, .. } => names.iter().map(String::as_str).collect(),
            // `call` keeps grpcurl's convention: the daemon's NOT_FOUND, exit 64 + 5.
            Remote::Reread { .. } | Remote::Metrics | Remote::Call { .. } => Vec::new(),
        }
    }
}

/// No plugin is named "" (config validation refuses it), and the control API reads an
/// empty name as "every plugin": `supervisorctl pid "$UNSET"` would otherwise print
/// every plugin's pids, and `kill $(...)` signal them all.
fn no_empty_name(command: &Remote) -> Result<(), exit::Failure> {
    match command.plugin_names().iter().any(|n| n.is_empty()) {
        true => Err(exit::Failure::new(exit::Exit::NoSuchPlugin, "unknown plugin \"\"")),
        false => Ok(()),
    }
}

async fn run(w: &client::Wait, command: Remote) -> Result<ExitCode, exit::Failure> {
    no_empty_name(&command)?;
    let command = match command {
        Remote::Call { name, method, data, timeout, json } => {
            Remote::Call { name, method, data: output::call_request(data)?, timeout, json }
        }
        other => other,
    };
    let mut c = client::connect(w).await?;
    match command {
        Remote::Status { name, json, phases } => {
            output::status(&mut c, w, name.unwrap_or_default(), json, phases).await
        }
        Remote::Start { name } => output::action(w.answer(c.start(w.request(client::plugin(name)))).await),
        Remote::Stop { name } => output::action(w.answer(c.stop(w.request(client::plugin(name)))).await),
        Remote::Restart { name } => output::action(w.answer(c.restart(w.request(client::plugin(name)))).await),
        Remote::Reload { name, allow_breaking } => {
            // Starting and checking a new revision takes longer than an answer.
            let w = client::Wait { limit: w.limit.max(RELOAD_WAIT), ..w.clone() };
            let req = plugin_proto::control::v1::ReloadRequest { name, allow_breaking };
            output::action(w.answer(c.reload(tonic::Request::new(req))).await)
        }
        Remote::Update { names, allow_breaking } => {
            // Reloads and drains take longer than an answer.
            let w = client::Wait { limit: w.limit.max(RELOAD_WAIT), ..w.clone() };
            let req = plugin_proto::control::v1::UpdateRequest { names, allow_breaking };
            output::update(w.answer(c.update(tonic::Request::new(req))).await)
        }
        Remote::Reread { json } => output::reread(&mut c, w, json).await,
        Remote::Rollout { action, name, json } => {
            use plugin_proto::control::v1::RolloutAction;
            let action = match action {
                RolloutCommand::Status => RolloutAction::Status,
                RolloutCommand::Pause => RolloutAction::Pause,
                RolloutCommand::Resume => RolloutAction::Resume,
                RolloutCommand::Promote => RolloutAction::Promote,
                RolloutCommand::Abort => RolloutAction::Abort,
            };
            // A resume of an interrupted rollout starts a new revision.
            let w = client::Wait { limit: w.limit.max(RELOAD_WAIT), ..w.clone() };
            let req = plugin_proto::control::v1::RolloutRequest { name, action: action as i32 };
            output::rollout(w.answer(c.rollout(tonic::Request::new(req))).await, json)
        }
        Remote::Tail { name, follow, lines, json } => output::tail(&mut c, w, name, follow, lines, json).await,
        Remote::Events { follow, plugin, json } => {
            output::events(&mut c, w, plugin.unwrap_or_default(), follow, json).await
        }
        // `data` is the request itself by now (read above).
        Remote::Call { name, method, data, timeout, json: _ } => {
            output::call(&mut c, w, name, method, data, timeout).await
        }
        Remote::Quota { name, memory, memory_high, cpu, pids, force, json } => {
            output::quota(&mut c, w, name, [memory, memory_high, cpu, pids], force, json).await
        }
        Remote::Config { name, json } => config_cmd::run(&mut c, w, name, json).await,
        Remote::Metrics => output::metrics(&mut c, w).await,
        Remote::Top { name, delay, once, json } => {
            top::run(&mut c, w, top::Options { name: name.unwrap_or_default(), delay, once, json }).await
        }
        Remote::List { name, json } => describe::list(&mut c, w, name, json).await,
        Remote::Describe { name, symbol, json } => describe::describe(&mut c, w, name, symbol, json).await,
        Remote::Pid { name, json } => process_cmd::pid(&mut c, w, name, json).await,
        Remote::Signal { signal, name, json } => process_cmd::signal(&mut c, w, signal, name, json).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(args: &[&str]) -> Remote {
        match Cli::try_parse_from(std::iter::once("supervisorctl").chain(args.iter().copied())).unwrap().command {
            Command::Remote(r) => r,
            _ => panic!("{args:?} is not a command for the daemon"),
        }
    }

    #[test]
    fn an_empty_plugin_name_is_no_plugin_wherever_a_name_is_given() {
        for args in [
            &["pid", ""][..],
            &["describe", ""],
            &["status", ""],
            &["list", ""],
            &["config", ""],
            &["top", "--once", ""],
            &["events", "--plugin", ""],
            &["signal", "TERM", ""],
            &["start", ""],
            &["update", "echo", ""],
        ] {
            let failed = no_empty_name(&remote(args)).unwrap_err();
            assert_eq!(
                (failed.exit, failed.reason.as_str()),
                (exit::Exit::NoSuchPlugin, "unknown plugin \"\""),
                "{args:?}"
            );
        }
        for args in [&["pid", "echo"][..], &["status"], &["events"], &["update"], &["metrics"], &["call", "", "a.B/C"]]
        {
            assert!(no_empty_name(&remote(args)).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn an_empty_quota_value_is_refused_not_taken_for_no_change() {
        for flag in ["--memory", "--memory-high", "--cpu", "--pids"] {
            let e = Cli::try_parse_from(["supervisorctl", "quota", "echo", flag, " "]).err().unwrap();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
            assert!(e.to_string().contains("is empty"), "{flag}: {e}");
        }
        assert!(remote(&["quota", "echo", "--cpu", "50%"]).plugin_names() == ["echo"]);
    }

    /// A negative number is the value it follows, refused for what it is; clap would
    /// otherwise take it for an unknown flag ("unexpected argument '-1'").
    #[test]
    fn a_negative_value_is_refused_naming_the_value_not_taken_for_a_flag() {
        let cases: [(&[&str], &str); 4] = [
            (&["--wait", "-1s", "status"], "invalid duration \"-1s\""),
            (&["call", "echo", "a.B/C", "--timeout", "-5s"], "invalid duration \"-5s\""),
            (&["top", "-d", "-1"], "must be at least 0.1 seconds"),
            (&["top", "--delay", "-0.5"], "must be at least 0.1 seconds"),
        ];
        for (args, said) in cases {
            let e = Cli::try_parse_from(["supervisorctl"].iter().chain(args)).err().unwrap();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{args:?}: {e}");
            assert!(e.to_string().contains(said), "{args:?}: {e}");
        }
        // A quota value goes to the daemon as given, which names what it cannot take.
        assert!(remote(&["quota", "echo", "--memory", "-1"]).plugin_names() == ["echo"]);
    }

    #[test]
    fn a_socket_path_the_kernel_cannot_take_is_said_when_connecting() {
        let long = format!("/run/{}", "s".repeat(103));
        assert_eq!(
            client::socket_problem(std::path::Path::new(&long)),
            Some(format!("{long} is 108 bytes, more than the 107 a socket's path may have"))
        );
        assert_eq!(
            client::socket_problem(std::path::Path::new("")),
            Some("is empty: give the control socket's path".into())
        );
        assert_eq!(client::socket_problem(std::path::Path::new(&long[..107])), None);
    }

    #[test]
    fn a_call_deadline_of_nothing_is_refused() {
        let e = Cli::try_parse_from(["supervisorctl", "call", "echo", "a.B/C", "--timeout", "0s"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("must be longer than zero"), "{e}");
    }

    /// A call's deadline travels in milliseconds as a u32: longer was cut to about 49.7
    /// days without a word; it is refused naming the flag.
    #[test]
    fn a_call_deadline_longer_than_the_protocol_carries_is_refused() {
        let e = Cli::try_parse_from(["supervisorctl", "call", "echo", "a.B/C", "--timeout", "100d"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("--timeout"), "{e}");
        assert!(e.to_string().contains("is longer than a call's deadline may be (4294967295 ms"), "{e}");
        let Remote::Call { timeout, .. } = remote(&["call", "echo", "a.B/C", "--timeout", "49d"]) else {
            panic!("not a call")
        };
        assert_eq!(timeout, Some(Duration::from_secs(49 * 86_400)));
    }
}
