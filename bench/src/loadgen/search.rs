//! `udp_max_rate`: the highest offered rate a path carries with at most [`MAX_LOSS_PCT`] loss.
//!
//! One run is a sequence of `udp_stream` runs against the same server, each its own window and
//! server-side sequence accounting:
//!
//! 1. **Unpaced** (`rate_pps` 0) with the spec's own warm-up, window and cool-down: what the
//!    sender can offer and what arrives. The run's window, per-second series, CPU and counters are
//!    this trial's (the orchestrator samples CPU and checks steadiness over exactly this window).
//!    If it loses at most [`MAX_LOSS_PCT`], the path carries everything the sender can offer: the
//!    result is its received rate, marked `sender_limited` = 1.
//! 2. Otherwise a **bisection** over paced trials of [`TRIAL`] each: `lo` is the highest rate
//!    tested that passed (0 while none did), `hi` the lowest that failed (the unpaced offered rate
//!    at first). The first candidate is 98 % of the unpaced received rate (the path's capacity,
//!    roughly), or the caller's hint (`rate_pps`, the previous round's result) when it lies within
//!    10 % below that (so a low round does not cap the later ones); then 10 % lower
//!    while nothing passed, 6 % higher while `hi` is still far above `lo`, else the midpoint. It
//!    stops when `hi - lo` is within [`PRECISION`] of `hi`, or after `max_trials` (typically 3:
//!    pass, fail 6 % higher, the midpoint). The result is `lo`: a rate that was measured to pass,
//!    never an interpolation.
//!
//! A trial passes when its loss is at most [`MAX_LOSS_PCT`] *and* it offered at least 95 % of
//! the asked rate (a sender that cannot keep the pace has not tested the rate). Metrics added to
//! the unpaced trial's: `max_lossless_pps`, `max_lossless_gbps` (UDP payload bits),
//! `sender_limited` (0/1), `search_trials`, `search_precision_pct` (the final `(hi - lo) / hi`).

use super::{run, Error, Outcome, Spec, Test};
use std::time::Duration;

/// Loss a passing trial may have, percent (the and RFC 2544's "zero loss" made
/// measurable: 1 in 1,000).
pub(super) const MAX_LOSS_PCT: f64 = 0.1;
/// Stop when the bracket is this narrow, as a fraction of `hi`.
pub(super) const PRECISION: f64 = 0.03;
/// Measured window of a paced trial.
pub(super) const TRIAL: Duration = Duration::from_millis(150);
/// Warm-up of a paced trial (the pacer and the path settle).
const TRIAL_WARMUP: Duration = Duration::from_millis(20);
/// Cool-down of a paced trial (late datagrams still count).
const TRIAL_COOLDOWN: Duration = Duration::from_millis(30);
/// Paced trials at most, by default.
pub(super) const MAX_TRIALS: u32 = 5;

/// The outcome of one trial: (offered, received, loss %).
fn figures(o: &Outcome) -> (f64, f64, f64) {
    let get = |k: &str| o.metrics.get(k).copied().unwrap_or(0.0);
    (get("offered_pps"), get("received_pps"), get("loss_pct"))
}

/// Whether a trial asked for `rate` passed.
fn passed(rate: f64, o: &Outcome) -> bool {
    let (offered, received, loss) = figures(o);
    received > 0.0 && loss <= MAX_LOSS_PCT && offered >= 0.95 * rate
}

/// The next rate to try, or `None` when the search is done. `hi` starts far above the answer
/// (the unpaced sender's rate), so the bracket is found by small steps from the first candidate
/// (down 10 % while nothing passed, up [`STEP_UP`] while `hi` is still far) before bisecting.
fn next(lo: f64, hi: f64, first: f64, tried: u32, max_trials: u32) -> Option<f64> {
    if tried >= max_trials || (lo > 0.0 && hi - lo <= PRECISION * hi) || hi < 1.0 {
        return None;
    }
    Some(if tried == 0 {
        first.clamp(1.0, hi * (1.0 - PRECISION))
    } else if lo <= 0.0 {
        0.9 * hi
    } else if hi > lo * (1.0 + 4.0 * STEP_UP) {
        lo * (1.0 + STEP_UP)
    } else {
        f64::midpoint(lo, hi)
    })
}

/// The first candidate: the hint (the previous round's result) when it is near this round's
/// capacity estimate (98 % of the unpaced received rate), else that estimate. A hint far below
/// would cap the round (a pass there only steps up 6 % a trial), so every round would inherit
/// the lowest one.
fn start(hint: f64, received: f64) -> f64 {
    let estimate = 0.98 * received;
    if hint >= 0.9 * estimate && hint <= estimate {
        hint
    } else {
        estimate
    }
}

