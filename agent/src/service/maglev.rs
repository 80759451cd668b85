//! Maglev consistent hashing (Eisenbud et al., NSDI 2016; the same construction as Cilium's
//! `pkg/maglev`): a lookup table of prime size `M` whose entries name backends, so a flow's hash
//! picks the same backend on every node, and a backend change moves only about `1/N` of the flows.
//!
//! Pure: [`table`] depends only on the *set* of backends, the table size and the seed, never on
//! the order the caller lists the backends in or on the process (the hash is written out here, not
//! `std`'s `DefaultHasher`, whose algorithm may change between Rust releases). Every node running
//! the same seed therefore computes the same table, which is what lets N-S traffic arriving on any
//! node pick the same backend.
//!
//! Each backend gets a permutation of `0..M` from two seeded hashes of its `address:port`:
//! `offset = h1 mod M`, `skip = h2 mod (M - 1) + 1` (never 0; `M` prime, so every skip walks all
//! entries); the backends then take turns claiming their next free preferred entry until the table
//! is full. Taking turns keeps the fill exact: every backend owns `floor(M/N)` or `ceil(M/N)`
//! entries.

use crate::service::table::Backend;

/// The table size Cilium uses by default (prime; about 100 entries per backend up to 160
/// backends, which keeps the imbalance under 1 %).
pub const DEFAULT_TABLE_SIZE: u32 = 16381;

/// The smallest table size [`check_size`] accepts.
pub const MIN_TABLE_SIZE: u32 = 251;

/// The largest table size [`check_size`] accepts (Cilium's largest listed size).
pub const MAX_TABLE_SIZE: u32 = 131_071;

/// Why a Maglev table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The size is outside `MIN_TABLE_SIZE..=MAX_TABLE_SIZE`.
    #[error("Maglev table size {0} out of range {MIN_TABLE_SIZE}..={MAX_TABLE_SIZE}")]
    SizeOutOfRange(u32),
    /// The size is not prime (the permutations would not cover the table).
    #[error("Maglev table size {0} is not prime")]
    NotPrime(u32),
    /// More backends than table entries: some would get none.
    #[error("{backends} backends do not fit a Maglev table of {size} entries")]
    TooManyBackends {
        /// The number of backends given.
        backends: usize,
        /// The table size.
        size: u32,
    },
    /// The same backend is listed twice (its permutation would be claimed twice).
    #[error("backend {0} listed twice")]
    DuplicateBackend(Backend),
}

/// Checks that `m` can be a Maglev table size: prime, within
/// `MIN_TABLE_SIZE..=MAX_TABLE_SIZE`.
pub fn check_size(m: u32) -> Result<(), MaglevError> {
    if !(MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&m) {
        return Err(MaglevError::SizeOutOfRange(m));
    }
    if !is_prime(m) {
        return Err(MaglevError::NotPrime(m));
    }
    Ok(())
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// The Maglev lookup table for `backends`: `size` entries, entry `i` is an index into
/// `backends` (as the caller passed them).
///
/// The result depends only on the set of backends (the order of `backends` changes the indices,
/// not which backend an entry names), `size` and `seed`. No backends: an empty table (the
/// caller's "no endpoints: refuse" case). A backend listed twice, a bad size, or more backends
/// than entries: an error.
pub fn table(backends: &[Backend], size: u32, seed: u64) -> Result<Vec<u32>, MaglevError> {
    check_size(size)?;
    if backends.is_empty() {
        return Ok(Vec::new());
    }
    if backends.len() > size as usize {
        return Err(MaglevError::TooManyBackends {
            backends: backends.len(),
            size,
        });
    }
    // Turns are taken in sorted order, so the caller's order does not matter.
    let mut order: Vec<usize> = (0..backends.len()).collect();
    order.sort_by_key(|&i| backends[i]);
    if let Some(w) = order.windows(2).find(|w| backends[w[0]] == backends[w[1]]) {
        return Err(MaglevError::DuplicateBackend(backends[w[0]]));
    }
    // Each backend walks its permutation: (current preferred entry, skip), in `order`.
    // `size` <= MAX_TABLE_SIZE < 2^31, so `pos + skip` < 2 * size fits u32.
    let m = u64::from(size);
    let below_size = |h: u64| u32::try_from(h % m).unwrap_or(0); // h % m < size: always fits
    let mut walk: Vec<(u32, u32)> = order
        .iter()
        .map(|&i| {
            let key = backend_key(&backends[i]);
            let offset = below_size(hash64(key, seed, 0x9e37_79b9_7f4a_7c15));
            let skip = below_size(hash64(key, seed, 0xc2b2_ae3d_27d4_eb4f) % (m - 1)) + 1;
            (offset, skip)
        })
        .collect();
    const EMPTY: u32 = u32::MAX;
    let mut entries = vec![EMPTY; size as usize];
    let mut filled = 0usize;
    'fill: loop {
        for (slot, &caller_index) in order.iter().enumerate() {
            let (pos, skip) = &mut walk[slot];
            while entries[*pos as usize] != EMPTY {
                *pos = (*pos + *skip) % size;
            }
            // `caller_index` < backends.len() <= size < u32::MAX.
            entries[*pos as usize] = u32::try_from(caller_index).unwrap_or(EMPTY);
            *pos = (*pos + *skip) % size;
            filled += 1;
            if filled == entries.len() {
                break 'fill;
            }
        }
    }
    Ok(entries)
}

