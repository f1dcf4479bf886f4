//! `supervisorctl doctor`: runs the library's checks on this host and
//! prints them; exits 1 when a configured plugin cannot run as configured.

use std::path::Path;
use std::process::ExitCode;

use crate::stdout::outln;
use plugin_supervisor::config::Config;
use plugin_supervisor::doctor::examine;

pub fn run(config: Option<&Path>, json: bool) -> Result<ExitCode, String> {
    let config = match config {
        Some(p) => Some(Config::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let report = examine(config.as_ref());
    if json {
        outln!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        outln!("host");
        for c in &report.checks {
            outln!("  {:<4} {:<16} {}", if c.ok { "ok" } else { "NO" }, c.name, c.detail);
        }
        if !report.tiers.is_empty() {
            outln!("tiers");
            for t in &report.tiers {
                outln!("  {:<4} {:<8} {}", if t.runnable { "ok" } else { "NO" }, t.name, t.details.join("; "));
            }
        }
        if !report.plugins.is_empty() {
            outln!("plugins");
            for p in &report.plugins {
                outln!(
                    "  {:<4} {:<16} ({}) {}",
                    if p.runnable { "ok" } else { "NO" },
                    p.name,
                    p.tier,
                    p.details.join("; ")
                );
            }
        }
    }
    Ok(if report.runnable() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
