//! Durations as the servers' flags take them (`32s`, `500ms`, `1m30s`; Go's `time.Duration`
//! spelling, read with jiff): one parser for ferry-server's HTTP limits and leader-election
//! timings and the kubelet's HTTP limits.

use std::time::Duration;

/// A positive duration such as `30s`, `500ms` or `2m`; the error says what is wrong with `s`.
pub fn parse_positive(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration such as 30s or 500ms: {e}"))?;
    match Duration::try_from(d) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{s:?}: the duration must be positive")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_durations_only() {
        assert_eq!(parse_positive("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_positive("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_positive("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_positive("0s").is_err());
        assert!(parse_positive("-1s").is_err());
        assert!(parse_positive("soon").is_err());
    }
}
