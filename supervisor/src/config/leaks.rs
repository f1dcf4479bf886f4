//! `[plugin.leaks]`: how each instance's usage is watched for a leak. Over the last
//! `window`, memory (anonymous), tasks, open descriptors and CPU are judged for a
//! sustained rise (see `leaks::trend`); a rise faster than the resource's threshold is
//! reported, and with `action = "replace"` the instance is replaced as a reload replaces
//! it.

use std::time::Duration;

use serde::Deserialize;

use super::load::{Problems, Seg};
use super::units::ByteSize;

/// What is done about a suspected leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An event, a `status` note and metrics.
    #[default]
    Report,
    /// That, and the plugin is reloaded with the entry it runs (new instances first, the
    /// leaking ones drained), at most once a window.
    Replace,
}

/// The defaults flag what would exhaust a typical quota within hours (a mebibyte, a
/// descriptor or a task a minute, sustained for ten minutes) and nothing that a healthy
/// plugin's caches, pools and collector do: those level off or saw.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaksConfig {
    /// How much history each judgement sees; a rise must last this long to be flagged.
    #[serde(default = "default_window", with = "super::units::duration")]
    pub window: Duration,
    /// The smallest rise of anonymous memory per minute worth reporting.
    #[serde(default = "default_memory_per_min")]
    pub memory_per_min: ByteSize,
    /// The smallest rise of open descriptors (all the instance's processes) per minute.
    #[serde(default = "default_count_per_min")]
    pub fds_per_min: f64,
    /// The smallest rise of tasks (processes and threads) per minute.
    #[serde(default = "default_count_per_min")]
    pub tasks_per_min: f64,
    /// The smallest rise of CPU use per minute, in percent of one core.
    #[serde(default = "default_cpu_per_min")]
    pub cpu_per_min: f64,
    /// The Mann-Kendall test's significance level. It would be the chance that usage
    /// with no trend is judged rising if samples were independent; a second's usage is
    /// much like the last's, so the real chance is higher, and the change-point rule and
    /// the slope thresholds are what keep flat usage from being flagged.
    #[serde(default = "default_significance")]
    pub significance: f64,
    #[serde(default)]
    pub action: Action,
}

impl Default for LeaksConfig {
    fn default() -> Self {
        Self {
            window: default_window(),
            memory_per_min: default_memory_per_min(),
            fds_per_min: default_count_per_min(),
            tasks_per_min: default_count_per_min(),
            cpu_per_min: default_cpu_per_min(),
            significance: default_significance(),
            action: Action::default(),
        }
    }
}

impl LeaksConfig {
    /// The supervisor's watch of itself: the plugins' thresholds over `window`.
    pub fn of_supervisor(window: Duration) -> Self {
        Self { window, ..Self::default() }
    }
}

fn default_window() -> Duration {
    Duration::from_secs(600)
}
fn default_memory_per_min() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_count_per_min() -> f64 {
    1.0
}
fn default_cpu_per_min() -> f64 {
    5.0
}
fn default_significance() -> f64 {
    0.01
}
/// The supervisor watches itself over a long run: its own caches fill over minutes.
pub fn default_supervisor_window() -> Duration {
    Duration::from_secs(3600)
}

/// The shortest window: ten samples, three in each third (tests use it).
pub const MIN_WINDOW: Duration = Duration::from_secs(10);
/// The longest: a judgement's history is kept in at most 600 samples whatever the window.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks a window (for `[plugin.leaks] window` and `[supervisor] leak_window`).
pub(super) fn check_window(window: Duration, at: &[Seg<'_>], p: &mut Problems<'_>) {
    if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
        p.at(at, "must be between 10s and 7d");
    }
}

