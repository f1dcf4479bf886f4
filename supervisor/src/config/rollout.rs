//! `[plugin.rollout]`: how a change to a plugin reaches its callers. `replace` (the
//! default) switches every call at once once the new revision passed its checks; `canary`
//! moves a growing share of calls to it step by step, judging each step on what the calls
//! of that step saw, and rolls back on its own.

use std::time::Duration;

use serde::Deserialize;

use super::load::{Problems, Seg};

/// How a new revision takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every call moves at once (the hot reload).
    #[default]
    Replace,
    /// A share of calls moves, step by step.
    Canary,
}

/// The defaults are what a careful operator would pick for a service with steady traffic:
/// a first step small enough that a bad version hurts 5 calls in 100, a minute per step so
/// that a slow leak or a periodic failure shows, 100 calls so that one failure is 1%, and
/// thresholds loose enough that scheduler noise never rolls back a good version.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    #[serde(default)]
    pub strategy: Strategy,
    /// The canary's share of calls at each step, in percent, rising, ending at 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u8>,
    /// How long each step runs before it is judged.
    #[serde(default = "default_step_interval", with = "super::units::duration")]
    pub step_interval: Duration,
    /// Calls the canary must have answered in a step for the step to be judged; a step
    /// with fewer runs up to three intervals, then the rollout pauses.
    #[serde(default = "default_min_calls")]
    pub min_calls: u64,
    /// The largest share (0 to 1) of the canary's calls in a step that may fail with a
    /// code that means the plugin failed.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// The largest canary p99 over the stable revision's p99 in the same step.
    #[serde(default = "default_max_p99_ratio")]
    pub max_p99_ratio: f64,
    /// p99s below this count as this: a ratio of two tiny latencies is scheduler noise
    /// (100 µs against 300 µs), not a slower version.
    #[serde(default = "default_p99_floor", with = "super::units::duration")]
    pub p99_floor: Duration,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            steps: default_steps(),
            step_interval: default_step_interval(),
            min_calls: default_min_calls(),
            max_error_rate: default_max_error_rate(),
            max_p99_ratio: default_max_p99_ratio(),
            p99_floor: default_p99_floor(),
        }
    }
}

fn default_steps() -> Vec<u8> {
    vec![5, 25, 50, 100]
}
fn default_step_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_min_calls() -> u64 {
    100
}
fn default_max_error_rate() -> f64 {
    0.01
}
fn default_max_p99_ratio() -> f64 {
    2.0
}
fn default_p99_floor() -> Duration {
    Duration::from_millis(1)
}

/// The longest a step may be asked to run: a rollout is watched by a person.
const MAX_STEP_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The shortest: a step must see calls to be judged.
const MIN_STEP_INTERVAL: Duration = Duration::from_millis(100);

