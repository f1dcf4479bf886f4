//! `supervisorctl contract diff OLD NEW`: the check the supervisor makes at
//! handshake, for a plugin's CI. Runs locally; no supervisor is needed.
//!
//! Exit codes: 0 when NEW is compatible with OLD, 1 when it breaks OLD, 2 when
//! an input cannot be read or compiled (the one-line reason names the file).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use plugin_supervisor::contract::{Report, Scope, diff, load_contract_with_includes};

use crate::local::{Failure, one_line};
use crate::stdout::{out, outln};

#[derive(Subcommand)]
pub enum ContractCommand {
    /// Compares two contracts and lists every change, breaking ones first.
    ///
    /// Exits 0 when NEW is compatible with OLD, 1 on a breaking change, 2 when
    /// an input cannot be used.
    Diff(DiffArgs),
}

#[derive(Args)]
pub struct DiffArgs {
    /// The approved contract: a .proto file, a directory of .proto files, or a
    /// binary FileDescriptorSet (.binpb, .pb, .desc).
    pub old: PathBuf,
    /// The candidate contract, in any of the same forms.
    pub new: PathBuf,
    /// Protect only this service (fully qualified, e.g. echo.v1.Echo) and the
    /// messages and enums its methods reach; repeatable. Default: all of OLD.
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// An extra import directory for .proto files; repeatable.
    #[arg(long = "include", short = 'I', value_name = "DIR")]
    pub includes: Vec<PathBuf>,
    /// Print the verdict and every change as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: ContractCommand) -> Result<ExitCode, Failure> {
    match command {
        ContractCommand::Diff(args) => diff_cmd(&args),
    }
}

fn diff_cmd(args: &DiffArgs) -> Result<ExitCode, Failure> {
    let load = |path: &PathBuf| {
        load_contract_with_includes(path, &args.includes).map_err(|e| Failure::input(one_line(&e.to_string())))
    };
    let old = load(&args.old)?;
    let new = load(&args.new)?;
    let scope = if args.services.is_empty() { Scope::All } else { Scope::services(&args.services) };
    let report = diff(&old, &new, scope);
    if args.json {
        outln!("{}", report_json(&report));
    } else {
        out!("{report}");
        outln!("{}", summary(&report));
    }
    Ok(if report.is_breaking() { crate::exit::Exit::Failure.into() } else { ExitCode::SUCCESS })
}

fn report_json(report: &Report) -> serde_json::Value {
    let change = |c: &plugin_supervisor::contract::Change| serde_json::json!({"rule": c.rule_id(), "location": c.location.to_string(), "message": c.message});
    serde_json::json!({
        "verdict": if report.is_breaking() { "breaking" } else { "compatible" },
        "breaking": report.breaking().map(change).collect::<Vec<_>>(),
        "compatible": report.compatible().map(change).collect::<Vec<_>>(),
    })
}

fn summary(report: &Report) -> String {
    let breaking = report.breaking().count();
    let compatible = report.compatible().count();
    if breaking > 0 {
        format!("breaking: {breaking} breaking change(s), {compatible} compatible change(s)")
    } else if compatible > 0 {
        format!("compatible: {compatible} compatible change(s), none breaking")
    } else {
        "compatible: no changes".to_owned()
    }
}
