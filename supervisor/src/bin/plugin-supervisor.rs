//! The daemon binary: `plugin-supervisor --config FILE [--runtime-dir DIR]
//! [--log-format text|json] [--forward-plugin-logs true|false]` runs in the
//! foreground (as process 1, beneath a process 1 of its own that reaps orphans:
//! `plugin_supervisor::init`); `plugin-supervisor check-config FILE` validates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, Parser, Subcommand, ValueEnum};
use plugin_proto::signals::Signals;
use plugin_supervisor::cli_docs::DocsCommand;
use plugin_supervisor::config::Config;
use plugin_supervisor::daemon;
use plugin_supervisor::init::Role;
use plugin_supervisor::observe::forward;

#[derive(Parser)]
#[command(name = "plugin-supervisor", version, about = "Runs plugins as isolated child processes reached over gRPC")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true, after_help = ENVIRONMENT)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// Where control.sock and gateway.sock go (overrides the config).
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    /// How the daemon writes its logs, and the plugin log lines it forwards, to stderr:
    /// `text` (tracing's default layout) or `json` (one object a line: timestamp, level,
    /// fields, target, and plugin, instance and stream for a plugin's lines).
    #[arg(long, value_enum, env = "PLUGIN_SUPERVISOR_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Forward each plugin's log lines (stdout, stderr, SDK records, after its log_rate
    /// limit) to the daemon's stderr, so that journald or a log shipper keeps them.
    #[arg(
        long,
        env = "PLUGIN_SUPERVISOR_FORWARD_PLUGIN_LOGS",
        default_value_t = true,
        action = ArgAction::Set,
        value_name = "true|false"
    )]
    forward_plugin_logs: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The variable whose tracing `EnvFilter` directives choose the daemon's log records.
const LOG_FILTER_ENV: &str = "PLUGIN_SUPERVISOR_LOG";