pub(super) fn check(r: &RolloutConfig, at: &[Seg<'_>], p: &mut Problems<'_>) {
    let key = |k: &'static str| {
        let mut path = at.to_vec();
        path.push(Seg::Key(k));
        path
    };
    if r.steps.is_empty() {
        p.at(&key("steps"), "needs at least one step, the last one 100");
    } else if r.steps.iter().any(|s| *s == 0 || *s > 100) {
        p.at(&key("steps"), format!("each step is a percent of calls from 1 to 100: {:?}", r.steps));
    } else if r.steps.windows(2).any(|w| w[0] >= w[1]) {
        p.at(&key("steps"), format!("steps must rise: {:?}", r.steps));
    } else if r.steps.last() != Some(&100) {
        p.at(
            &key("steps"),
            format!("the last step must be 100 (the canary takes every call before it is promoted): {:?}", r.steps),
        );
    }
    if !(MIN_STEP_INTERVAL..=MAX_STEP_INTERVAL).contains(&r.step_interval) {
        p.at(&key("step_interval"), "must be between 100ms and 24h");
    }
    if !(0.0..=1.0).contains(&r.max_error_rate) {
        p.at(&key("max_error_rate"), format!("a share of calls from 0 to 1 (0.01 is 1%), not {}", r.max_error_rate));
    }
    if !(r.max_p99_ratio >= 1.0 && r.max_p99_ratio <= 1000.0) {
        p.at(&key("max_p99_ratio"), format!("must be between 1 and 1000, not {}", r.max_p99_ratio));
    }
    if r.p99_floor > Duration::from_secs(60) {
        p.at(&key("p99_floor"), "must be at most 60s");
    }
    if r.min_calls > 1_000_000_000 {
        p.at(&key("min_calls"), "must be at most 1000000000");
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn problems(rollout: &str) -> String {
        let text = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\n[plugin.rollout]\n{rollout}"
        );
        match text.parse::<Config>() {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_plugin_without_a_rollout_table_replaces_and_the_defaults_are_the_documented_ones() {
        let config: Config =
            "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\n"
                .parse()
                .unwrap();
        let r = &config.specs()[0].rollout;
        assert_eq!(r.strategy, Strategy::Replace);
        assert_eq!(r.steps, [5, 25, 50, 100]);
        assert_eq!(
            (r.step_interval, r.min_calls, r.max_error_rate, r.max_p99_ratio),
            (Duration::from_secs(60), 100, 0.01, 2.0)
        );
    }

    #[test]
    fn a_canary_entry_is_read_with_its_units() {
        let config: Config = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\n[plugin.rollout]\n{}",
            "strategy = \"canary\"\nsteps = [10, 100]\nstep_interval = \"2s\"\nmin_calls = 20\nmax_error_rate = 0.05\nmax_p99_ratio = 1.5\np99_floor = \"500us\"\n"
        )
        .parse()
        .unwrap();
        let r = &config.specs()[0].rollout;
        assert_eq!(r.strategy, Strategy::Canary);
        assert_eq!(r.steps, [10, 100]);
        assert_eq!(r.step_interval, Duration::from_secs(2));
        assert_eq!(r.p99_floor, Duration::from_micros(500));
    }

    #[test]
    fn steps_that_do_not_rise_to_100_are_refused_with_the_key() {
        assert!(
            problems("steps = [50, 25, 100]").contains("plugin[0].rollout.steps: steps must rise"),
            "{}",
            problems("steps = [50, 25, 100]")
        );
        assert!(problems("steps = [5, 50]").contains("the last step must be 100"));
        assert!(problems("steps = [0, 100]").contains("from 1 to 100"));
        assert!(problems("steps = []").contains("needs at least one step"));
    }

    #[test]
    fn thresholds_out_of_range_are_refused_with_the_key() {
        assert!(problems("max_error_rate = 5").contains("rollout.max_error_rate: a share of calls from 0 to 1"));
        assert!(problems("max_p99_ratio = 0.5").contains("rollout.max_p99_ratio: must be between 1 and 1000"));
        assert!(problems("step_interval = \"1ms\"").contains("rollout.step_interval: must be between 100ms and 24h"));
        assert!(
            problems("strategy = \"blue-green\"").contains("rollout.strategy"),
            "{}",
            problems("strategy = \"blue-green\"")
        );
        assert!(problems("stepz = [100]").contains("rollout.stepz"), "{}", problems("stepz = [100]"));
    }

    #[test]
    fn the_readme_example_is_valid_and_says_the_defaults() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = &readme[readme.find("## Canary rollout").unwrap()..];
        let block = &section[section.find("```toml\n").unwrap() + 8..];
        let block = &block[..block.find("```").unwrap()];
        let config: Config = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\n{block}"
        )
        .parse()
        .unwrap_or_else(|e| panic!("{e}\n{block}"));
        let example = &config.specs()[0].rollout;
        assert_eq!(example.strategy, Strategy::Canary);
        assert_eq!(*example, RolloutConfig { strategy: Strategy::Canary, ..RolloutConfig::default() }, "{block}");
    }
}
