//! Summaries of repeated measurements: median, quartiles and range.

/// Median, quartiles and range of a set of measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// First and third quartile (linear interpolation between closest ranks).
    pub q1: f64,
    pub q3: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        let sorted = sorted_finite(values);
        if sorted.is_empty() {
            return Self::default();
        }
        Self {
            n: sorted.len(),
            median: percentile(&sorted, 50.0),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            q1: percentile(&sorted, 25.0),
            q3: percentile(&sorted, 75.0),
        }
    }
}

/// The finite values, smallest first.
fn sorted_finite(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// The `p`th percentile (0..=100) of sorted values, interpolating linearly between
/// the closest ranks (the "R-7" definition spreadsheets use).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// A distribution-free confidence interval for a median.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
    /// The probability that the interval holds the true median (0..1).
    pub coverage: f64,
}

/// The narrowest interval of order statistics, x(k) to x(n+1−k), that holds the
/// median with at least `confidence`: its coverage is 1 − 2·P(Binomial(n, ½) < k),
/// whatever the distribution (emulated runs are skewed, not normal). `None` when
/// even the whole range falls short (fewer than 5 values for 0.9).
pub fn median_interval(values: &[f64], confidence: f64) -> Option<Interval> {
    let sorted = sorted_finite(values);
    let n = sorted.len();
    // P(Binomial(n, ½) ≤ j), built up term by term: C(n, i) / 2^n.
    let mut term = 0.5f64.powi(n as i32);
    let mut below = 0.0;
    let mut best = None;
    for k in 1..=n / 2 {
        below += term;
        term *= (n - (k - 1)) as f64 / k as f64;
        let coverage = 1.0 - 2.0 * below;
        if coverage < confidence {
            break;
        }
        best = Some(Interval {
            lo: sorted[k - 1],
            hi: sorted[n - k],
            coverage,
        });
    }
    best
}

/// Ratios of attached to detached throughput, each attached run against the mean of
/// the detached runs just before and just after it (`D A D A ... D`), so that a
/// machine that slowly speeds up or slows down does not bias the ratio.
pub fn bracketed_ratios(detached: &[f64], attached: &[f64]) -> Vec<f64> {
    attached
        .iter()
        .enumerate()
        .filter_map(|(i, &a)| {
            let before = *detached.get(i)?;
            let after = detached.get(i + 1).copied().unwrap_or(before);
            let base = (before + after) / 2.0;
            (base > 0.0).then(|| a / base)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quartiles() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s.n, 5);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.q1, 2.0);
        assert_eq!(s.q3, 4.0);
        let even = Summary::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(even.median, 2.5);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(Summary::of(&[]).n, 0);
        let one = Summary::of(&[7.0]);
        assert_eq!((one.median, one.min, one.max), (7.0, 7.0, 7.0));
        assert_eq!(percentile(&[1.0, 2.0], 99.0), 1.99);
    }

    #[test]
    fn median_intervals_widen_to_their_confidence() {
        let five = [0.95, 1.10, 0.90, 1.00, 1.05];
        // Five values: only the whole range reaches 90 % (1 − 2/32).
        let i = median_interval(&five, 0.9).unwrap();
        assert_eq!((i.lo, i.hi, i.coverage), (0.90, 1.10, 0.9375));
        assert_eq!(median_interval(&five[..4], 0.9), None);
        // Nine values: the second smallest to the second largest (1 − 2·10/512).
        let nine: Vec<f64> = (1..=9).map(f64::from).collect();
        let i = median_interval(&nine, 0.9).unwrap();
        assert_eq!((i.lo, i.hi), (2.0, 8.0));
        assert!((i.coverage - 0.9609).abs() < 1e-4, "{}", i.coverage);
        assert_eq!(median_interval(&[], 0.9), None);
    }

    #[test]
    fn ratios_use_the_detached_runs_on_both_sides() {
        let r = bracketed_ratios(&[100.0, 110.0, 90.0], &[105.0, 99.0]);
        assert_eq!(r, vec![1.0, 0.99]);
        // A missing trailing detached run falls back to the one before.
        assert_eq!(bracketed_ratios(&[100.0], &[50.0]), vec![0.5]);
    }
}
