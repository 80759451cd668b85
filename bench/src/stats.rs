//! The statistics of `ferry bench` (`bench-reference.md` §7.5): order statistics of a figure over
//! its runs (median, quartiles, min–max, CV), latency percentiles from the runs' HdrHistograms and
//! the "enough samples" rule, the steady-state check of a run's per-second rates, the Mann–Whitney U
//! test and a seeded bootstrap interval for `compare`, Jain's fairness index, and
//! [`summarise`], which fills a [`Report`]'s summaries, ratios to baselines, flags and cost ladder
//! from its runs.
//!
//! Conventions: quantiles interpolate linearly between order statistics (Hyndman–Fan type 7, the
//! default of R and NumPy); the CV is the sample standard deviation (n − 1) over the mean;
//! non-finite values are ignored.

use crate::model::{self, LadderStep, MetricSummary, Ratio, Report, Run};
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, BTreeSet};

/// A run is "not steady" when the CV of its per-second rates exceeds this.
pub const STEADY_MAX_CV: f64 = 0.10;
/// A run is "not steady" when the least-squares trend over its window exceeds this share of the mean.
pub const STEADY_MAX_TREND: f64 = 0.05;
/// The prefix of the run flag [`summarise`] adds for an unsteady run.
pub const NOT_STEADY: &str = "not steady";
/// The result-set flag when no run is valid.
pub const NO_VALID_RUN: &str = "no valid run";
/// The prefix of the result-set flag for a percentile without enough samples.
pub const FEW_SAMPLES: &str = "few samples";

/// Errors reading or writing a run's latency histogram.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    /// The text is not standard base64.
    #[error("latency histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The bytes are not an HdrHistogram V2 (or V2 + deflate) serialisation.
    #[error("latency histogram cannot be read as HdrHistogram V2: {0}")]
    Deserialise(#[from] hdrhistogram::serialization::DeserializeError),
    /// Serialising failed.
    #[error("latency histogram cannot be serialised: {0}")]
    Serialise(#[from] hdrhistogram::serialization::V2SerializeError),
    /// A quantile outside 0..=1 was asked for.
    #[error("quantile {0} is outside 0..=1")]
    Quantile(f64),
    /// The histogram holds no sample.
    #[error("latency histogram is empty")]
    Empty,
}

fn finite_sorted(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor();
    let frac = h - lo;
    let i = index_of(lo);
    let below = sorted[i];
    let above = sorted.get(i + 1).copied().unwrap_or(below);
    Some(below + frac * (above - below))
}

/// `x`, a whole number within the bounds of a slice, as an index.
#[expect(
    clippy::cast_possible_truncation,
    reason = "callers pass floor() or round() of a position inside a slice"
)]
fn index_of(x: f64) -> usize {
    x as usize
}

/// The q-quantile (0..=1) of the finite values, type 7; `None` when there is none or q is outside.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    quantile_sorted(&finite_sorted(values), q)
}

/// The median of the finite values.
pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// First and third quartiles.
pub fn quartiles(values: &[f64]) -> Option<(f64, f64)> {
    let s = finite_sorted(values);
    Some((quantile_sorted(&s, 0.25)?, quantile_sorted(&s, 0.75)?))
}

/// Smallest and largest finite value.
pub fn min_max(values: &[f64]) -> Option<(f64, f64)> {
    let s = finite_sorted(values);
    Some((*s.first()?, *s.last()?))
}

/// Arithmetic mean of the finite values.
pub fn mean(values: &[f64]) -> Option<f64> {
    let s = finite_sorted(values);
    if s.is_empty() {
        return None;
    }
    Some(s.iter().sum::<f64>() / s.len() as f64)
}

/// Sample standard deviation (n − 1); `None` below two values.
pub fn stddev(values: &[f64]) -> Option<f64> {
    let s = finite_sorted(values);
    if s.len() < 2 {
        return None;
    }
    let m = s.iter().sum::<f64>() / s.len() as f64;
    let var = s.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (s.len() - 1) as f64;
    Some(var.sqrt())
}

/// Coefficient of variation: sample standard deviation over the mean (absolute); 0 below two
/// values or for a zero mean.
pub fn cv(values: &[f64]) -> f64 {
    match (stddev(values), mean(values)) {
        (Some(sd), Some(m)) if m != 0.0 => sd / m.abs(),
        _ => 0.0,
    }
}

/// The order statistics of one figure over its runs, as a [`MetricSummary`] without unit, ratio
/// or sample check (`unit` empty, `higher_is_better` true, `enough_samples` true: the caller fills
/// them). With no finite value, `n` is 0 and every figure 0.
pub fn summarise_values(values: &[f64]) -> MetricSummary {
    let s = finite_sorted(values);
    let n = u32::try_from(s.len()).unwrap_or(u32::MAX);
    if s.is_empty() {
        return MetricSummary {
            higher_is_better: true,
            enough_samples: true,
            ..Default::default()
        };
    }
    MetricSummary {
        unit: String::new(),
        higher_is_better: true,
        n,
        median: quantile_sorted(&s, 0.5).unwrap_or_default(),
        min: s[0],
        max: s[s.len() - 1],
        q1: quantile_sorted(&s, 0.25).unwrap_or_default(),
        q3: quantile_sorted(&s, 0.75).unwrap_or_default(),
        cv: cv(&s),
        ratio: None,
        enough_samples: true,
    }
}

/// Jain's fairness index of per-flow rates: (Σx)² / (n · Σx²), 1 when all are equal, 1/n when one
/// flow takes everything. `None` without values or when all are zero.
pub fn jain_fairness(rates: &[f64]) -> Option<f64> {
    let s = finite_sorted(rates);
    let sum_sq: f64 = s.iter().map(|x| x * x).sum();
    if s.is_empty() || sum_sq == 0.0 {
        return None;
    }
    let sum: f64 = s.iter().sum();
    Some(sum * sum / (s.len() as f64 * sum_sq))
}