/// `address:port` as one integer: 4 address bytes and 2 port bytes.
fn backend_key(b: &Backend) -> u64 {
    (u64::from(u32::from(b.addr)) << 16) | u64::from(b.port)
}

/// A seeded 64-bit hash of `key` (splitmix64 / murmur3 finaliser rounds); `salt` separates the
/// two hashes a backend needs.
fn hash64(key: u64, seed: u64, salt: u64) -> u64 {
    use ferry_common::nat::fmix64;
    let mut x = fmix64(seed ^ salt);
    x = fmix64(x ^ key.wrapping_mul(0xff51_afd7_ed55_8ccd));
    fmix64(x.wrapping_add(salt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn backends(n: u8) -> Vec<Backend> {
        (1..=n)
            .map(|i| Backend {
                addr: Ipv4Addr::new(10, 244, i % 7, i),
                port: 8080,
            })
            .collect()
    }

    /// The table as backends (not indices), to compare tables over different backend lists.
    fn named(bs: &[Backend], t: &[u32]) -> Vec<Backend> {
        t.iter().map(|&i| bs[i as usize]).collect()
    }

    #[test]
    fn sizes() {
        assert!(check_size(DEFAULT_TABLE_SIZE).is_ok());
        assert!(check_size(251).is_ok());
        assert!(check_size(131_071).is_ok());
        assert_eq!(check_size(16383), Err(MaglevError::NotPrime(16383)));
        assert_eq!(check_size(250), Err(MaglevError::SizeOutOfRange(250)));
        assert_eq!(check_size(241), Err(MaglevError::SizeOutOfRange(241)));
        assert_eq!(
            check_size(262_139),
            Err(MaglevError::SizeOutOfRange(262_139))
        );
        assert_eq!(
            table(&backends(3), 1000, 0),
            Err(MaglevError::NotPrime(1000))
        );
        assert!(is_prime(2) && is_prime(3) && !is_prime(1) && !is_prime(9) && is_prime(65537));
    }

    #[test]
    fn empty_duplicate_and_too_many() {
        assert_eq!(table(&[], DEFAULT_TABLE_SIZE, 1), Ok(vec![]));
        let mut bs = backends(3);
        bs.push(bs[1]);
        assert_eq!(
            table(&bs, DEFAULT_TABLE_SIZE, 1),
            Err(MaglevError::DuplicateBackend(bs[1]))
        );
        let many: Vec<Backend> = (0..252u16)
            .map(|p| Backend {
                addr: Ipv4Addr::new(10, 0, 0, 1),
                port: p + 1,
            })
            .collect();
        assert!(matches!(
            table(&many, 251, 0),
            Err(MaglevError::TooManyBackends {
                backends: 252,
                size: 251
            })
        ));
        // As many backends as entries: one entry each.
        let t = table(&many[..251], 251, 0).unwrap();
        let mut seen = t.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..251).collect::<Vec<u32>>());
    }

    #[test]
    fn filled_and_balanced() {
        for n in [1u8, 2, 3, 7, 10, 33, 100] {
            let bs = backends(n);
            let t = table(&bs, DEFAULT_TABLE_SIZE, 42).unwrap();
            assert_eq!(t.len(), DEFAULT_TABLE_SIZE as usize);
            let mut counts = vec![0usize; bs.len()];
            for &e in &t {
                counts[e as usize] += 1; // panics on an unfilled (u32::MAX) entry
            }
            let ideal = f64::from(DEFAULT_TABLE_SIZE) / f64::from(n);
            for (i, &c) in counts.iter().enumerate() {
                // Turn-taking: each backend owns floor or ceil of M/N.
                assert!(
                    (c as f64 - ideal).abs() <= 1.0 && (c as f64 - ideal).abs() <= ideal * 0.01,
                    "n={n} backend {i}: {c} entries, ideal {ideal}"
                );
            }
        }
    }

    #[test]
    fn deterministic_and_order_independent() {
        let bs = backends(10);
        let a = table(&bs, DEFAULT_TABLE_SIZE, 7).unwrap();
        assert_eq!(a, table(&bs, DEFAULT_TABLE_SIZE, 7).unwrap());
        let mut rev = bs.clone();
        rev.reverse();
        let b = table(&rev, DEFAULT_TABLE_SIZE, 7).unwrap();
        assert_eq!(named(&bs, &a), named(&rev, &b));
        // Another seed: another table (same balance, different placement).
        let c = table(&bs, DEFAULT_TABLE_SIZE, 8).unwrap();
        let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
        assert!(same < a.len() / 2, "seed ignored? {same} equal entries");
        // Pinned values: the hash is ours, so a table must not change between builds (every
        // node must compute the same one).
        let small = table(&backends(3), 251, 0).unwrap();
        assert_eq!(small[..12], [0, 1, 0, 2, 1, 2, 2, 0, 2, 1, 2, 1]);
        assert_eq!(hash64(1, 0, 2), hash64(1, 0, 2));
        assert_ne!(hash64(1, 0, 2), hash64(1, 1, 2));
        assert_ne!(hash64(1, 0, 2), hash64(2, 0, 2));
    }

    /// Fraction of entries naming a different backend in `a` and `b`.
    fn moved(a: &[Backend], b: &[Backend]) -> f64 {
        let n = a.iter().zip(b).filter(|(x, y)| x != y).count();
        n as f64 / a.len() as f64
    }

    /// Disruption: removing (or adding) one of N backends moves about 1/N of the entries. The
    /// excess over 1/N grows with N/M (measured at M = 16381: x1.06 at N = 10, x1.16 at 20,
    /// x1.5 at 50, x2.3 at 100; at M = 131071: x1.15 at N = 50): the Maglev paper's trade of a
    /// little disruption for exact balance. A bigger table keeps it near 1/N for many backends.
    #[test]
    fn removing_or_adding_one_moves_about_one_nth() {
        for (n, size) in [
            (3u8, DEFAULT_TABLE_SIZE),
            (5, DEFAULT_TABLE_SIZE),
            (10, DEFAULT_TABLE_SIZE),
            (20, DEFAULT_TABLE_SIZE),
            (50, MAX_TABLE_SIZE),
        ] {
            let bs = backends(n);
            let full = named(&bs, &table(&bs, size, 3).unwrap());
            let limit = 1.2 / f64::from(n);
            for removed in [0usize, usize::from(n) / 2, usize::from(n) - 1] {
                let mut fewer = bs.clone();
                fewer.remove(removed);
                let after = named(&fewer, &table(&fewer, size, 3).unwrap());
                let m = moved(&full, &after);
                assert!(
                    m <= limit,
                    "n={n} remove {removed}: {m:.4} moved > {limit:.4}"
                );
                // At least the removed backend's own entries moved.
                assert!(m >= 1.0 / f64::from(n) - 0.001, "n={n}: only {m:.4} moved");
            }
            let mut more = bs.clone();
            more.push(Backend {
                addr: Ipv4Addr::new(10, 245, 0, 1),
                port: 8080,
            });
            let after = named(&more, &table(&more, size, 3).unwrap());
            let m = moved(&full, &after);
            let limit = 1.2 / (f64::from(n) + 1.0);
            assert!(m <= limit, "n={n} add one: {m:.4} moved > {limit:.4}");
        }
    }
}
