//! The verdict on one step of a canary rollout, from what the canary's and the stable
//! revision's calls of that step came to. Pure: the rollout feeds it two windows of
//! outcomes and acts on what it says.

use std::time::Duration;

use crate::config::rollout::RolloutConfig;
use crate::routing::outcomes::Tally;

/// Stable calls a window needs before its p99 is a reference: fewer and the p99 is one
/// call's luck.
pub const MIN_REFERENCE_CALLS: u64 = 20;

/// The numbers a step was judged on.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Numbers {
    pub canary_calls: u64,
    pub canary_failed: u64,
    pub error_rate: f64,
    pub stable_calls: u64,
    pub stable_error_rate: f64,
    /// Calls given up by their callers (not among the calls above), each revision's.
    pub canary_abandoned: u64,
    pub stable_abandoned: u64,
    #[serde(serialize_with = "micros")]
    pub canary_p99: Option<Duration>,
    /// The stable revision's p99 the canary's was held to (this step's, or an earlier
    /// step's when the stable one saw too few calls in this one).
    #[serde(serialize_with = "micros")]
    pub stable_p99: Option<Duration>,
    pub p99_ratio: Option<f64>,
}

fn micros<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_micros() as u64)),
        None => s.serialize_none(),
    }
}

impl std::fmt::Display for Numbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "canary {} calls, {} failed ({:.1}%); stable {:.1}% failed",
            self.canary_calls,
            self.canary_failed,
            self.error_rate * 100.0,
            self.stable_error_rate * 100.0
        )?;
        if self.canary_abandoned + self.stable_abandoned > 0 {
            write!(
                f,
                "; callers gave up on {} canary and {} stable calls",
                self.canary_abandoned, self.stable_abandoned
            )?;
        }
        match (self.canary_p99, self.stable_p99, self.p99_ratio) {
            (Some(c), Some(s), Some(r)) => {
                write!(f, "; p99 {} µs against {} µs ({r:.2}x)", c.as_micros(), s.as_micros())
            }
            (Some(c), _, _) => {
                write!(f, "; p99 {} µs, not judged (the stable revision saw too few calls)", c.as_micros())
            }
            _ => Ok(()),
        }
    }
}

/// How much more of a canary's calls than of the stable revision's their callers may give
/// up on (beyond `max_error_rate`) before it fails: callers hang up and time out on a
/// healthy revision too (hedged requests, users who go away), and a few hundred calls
/// leave a share some points off its truth. A canary that hangs loses nearly all.
pub const ABANDON_MARGIN: f64 = 0.10;

/// The share of a canary's calls its callers may give up on when the stable revision's
/// share is not known.
pub const NO_REFERENCE_ABANDON: f64 = 0.5;

/// What the stable revision showed in an earlier step, for a step whose own stable calls
/// are too few to say (the last, at 100%, gives it none).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reference {
    pub p99: Option<Duration>,
    /// The share of its calls their callers gave up on.
    pub abandon_rate: Option<f64>,
}

impl Reference {
    /// What the stable revision's calls so far (before the rollout began, `total`) say of
    /// the share its callers give up on; its p99 is taken from the steps' own windows.
    pub fn before(total: &Tally) -> Reference {
        let known = total.calls + total.abandoned >= MIN_REFERENCE_CALLS;
        Reference { p99: None, abandon_rate: known.then(|| total.abandon_rate()) }
    }

    /// This reference, brought up to date by a stable window that passed with calls enough.
    pub fn after(self, stable: &Tally) -> Reference {
        Reference {
            p99: if stable.calls >= MIN_REFERENCE_CALLS { stable.p99() } else { self.p99 },
            abandon_rate: if stable.calls + stable.abandoned >= MIN_REFERENCE_CALLS {
                Some(stable.abandon_rate())
            } else {
                self.abandon_rate
            },
        }
    }
}

/// What a step came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    Pass(Numbers),
    Fail {
        why: String,
        numbers: Numbers,
    },
    /// The canary answered fewer than `min_calls`: nothing can be said yet.
    TooFew(Numbers),
}