/// After a pass while `hi` is far: the next candidate is this much higher.
const STEP_UP: f64 = 0.06;

/// Runs the search for `spec` (`test` = `udp_max_rate`, one flow; `rate_pps`: a hint, 0 for
/// none) with at most `max_trials` paced trials.
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "packet rates are far below 2^52 and positive"
)]
pub(super) fn max_rate(spec: &Spec, max_trials: u32) -> Result<Outcome, Error> {
    let stream = Spec {
        test: Test::UdpStream,
        rate_pps: 0,
        ..spec.clone()
    };
    let mut out = run(&stream)?;
    out.spec = Some(spec.clone());
    let (offered, received, loss) = figures(&out);
    let mut lo = 0.0;
    let mut hi = offered;
    let mut trials = 0;
    let sender_limited = received > 0.0 && loss <= MAX_LOSS_PCT;
    if sender_limited {
        lo = received;
    } else {
        let first = start(spec.rate_pps as f64, received);
        while let Some(rate) = next(lo, hi, first, trials, max_trials) {
            let trial = Spec {
                test: Test::UdpStream,
                rate_pps: rate.round() as u64,
                warmup_s: TRIAL_WARMUP.as_secs_f64(),
                duration_s: TRIAL.as_secs_f64(),
                cooldown_s: TRIAL_COOLDOWN.as_secs_f64(),
                ..spec.clone()
            };
            let o = run(&trial)?;
            trials += 1;
            if passed(rate, &o) {
                lo = rate;
            } else {
                hi = rate;
            }
        }
    }
    let m = &mut out.metrics;
    m.insert("max_lossless_pps".into(), lo);
    m.insert(
        "max_lossless_gbps".into(),
        lo * f64::from(spec.size) * 8.0 / 1e9,
    );
    m.insert("sender_limited".into(), f64::from(u8::from(sender_limited)));
    m.insert("search_trials".into(), f64::from(trials));
    m.insert(
        "search_precision_pct".into(),
        if sender_limited || hi <= 0.0 {
            0.0
        } else {
            100.0 * (hi - lo).max(0.0) / hi
        },
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bisection_starts_at_the_hint_and_stops_at_the_precision() {
        // First trial: the hint, kept below hi.
        assert_eq!(next(0.0, 1000.0, 900.0, 0, 5), Some(900.0));
        assert_eq!(next(0.0, 1000.0, 5000.0, 0, 5), Some(970.0));
        // A bracket close enough: midpoints.
        assert_eq!(next(900.0, 1000.0, 900.0, 1, 5), Some(950.0));
        // hi far above a pass: a 6 % step up, not the midpoint.
        assert_eq!(next(1000.0, 300_000.0, 1000.0, 1, 5), Some(1060.0));
        // Done: bracket within 3 % of hi, or out of trials, or nothing to search.
        assert_eq!(next(980.0, 1000.0, 900.0, 2, 5), None);
        assert_eq!(next(500.0, 1000.0, 900.0, 5, 5), None);
        assert_eq!(next(0.0, 0.0, 900.0, 0, 5), None);
        // No pass yet: 10 % down from the last failure.
        assert_eq!(next(0.0, 400.0, 900.0, 1, 5), Some(360.0));
    }

    #[test]
    fn a_hint_far_from_this_rounds_estimate_is_not_used() {
        assert_eq!(start(950.0, 1000.0), 950.0);
        assert_eq!(
            start(500.0, 1000.0),
            980.0,
            "a low round does not cap this one"
        );
        assert_eq!(start(2000.0, 1000.0), 980.0);
        assert_eq!(start(0.0, 1000.0), 980.0);
    }

    #[test]
    fn a_pass_needs_low_loss_and_the_asked_rate_offered() {
        let o = |offered: f64, received: f64, loss: f64| Outcome {
            metrics: [
                ("offered_pps".to_owned(), offered),
                ("received_pps".to_owned(), received),
                ("loss_pct".to_owned(), loss),
            ]
            .into_iter()
            .collect(),
            ..Outcome::default()
        };
        assert!(passed(1000.0, &o(1000.0, 999.5, 0.05)));
        assert!(!passed(1000.0, &o(1000.0, 990.0, 1.0)), "1 % loss");
        assert!(
            !passed(1000.0, &o(800.0, 800.0, 0.0)),
            "sender behind the pace"
        );
        assert!(!passed(1000.0, &o(1000.0, 0.0, 0.0)), "nothing arrived");
    }
}
