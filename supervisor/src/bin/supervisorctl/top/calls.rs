//! Each plugin's call counters as the daemon's metrics text has them
//! (`supervisor_calls_total` by code and source, the
//! `supervisor_call_duration_seconds` histogram), and what two readings of
//! them come to: calls per second, the share that failed and the p99, computed
//! as the shipped Prometheus rules compute them (deploy/prometheus/rules.yml).

use std::collections::BTreeMap;
use std::time::Duration;

use plugin_supervisor::observe::metrics::code_name;
use plugin_supervisor::routing::outcomes::plugin_failed;

/// One plugin's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calls {
    /// Every call, whatever its code and whichever layer answered.
    pub total: f64,
    /// Those that failed as a canary judges a revision (UNKNOWN, INTERNAL,
    /// UNAVAILABLE, DEADLINE_EXCEEDED, DATA_LOSS), whichever layer answered but the
    /// caller's own shorter deadline.
    pub failed: f64,
    /// The latency histogram: (upper bound in seconds, calls at or under it), by
    /// bound; the last bound is +Inf.
    pub buckets: Vec<(f64, f64)>,
}

/// What a plugin's calls came to between two readings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    pub per_second: f64,
    /// The share of calls that failed (0 to 1); None without calls.
    pub error_rate: Option<f64>,
    /// None without calls.
    pub p99: Option<Duration>,
}

/// The per-plugin call counters in `text` (OpenMetrics), by plugin.
pub fn parse(text: &str) -> BTreeMap<String, Calls> {
    let mut plugins: BTreeMap<String, Calls> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels, value)) = sample(line) else { continue };
        let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let Some(plugin) = label("plugin") else { continue };
        match name {
            "supervisor_calls_total" => {
                let calls = plugins.entry(plugin.to_owned()).or_default();
                calls.total += value;
                let failed = label("code").and_then(code).is_some_and(plugin_failed);
                if failed && label("source") != Some("caller") {
                    calls.failed += value;
                }
            }
            "supervisor_call_duration_seconds_bucket" => {
                let Some(le) = label("le").and_then(number) else { continue };
                plugins.entry(plugin.to_owned()).or_default().buckets.push((le, value));
            }
            _ => {}
        }
    }
    for calls in plugins.values_mut() {
        calls.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    plugins
}

/// A sample's labels, as (name, value), in their order.
type Labels = Vec<(String, String)>;

/// A sample line's metric name, labels and value; None for what is not one.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (name, rest) = line.split_at(line.find(['{', ' '])?);
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => labels(inner)?,
        None => (Vec::new(), rest),
    };
    // A value, then maybe a timestamp and an exemplar.
    let value = number(rest.split_whitespace().next()?)?;
    Some((name, labels, value))
}

/// The labels up to the closing brace, and what follows it.
fn labels(mut text: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches(',');
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        text = &rest[end + 1..];
    }
}

fn number(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// The gRPC code named `name` (as the metrics name it).
fn code(name: &str) -> Option<tonic::Code> {
    (0..17).map(tonic::Code::from_i32).find(|c| code_name(*c) == name)
}

/// A counter's growth from `before` to `now`; a counter that went down was
/// reset (the plugin removed and added again) and counts from zero, as
/// Prometheus's `rate` takes it.
fn growth(before: f64, now: f64) -> f64 {
    if now < before { now } else { now - before }
}

impl Calls {
    /// What the calls came to from `before` (the same plugin's counters, or None when
    /// it had none then) to `self`, `elapsed` later.
    pub fn since(&self, before: Option<&Calls>, elapsed: Duration) -> Rates {
        let zero = Calls::default();
        let before = before.unwrap_or(&zero);
        let reset = self.total < before.total;
        let base = if reset { &zero } else { before };
        let calls = growth(base.total, self.total);
        let failed = growth(base.failed, self.failed);
        let secs = elapsed.as_secs_f64();
        let buckets: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let earlier = base.buckets.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, n)| *n);
                (le, growth(earlier, n))
            })
            .collect();
        Rates {
            per_second: if secs > 0.0 { calls / secs } else { 0.0 },
            error_rate: (calls > 0.0).then(|| failed / calls),
            p99: quantile(0.99, &buckets).and_then(|s| Duration::try_from_secs_f64(s).ok()),
        }
    }
}

