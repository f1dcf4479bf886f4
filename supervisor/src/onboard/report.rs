//! The onboarding report in words, one section per check.

use std::fmt::Write;

use super::verdict::Outcome;
use super::{Baseline, Report};

/// The report as `supervisorctl onboard` prints it.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let i = &r.integrity;
    let _ = writeln!(out, "onboarding {}", r.plugin);
    let _ = writeln!(out, "integrity and contract");
    let _ = writeln!(out, "  sha256        {}", i.sha256);
    let signed = i.signed_version.as_ref().map_or_else(|| "no".to_owned(), |v| format!("yes, version {v}"));
    let _ = writeln!(out, "  signed        {signed}");
    let _ = writeln!(out, "  architecture  {}", i.architecture);
    if let Some(what) = &i.writable_exec {
        let _ = writeln!(out, "  W+X memory    {what}, mapped at exec (tiers forbidding W+X refuse it)");
    }
    let _ = writeln!(out, "  handshake     {}", if i.handshake { "passed" } else { "FAILED" });
    let _ = writeln!(out, "  version       {} (SDK {})", i.version, i.sdk_version);
    let _ = writeln!(out, "  services      {}", i.services.join(", "));
    let pin = if i.contract_pinned { "pinned; the declared contract keeps it" } else { "not pinned" };
    let _ = writeln!(out, "  contract      {pin}");
    let t = &r.tier_fit;
    let _ = writeln!(out, "tier fit (configured: {})", t.configured);
    match &t.error {
        Some(e) => {
            let _ = writeln!(out, "  FAILED        {e}");
            // What is known to be denied even so (the baseline ran elsewhere for it).
            if !t.configured_denies.is_empty() {
                let _ = writeln!(out, "  {:<13} would deny {}", t.configured, t.configured_denies.join(", "));
            }
        }
        None => {
            let calls: Vec<String> = t.recorded.iter().map(|s| format!("{} ({})", s.name, s.count)).collect();
            let _ = writeln!(out, "  recorded      {} syscalls: {}", t.recorded.len(), calls.join(", "));
            let tightest = t.tightest.as_deref().unwrap_or("none (no tier allows every call)");
            let _ = writeln!(out, "  tightest      {tightest}");
            for d in &t.tighter {
                let _ = writeln!(out, "  {:<13} would deny {}", d.tier, d.denied.join(", "));
            }
        }
    }
    let _ = writeln!(out, "baseline");
    baseline(&mut out, &r.baseline.plugin, &r.baseline);
    match &r.echo_baseline {
        Some(echo) => baseline(&mut out, "echo (ref)", echo),
        None => {
            let _ = writeln!(out, "  echo          not measured (its binary was not found; give --baseline-echo)");
        }
    }
    if !r.faults.is_empty() {
        let _ = writeln!(out, "faults");
    }
    for f in &r.faults {
        let outcome = match f.outcome {
            Outcome::Passed => "passed",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        };
        let _ = writeln!(out, "  {:<13} {outcome}: {}", f.fault, f.happened);
        if !f.done.is_empty() && f.outcome != Outcome::Skipped {
            let _ = writeln!(out, "  {:<13} {}", "", f.done);
        }
        if f.outcome == Outcome::Failed {
            let _ = writeln!(out, "  {:<13} expected: {}", "", f.expected);
        }
    }
    if r.failed.is_empty() {
        let _ = writeln!(out, "every check passed");
    } else {
        for f in &r.failed {
            let _ = writeln!(out, "FAILED: {f}");
        }
    }
    out
}

fn baseline(out: &mut String, label: &str, b: &Baseline) {
    let rss = b.idle_rss_kib.map_or_else(|| "unknown".to_owned(), |k| format!("{k} KiB"));
    let _ = writeln!(out, "  {label:<13} under {}: ready in {} ms, idle RSS {rss}", b.tier, b.ready_ms);
    if let Some(c) = &b.calls {
        let _ = writeln!(
            out,
            "  {:<13} {}: p50 {} us, p99 {} us over {} calls, {} failed",
            "", c.method, c.p50_us, c.p99_us, c.count, c.errors
        );
    }
}
