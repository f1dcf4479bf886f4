//! Whether a series of samples rises in a sustained way: the statistics the leak watch
//! judges a window of usage by, pure (no clock, no I/O) so that the tests below, on
//! synthetic series, are its specification.
//!
//! A window is judged rising when all of these hold:
//!
//! 1. **Mann-Kendall** says it rises: the count of rising pairs minus falling pairs, over
//!    every pair of samples, is significant at `alpha` (one-sided, normal approximation
//!    with the correction for ties). The test is rank-based: it only asks which of two
//!    samples is larger, so one wild sample moves it by at most one pair per other sample,
//!    and it assumes no distribution of the noise (memory and fd counts are anything but
//!    normal: flat with jumps, quantised, skewed). A least-squares slope with a t-test
//!    assumes normal residuals and is pulled far by one outlier.
//! 2. **Sen's slope** (the median of the slopes of every pair) is the rate reported, and it
//!    is positive. It is the estimator that goes with Mann-Kendall: robust in the same way
//!    (up to 29% of the samples may be wild before it moves without bound).
//! 3. **The rise is spread over the window** (the change-point rule). A trend test alone
//!    flags a single step that then stays flat: every pair across the step rises, none
//!    falls. So the window is cut in thirds, and the *floor* (the lowest sample) of each
//!    third must rise over the previous third's floor by at least half of what Sen's slope
//!    predicts for a third, by at least an eighth of the usage's own swing inside a
//!    third (the median over the thirds of max - min), and each of the two rises must be at
//!    least a quarter of the whole rise of the floors. A single step raises at most one
//!    of the two floor-to-floor differences: the third that holds the step still holds the
//!    samples before it, so its floor is the old level. Usage that saws up and down with a
//!    period up to a third of the window has a full period in each third, so every third
//!    reaches the same floor: its floor-to-floor rises are nothing next to its swing. A
//!    leak under a sawtooth (a garbage collector that never gets back to where it was)
//!    lifts the floors, and is flagged, as it should be.
//! 4. **It still rises at the end**: Sen's slope over the last third is at least half of
//!    the window's. A warm-up that rose over the first two thirds and then levelled off is
//!    no leak, and a rate that is no longer there cannot say when a limit is reached.
//!
//! A series too short to have three samples in each third is never judged rising.

/// Fewer points than this and nothing is judged: three per third.
pub const MIN_POINTS: usize = 9;
/// Each third's floor must rise by at least this share of the whole rise of the floors:
/// a step puts all of it in one of the two moves, a leak about half in each.
const SPREAD_SHARE: f64 = 0.25;
/// And by at least this share of the usage's own swing inside a third: the floors of a
/// sawtooth sampled once a second differ by a sample's worth of its ramp, far less.
const SWING_SHARE: f64 = 0.125;

/// Why a window is, or is not, judged rising.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Too few samples to judge.
    TooShort,
    /// Mann-Kendall finds no significant rise, or Sen's slope is not positive.
    NoTrend,
    /// A rise, but not spread over the window: a step, or a sawtooth.
    NotSpread,
    /// A rise that has stopped before the window's end.
    Stopped,
    /// A sustained rise.
    Rising,
}

/// What [`judge`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub why: Why,
    /// Sen's slope, in value units per time unit of the points.
    pub slope: f64,
    /// The one-sided Mann-Kendall p-value of a rise (1 when nothing was computed).
    pub p: f64,
    /// The level the robust line (Sen's slope through the median intercept) reaches at
    /// the last point: what a limit is counted down from.
    pub level: f64,
}

impl Verdict {
    pub fn rising(&self) -> bool {
        self.why == Why::Rising
    }
}

