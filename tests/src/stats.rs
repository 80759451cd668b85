//! Statistics of the benchmarks (`ferry bench` and the cargo benches): nearest-rank percentiles of
//! a sample, and the median of a figure over rounds with its min–max, how every figure is reported
//! (never the best round).

use std::fmt;

/// Percentile (0–100) of an ascending sample, nearest rank; NaN for an empty sample.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "ranks of samples far below 2^52"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Percentile of an unsorted sample.
pub fn percentile_of(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, p)
}

/// Median of an unsorted sample: the middle value, or the mean of the two middle values of an even
/// sample (so the median of two rounds is not simply the lower one); NaN for an empty sample.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Arithmetic mean; NaN for an empty sample.
pub fn mean(values: &[f64]) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "sample sizes far below 2^52")]
    let n = values.len() as f64;
    values.iter().sum::<f64>() / n
}

/// One figure over several rounds: its median (what is quoted) and its min–max (the spread).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The true median of the rounds (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest round.
    pub min: f64,
    /// The largest round.
    pub max: f64,
}

impl Spread {
    /// The spread of per-round values (NaN everywhere for none).
    pub fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Spread {
            median: median(&v),
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// The spread of `f` over rounds.
    pub fn over<R>(rounds: &[R], f: impl Fn(&R) -> f64) -> Spread {
        Spread::of(&rounds.iter().map(f).collect::<Vec<_>>())
    }
}

/// `median [min–max]` with the given number of decimals (`{:.2}` formats with 2).
impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = f.precision().unwrap_or(1);
        write!(f, "{:.p$} [{:.p$}-{:.p$}]", self.median, self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(percentile_of(&[3.0, 1.0, 2.0], 50.0), 2.0);
    }

    #[test]
    fn spread_is_median_with_min_and_max_not_best() {
        // The published figure is the median, never the best round.
        let s = Spread::of(&[3914.0, 3698.0, 2836.0]);
        assert_eq!(
            s,
            Spread {
                median: 3698.0,
                min: 2836.0,
                max: 3914.0
            }
        );
        assert_eq!(format!("{s:.0}"), "3698 [2836-3914]");
        assert_eq!(
            format!("{:.2}", Spread::of(&[1.0, 2.5])),
            "1.75 [1.00-2.50]"
        );
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
        let rounds = [(1.0, 10.0), (3.0, 30.0), (2.0, 20.0)];
        assert_eq!(Spread::over(&rounds, |r| r.1).median, 20.0);
    }
}
