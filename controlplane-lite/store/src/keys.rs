//! Key-range helpers shared by both backends.
//!
//! A "prefix" selects every key that starts with it. Both backends turn it into a half-open range
//! `[prefix, end)`: SQLite compares `TEXT` bytewise (`BINARY` collation) and etcd compares bytes, and
//! UTF-8 preserves code-point order, so one rule serves both.

/// The smallest string greater than every string that starts with `prefix`, or `None` when no
/// such string exists (the empty prefix, which selects every key).
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut end = prefix.to_owned();
    while let Some(last) = end.pop() {
        let next = match last {
            // Skip the surrogate range, which `char` cannot hold.
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            end.push(next);
            return Some(end);
        }
        // `last` was char::MAX: carry into the previous character.
    }
    None
}

/// etcd's range end for a byte prefix: the prefix with its last byte below 0xff incremented
/// (trailing 0xff bytes dropped); `[0]` (meaning "to the end of the keyspace") when there is none.
pub(crate) fn prefix_end_bytes(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_char() {
        assert_eq!(
            prefix_end("/registry/pods/").as_deref(),
            Some("/registry/pods0")
        );
        assert_eq!(prefix_end("a").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }

    #[test]
    fn prefix_end_bounds_exactly_the_prefixed_keys() {
        let prefix = "/registry/pods/";
        let end = prefix_end(prefix).expect("bounded");
        for key in [
            "/registry/pods/",
            "/registry/pods/a",
            "/registry/pods/\u{10FFFF}",
        ] {
            assert!(
                key >= prefix && key < end.as_str(),
                "{key} should be inside"
            );
        }
        for key in [
            "/registry/pods",
            "/registry/pods0",
            "/registry/podsx/a",
            "/registry/q",
        ] {
            assert!(
                !(key >= prefix && key < end.as_str()),
                "{key} should be outside"
            );
        }
    }

    #[test]
    fn prefix_end_bytes_follows_etcd() {
        assert_eq!(prefix_end_bytes(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end_bytes(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end_bytes(b""), vec![0]);
        assert_eq!(prefix_end_bytes(b"\xff\xff"), vec![0]);
    }
}