/// Judges a step: the canary's window against the stable revision's (same span of
/// time), `reference` being the stable p99 of an earlier step for when this window's
/// stable calls are too few (the last step, at 100%, gives the stable revision none).
pub fn judge(cfg: &RolloutConfig, canary: &Tally, stable: &Tally, reference: Reference) -> Judgement {
    let stable_p99 = if stable.calls >= MIN_REFERENCE_CALLS { stable.p99() } else { reference.p99 };
    let canary_p99 = canary.p99();
    let floor = |d: Duration| d.max(cfg.p99_floor).as_secs_f64();
    let p99_ratio = match (canary_p99, stable_p99) {
        (Some(c), Some(s)) if floor(s) > 0.0 => Some(floor(c) / floor(s)),
        _ => None,
    };
    let numbers = Numbers {
        canary_calls: canary.calls,
        canary_failed: canary.failed,
        error_rate: canary.error_rate(),
        stable_calls: stable.calls,
        stable_error_rate: stable.error_rate(),
        canary_abandoned: canary.abandoned,
        stable_abandoned: stable.abandoned,
        canary_p99,
        stable_p99,
        p99_ratio,
    };
    // Calls their callers gave up on before the canary answered (short deadlines, hang-ups)
    // are no answers, so a canary that hangs would only ever have too few calls to judge,
    // and be paused holding its share. Given up on far more often than the stable
    // revision's, they are its failure.
    let routed = canary.calls + canary.abandoned;
    let gone = canary.abandon_rate();
    let stable_gone = if stable.calls + stable.abandoned >= MIN_REFERENCE_CALLS {
        Some(stable.abandon_rate())
    } else {
        reference.abandon_rate
    };
    // Nothing to compare with (no calls before the rollout, nor beside it): only a canary
    // whose callers gave up on most of its calls has surely failed.
    let margin = cfg.max_error_rate.max(ABANDON_MARGIN);
    let allowed = stable_gone.map_or(NO_REFERENCE_ABANDON.max(margin), |stable| stable + margin);
    let against = stable_gone.map_or("an unknown share".to_owned(), |g| format!("{:.1}%", g * 100.0));
    if routed >= cfg.min_calls.max(1) && gone > allowed {
        let why = format!(
            "callers gave up on {:.1}% of its calls ({} of {}) before it answered, against {against} of the stable \
             revision's: over the {:.1}% allowed",
            gone * 100.0,
            canary.abandoned,
            routed,
            allowed * 100.0
        );
        return Judgement::Fail { why, numbers };
    }
    if canary.calls < cfg.min_calls.max(1) {
        return Judgement::TooFew(numbers);
    }
    // A failure rate the stable revision shares in the same window is the world's (a
    // dependency down), not the new version's.
    // Only a stable window with calls enough to say so excuses the canary.
    let excused = stable.calls >= MIN_REFERENCE_CALLS && numbers.error_rate <= numbers.stable_error_rate;
    if numbers.error_rate > cfg.max_error_rate && !excused {
        let why = format!(
            "error rate {:.1}% over max_error_rate {:.1}%",
            numbers.error_rate * 100.0,
            cfg.max_error_rate * 100.0
        );
        return Judgement::Fail { why, numbers };
    }
    if let Some(ratio) = p99_ratio
        && ratio > cfg.max_p99_ratio
    {
        let why = format!("p99 {ratio:.2}x the stable revision's, over max_p99_ratio {}", cfg.max_p99_ratio);
        return Judgement::Fail { why, numbers };
    }
    Judgement::Pass(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::outcomes::Outcomes;

    fn cfg() -> RolloutConfig {
        RolloutConfig { min_calls: 50, ..RolloutConfig::default() }
    }

    /// `calls` calls of `took`, every `fail_every`-th failing (0: none).
    fn window(calls: u64, fail_every: u64, took: Duration) -> Tally {
        let o = Outcomes::default();
        for n in 1..=calls {
            let code =
                if fail_every > 0 && n.is_multiple_of(fail_every) { tonic::Code::Internal } else { tonic::Code::Ok };
            o.record(code, took);
        }
        o.snapshot()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_canary_like_the_stable_revision_passes() {
        let j = judge(&cfg(), &window(100, 0, ms(2)), &window(1900, 0, ms(2)), Reference::default());
        let Judgement::Pass(n) = j else { panic!("{j:?}") };
        assert_eq!((n.canary_calls, n.stable_calls), (100, 1900));
        assert!((n.p99_ratio.unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_canary_failing_one_call_in_ten_fails_with_its_rate() {
        let j = judge(&cfg(), &window(100, 10, ms(2)), &window(1900, 0, ms(2)), Reference::default());
        let Judgement::Fail { why, numbers } = j else { panic!("{j:?}") };
        assert_eq!(why, "error rate 10.0% over max_error_rate 1.0%");
        assert_eq!(numbers.canary_failed, 10);
        assert_eq!(numbers.to_string().split(';').next().unwrap(), "canary 100 calls, 10 failed (10.0%)");
    }

    #[test]
    fn failures_the_stable_revision_shares_are_not_the_canarys() {
        let j = judge(&cfg(), &window(100, 10, ms(2)), &window(1000, 5, ms(2)), Reference::default());
        assert!(matches!(j, Judgement::Pass(_)), "{j:?}");
        // One failed stable call in one is no excuse.
        let j = judge(&cfg(), &window(100, 1, ms(2)), &window(1, 1, ms(2)), Reference::default());
        assert!(matches!(j, Judgement::Fail { ref why, .. } if why.starts_with("error rate 100.0%")), "{j:?}");
    }

    #[test]
    fn a_canary_three_times_slower_fails_on_its_p99() {
        let j = judge(&cfg(), &window(100, 0, ms(6)), &window(1900, 0, ms(2)), Reference::default());
        let Judgement::Fail { why, numbers } = j else { panic!("{j:?}") };
        assert!(why.starts_with("p99 3.") && why.ends_with("over max_p99_ratio 2"), "{why}");
        assert!(numbers.p99_ratio.unwrap() > 2.5 && numbers.p99_ratio.unwrap() < 3.6, "{numbers:?}");
    }

    #[test]
    fn latencies_under_the_floor_are_not_judged_as_ratios() {
        // 300 µs against 100 µs is three times, but both are under the 1 ms floor.
        let j = judge(
            &cfg(),
            &window(100, 0, Duration::from_micros(300)),
            &window(1900, 0, Duration::from_micros(100)),
            Reference::default(),
        );
        assert!(matches!(j, Judgement::Pass(_)), "{j:?}");
    }

    #[test]
    fn too_few_canary_calls_say_nothing() {
        let j = judge(&cfg(), &window(49, 1, ms(50)), &window(1900, 0, ms(2)), Reference::default());
        assert!(matches!(j, Judgement::TooFew(ref n) if n.canary_calls == 49), "{j:?}");
    }

    #[test]
    fn the_last_step_is_held_to_an_earlier_steps_stable_p99() {
        let slow = window(100, 0, ms(6));
        let none = Tally::default();
        let Judgement::Fail { numbers, .. } =
            judge(&cfg(), &slow, &none, Reference { p99: Some(ms(2)), abandon_rate: None })
        else {
            panic!()
        };
        assert_eq!(numbers.stable_p99, Some(ms(2)));
        let Judgement::Pass(n) = judge(&cfg(), &slow, &none, Reference::default()) else {
            panic!("no reference: only errors judge")
        };
        assert!(n.to_string().ends_with(", not judged (the stable revision saw too few calls)"), "{n}");
    }

    /// `calls` answered calls of `took` and `abandoned` calls their callers gave up on.
    fn with_abandoned(calls: u64, abandoned: u64, took: Duration) -> Tally {
        let o = Outcomes::default();
        for _ in 0..calls {
            o.record(tonic::Code::Ok, took);
        }
        for _ in 0..abandoned {
            o.abandoned();
        }
        o.snapshot()
    }

    #[test]
    fn a_canary_whose_callers_give_up_on_every_call_fails_instead_of_having_too_few() {
        // It hangs; its callers' 300 ms deadlines end every call: it answered none.
        let j = judge(&cfg(), &with_abandoned(0, 100, ms(2)), &with_abandoned(100, 0, ms(2)), Reference::default());
        let Judgement::Fail { why, numbers } = j else { panic!("{j:?}") };
        assert_eq!(
            why,
            "callers gave up on 100.0% of its calls (100 of 100) before it answered, against 0.0% of the stable \
             revision's: over the 10.0% allowed"
        );
        assert!(numbers.to_string().contains("; callers gave up on 100 canary and 0 stable calls"), "{numbers}");
        // As often as on the stable revision: fewer answered calls than min_calls say
        // nothing yet.
        let j = judge(&cfg(), &with_abandoned(10, 90, ms(2)), &with_abandoned(100, 900, ms(2)), Reference::default());
        assert!(matches!(j, Judgement::TooFew(_)), "{j:?}");
        // Callers giving up on a few more of the canary's than of the stable's: noise.
        let j = judge(&cfg(), &with_abandoned(95, 5, ms(2)), &with_abandoned(1000, 0, ms(2)), Reference::default());
        assert!(matches!(j, Judgement::Pass(_)), "{j:?}");
    }

    #[test]
    fn without_any_stable_calls_to_compare_only_most_calls_given_up_on_fail_a_canary() {
        let none = Tally::default();
        // Hedged requests, users who go away: callers give up on many calls of a healthy
        // service.
        let j = judge(&cfg(), &with_abandoned(70, 30, ms(2)), &none, Reference::before(&none));
        assert!(matches!(j, Judgement::Pass(_)), "{j:?}");
        let j = judge(&cfg(), &with_abandoned(40, 60, ms(2)), &none, Reference::before(&none));
        let Judgement::Fail { why, .. } = j else { panic!("{j:?}") };
        assert!(why.ends_with("against an unknown share of the stable revision's: over the 50.0% allowed"), "{why}");
        // The stable revision's calls before the rollout: its callers gave up on 30%.
        let before = Reference::before(&with_abandoned(700, 300, ms(2)));
        let j = judge(&cfg(), &with_abandoned(55, 45, ms(2)), &none, before);
        assert!(matches!(j, Judgement::Fail { .. }), "over 30% + 10 points: {j:?}");
    }

    #[test]
    fn the_last_step_is_held_to_an_earlier_steps_share_of_calls_given_up_on() {
        // An earlier step's stable revision lost 30% of its calls to its callers; at 100%
        // the canary has no stable calls beside it.
        let earlier = Reference::default().after(&with_abandoned(70, 30, ms(2)));
        assert_eq!(earlier.abandon_rate, Some(0.3));
        let none = Tally::default();
        let j = judge(&cfg(), &with_abandoned(65, 35, ms(2)), &none, earlier);
        assert!(matches!(j, Judgement::Pass(_)), "as the stable revision did: {j:?}");
        let j = judge(&cfg(), &with_abandoned(50, 50, ms(2)), &none, earlier);
        let Judgement::Fail { why, .. } = j else { panic!("{j:?}") };
        assert!(why.ends_with("against 30.0% of the stable revision's: over the 40.0% allowed"), "{why}");
    }
}
