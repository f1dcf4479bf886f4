//! The daemon binary: `plugin-supervisor --config FILE [--runtime-dir DIR]`
//! runs in the foreground; `plugin-supervisor check-config FILE` validates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plugin_proto::signals::Signals;
use plugin_supervisor::config::Config;
use plugin_supervisor::daemon;

#[derive(Parser)]
#[command(name = "plugin-supervisor", version, about = "Runs plugins as isolated child processes reached over gRPC")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// Where control.sock and gateway.sock go (overrides the config).
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Checks a configuration file and exits: 0 when valid.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = cli.command {
        init_tracing();
        return match Config::load(&file) {
            Ok(c) => {
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
    init_tracing();
    let Some(path) = cli.config else {
        eprintln!("plugin-supervisor: --config FILE is required");
        return ExitCode::from(2);
    };
    // One thread: a gateway call then crosses no thread inside the
    // supervisor; blocking work goes to the blocking pool and spawns to
    // their own thread.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(plugin_proto::spin::before_park(None, plugin_proto::spin::DEFAULT))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plugin-supervisor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
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
    })
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLUGIN_SUPERVISOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