pub(super) fn check(l: &LeaksConfig, at: &[Seg<'_>], p: &mut Problems<'_>) {
    let key = |k: &'static str| {
        let mut path = at.to_vec();
        path.push(Seg::Key(k));
        path
    };
    check_window(l.window, &key("window"), p);
    for (name, v) in [("fds_per_min", l.fds_per_min), ("tasks_per_min", l.tasks_per_min)] {
        if !(v > 0.0 && v <= 1e6) {
            p.at(&key(name), format!("a count per minute above 0 and at most 1000000, not {v}"));
        }
    }
    if !(l.cpu_per_min > 0.0 && l.cpu_per_min <= 10_000.0) {
        p.at(
            &key("cpu_per_min"),
            format!("percent of one core per minute, above 0 and at most 10000, not {}", l.cpu_per_min),
        );
    }
    if l.memory_per_min.0 == 0 {
        p.at(&key("memory_per_min"), "must be above zero (e.g. \"1M\")");
    }
    if !(l.significance > 0.0 && l.significance <= 0.2) {
        p.at(
            &key("significance"),
            format!("a probability above 0 and at most 0.2 (0.01 is 1%), not {}", l.significance),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const HEAD: &str = "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\ntier = \"none\"\n";

    fn problems(leaks: &str) -> String {
        match format!("{HEAD}[plugin.leaks]\n{leaks}").parse::<Config>() {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_plugin_without_a_leaks_table_reports_over_ten_minutes() {
        let config: Config = HEAD.parse().unwrap();
        let l = &config.specs()[0].leaks;
        assert_eq!(*l, LeaksConfig::default());
        assert_eq!(
            (l.window, l.action, l.memory_per_min),
            (Duration::from_secs(600), Action::Report, ByteSize(1 << 20))
        );
        assert_eq!((l.fds_per_min, l.tasks_per_min, l.cpu_per_min, l.significance), (1.0, 1.0, 5.0, 0.01));
        assert_eq!(config.supervisor.leak_window, Duration::from_secs(3600));
    }

    #[test]
    fn an_entry_is_read_with_its_units() {
        let config: Config = format!(
            "{HEAD}[plugin.leaks]\nwindow = \"15s\"\nmemory_per_min = \"512K\"\nfds_per_min = 6\ntasks_per_min = 0.5\ncpu_per_min = 2.5\nsignificance = 0.001\naction = \"replace\"\n"
        )
        .parse()
        .unwrap();
        let l = &config.specs()[0].leaks;
        assert_eq!(
            *l,
            LeaksConfig {
                window: Duration::from_secs(15),
                memory_per_min: ByteSize(512 << 10),
                fds_per_min: 6.0,
                tasks_per_min: 0.5,
                cpu_per_min: 2.5,
                significance: 0.001,
                action: Action::Replace,
            }
        );
    }

    #[test]
    fn each_key_out_of_range_is_refused_with_its_line_and_cause() {
        for (entry, said) in [
            ("window = \"2s\"", ":8: plugin[0].leaks.window: must be between 10s and 7d"),
            ("window = \"30d\"", "plugin[0].leaks.window: must be between 10s and 7d"),
            ("memory_per_min = \"0\"", "plugin[0].leaks.memory_per_min: must be above zero"),
            ("fds_per_min = 0", "plugin[0].leaks.fds_per_min: a count per minute above 0"),
            ("tasks_per_min = -1", "plugin[0].leaks.tasks_per_min: a count per minute above 0"),
            ("cpu_per_min = nan", "plugin[0].leaks.cpu_per_min: percent of one core per minute"),
            ("significance = 0.5", "plugin[0].leaks.significance: a probability above 0 and at most 0.2"),
            ("significance = 0", "plugin[0].leaks.significance: a probability above 0"),
        ] {
            let got = problems(entry);
            assert!(got.contains(said), "{entry}: {got}");
        }
        for (entry, key) in [
            ("action = \"restart\"", "leaks.action"),
            ("windw = \"1m\"", "leaks.windw"),
            ("window = 10", "leaks.window"),
        ] {
            let got = problems(entry);
            assert!(got.contains(key), "{entry}: {got}");
        }
        let got = format!("[supervisor]\nleak_window = \"1s\"\n{HEAD}").parse::<Config>().unwrap_err().to_string();
        assert!(got.contains(":2: supervisor.leak_window: must be between 10s and 7d"), "{got}");
    }

    #[test]
    fn the_readme_example_is_valid_and_says_the_defaults_but_the_action() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = &readme[readme.find("## Leaks").unwrap()..];
        let block = &section[section.find("```toml\n").unwrap() + 8..];
        let block = &block[..block.find("```").unwrap()];
        let config: Config = format!("{HEAD}{block}").parse().unwrap_or_else(|e| panic!("{e}\n{block}"));
        let example = &config.specs()[0].leaks;
        assert_eq!(*example, LeaksConfig { action: Action::Replace, ..LeaksConfig::default() }, "{block}");
    }
}
