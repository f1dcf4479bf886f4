//! `supervisorctl onboard`: runs the library's onboarding check on one
//! plugin of a config and prints its report; exits 1 when a check failed.

use std::path::PathBuf;
use std::process::ExitCode;

use plugin_supervisor::onboard::{self, Exercise, OnboardError, Options};

use crate::exit::Exit;
use crate::local::Failure;
use crate::stdout::out;

/// The command's arguments.
#[derive(clap::Args)]
pub struct OnboardArgs {
    /// The supervisor config holding the plugin (its tiers and settings apply).
    #[arg(long)]
    config: PathBuf,
    /// The plugin entry to check.
    name: String,
    /// A method that exercises the plugin, package.Service/Method; it is made
    /// during the learning pass and timed for the baseline.
    #[arg(long, value_name = "SERVICE/METHOD")]
    call: Option<String>,
    /// The request of --call as JSON.
    #[arg(long, short = 'd', default_value = "{}", requires = "call")]
    data: String,
    /// How many times the baseline makes --call.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    calls: u32,
    /// The echo example's binary, measured beside the plugin (default: the
    /// one beside supervisorctl, when there is one).
    #[arg(long, value_name = "PATH")]
    baseline_echo: Option<PathBuf>,
    /// Print the report as a JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: OnboardArgs) -> Result<ExitCode, Failure> {
    // Paths in the scratch config resolve against the config's directory, not ours.
    let baseline_echo = args
        .baseline_echo
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .or_else(|| std::env::current_exe().ok().and_then(|exe| onboard::echo_beside(&exe)));
    let opts = Options {
        config: args.config,
        plugin: args.name,
        call: args.call.map(|method| Exercise { method, json: args.data }),
        baseline_echo,
        calls: args.calls as usize,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}")))?;
    let report = rt.block_on(onboard::run(&opts)).map_err(|e| match e {
        OnboardError::Config { .. } | OnboardError::Read { .. } => Failure::input(e.to_string()),
        OnboardError::NoSuchPlugin { .. } => Failure { code: Exit::NoSuchPlugin, reason: e.to_string() },
        _ => Failure::failed(e.to_string()),
    })?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Failure::failed(e.to_string()))?;
        out!("{text}\n");
    } else {
        out!("{}", onboard::render_text(&report));
    }
    Ok(if report.passed() { Exit::Success.into() } else { Exit::Failure.into() })
}