// ---------------------------------------------------------------------------------------------
// Latency histograms and the "enough samples" rule

/// Decodes a run's histogram: standard base64 of an HdrHistogram V2 (or V2 + deflate) serialisation.
pub fn decode_histogram(b64: &str) -> Result<Histogram<u64>, HistogramError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim())?;
    Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
}

/// Encodes a histogram the way runs carry it: V2 serialiser, standard base64 (with padding).
pub fn encode_histogram(h: &Histogram<u64>) -> Result<String, HistogramError> {
    let mut bytes = Vec::new();
    V2Serializer::new().serialize(h, &mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The q-quantile (0..=1) of a run's latency histogram (recorded in nanoseconds), in microseconds.
pub fn percentile_us(b64: &str, q: f64) -> Result<f64, HistogramError> {
    if !(0.0..=1.0).contains(&q) {
        return Err(HistogramError::Quantile(q));
    }
    let h = decode_histogram(b64)?;
    if h.is_empty() {
        return Err(HistogramError::Empty);
    }
    Ok(h.value_at_quantile(q) as f64 / 1000.0)
}

/// The quantile a metric name stands for: `lat_p99_us` -> 0.99, `lat_p999_us` -> 0.999,
/// `connect_p50_us` -> 0.5; `None` for a metric that is not a percentile (`tps`, `pps`).
pub fn percentile_of_metric(metric: &str) -> Option<f64> {
    metric.split('_').find_map(|seg| {
        let digits = seg.strip_prefix('p')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("0.{digits}").parse().ok()
    })
}

/// The samples a q-quantile needs to be shown: 100 / (1 − q) (p50: 200, p99: 10 000, p99.9:
/// 100 000).
pub fn min_samples(q: f64) -> f64 {
    if q >= 1.0 {
        f64::INFINITY
    } else {
        // Rounded to the nearest whole sample so that 0.99 (not exact in binary) needs 10 000.
        (100.0 / (1.0 - q)).round()
    }
}

/// Whether `samples` suffice to show the q-quantile.
pub fn enough_samples(samples: u64, q: f64) -> bool {
    samples as f64 >= min_samples(q)
}

/// The latency samples of a run: its histogram's count, else its `samples` metric.
pub fn run_samples(run: &Run) -> Option<u64> {
    if let Some(h) = run
        .histogram
        .as_deref()
        .and_then(|b| decode_histogram(b).ok())
    {
        return Some(h.len());
    }
    let s = *run.metrics.get("samples")?;
    // Counts arrive as f64 in the metric map; a negative or non-finite count is meaningless.
    (s.is_finite() && s >= 0.0).then(|| count_of(s))
}

/// A non-negative finite count held as f64, as an integer (rounded down; saturating).
#[expect(
    clippy::cast_possible_truncation,
    reason = "checked finite and non-negative by the caller; `as` saturates above u64::MAX"
)]
fn count_of(x: f64) -> u64 {
    x.floor() as u64
}

// ---------------------------------------------------------------------------------------------
// Steady state

/// The steady-state check of a run's per-second rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Steadiness {
    /// CV of the per-second rates.
    pub cv: f64,
    /// Least-squares slope times the window length (the samples, one per second), over the mean:
    /// how much the fitted rate changes across the window, as a share of the mean (signed).
    pub trend: f64,
    /// CV <= [`STEADY_MAX_CV`] and |trend| <= [`STEADY_MAX_TREND`].
    pub steady: bool,
}

impl Steadiness {
    /// The run flag: `not steady (CV 12 %, trend +3 %)`.
    pub fn flag(&self) -> String {
        format!(
            "{NOT_STEADY} (CV {:.0} %, trend {:+.0} %)",
            self.cv * 100.0,
            self.trend * 100.0
        )
    }
}

/// Checks per-second rates for steadiness; `None` with fewer than 3 samples or a mean <= 0 (no
/// judgement possible).
pub fn steady_state(per_second: &[f64]) -> Option<Steadiness> {
    let y: Vec<f64> = per_second
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if y.len() < 3 {
        return None;
    }
    let n = y.len() as f64;
    let mean_y = y.iter().sum::<f64>() / n;
    if mean_y <= 0.0 {
        return None;
    }
    let mean_x = (n - 1.0) / 2.0;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in y.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (v - mean_y);
        sxx += dx * dx;
    }
    let slope = sxy / sxx;
    let trend = slope * n / mean_y;
    let cv = cv(&y);
    Some(Steadiness {
        cv,
        trend,
        steady: cv <= STEADY_MAX_CV && trend.abs() <= STEADY_MAX_TREND,
    })
}

// ---------------------------------------------------------------------------------------------
// Significance and intervals (compare)

/// The result of a two-sided Mann–Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample (pairs where a > b, ties counting ½).
    pub u: f64,
    /// Two-sided p-value.
    pub p: f64,
    /// True when `p` is exact (no ties, small samples), false for the normal approximation.
    pub exact: bool,
}

/// Largest n1·n2 for which the exact distribution of U is computed (no ties).
const EXACT_MAX_PAIRS: usize = 400;

