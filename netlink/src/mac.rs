//! [`Mac`]: an Ethernet hardware address, printed and parsed the way `ip` does (`0a:1b:2c:3d:4e:5f`).

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// An Ethernet (EUI-48) hardware address.
///
/// It dereferences to its six bytes, so `mac[0]`, `mac.to_vec()` and comparisons with a
/// `[u8; 6]` read as they would on the array.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The six bytes.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// From a link-layer address attribute: `None` unless it is six bytes long.
    pub fn from_slice(b: &[u8]) -> Option<Mac> {
        b.try_into().ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl Deref for Mac {
    type Target = [u8; 6];

    fn deref(&self) -> &[u8; 6] {
        &self.0
    }
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Mac {
        Mac(b)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(m: Mac) -> [u8; 6] {
        m.0
    }
}

impl PartialEq<[u8; 6]> for Mac {
    fn eq(&self, other: &[u8; 6]) -> bool {
        self.0 == *other
    }
}

impl PartialEq<Mac> for [u8; 6] {
    fn eq(&self, other: &Mac) -> bool {
        *self == other.0
    }
}

impl IntoIterator for Mac {
    type Item = u8;
    type IntoIter = std::array::IntoIter<u8, 6>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A string that is not six `:`-separated hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address (six hex bytes separated by ':')")]
pub struct ParseMacError;

impl FromStr for Mac {
    type Err = ParseMacError;

    /// Parses `0a:1b:2c:3d:4e:5f` (surrounding whitespace is ignored).
    fn from_str(s: &str) -> Result<Mac, ParseMacError> {
        let mut out = [0u8; 6];
        let mut parts = s.trim().split(':');
        for b in &mut out {
            let part = parts.next().ok_or(ParseMacError)?;
            *b = u8::from_str_radix(part, 16).map_err(|_| ParseMacError)?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError);
        }
        Ok(Mac(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_lower_hex_with_colons() {
        let m = Mac([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0xff]);
        assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:ff");
        assert_eq!(format!("{m:?}"), "Mac(0a:1b:2c:3d:4e:ff)");
        assert_eq!(Mac::default().to_string(), "00:00:00:00:00:00");
    }

    #[test]
    fn parse_round_trips_and_rejects_garbage() {
        let m: Mac = " 0A:1b:2c:3d:4e:5f\n".parse().unwrap();
        assert_eq!(m, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);
        assert_eq!(m.to_string().parse::<Mac>(), Ok(m));
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:60",
            "0a:1b:2c:3d:4e:zz",
            "100:0:0:0:0:0",
        ] {
            assert_eq!(bad.parse::<Mac>(), Err(ParseMacError), "{bad:?}");
        }
    }

    #[test]
    fn bytes_view() {
        let m = Mac::from([2, 0, 0, 0, 0, 1]);
        assert_eq!(m[0] & 1, 0);
        assert_eq!(m.to_vec(), vec![2, 0, 0, 0, 0, 1]);
        assert_eq!(<[u8; 6]>::from(m), m.octets());
        assert_eq!([2, 0, 0, 0, 0, 1], m);
        assert_eq!(m.into_iter().sum::<u8>(), 3);
        assert_eq!(
            Mac::from_slice(&[1, 2, 3, 4, 5, 6]),
            Some(Mac([1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(Mac::from_slice(&[1, 2, 3, 4]), None);
    }
}
