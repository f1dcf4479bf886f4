//! `supervisorctl`: the operator's command line for a running
//! plugin-supervisor, over its control socket.

mod client;
mod doctor;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use plugin_supervisor::config::DEFAULT_RUNTIME_DIR;

#[derive(Parser)]
#[command(name = "supervisorctl", version, about = "Drive a running plugin-supervisor")]
struct Cli {
    /// The supervisor's control socket.
    #[arg(long, global = true, env = "SUPERVISORCTL_SOCKET", default_value_t = default_socket())]
    socket: String,
    #[command(subcommand)]
    command: Command,
}

fn default_socket() -> String {
    format!("{DEFAULT_RUNTIME_DIR}/control.sock")
}

#[derive(Subcommand)]
enum Command {
    /// Shows every plugin instance (or one plugin's).
    Status {
        name: Option<String>,
        /// Print a JSON array, one object per instance.
        #[arg(long)]
        json: bool,
    },
    /// Starts a plugin (also after it failed) and waits until it runs.
    Start { name: String },
    /// Stops a plugin, letting in-flight calls drain.
    Stop { name: String },
    /// Stops and starts a plugin.
    Restart { name: String },
    /// Prints a plugin's stdout, stderr and SDK logs.
    Tail {
        name: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// How many past lines to print first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
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
    /// Calls a plugin method with a JSON request and prints the JSON response.
    /// Shows or changes a plugin's quotas; a change applies to the running
    /// instances at once and is kept across restarts. "default" undoes one.
    Quota {
        name: String,
        /// memory.max, e.g. 256M.
        #[arg(long)]
        memory: Option<String>,
        /// memory.high, e.g. 200M.
        #[arg(long)]
        memory_high: Option<String>,
        /// CPU as a share of one core, e.g. 50%.
        #[arg(long)]
        cpu: Option<String>,
        /// Task limit (pids.max).
        #[arg(long)]
        pids: Option<String>,
    },
    /// Checks what this host gives the sandbox and whether the configured
    /// plugins can run as configured (exit status 1 when not).
    Doctor {
        /// The supervisor config whose tiers and plugins to judge.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    Call {
        name: String,
        /// The method, as package.Service/Method.
        method: String,
        /// The request as JSON.
        #[arg(long, short = 'd', default_value = "{}")]
        data: String,
        /// Deadline for the call, e.g. 500ms (default: the plugin's call_timeout).
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    plugin_supervisor::config::units::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("supervisorctl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("supervisorctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    if let Command::Doctor { config, json } = &cli.command {
        return doctor::run(config.as_deref(), *json);
    }
    let socket = PathBuf::from(&cli.socket);
    let mut c = client::connect(&socket).await?;
    match cli.command {
        Command::Status { name, json } => output::status(&mut c, name.unwrap_or_default(), json).await,
        Command::Start { name } => output::action(c.start(client::plugin(name)).await),
        Command::Stop { name } => output::action(c.stop(client::plugin(name)).await),
        Command::Restart { name } => output::action(c.restart(client::plugin(name)).await),
        Command::Tail { name, follow, lines } => output::tail(&mut c, name, follow, lines).await,
        Command::Events { follow, plugin, json } => {
            output::events(&mut c, plugin.unwrap_or_default(), follow, json).await
        }
        Command::Call { name, method, data, timeout } => output::call(&mut c, name, method, data, timeout).await,
        Command::Quota { name, memory, memory_high, cpu, pids } => {
            output::quota(&mut c, name, [memory, memory_high, cpu, pids]).await
        }
        Command::Doctor { .. } => Err("doctor runs without the daemon".into()),
    }
}