/// Two-sided Mann–Whitney U test of `a` against `b`: exact distribution when there are no ties and
/// n1·n2 <= 400, otherwise the normal approximation with tie correction and continuity correction.
/// `None` when a sample is empty.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let a = finite_sorted(a);
    let b = finite_sorted(b);
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    // Ranks of the pooled sample, average ranks for ties.
    let mut pooled: Vec<(f64, bool)> = a.iter().map(|&x| (x, true)).collect();
    pooled.extend(b.iter().map(|&x| (x, false)));
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i;
        while j + 1 < pooled.len() && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        rank_sum_a += avg_rank * pooled[i..=j].iter().filter(|p| p.1).count() as f64;
        i = j + 1;
    }
    let (f1, f2) = (n1 as f64, n2 as f64);
    let u = rank_sum_a - f1 * (f1 + 1.0) / 2.0;
    if tie_term == 0.0 && n1 * n2 <= EXACT_MAX_PAIRS {
        let counts = u_distribution(n1, n2);
        let total: f64 = counts.iter().sum();
        // U is a whole number without ties.
        let k = index_of(u.round());
        let lower: f64 = counts[..=k].iter().sum::<f64>() / total;
        let upper: f64 = counts[k..].iter().sum::<f64>() / total;
        return Some(MannWhitney {
            u,
            p: (2.0 * lower.min(upper)).min(1.0),
            exact: true,
        });
    }
    let n = f1 + f2;
    let mu = f1 * f2 / 2.0;
    let var = f1 * f2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var <= 0.0 {
        return Some(MannWhitney {
            u,
            p: 1.0,
            exact: false,
        });
    }
    let z = ((u - mu).abs() - 0.5).max(0.0) / var.sqrt();
    Some(MannWhitney {
        u,
        p: erfc(z / std::f64::consts::SQRT_2).min(1.0),
        exact: false,
    })
}

/// Number of orderings of n1 + n2 distinct values giving each U = 0..=n1·n2.
fn u_distribution(n1: usize, n2: usize) -> Vec<f64> {
    // f[i][j][u]: counts for samples of sizes i and j; f(i, j, u) = f(i-1, j, u-j) + f(i, j-1, u).
    let max = n1 * n2;
    let mut prev_row: Vec<Vec<f64>> = (0..=n2)
        .map(|_| {
            let mut v = vec![0.0; max + 1];
            v[0] = 1.0;
            v
        })
        .collect();
    for _ in 1..=n1 {
        let mut row: Vec<Vec<f64>> = Vec::with_capacity(n2 + 1);
        let mut first = vec![0.0; max + 1];
        first[0] = 1.0;
        row.push(first);
        for j in 1..=n2 {
            let mut v = vec![0.0; max + 1];
            for (u, slot) in v.iter_mut().enumerate() {
                let from_a = if u >= j { prev_row[j][u - j] } else { 0.0 };
                *slot = from_a + row[j - 1][u];
            }
            row.push(v);
        }
        prev_row = row;
    }
    prev_row.swap_remove(n2)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, fractional error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// A small deterministic generator (SplitMix64) for the bootstrap: the same seed gives the same
/// interval on every machine and every version, which a library RNG does not promise.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0), by rejection (no modulo bias).
    fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        let zone = u64::MAX - u64::MAX % n64;
        loop {
            let x = self.next_u64();
            if x < zone {
                return usize::try_from(x % n64).unwrap_or(0);
            }
        }
    }
}

/// Percentile bootstrap interval (confidence `level`, e.g. 0.95) of median(b) / median(a), with
/// `resamples` resamplings of each sample drawn from a SplitMix64 seeded with `seed`. `None` when a
/// sample is empty or resamples is 0; resamples whose median(a) is 0 are skipped.
pub fn bootstrap_ratio_ci(
    a: &[f64],
    b: &[f64],
    resamples: u32,
    level: f64,
    seed: u64,
) -> Option<(f64, f64)> {
    let a = finite_sorted(a);
    let b = finite_sorted(b);
    if a.is_empty() || b.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let mut ratios = Vec::with_capacity(resamples as usize);
    let mut ra = vec![0.0; a.len()];
    let mut rb = vec![0.0; b.len()];
    for _ in 0..resamples {
        for x in ra.iter_mut() {
            *x = a[rng.below(a.len())];
        }
        for x in rb.iter_mut() {
            *x = b[rng.below(b.len())];
        }
        let (ma, mb) = (median(&ra)?, median(&rb)?);
        if ma != 0.0 {
            ratios.push(mb / ma);
        }
    }
    let tail = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    let s = finite_sorted(&ratios);
    Some((quantile_sorted(&s, tail)?, quantile_sorted(&s, 1.0 - tail)?))
}

// ---------------------------------------------------------------------------------------------
// The report

/// Valid runs: not flagged invalid and without an error.
fn valid_runs(runs: &[Run]) -> impl Iterator<Item = &Run> {
    runs.iter().filter(|r| r.valid && r.error.is_none())
}

/// (path, test, params) -> round -> metric -> value over valid runs (median when a round has
/// several).
type RoundValues = BTreeMap<u32, BTreeMap<String, f64>>;

fn round_values(rs: &model::ResultSet) -> RoundValues {
    let mut by_round: BTreeMap<u32, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for run in valid_runs(&rs.runs) {
        let m = by_round.entry(run.round).or_default();
        for (k, v) in &run.metrics {
            m.entry(k.clone()).or_default().push(*v);
        }
    }
    by_round
        .into_iter()
        .map(|(round, m)| {
            let vals = m
                .into_iter()
                .filter_map(|(k, vs)| Some((k, median(&vs)?)))
                .collect();
            (round, vals)
        })
        .collect()
}

/// Removes NaN and infinite metric values (JSON has no such numbers: serde writes `null`, which
/// would not read back) and flags the run once per metric; drops non-finite per-second samples.
fn drop_non_finite(run: &mut Run) {
    let bad: Vec<(String, f64)> = run
        .metrics
        .iter()
        .filter(|(_, v)| !v.is_finite())
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (k, v) in bad {
        run.metrics.remove(&k);
        run.flags.push(format!("{k} was {v}: dropped"));
    }
    run.per_second.retain(|v| v.is_finite());
}

