//! Times in Table cells: upstream `duration.HumanDuration` ([`human_duration`]) and
//! `translateTimestampSince` ([`translate_timestamp_since`]: an age, `<unknown>` when missing).

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// Upstream `duration.HumanDuration`: about two significant units (`5s`, `3m20s`, `5m`,
/// `2d3h`, `3y12d`); `<invalid>` for durations below -1s, `0s` for small negative ones.
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

pub(super) fn parse_time(ts: Option<&Value>) -> Option<Timestamp> {
    ts.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

/// Upstream `translateTimestampSince`: the age of an RFC 3339 timestamp, `<unknown>` when
/// absent or unparsable.
pub fn translate_timestamp_since(ts: Option<&Value>, now: Timestamp) -> String {
    match parse_time(ts) {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".to_owned(),
    }
}