/// Every variable the daemon reads, for `--help` and the man page (a test keeps it complete).
const ENVIRONMENT: &str = "\
Environment:
  PLUGIN_SUPERVISOR_LOG                  Which log records the daemon writes, as tracing
                                         EnvFilter directives: a level (default info) or
                                         per-target levels, e.g.
                                         info,plugin_supervisor::routing=debug
  PLUGIN_SUPERVISOR_LOG_FORMAT           text or json: as --log-format (the flag wins)
  PLUGIN_SUPERVISOR_FORWARD_PLUGIN_LOGS  true or false: as --forward-plugin-logs (the flag wins)
  NOTIFY_SOCKET, WATCHDOG_USEC,          Set by systemd for a Type=notify service: where to
  WATCHDOG_PID                           say READY=1 and STATUS=, and how often to ping its
                                         watchdog
  Any variable a plugin's `env` key names is passed on to that plugin's instances; no
  other variable of the daemon's environment reaches a plugin.";

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for forward::Format {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => forward::Format::Text,
            LogFormat::Json => forward::Format::Json,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Checks a configuration file and exits: 0 when valid. Each plugin's binary is
    /// verified as its start would verify it (ELF for this host, pin, signature,
    /// libraries); one that would be refused is a warning, since the daemon still runs
    /// the other plugins, or an error with --strict.
    CheckConfig {
        file: PathBuf,
        /// Exit 1 also when a plugin's binary would be refused at its start.
        #[arg(long)]
        strict: bool,
    },
    #[command(flatten)]
    Docs(DocsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Docs(command)) = cli.command {
        let mut out = std::io::stdout().lock();
        return match command.run(Cli::command(), &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("plugin-supervisor: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::CheckConfig { file, strict }) = cli.command {
        init_tracing(cli.log_format.into());
        return match Config::load(&file) {
            Ok(c) => {
                let refused = plugin_supervisor::instance::sandboxed::unrunnable(&c.specs());
                // SAFETY: geteuid has no preconditions.
                let euid = unsafe { libc::geteuid() };
                if !refused.is_empty() && euid != 0 {
                    eprintln!(
                        "note: checked as uid {euid}, not as root as the daemon runs: a binary this uid cannot \
                         read may still be one the daemon can"
                    );
                }
                for u in &refused {
                    // A thousand plugins of one binary make one line, not a thousand names.
                    const NAMED: usize = 3;
                    let also = match u.also.as_slice() {
                        [] => String::new(),
                        [one] => format!(" (so would {one}'s, which runs the same binary)"),
                        names if names.len() <= NAMED => {
                            format!(" (so would those of {}, which run the same binary)", names.join(", "))
                        }
                        names => format!(
                            " (so would those of {} and {} more, which run the same binary)",
                            names[..NAMED].join(", "),
                            names.len() - NAMED
                        ),
                    };
                    // A binary the checks refuse is refused; a checker that failed fails
                    // the start (which is tried again).
                    let would = match u.cause {
                        plugin_supervisor::instance::error::Cause::VerifierPanicked(_) => "would fail",
                        _ => "would be refused",
                    };
                    eprintln!(
                        "{}{}: plugin[{}].binary: {}: its start {would}{also}",
                        if strict { "" } else { "warning: " },
                        file.display(),
                        u.index,
                        u.cause
                    );
                }
                if strict && !refused.is_empty() {
                    return ExitCode::FAILURE;
                }
                let names: Vec<&str> = c.plugins.iter().map(|p| p.name.as_str()).collect();
                println!("{}: ok ({} plugins: {})", file.display(), names.len(), names.join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    // Before anything else, while this process has one thread: as process 1 (a container's
    // entrypoint) the daemon runs as a child of a process 1 that reaps orphans.
    // SAFETY: the daemon's first step, before any thread (the runtime, the log writer)
    // exists.
    let held = match unsafe { plugin_supervisor::init::take_pid1() } {
        Ok(Role::Daemon(held)) => held,
        Ok(Role::Init(init)) => {
            // Its own log lines (warnings only) go where the daemon's go, in its format.
            if forward::install(cli.log_format.into(), false).is_ok() {
                init_tracing(cli.log_format.into());
            }
            let code = init.run();
            forward::flush(std::time::Duration::from_secs(2));
            return ExitCode::from(code);
        }
        Err(e) => {
            eprintln!("plugin-supervisor: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The daemon's first step: from here on no signal's default action can
    // cut start-up short; a stop signal waits in the pipe until the daemon
    // can act on it.
    let caught = match Signals::catch(&daemon::HANDLED_SIGNALS) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("plugin-supervisor: cannot catch signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    // What process 1 forwarded meanwhile reaches the handlers now.
    if let Err(e) = held.release() {
        eprintln!("plugin-supervisor: {e}");
        return ExitCode::FAILURE;
    }
    // The daemon's own logs, and the plugin lines it forwards, are written by a thread of
    // their own: no log write waits on a slow stderr on the runtime's one thread.
    if let Err(e) = forward::install(cli.log_format.into(), cli.forward_plugin_logs) {
        eprintln!("plugin-supervisor: cannot start the log writer: {e}");
        return ExitCode::FAILURE;
    }
    init_tracing(cli.log_format.into());
    let Some(path) = cli.config else {
        eprintln!("plugin-supervisor: --config FILE is required");
        return ExitCode::from(2);
    };
    // One thread: a gateway call then crosses no thread inside the
    // supervisor; blocking work goes to the blocking pool and spawns to
    // their own thread.
    let rt = match plugin_proto::spin::install(
        tokio::runtime::Builder::new_current_thread().enable_all(),
        None,
        plugin_proto::spin::DEFAULT,
    )
    .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plugin-supervisor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async {
        let signals = match caught.stream() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("plugin-supervisor: cannot read caught signals: {e}");
                return ExitCode::FAILURE;
            }
        };
        let config = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        match daemon::run(config, cli.runtime_dir, signals).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("plugin-supervisor: {}", daemon::one_line(&e));
                ExitCode::FAILURE
            }
        }
    });
    // What the daemon said last is written before it exits.
    forward::flush(std::time::Duration::from_secs(2));
    code
}

fn init_tracing(format: forward::Format) {
    let filter = match tracing_subscriber::EnvFilter::try_from_env(LOG_FILTER_ENV) {
        Ok(filter) => filter,
        Err(e) => {
            // Unset is the default; set but not a filter is the operator's mistake, said
            // rather than silently logging at another level than asked.
            if let Some(value) = std::env::var_os(LOG_FILTER_ENV) {
                eprintln!("plugin-supervisor: {LOG_FILTER_ENV}={value:?} is not a log filter ({e}); logging at info");
            }
            tracing_subscriber::EnvFilter::new("info")
        }
    };
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(forward::own_writer());
    match format {
        forward::Format::Text => fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        forward::Format::Json => fmt.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_documents_every_environment_variable_read() {
        let mut cmd = Cli::command();
        let help = cmd.render_long_help().to_string();
        let from_args = Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        assert_eq!(from_args.len(), 2, "{from_args:?}");
        for var in from_args.iter().map(String::as_str).chain([LOG_FILTER_ENV]) {
            let documented =
                help.lines().any(|l| l.trim_start().starts_with(var) && l.trim_start()[var.len()..].starts_with(' '));
            assert!(documented, "{var} is not described in --help:\n{help}");
        }
    }
}
