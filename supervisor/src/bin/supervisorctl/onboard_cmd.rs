//! `supervisorctl onboard`: runs the library's onboarding check on one
//! plugin of a config, or on a binary under a tier, and prints its report;
//! exits 1 when a check failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use plugin_proto::signals::Signals;
use plugin_supervisor::onboard::{self, Exercise, OnboardError, Options, Target};

use crate::exit::Exit;
use crate::local::Failure;
use crate::stdout::out;

/// The command's arguments.
#[derive(clap::Args)]
pub struct OnboardArgs {
    /// The supervisor config holding the plugin (its tiers and settings apply).
    #[arg(long, value_name = "FILE", required_unless_present = "binary", conflicts_with = "binary")]
    config: Option<PathBuf>,
    /// Check this plugin binary instead, under --tier, with every other setting
    /// the supervisor's default.
    #[arg(long, value_name = "PATH", requires = "tier")]
    binary: Option<PathBuf>,
    /// The tier --binary runs under (a tier file of --policies), or none.
    #[arg(long, requires = "binary")]
    tier: Option<String>,
    /// The tier files for --binary (default: /etc/plugin-supervisor/policies,
    /// else the policies of the checkout this supervisorctl was built from).
    #[arg(long, value_name = "DIR", requires = "binary")]
    policies: Option<PathBuf>,
    /// The plugin entry to check (with --binary: the name it runs under,
    /// default the binary's file name).
    #[arg(required_unless_present = "binary")]
    name: Option<String>,
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
    // What can be checked without the plugin is, before scratch supervisors start: a typo
    // in --call or -d would otherwise be found only as every baseline call failing.
    if let Some(method) = &args.call {
        if plugin_supervisor::control::call::split_method(method).is_none() {
            return Err(Failure::input(format!(
                "--call {method:?} must be written Service/Method or Service.Method, e.g. echo.v1.Echo/Echo"
            )));
        }
        serde_json::from_str::<serde_json::Value>(&args.data)
            .map_err(|e| Failure::input(format!("-d is not valid JSON: {e}")))?;
    }
    // Paths in the scratch config resolve against the config's directory, not ours.
    let baseline_echo = args
        .baseline_echo
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .or_else(|| std::env::current_exe().ok().and_then(|exe| onboard::echo_beside(&exe)));
    let (target, plugin) = target(args.config, args.binary, args.tier, args.policies, args.name)?;
    let opts = Options {
        target,
        plugin,
        call: args.call.map(|method| Exercise { method, json: args.data }),
        baseline_echo,
        calls: args.calls as usize,
    };
    // Caught before the runtime starts and for the rest of the process, so no moment
    // dies of a default action with a scratch supervisor's plugin left running.
    let caught = Signals::catch(&onboard::INTERRUPTING)
        .map_err(|e| Failure::failed(format!("cannot catch SIGINT, SIGTERM and SIGHUP: {e}")))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}")))?;
    let (report, signals) = rt
        .block_on(async {
            let mut signals = caught.stream()?;
            Ok::<_, std::io::Error>((onboard::run(&opts, &mut signals).await, signals))
        })
        .map_err(|e| Failure::failed(format!("cannot read caught signals: {e}")))?;
    // Their handlers write to its pipe until the process exits.
    std::mem::forget(signals);
    let report = report.map_err(|e| match e {
        OnboardError::Config { .. }
        | OnboardError::Read { .. }
        | OnboardError::Binary { .. }
        | OnboardError::UnknownTier { .. } => Failure::input(e.to_string()),
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

/// The shipped tier files: the installed ones, else those of the checkout this
/// supervisorctl was built from.
fn default_policies() -> Option<PathBuf> {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    [PathBuf::from("/etc/plugin-supervisor/policies"), checkout].into_iter().find(|d| d.join("L1.toml").is_file())
}

/// What to check, and the plugin's name, from the arguments (clap has made sure that
/// exactly one of --config and --binary is there, --tier with --binary).
fn target(
    config: Option<PathBuf>,
    binary: Option<PathBuf>,
    tier: Option<String>,
    policies: Option<PathBuf>,
    name: Option<String>,
) -> Result<(Target, String), Failure> {
    let (Some(binary), Some(tier)) = (binary, tier) else {
        let (Some(config), Some(name)) = (config, name) else {
            return Err(Failure::input("give --config FILE NAME, or --binary PATH --tier TIER"));
        };
        return Ok((Target::Config(config), name));
    };
    // The scratch config names it from elsewhere.
    let binary = std::path::absolute(&binary).unwrap_or(binary);
    let name = match name {
        Some(n) => n,
        None => binary.file_stem().and_then(|s| s.to_str()).map(str::to_owned).ok_or_else(|| {
            Failure::input(format!("--binary {}: no file name to name the plugin by; give NAME", binary.display()))
        })?,
    };
    let policies = match policies {
        Some(p) => std::path::absolute(&p).unwrap_or(p),
        None => default_policies().ok_or_else(|| {
            Failure::input(
                "no tier files in /etc/plugin-supervisor/policies, nor a checkout's policies/ beside this supervisorctl: pass --policies DIR",
            )
        })?,
    };
    Ok((Target::Binary { binary, tier, policies }, name))
}