/// Judges `points` (time, value), in increasing time, at significance `alpha`.
pub fn judge(points: &[(f64, f64)], alpha: f64) -> Verdict {
    let mut v = Verdict { why: Why::TooShort, slope: 0.0, p: 1.0, level: points.last().map_or(0.0, |p| p.1) };
    if points.len() < MIN_POINTS {
        return v;
    }
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    v.p = mann_kendall_p(&values);
    v.slope = sen_slope(points);
    v.level = level_at_end(points, v.slope);
    if v.p >= alpha || v.slope <= 0.0 {
        v.why = Why::NoTrend;
        return v;
    }
    let n = points.len();
    let thirds = [&points[..n / 3], &points[n / 3..2 * n / 3], &points[2 * n / 3..]];
    let third_span = (points[n - 1].0 - points[0].0) / 3.0;
    let floor = |s: &[(f64, f64)]| s.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let swing = |s: &[(f64, f64)]| s.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max) - floor(s);
    let floors = thirds.map(floor);
    let mut swings = thirds.map(swing);
    swings.sort_by(f64::total_cmp);
    let need = (0.5 * v.slope * third_span).max(SWING_SHARE * swings[1]).max(SPREAD_SHARE * (floors[2] - floors[0]));
    if floors.windows(2).any(|w| w[1] - w[0] < need || w[1] - w[0] <= 0.0) {
        v.why = Why::NotSpread;
        return v;
    }
    if sen_slope(thirds[2]) < 0.5 * v.slope {
        v.why = Why::Stopped;
        return v;
    }
    v.why = Why::Rising;
    v
}

/// The one-sided p-value of the Mann-Kendall test for a rise in `values` (in order).
pub fn mann_kendall_p(values: &[f64]) -> f64 {
    let n = values.len();
    let mut s: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            s += match values[j].partial_cmp(&values[i]) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
        }
    }
    // The variance of S under no trend, less what groups of tied values take away.
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let term = |t: f64| t * (t - 1.0) * (2.0 * t + 5.0);
    let mut var = term(n as f64);
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && sorted[j] == sorted[i] {
            j += 1;
        }
        var -= term((j - i) as f64);
        i = j;
    }
    var /= 18.0;
    if var <= 0.0 || s <= 0 {
        return 1.0;
    }
    // The continuity correction: S moves in steps of 2.
    let z = (s as f64 - 1.0) / var.sqrt();
    normal_upper_tail(z)
}

/// Sen's slope: the median of the slopes between every pair of points.
pub fn sen_slope(points: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dt = b.0 - a.0;
            if dt > 0.0 {
                slopes.push((b.1 - a.1) / dt);
            }
        }
    }
    median(&mut slopes).unwrap_or(0.0)
}

/// Where the line of slope `slope` through the median intercept is at the last point.
fn level_at_end(points: &[(f64, f64)], slope: f64) -> f64 {
    let mut intercepts: Vec<f64> = points.iter().map(|p| p.1 - slope * p.0).collect();
    let b = median(&mut intercepts).unwrap_or(0.0);
    points.last().map_or(b, |p| b + slope * p.0)
}

/// The median (mean of the middle two for an even count); reorders `v`.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let (mid, odd) = (v.len() / 2, v.len() % 2 == 1);
    let (lower, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if odd {
        return Some(m);
    }
    let below = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((below + m) / 2.0)
}

/// At most `max` points from `samples` (time, value), in order: consecutive samples
/// grouped into buckets of equal count, each the median of its values at the mean of its
/// times. Keeps the cost of a judgement (quadratic in the points) bounded whatever the
/// window, and a median per bucket keeps one wild sample out.
pub fn reduce(samples: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if samples.len() <= max || max == 0 {
        return samples.to_vec();
    }
    let per = samples.len().div_ceil(max);
    samples
        .chunks(per)
        .map(|c| {
            let t = c.iter().map(|p| p.0).sum::<f64>() / c.len() as f64;
            let mut v: Vec<f64> = c.iter().map(|p| p.1).collect();
            (t, median(&mut v).unwrap_or(0.0))
        })
        .collect()
}

