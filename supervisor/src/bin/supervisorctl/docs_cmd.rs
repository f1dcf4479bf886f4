//! `supervisorctl completions SHELL` and `supervisorctl man [--dir DIR]`:
//! generated from the very clap definition that parses this command line.

use std::process::ExitCode;

use clap::CommandFactory;
use plugin_supervisor::cli_docs::DocsCommand;

use crate::local::Failure;
use crate::stdout::out;

pub fn run(command: DocsCommand) -> Result<ExitCode, Failure> {
    let mut text = Vec::new();
    command.run(crate::Cli::command(), &mut text).map_err(|e| Failure::failed(e.to_string()))?;
    out!("{}", String::from_utf8_lossy(&text));
    Ok(ExitCode::SUCCESS)
}