/// The `q` quantile of a cumulative histogram (bound, calls at or under it), as
/// Prometheus's `histogram_quantile` estimates it: linearly within the bucket
/// where it falls, the first bucket starting at 0; one in the +Inf bucket is the
/// largest finite bound. None without calls.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(below.0);
            }
            let within = count - below.1;
            if within <= 0.0 {
                return Some(le);
            }
            return Some(below.0 + (le - below.0) * (rank - below.1) / within);
        }
        below = (le, count);
    }
    Some(below.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP supervisor_calls Calls to plugins
# TYPE supervisor_calls counter
supervisor_calls_total{plugin="echo",code="OK",source="plugin"} 90
supervisor_calls_total{plugin="echo",code="INTERNAL",source="plugin"} 6
supervisor_calls_total{plugin="echo",code="UNAVAILABLE",source="breaker"} 2
supervisor_calls_total{plugin="echo",code="DEADLINE_EXCEEDED",source="caller"} 1
supervisor_calls_total{plugin="echo",code="NOT_FOUND",source="plugin"} 1
supervisor_calls_total{plugin="zoo",code="OK",source="plugin"} 5
# TYPE supervisor_call_duration_seconds histogram
supervisor_call_duration_seconds_sum{plugin="echo"} 0.5
supervisor_call_duration_seconds_count{plugin="echo"} 100
supervisor_call_duration_seconds_bucket{le="0.001",plugin="echo"} 50
supervisor_call_duration_seconds_bucket{le="+Inf",plugin="echo"} 100
supervisor_call_duration_seconds_bucket{le="0.002",plugin="echo"} 100
supervisor_instance_up{plugin="echo",plugin_instance="echo-0",revision="1"} 1
# EOF
"#;

    #[test]
    fn the_metrics_text_gives_each_plugins_calls_failures_and_latencies() {
        let calls = parse(TEXT);
        let echo = &calls["echo"];
        assert_eq!(echo.total, 100.0);
        // INTERNAL and the breaker's UNAVAILABLE; not the caller's own deadline, not NOT_FOUND.
        assert_eq!(echo.failed, 8.0);
        assert_eq!(echo.buckets, [(0.001, 50.0), (0.002, 100.0), (f64::INFINITY, 100.0)], "sorted by bound");
        assert_eq!(calls["zoo"], Calls { total: 5.0, failed: 0.0, buckets: vec![] });
        assert_eq!(calls.len(), 2);
    }

    #[test]
    fn labels_are_read_with_their_escapes() {
        let (name, labels, value) = sample(r#"m{a="x\"y",b="1\\2\n"} 3 1700000000"#).unwrap();
        assert_eq!((name, value), ("m", 3.0));
        assert_eq!(labels, [("a".to_owned(), "x\"y".to_owned()), ("b".to_owned(), "1\\2\n".to_owned())]);
        assert_eq!(sample("up 1").map(|(n, l, v)| (n, l.len(), v)), Some(("up", 0, 1.0)));
        assert_eq!(sample(r#"m{a="unterminated} 3"#), None);
        assert_eq!(sample("garbage"), None);
    }

    /// Counters with the latency histogram the daemon keeps (25 µs, doubling), holding
    /// `n` calls of `secs` for each (secs, n) of `at`.
    fn calls(total: f64, failed: f64, at: &[(f64, f64)]) -> Calls {
        let bounds: Vec<f64> = (0..20).map(|i| 25e-6 * 2f64.powi(i)).chain([f64::INFINITY]).collect();
        let buckets =
            bounds.iter().map(|&le| (le, at.iter().filter(|(secs, _)| *secs <= le).map(|(_, n)| n).sum())).collect();
        Calls { total, failed, buckets }
    }

    #[test]
    fn rates_come_from_the_difference_of_two_readings() {
        // 1000 fast calls before; then in 2 s, 200 more: 190 at 150 µs, 10 failed at 30 ms.
        let before = calls(1000.0, 0.0, &[(90e-6, 1000.0)]);
        let now = calls(1200.0, 10.0, &[(90e-6, 1000.0), (150e-6, 190.0), (30e-3, 10.0)]);
        let r = now.since(Some(&before), Duration::from_secs(2));
        assert_eq!(r.per_second, 100.0);
        assert_eq!(r.error_rate, Some(0.05));
        // The 198th of 200 falls among the 10 slow ones, in the bucket 25.6 ms to 51.2 ms:
        // 8 of its 10 calls in, as histogram_quantile interpolates.
        let p99 = r.p99.unwrap().as_secs_f64();
        assert!((p99 - (0.0256 + 0.0256 * 8.0 / 10.0)).abs() < 1e-9, "{p99}");
        // The fast calls before the window are not in it: without the slow ones, the
        // p99 is in the 150 µs bucket (100 µs to 200 µs).
        let fast = calls(1200.0, 0.0, &[(90e-6, 1000.0), (150e-6, 200.0)]);
        let p99 = fast.since(Some(&before), Duration::from_secs(2)).p99.unwrap();
        assert!(p99 > Duration::from_micros(100) && p99 <= Duration::from_micros(200), "{p99:?}");
    }

    #[test]
    fn no_calls_in_the_window_is_zero_per_second_and_no_error_rate_or_p99() {
        let c = calls(1000.0, 3.0, &[(90e-6, 1000.0)]);
        let r = c.since(Some(&c), Duration::from_secs(1));
        assert_eq!(r, Rates { per_second: 0.0, error_rate: None, p99: None });
        // A plugin with no counters yet had none before.
        let r = c.since(None, Duration::from_secs(10));
        assert_eq!((r.per_second, r.error_rate), (100.0, Some(0.003)));
    }

    #[test]
    fn a_counter_that_went_down_was_reset_and_counts_from_zero() {
        let before = calls(1000.0, 500.0, &[(90e-6, 1000.0)]);
        let now = calls(40.0, 0.0, &[(90e-6, 40.0)]);
        let r = now.since(Some(&before), Duration::from_secs(4));
        assert_eq!((r.per_second, r.error_rate), (10.0, Some(0.0)));
        let p99 = r.p99.unwrap();
        assert!(p99 > Duration::from_micros(50) && p99 <= Duration::from_micros(100), "{p99:?}");
    }

    #[test]
    fn the_quantile_is_interpolated_within_its_bucket_as_prometheus_does() {
        let h = [(1.0, 0.0), (2.0, 50.0), (4.0, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &h), Some(2.0));
        assert_eq!(quantile(0.75, &h), Some(3.0));
        assert_eq!(quantile(0.25, &h), Some(1.5));
        // In the first bucket, from 0.
        assert_eq!(quantile(0.5, &[(2.0, 10.0), (f64::INFINITY, 10.0)]), Some(1.0));
        // Past the largest bound: that bound.
        assert_eq!(quantile(0.99, &[(2.0, 10.0), (f64::INFINITY, 20.0)]), Some(2.0));
        assert_eq!(quantile(0.99, &[(2.0, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[]), None);
    }
}