/// P(Z > z) for a standard normal Z. std has no erfc, and this one function is not worth
/// a statistics crate: the Chebyshev fit of Numerical Recipes (`erfcc`), relative error
/// below 1.2e-7 everywhere, far finer than any significance level an operator sets.
pub fn normal_upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHA: f64 = 0.01;
    /// Ten minutes of one sample a second, reduced as the watch reduces them.
    const WINDOW: usize = 600;
    const POINTS: usize = 60;

    /// A reproducible source of noise: xorshift, with Box-Muller for normal deviates.
    struct Noise(u64);
    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform().max(1e-12), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    fn series(n: usize, mut f: impl FnMut(usize) -> f64) -> Vec<(f64, f64)> {
        (0..n).map(|i| (i as f64, f(i))).collect()
    }

    fn window(f: impl FnMut(usize) -> f64) -> Verdict {
        judge(&reduce(&series(WINDOW, f), POINTS), ALPHA)
    }

    /// 100 MiB of baseline, in bytes.
    const BASE: f64 = 100.0 * 1048576.0;
    const MIB: f64 = 1048576.0;

    #[test]
    fn a_steady_rise_is_flagged_with_its_rate() {
        // 2.4 MiB a minute.
        let v = window(|i| BASE + 2.4 * MIB * i as f64 / 60.0);
        assert_eq!(v.why, Why::Rising, "{v:?}");
        assert!((v.slope * 60.0 / MIB - 2.4).abs() < 0.01, "{v:?}");
        assert!(v.p < 1e-6, "{v:?}");
        // At the last point: the middle of the last bucket of ten seconds, 594.5 s.
        assert!((v.level - (BASE + 2.4 * MIB * 594.5 / 60.0)).abs() < 0.01 * MIB, "{v:?}");
    }

    #[test]
    fn a_steady_rise_is_flagged_in_a_short_window_of_raw_samples_too() {
        // 15 one-second samples, one fd more each second.
        let v = judge(&series(15, |i| 20.0 + i as f64), ALPHA);
        assert_eq!(v.why, Why::Rising, "{v:?}");
        assert_eq!(v.slope, 1.0);
    }

    #[test]
    fn a_noisy_rise_is_flagged() {
        let mut noise = Noise(7);
        let v = window(|i| BASE + 2.0 * MIB * i as f64 / 60.0 + 2.0 * MIB * noise.normal());
        assert_eq!(v.why, Why::Rising, "{v:?}");
        assert!((v.slope * 60.0 / MIB - 2.0).abs() < 0.2, "{v:?}");
    }

    #[test]
    fn a_rise_with_wild_outliers_is_flagged_at_its_rate() {
        let v = window(|i| {
            let spike = if i % 97 == 0 { 500.0 * MIB } else { 0.0 };
            BASE + MIB * i as f64 / 60.0 + spike
        });
        assert_eq!(v.why, Why::Rising, "{v:?}");
        assert!((v.slope * 60.0 / MIB - 1.0).abs() < 0.05, "{v:?}");
    }

    #[test]
    fn a_leak_under_a_sawtooth_is_flagged() {
        // A collector that frees 20 MiB each minute, but never gets back to where it was.
        let v = window(|i| BASE + 20.0 * MIB * (i % 60) as f64 / 60.0 + MIB * i as f64 / 60.0);
        assert_eq!(v.why, Why::Rising, "{v:?}");
    }

    #[test]
    fn flat_usage_with_noise_is_not_flagged() {
        for seed in 1..20 {
            let mut noise = Noise(seed);
            let v = window(|_| BASE + MIB * noise.normal());
            assert!(!v.rising(), "seed {seed}: {v:?}");
        }
    }

    #[test]
    fn constant_usage_is_not_flagged() {
        let v = window(|_| BASE);
        assert_eq!(v.why, Why::NoTrend, "{v:?}");
        assert_eq!((v.p, v.slope), (1.0, 0.0));
        assert_eq!(judge(&series(15, |_| 7.0), ALPHA).why, Why::NoTrend);
    }

    #[test]
    fn falling_usage_is_not_flagged() {
        assert_eq!(window(|i| BASE - MIB * i as f64 / 60.0).why, Why::NoTrend);
    }

    #[test]
    fn a_sawtooth_of_a_period_up_to_a_third_of_the_window_is_never_flagged() {
        // Rises for a period, drops back, again: every period from 2 s to exactly a third
        // of the window, at every phase, with and without noise.
        for period in (2..=WINDOW / 3).step_by(7).chain([WINDOW / 3]) {
            for phase in [0, period / 4, period / 2, 3 * period / 4, period - 1] {
                let saw = |i: usize| BASE + 50.0 * MIB * ((i + phase) % period) as f64 / period as f64;
                let v = window(saw);
                assert!(!v.rising(), "period {period} phase {phase}: {v:?}");
                let mut noise = Noise((period * 1000 + phase + 1) as u64);
                let v = window(|i| saw(i) + 0.5 * MIB * noise.normal());
                assert!(!v.rising(), "noisy, period {period} phase {phase}: {v:?}");
            }
        }
    }

    #[test]
    fn a_sawtooth_in_a_short_window_of_raw_samples_is_not_flagged() {
        for period in 2..=5 {
            for phase in 0..period {
                let v = judge(&series(15, |i| 10.0 + ((i + phase) % period) as f64), ALPHA);
                assert!(!v.rising(), "period {period} phase {phase}: {v:?}");
            }
        }
    }

    #[test]
    fn one_step_that_then_stays_flat_is_never_flagged_wherever_it_falls() {
        // A trend test alone flags most of these: every pair across the step rises.
        let (mut positions, mut flagged_by_mann_kendall) = (0, 0);
        for at in (1..WINDOW).step_by(5) {
            let step = |i: usize| if i < at { BASE } else { BASE + 64.0 * MIB };
            let v = window(step);
            assert!(!v.rising(), "step at {at}s: {v:?}");
            positions += 1;
            if v.p < ALPHA {
                flagged_by_mann_kendall += 1;
            }
            let mut noise = Noise(at as u64);
            let v = window(|i| step(i) + 0.3 * MIB * noise.normal());
            assert!(!v.rising(), "noisy step at {at}s: {v:?}");
        }
        assert!(
            flagged_by_mann_kendall * 2 > positions,
            "Mann-Kendall alone flags most steps: {flagged_by_mann_kendall} of {positions}"
        );
    }

    #[test]
    fn a_step_in_a_short_window_of_raw_samples_is_not_flagged() {
        for at in 1..15 {
            let v = judge(&series(15, |i| if i < at { 3.0 } else { 9.0 }), ALPHA);
            assert!(!v.rising(), "step at {at}: {v:?}");
        }
    }

    #[test]
    fn a_rise_that_levelled_off_is_not_flagged() {
        // A cache warming up over the first 60% of the window, then full.
        let v = window(|i| BASE + 40.0 * MIB * (i.min(360) as f64 / 360.0));
        assert_eq!(v.why, Why::Stopped, "{v:?}");
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let v = judge(&series(MIN_POINTS - 1, |i| i as f64), ALPHA);
        assert_eq!(v.why, Why::TooShort);
        assert_eq!(judge(&[], ALPHA).why, Why::TooShort);
    }

    #[test]
    fn the_significance_level_is_what_decides() {
        // A gentle rise in heavy noise: significant at 5%, not at one in a million.
        let mut noise = Noise(3);
        let pts = reduce(&series(WINDOW, |i| BASE + 0.2 * MIB * i as f64 / 60.0 + 8.0 * MIB * noise.normal()), POINTS);
        let p = mann_kendall_p(&pts.iter().map(|p| p.1).collect::<Vec<_>>());
        assert!(p < 0.05 && p > 1e-6, "{p}");
        assert_eq!(judge(&pts, 1e-6).why, Why::NoTrend);
    }

    #[test]
    fn the_normal_tail_and_the_median_are_right() {
        for (z, tail) in [(0.0, 0.5), (1.0, 0.158_655_25), (2.326_347_87, 0.01), (-1.644_853_63, 0.95)] {
            assert!((normal_upper_tail(z) - tail).abs() < 1e-6, "{z}: {}", normal_upper_tail(z));
        }
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        assert_eq!(
            reduce(&series(10, |i| i as f64), 5),
            vec![(0.5, 0.5), (2.5, 2.5), (4.5, 4.5), (6.5, 6.5), (8.5, 8.5)]
        );
    }
}
