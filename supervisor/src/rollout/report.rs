//! What `supervisorctl rollout status` says of a rollout: both revisions, the step and
//! share in force, each judged step with its numbers, and how it ended.

use std::time::Instant;

use serde::Serialize;

use super::judge::Numbers;

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Steps run and are judged.
    Running,
    /// The canary keeps its share; nothing is judged until `rollout resume`.
    Paused,
    /// The canary serves every call; the old revision drained.
    Promoted,
    /// The stable revision serves every call again; the canary drained.
    RolledBack,
    /// The supervisor restarted during the rollout: the stable revision serves, and
    /// `rollout resume` starts the canary again.
    Interrupted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled-back",
            Phase::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One judged step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// 1-based, as operators count steps.
    pub step: usize,
    pub share: u8,
    pub passed: bool,
    pub verdict: String,
    pub numbers: Numbers,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plugin: String,
    pub stable_revision: u64,
    pub canary_revision: u64,
    pub phase: Phase,
    pub steps: Vec<u8>,
    /// The step in force, 0-based.
    #[serde(skip)]
    pub step: usize,
    /// The canary's share of calls now.
    pub share: u8,
    /// Why it paused, how it ended, or that a step was extended.
    pub note: String,
    pub judged: Vec<StepRecord>,
    #[serde(skip)]
    pub step_started: Option<Instant>,
}

impl Report {
    pub(super) fn new(plugin: &str, stable: u64, canary: u64, steps: &[u8]) -> Self {
        Self {
            plugin: plugin.to_owned(),
            stable_revision: stable,
            canary_revision: canary,
            phase: Phase::Running,
            steps: steps.to_vec(),
            step: 0,
            share: steps.first().copied().unwrap_or(100),
            note: String::new(),
            judged: Vec::new(),
            step_started: Some(Instant::now()),
        }
    }

    /// The 1-based step in force, as the JSON and the operator see it.
    pub fn current_step(&self) -> usize {
        self.step + 1
    }

    pub(super) fn enter(&mut self, step: usize, share: u8) {
        self.step = step;
        self.share = share;
        self.phase = Phase::Running;
        self.note.clear();
        self.step_started = Some(Instant::now());
    }

    pub(super) fn judged(&mut self, step: usize, share: u8, passed: bool, verdict: String, numbers: Numbers) {
        self.judged.push(StepRecord { step: step + 1, share, passed, verdict, numbers });
    }

    pub(super) fn pause(&mut self, note: String) {
        self.phase = Phase::Paused;
        self.note = note;
    }

    pub(super) fn end(&mut self, phase: Phase, note: String) {
        self.phase = phase;
        self.note = note;
        self.share = if phase == Phase::Promoted { 100 } else { 0 };
        self.step_started = None;
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: rollout {} — revision {} (canary) beside revision {} (stable)",
            self.plugin, self.phase, self.canary_revision, self.stable_revision
        )?;
        let steps: Vec<String> = self.steps.iter().map(|s| format!("{s}%")).collect();
        write!(f, "  steps {}; ", steps.join(" → "))?;
        match self.phase {
            Phase::Running | Phase::Paused => {
                let for_s = self.step_started.map_or(0, |t| t.elapsed().as_secs());
                writeln!(
                    f,
                    "step {} of {}: canary takes {}% of calls (for {for_s} s)",
                    self.current_step(),
                    self.steps.len(),
                    self.share
                )?
            }
            _ => writeln!(f, "canary takes {}% of calls", self.share)?,
        }
        if !self.note.is_empty() {
            writeln!(f, "  {}", self.note)?;
        }
        for s in &self.judged {
            let mark = if s.passed { "passed" } else { "FAILED" };
            writeln!(f, "  step {} ({}%): {mark}: {} [{}]", s.step, s.share, s.verdict, s.numbers)?;
        }
        Ok(())
    }
}