/// Parameters other than `engine`.
fn without_engine(params: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    params
        .iter()
        .filter(|(k, _)| k.as_str() != "engine")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Adds `not steady (...)` to a run whose per-second rates fail the steady-state check, once.
/// The run stays valid (the flag marks it doubtful; the table shows it).
pub fn flag_unsteady(run: &mut Run) {
    if run.flags.iter().any(|f| f.starts_with(NOT_STEADY)) {
        return;
    }
    if let Some(s) = steady_state(&run.per_second) {
        if !s.steady {
            run.flags.push(s.flag());
        }
    }
}

/// Fills the report's derived parts from its runs: the steady-state flag of every run, every
/// result set's `summary` (over valid runs; units from [`model::unit_of`]; `ratio` to the same
/// metric of the same test and parameters on the path's baseline, per round; `enough_samples`),
/// the result sets' `no valid run` / `few samples` flags, and the cost ladder. Idempotent.
pub fn summarise(report: &mut Report) {
    for rs in &mut report.results {
        for run in &mut rs.runs {
            drop_non_finite(run);
            flag_unsteady(run);
        }
    }
    let baseline_of: BTreeMap<&str, &str> = report
        .paths
        .iter()
        .filter_map(|p| Some((p.id.as_str(), p.baseline.as_deref()?)))
        .collect();
    let per_round: BTreeMap<(String, String, BTreeMap<String, String>), RoundValues> = report
        .results
        .iter()
        .map(|rs| {
            (
                (rs.path.clone(), rs.test.clone(), rs.params.clone()),
                round_values(rs),
            )
        })
        .collect();
    let mut summaries = Vec::with_capacity(report.results.len());
    for rs in &report.results {
        let rounds = &per_round[&(rs.path.clone(), rs.test.clone(), rs.params.clone())];
        let baseline = baseline_of.get(rs.path.as_str()).map(|b| {
            let key = (b.to_string(), rs.test.clone(), rs.params.clone());
            // The same parameters; failing that, the same but for the engine (iperf3 on pod-IP
            // paths, the built-in generator behind a Service) when exactly one set matches.
            let found = per_round.get(&key).or_else(|| {
                let mut same: Vec<&RoundValues> = per_round
                    .iter()
                    .filter(|((p, t, params), _)| {
                        p == b
                            && *t == rs.test
                            && without_engine(params) == without_engine(&rs.params)
                    })
                    .map(|(_, v)| v)
                    .collect();
                (same.len() == 1).then(|| same.remove(0))
            });
            (*b, found)
        });
        let samples: Vec<u64> = valid_runs(&rs.runs).filter_map(run_samples).collect();
        let fewest = samples.iter().min().copied();
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for run in valid_runs(&rs.runs) {
            names.extend(run.metrics.keys().map(String::as_str));
        }
        let mut summary = BTreeMap::new();
        let mut flags = Vec::new();
        for name in names {
            let values: Vec<f64> = valid_runs(&rs.runs)
                .filter_map(|r| r.metrics.get(name).copied())
                .collect();
            let mut s = summarise_values(&values);
            if s.n == 0 {
                continue;
            }
            let (unit, higher) = model::unit_of(name);
            s.unit = unit.to_string();
            s.higher_is_better = higher;
            if let (Some(q), Some(have)) = (percentile_of_metric(name), fewest) {
                s.enough_samples = enough_samples(have, q);
                if !s.enough_samples {
                    flags.push(format!(
                        "{FEW_SAMPLES} for {name} ({have} per run, needs {:.0})",
                        min_samples(q)
                    ));
                }
            }
            if let Some((bid, Some(base))) = baseline {
                let ratios: Vec<f64> = rounds
                    .iter()
                    .filter_map(|(round, m)| {
                        let mine = m.get(name)?;
                        let theirs = base.get(round)?.get(name)?;
                        (*theirs != 0.0).then(|| mine / theirs)
                    })
                    .collect();
                let r = summarise_values(&ratios);
                if r.n > 0 {
                    s.ratio = Some(Ratio {
                        baseline: bid.to_string(),
                        median: r.median,
                        min: r.min,
                        max: r.max,
                    });
                }
            }
            summary.insert(name.to_string(), s);
        }
        if valid_runs(&rs.runs).next().is_none() {
            flags.insert(0, NO_VALID_RUN.to_string());
        }
        summaries.push((summary, flags));
    }
    for (rs, (summary, flags)) in report.results.iter_mut().zip(summaries) {
        rs.summary = summary;
        rs.flags
            .retain(|f| f != NO_VALID_RUN && !f.starts_with(FEW_SAMPLES));
        rs.flags.extend(flags);
    }
    report.ladder = ladder(report);
}

/// One rung of the cost ladder: the sum of `plus` minus the sum of `minus`, per round.
#[derive(Debug, Clone, PartialEq)]
pub struct Rung {
    /// The layer's name.
    pub layer: String,
    /// `S2-ebpf - P2-vxlan`.
    pub formula: String,
    /// Paths added.
    pub plus: Vec<String>,
    /// Paths subtracted.
    pub minus: Vec<String>,
    /// The path the layer is added on top of, and the paths whose difference is added to it, for
    /// drawing the waterfall: the rung starts at `from + (extra.0 - extra.1)`.
    pub from: String,
    /// `(L2, L1)` for encapsulation (the underlay's own cost), none otherwise.
    pub extra: Option<(String, String)>,
}

/// The rungs the report's paths allow (whether measured or not): veth + netns (L1 − L0), bridge +
/// netfilter (P1 − L1), encapsulation per backend (P2-b − P1 − (L2 − L1)), Service LB per mode with
/// a local (S1-m − P1) and a remote backend (S2-m − its P2 baseline, else P2-vxlan), SNAT (E1 − E0).
pub fn ladder_rungs(report: &Report) -> Vec<Rung> {
    let ids: Vec<&str> = report.paths.iter().map(|p| p.id.as_str()).collect();
    let s = |x: &str| x.to_string();
    let simple = |layer: String, hi: &str, lo: &str| Rung {
        layer,
        formula: format!("{hi} - {lo}"),
        plus: vec![s(hi)],
        minus: vec![s(lo)],
        from: s(lo),
        extra: None,
    };
    let mut rungs = vec![
        simple(s("veth + netns"), "L1", "L0"),
        simple(s("bridge + netfilter"), "P1", "L1"),
    ];
    for id in &ids {
        if let Some(b) = id.strip_prefix("P2-") {
            rungs.push(Rung {
                layer: format!("encapsulation ({b})"),
                formula: format!("{id} - P1 - (L2 - L1)"),
                plus: vec![s(id), s("L1")],
                minus: vec![s("P1"), s("L2")],
                from: s("P1"),
                extra: Some((s("L2"), s("L1"))),
            });
        }
    }
    for id in &ids {
        if let Some(m) = id.strip_prefix("S1-") {
            rungs.push(simple(format!("Service LB ({m}, local backend)"), id, "P1"));
        }
    }
    for p in &report.paths {
        if let Some(m) = p.id.strip_prefix("S2-") {
            let remote = p
                .baseline
                .as_deref()
                .filter(|b| b.starts_with("P2-"))
                .unwrap_or("P2-vxlan");
            rungs.push(simple(
                format!("Service LB ({m}, remote backend)"),
                &p.id,
                remote,
            ));
        }
    }
    rungs.push(simple(s("SNAT"), "E1", "E0"));
    rungs
}

/// Per path, per round: the metric of `tcp_rr` with 1-byte messages (one flow) over valid runs.
pub fn rr_by_round(report: &Report, metric: &str) -> BTreeMap<String, BTreeMap<u32, f64>> {
    let mut out: BTreeMap<String, BTreeMap<u32, f64>> = BTreeMap::new();
    for rs in &report.results {
        let one_flow = rs.params.get("flows").is_none_or(|f| f == "1");
        if rs.test != "tcp_rr"
            || rs.params.get("size").map(String::as_str) != Some("1")
            || !one_flow
        {
            continue;
        }
        for (round, m) in round_values(rs) {
            if let Some(v) = m.get(metric) {
                out.entry(rs.path.clone()).or_default().insert(round, *v);
            }
        }
    }
    out
}

fn rung_by_round(rung: &Rung, by_path: &BTreeMap<String, BTreeMap<u32, f64>>) -> Vec<f64> {
    let Some(first) = rung.plus.first().and_then(|p| by_path.get(p)) else {
        return Vec::new();
    };
    first
        .keys()
        .filter_map(|round| {
            let get = |p: &String| by_path.get(p)?.get(round).copied();
            let plus: Option<f64> = rung.plus.iter().map(get).sum();
            let minus: Option<f64> = rung.minus.iter().map(get).sum();
            Some(plus? - minus?)
        })
        .collect()
}

/// The cost ladder from `tcp_rr` (size 1) `lat_p50_us` of the rungs present: per round the
/// difference, then median, min and max over rounds; `cpu_us` likewise from `cpu_us_per_txn` when
/// every term has it. Rungs with a missing path (or no common round) are left out.
pub fn ladder(report: &Report) -> Vec<LadderStep> {
    let lat = rr_by_round(report, "lat_p50_us");
    let cpu = rr_by_round(report, "cpu_us_per_txn");
    ladder_rungs(report)
        .into_iter()
        .filter_map(|rung| {
            let diffs = rung_by_round(&rung, &lat);
            let s = summarise_values(&diffs);
            if s.n == 0 {
                return None;
            }
            let c = summarise_values(&rung_by_round(&rung, &cpu));
            Some(LadderStep {
                layer: rung.layer,
                formula: rung.formula,
                us: s.median,
                min_us: s.min,
                max_us: s.max,
                cpu_us: (c.n > 0).then_some(c.median),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PathInfo, ResultSet};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0, 3.0]), Some(2.0));
    }

    #[test]
    fn quartiles_type_7() {
        // [1..5]: h = 4·0.25 = 1 -> 2; h = 3 -> 4.
        assert_eq!(quartiles(&[5.0, 4.0, 3.0, 2.0, 1.0]), Some((2.0, 4.0)));
        // [1..4]: h = 0.75 -> 1.75; h = 2.25 -> 3.25.
        assert_eq!(quartiles(&[1.0, 2.0, 3.0, 4.0]), Some((1.75, 3.25)));
        assert_eq!(quantile(&[1.0, 2.0], 1.5), None);
        assert_eq!(quantile(&[10.0, 20.0, 30.0], 1.0), Some(30.0));
    }

    #[test]
    fn mean_sd_cv() {
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&v), Some(5.0));
        // Σ(x − 5)² = 32, / 7.
        assert!(close(stddev(&v).unwrap(), (32.0f64 / 7.0).sqrt(), 1e-12));
        assert!(close(cv(&v), (32.0f64 / 7.0).sqrt() / 5.0, 1e-12));
        assert_eq!(cv(&[3.0]), 0.0);
        let s = summarise_values(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.n, s.median, s.min, s.max), (4, 2.5, 1.0, 10.0));
        assert_eq!((s.q1, s.q3), (1.75, 4.75));
        assert_eq!(summarise_values(&[]).n, 0);
    }

    #[test]
    fn jain() {
        assert_eq!(jain_fairness(&[5.0, 5.0, 5.0, 5.0]), Some(1.0));
        assert_eq!(jain_fairness(&[8.0, 0.0, 0.0, 0.0]), Some(0.25));
        // (1 + 3)² / (2 · 10) = 0.8
        assert!(close(jain_fairness(&[1.0, 3.0]).unwrap(), 0.8, 1e-12));
        assert_eq!(jain_fairness(&[0.0, 0.0]), None);
    }

    #[test]
    fn enough_samples_rule() {
        assert_eq!(min_samples(0.99), 10_000.0);
        assert_eq!(min_samples(0.999), 100_000.0);
        assert_eq!(min_samples(0.5), 200.0);
        assert!(enough_samples(10_000, 0.99));
        assert!(!enough_samples(9_999, 0.99));
        assert!(!enough_samples(99_999, 0.999));
        assert!(enough_samples(100_000, 0.999));
        assert_eq!(percentile_of_metric("lat_p99_us"), Some(0.99));
        assert_eq!(percentile_of_metric("lat_p999_us"), Some(0.999));
        assert_eq!(percentile_of_metric("connect_p50_us"), Some(0.5));
        assert_eq!(percentile_of_metric("lat_p90_us"), Some(0.9));
        assert_eq!(percentile_of_metric("pps"), None);
        assert_eq!(percentile_of_metric("tps"), None);
        assert_eq!(percentile_of_metric("lat_mean_us"), None);
    }

    #[test]
    fn histogram_percentiles_round_trip() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        // 1..=1000 µs in ns, one each.
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let b64 = encode_histogram(&h).unwrap();
        let back = decode_histogram(&b64).unwrap();
        assert_eq!(back.len(), 1000);
        let p50 = percentile_us(&b64, 0.5).unwrap();
        let p99 = percentile_us(&b64, 0.99).unwrap();
        // Three significant digits: within 0.1 %.
        assert!(close(p50, 500.0, 0.5), "{p50}");
        assert!(close(p99, 990.0, 1.0), "{p99}");
        assert!(matches!(
            percentile_us(&b64, 1.5),
            Err(HistogramError::Quantile(_))
        ));
        assert!(matches!(
            decode_histogram("not base64!"),
            Err(HistogramError::Base64(_))
        ));
        assert!(matches!(
            decode_histogram("AAAA"),
            Err(HistogramError::Deserialise(_))
        ));
        let run = Run {
            histogram: Some(b64),
            ..Default::default()
        };
        assert_eq!(run_samples(&run), Some(1000));
        let run = Run {
            metrics: [("samples".to_string(), 42.0)].into(),
            ..Default::default()
        };
        assert_eq!(run_samples(&run), Some(42));
    }

    #[test]
    fn steady_state_flags() {
        let flat = steady_state(&[100.0, 101.0, 99.0, 100.0, 100.0]).unwrap();
        assert!(flat.steady, "{flat:?}");
        // A ramp: mean 100, slope 5/s over 5 s -> trend 25 %; CV √62.5 / 100 = 7.9 % (under 10 %).
        let ramp = steady_state(&[90.0, 95.0, 100.0, 105.0, 110.0]).unwrap();
        assert!(close(ramp.trend, 0.25, 1e-12), "{ramp:?}");
        assert!(close(ramp.cv, 62.5f64.sqrt() / 100.0, 1e-12));
        assert!(!ramp.steady);
        // Noisy without trend: Σ(x − x̄)(y − ȳ) = 0, CV = 30 %.
        let noisy = steady_state(&[100.0, 70.0, 130.0, 130.0, 70.0]).unwrap();
        assert!(close(noisy.trend, 0.0, 1e-12));
        assert!(close(noisy.cv, 0.30, 1e-12));
        assert!(!noisy.steady);
        assert_eq!(noisy.flag(), "not steady (CV 30 %, trend +0 %)");
        assert_eq!(steady_state(&[1.0, 2.0]), None);
        assert_eq!(steady_state(&[0.0, 0.0, 0.0]), None);
        let mut run = Run {
            per_second: vec![90.0, 95.0, 100.0, 105.0, 110.0],
            valid: true,
            ..Default::default()
        };
        flag_unsteady(&mut run);
        flag_unsteady(&mut run);
        assert_eq!(
            run.flags,
            vec!["not steady (CV 8 %, trend +25 %)".to_string()]
        );
        assert!(run.valid);
    }

    #[test]
    fn mann_whitney_exact() {
        // Complete separation, n = 5 + 5: U = 0, P(U <= 0) = 1 / C(10, 5) = 1/252, two-sided 2/252.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        let r = mann_whitney(&a, &b).unwrap();
        assert!(r.exact);
        assert_eq!(r.u, 0.0);
        assert!(close(r.p, 2.0 / 252.0, 1e-12), "{r:?}");
        // n = 3 + 3 cannot reach 0.05: the smallest two-sided p is 2/20.
        let r = mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
        assert!(close(r.p, 0.1, 1e-12));
        // a = {1, 4}, b = {2, 3}: U_a = 2 (4 beats both) = the mean n1·n2/2: p = 1.
        let r = mann_whitney(&[1.0, 4.0], &[2.0, 3.0]).unwrap();
        assert_eq!(r.u, 2.0);
        assert!(close(r.p, 1.0, 1e-12));
        // a = {1, 2, 4}, b = {3, 5, 6, 7}: U_a = 1 (4 > 3). Orderings of 7 values with U <= 1:
        // U = 0: 1, U = 1: 1 -> P(U <= 1) = 2/35, two-sided 4/35.
        let r = mann_whitney(&[1.0, 2.0, 4.0], &[3.0, 5.0, 6.0, 7.0]).unwrap();
        assert_eq!(r.u, 1.0);
        assert!(close(r.p, 4.0 / 35.0, 1e-12), "{r:?}");
        assert_eq!(mann_whitney(&[], &[1.0]), None);
    }

    #[test]
    fn mann_whitney_normal_with_ties() {
        // a = {1, 2, 2, 3}, b = {2, 3, 4, 5, 6}. Pooled ranks: 1 -> 1; 2,2,2 -> 3; 3,3 -> 5.5;
        // 4 -> 7; 5 -> 8; 6 -> 9. R_a = 1 + 3 + 3 + 5.5 = 12.5, U_a = 12.5 − 10 = 2.5.
        // μ = 10; ties: (27 − 3) + (8 − 2) = 30; σ² = 20/12 · (10 − 30/72) = 15.972…;
        // z = (7.5 − 0.5) / 3.9965 = 1.7515; p = erfc(z/√2) = 0.07985.
        let r = mann_whitney(&[1.0, 2.0, 2.0, 3.0], &[2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert!(!r.exact);
        assert_eq!(r.u, 2.5);
        let sigma = (20.0f64 / 12.0 * (10.0 - 30.0 / 72.0)).sqrt();
        let z = 7.0 / sigma;
        assert!(close(z, 1.7515, 1e-4), "{z}");
        assert!(close(r.p, 0.07985, 2e-4), "{r:?}");
        // All equal: no evidence at all.
        let r = mann_whitney(&[1.0, 1.0], &[1.0, 1.0, 1.0]).unwrap();
        assert_eq!(r.p, 1.0);
    }

    #[test]
    fn erfc_values() {
        assert!(close(erfc(0.0), 1.0, 1e-7));
        assert!(close(erfc(1.0), 0.157_299_207, 1e-7));
        assert!(close(erfc(-1.0), 1.842_700_793, 1e-7));
        // 2·(1 − Φ(1.96)) = 0.05
        assert!(close(
            erfc(1.96 / std::f64::consts::SQRT_2),
            0.049_995_8,
            1e-6
        ));
    }

    #[test]
    fn bootstrap_is_seeded() {
        let a = [10.0, 11.0, 9.0, 10.5, 10.2];
        let b = [12.0, 12.5, 11.5, 12.2, 13.0];
        let one = bootstrap_ratio_ci(&a, &b, 2000, 0.95, 7).unwrap();
        let two = bootstrap_ratio_ci(&a, &b, 2000, 0.95, 7).unwrap();
        assert_eq!(one, two);
        let other = bootstrap_ratio_ci(&a, &b, 2000, 0.95, 8).unwrap();
        assert_ne!(one, other);
        // The interval lies within the extreme ratios of the samples and holds the point estimate.
        let point = median(&b).unwrap() / median(&a).unwrap();
        assert!(one.0 <= point && point <= one.1, "{one:?} {point}");
        assert!(one.0 >= 11.5 / 11.0 && one.1 <= 13.0 / 9.0, "{one:?}");
        // Identical constant samples: exactly 1.
        assert_eq!(
            bootstrap_ratio_ci(&[2.0; 4], &[2.0; 4], 100, 0.95, 1),
            Some((1.0, 1.0))
        );
        assert_eq!(bootstrap_ratio_ci(&[], &[1.0], 100, 0.95, 1), None);
    }

    fn path(id: &str, baseline: Option<&str>) -> PathInfo {
        PathInfo {
            id: id.into(),
            baseline: baseline.map(Into::into),
            ..Default::default()
        }
    }

    fn rr(path: &str, p50_by_round: &[f64]) -> ResultSet {
        ResultSet {
            path: path.into(),
            test: "tcp_rr".into(),
            params: [("size".to_string(), "1".to_string())].into(),
            runs: p50_by_round
                .iter()
                .zip(0u32..)
                .map(|(v, round)| Run {
                    round,
                    valid: true,
                    metrics: [
                        ("lat_p50_us".to_string(), *v),
                        ("tps".to_string(), 1e6 / v),
                        ("lat_p99_us".to_string(), v * 2.0),
                        ("samples".to_string(), 20_000.0),
                    ]
                    .into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ladder_report() -> Report {
        Report {
            schema: model::SCHEMA.into(),
            paths: vec![
                path("L0", None),
                path("L1", Some("L0")),
                path("L2", Some("L1")),
                path("P1", Some("L1")),
                path("P2-vxlan", Some("L2")),
                path("S1-ebpf", Some("P1")),
                path("S2-ebpf", Some("P2-vxlan")),
            ],
            results: vec![
                rr("L0", &[10.0, 11.0, 12.0]),
                rr("L1", &[14.0, 14.0, 17.0]),
                rr("L2", &[16.0, 17.0, 20.0]),
                rr("P1", &[20.0, 21.0, 22.0]),
                rr("P2-vxlan", &[30.0, 32.0, 31.0]),
                rr("S1-ebpf", &[21.0, 23.0, 22.5]),
                rr("S2-ebpf", &[33.0, 33.0, 33.0]),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn ladder_arithmetic() {
        let mut r = ladder_report();
        summarise(&mut r);
        let step = |layer: &str| r.ladder.iter().find(|s| s.layer == layer).unwrap().clone();
        // veth: L1 − L0 per round = 4, 3, 5.
        let v = step("veth + netns");
        assert_eq!((v.us, v.min_us, v.max_us), (4.0, 3.0, 5.0));
        assert_eq!(v.formula, "L1 - L0");
        // bridge: P1 − L1 = 6, 7, 5.
        let b = step("bridge + netfilter");
        assert_eq!((b.us, b.min_us, b.max_us), (6.0, 5.0, 7.0));
        // encapsulation: P2 − P1 − (L2 − L1) = 30−20−2 = 8, 32−21−3 = 8, 31−22−3 = 6.
        let e = step("encapsulation (vxlan)");
        assert_eq!((e.us, e.min_us, e.max_us), (8.0, 6.0, 8.0));
        // LB local: S1 − P1 = 1, 2, 0.5; remote: S2 − P2 = 3, 1, 2.
        let l = step("Service LB (ebpf, local backend)");
        assert_eq!((l.us, l.min_us, l.max_us), (1.0, 0.5, 2.0));
        let l = step("Service LB (ebpf, remote backend)");
        assert_eq!((l.us, l.min_us, l.max_us), (2.0, 1.0, 3.0));
        assert_eq!(l.formula, "S2-ebpf - P2-vxlan");
        // No E0/E1: no SNAT rung.
        assert!(r.ladder.iter().all(|s| s.layer != "SNAT"));
        assert_eq!(r.ladder.len(), 5);
        assert!(r.ladder.iter().all(|s| s.cpu_us.is_none()));
    }

    #[test]
    fn summaries_ratios_and_flags() {
        let mut r = ladder_report();
        // Round 1 of P1 invalid: its ratio rounds are 0 and 2 only.
        r.results[3].runs[1].valid = false;
        r.results[3].runs[1].flags.push("cpu-bound".into());
        // L0 has no valid run at all.
        for run in &mut r.results[0].runs {
            run.valid = false;
        }
        summarise(&mut r);
        summarise(&mut r);
        let p1 = &r.results[3];
        let s = &p1.summary["lat_p50_us"];
        assert_eq!((s.n, s.median, s.min, s.max), (2, 21.0, 20.0, 22.0));
        assert_eq!(s.unit, "µs");
        assert!(!s.higher_is_better);
        let ratio = s.ratio.as_ref().unwrap();
        assert_eq!(ratio.baseline, "L1");
        // 20/14 and 22/17.
        assert!(close(ratio.min, 22.0 / 17.0, 1e-12));
        assert!(close(ratio.max, 20.0 / 14.0, 1e-12));
        assert!(close(
            ratio.median,
            (20.0 / 14.0 + 22.0 / 17.0) / 2.0,
            1e-12
        ));
        assert!(p1.summary["tps"].higher_is_better);
        // 20 000 samples: p99 shown, nothing flagged.
        assert!(s.enough_samples && p1.summary["lat_p99_us"].enough_samples);
        assert!(p1.flags.is_empty(), "{:?}", p1.flags);
        // L0: flagged once (summarise twice), no summary; L1 keeps no ratio (baseline has none).
        assert_eq!(r.results[0].flags, vec![NO_VALID_RUN.to_string()]);
        assert!(r.results[0].summary.is_empty());
        assert!(r.results[1].summary["lat_p50_us"].ratio.is_none());
        // Without L0 the veth rung is gone.
        assert!(r.ladder.iter().all(|s| s.layer != "veth + netns"));
    }

    #[test]
    fn ratio_across_engines_when_unambiguous() {
        let mut r = ladder_report();
        r.results[3].params.insert("engine".into(), "iperf3".into());
        r.results[5]
            .params
            .insert("engine".into(), "builtin".into());
        summarise(&mut r);
        // S1-ebpf (builtin) against P1 (iperf3): per round 21/20, 23/21, 22.5/22.
        let ratio = r.results[5].summary["lat_p50_us"].ratio.clone().unwrap();
        assert_eq!(ratio.baseline, "P1");
        assert!(close(ratio.median, 21.0 / 20.0, 1e-12), "{ratio:?}");
        assert!(close(ratio.min, 22.5 / 22.0, 1e-12) && close(ratio.max, 23.0 / 21.0, 1e-12));
        // Two candidate baselines differing in engine only: ambiguous, no ratio.
        let mut second = r.results[3].clone();
        second.params.insert("engine".into(), "netperf".into());
        r.results.push(second);
        summarise(&mut r);
        assert!(r.results[5].summary["lat_p50_us"].ratio.is_none());
    }

    #[test]
    fn non_finite_metrics_are_dropped_and_flagged() {
        let mut r = ladder_report();
        r.results[0].runs[0]
            .metrics
            .insert("lat_p99_us".into(), f64::NAN);
        r.results[0].runs[1]
            .metrics
            .insert("tps".into(), f64::INFINITY);
        summarise(&mut r);
        summarise(&mut r);
        assert_eq!(
            r.results[0].runs[0].flags,
            vec!["lat_p99_us was NaN: dropped".to_string()]
        );
        assert_eq!(
            r.results[0].runs[1].flags,
            vec!["tps was inf: dropped".to_string()]
        );
        assert_eq!(r.results[0].summary["lat_p99_us"].n, 2);
        let json = serde_json::to_string(&r).unwrap();
        // A NaN would have been written as null and would not read back.
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }

    #[test]
    fn few_samples_greys_out_percentiles() {
        let mut r = ladder_report();
        for run in &mut r.results[2].runs {
            run.metrics.insert("samples".into(), 5_000.0);
        }
        summarise(&mut r);
        let l2 = &r.results[2];
        assert!(l2.summary["lat_p50_us"].enough_samples);
        assert!(!l2.summary["lat_p99_us"].enough_samples);
        assert!(l2.summary["tps"].enough_samples);
        assert_eq!(
            l2.flags,
            vec!["few samples for lat_p99_us (5000 per run, needs 10000)".to_string()]
        );
    }
}
