//! Kubernetes resource quantities (`100m`, `2`, `128Mi`, `1G`, `1e3`; upstream
//! `k8s.io/apimachinery/pkg/api/resource`), read as plain numbers.
//!
//! - [`parse_quantity`]: any quantity as a number of base units (cores, bytes, pods), with the
//!   decimal (`m`, `k`, `M`, `G`, `T`, `P`) and binary (`Ki` to `Pi`) suffixes and exponents;
//!   the scheduler sums requests and allocatable with it.
//! - [`parse_bytes`] and [`parse_millis`]: a container's memory and CPU limits as the integer
//!   bytes and millicores the kubelet writes to its cgroup. They are stricter than
//!   [`parse_quantity`] and kept as they were: `parse_bytes` knows only the `k`/`M`/`G`/`T` and
//!   `Ki`/`Mi`/`Gi`/`Ti` suffixes and no surrounding spaces, and `parse_millis` takes integer
//!   millicores (`500m`) or a plain number of cores (`2`, `0.5`); anything else is `None` (no
//!   limit set). A value that is not finite or does not fit an `i64` (`NaN`, `inf`, `1e30`) is
//!   refused (`None`) rather than wrapped or clamped; fractions are dropped (towards zero).

/// Parses a Kubernetes quantity (`100m`, `2`, `128Mi`, `1G`, `1e3`) into a number of base units.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        _ => return None,
    };
    Some(n * mult)
}

/// Parses a memory quantity into bytes (`128Mi`, `1G`, `1000`).
pub fn parse_bytes(q: &str) -> Option<i64> {
    let (num, mult) = [
        ("Ki", 1i64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1));
    num.parse::<f64>()
        .ok()
        .and_then(|n| f64_to_i64(n * mult as f64))
}

/// Parses a CPU quantity into millicores (`500m`, `2`).
pub fn parse_millis(q: &str) -> Option<i64> {
    match q.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => q.parse::<f64>().ok().and_then(|c| f64_to_i64(c * 1000.0)),
    }
}

/// `x` with its fraction dropped (towards zero), or `None` when `x` is not finite or lies
/// outside `i64`'s range (an `as` cast would turn `NaN` into 0 and clamp the rest).
fn f64_to_i64(x: f64) -> Option<i64> {
    /// 2^63, exactly representable: `i64` holds `[-2^63, 2^63)`.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    // NaN and the infinities are outside the range too.
    if !(-TWO_POW_63..TWO_POW_63).contains(&x) {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "x is finite and within i64's range (checked above); only the fraction is dropped"
    )]
    let n = x as i64;
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity("5Q"), None);
    }

    #[test]
    fn bytes_and_millis() {
        assert_eq!(parse_bytes("128Mi"), Some(128 << 20));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("42"), Some(42));
        assert_eq!(parse_millis("500m"), Some(500));
        assert_eq!(parse_millis("2"), Some(2000));
        assert_eq!(parse_bytes("x"), None);
    }

    #[test]
    fn kubelet_parsers_are_stricter() {
        // What the kubelet's limits refuse (no limit set), though a quantity parses.
        for q in ["100m", "1P", "1Pi", " 1Gi"] {
            assert!(parse_quantity(q).is_some(), "{q}");
            assert_eq!(parse_bytes(q), None, "{q}");
        }
        assert_eq!(parse_quantity("0.5m"), Some(0.0005));
        assert_eq!(parse_millis("0.5m"), None);
        assert_eq!(parse_millis("1k"), None);
        assert_eq!(parse_millis("0.5"), Some(500));
    }

    #[test]
    fn out_of_range_limits_are_refused_not_wrapped() {
        for q in ["NaN", "inf", "-inf", "1e30", "-1e30", "1e19", "9000000Ti"] {
            assert_eq!(parse_bytes(q), None, "{q}");
            assert_eq!(parse_millis(q), None, "{q}");
        }
        assert_eq!(parse_millis("1e16"), None);
        assert_eq!(parse_bytes("9e18"), Some(9_000_000_000_000_000_000));
        assert_eq!(parse_bytes("-1e18"), Some(-1_000_000_000_000_000_000));
        assert_eq!(parse_millis("9e15"), Some(9_000_000_000_000_000_000));
        assert_eq!(parse_bytes("1.9"), Some(1));
        assert_eq!(parse_millis("0.0019"), Some(1));
    }
}
