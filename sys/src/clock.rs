//! `CLOCK_MONOTONIC` as nanoseconds: one clock shared by every network namespace of the machine
//! (Linux has no per-netns clock; time namespaces are not used), so a timestamp taken in one
//! process can be compared with one taken by another process in another namespace (`ferry
//! bench`'s prober measures from an instant its parent took). `std::time::Instant` reads the
//! same clock but does not expose its value.

use std::io;

/// Nanoseconds of `CLOCK_MONOTONIC` (vDSO, no syscall).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec`; CLOCK_MONOTONIC always exists on Linux, so
    // the call cannot fail (checked anyway below).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(
        rc,
        0,
        "clock_gettime(CLOCK_MONOTONIC): {}",
        io::Error::last_os_error()
    );
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000_000 + nanos
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn monotonic_ns_advances_with_instant() {
        let (a, t) = (monotonic_ns(), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (b, e) = (monotonic_ns(), t.elapsed());
        let d = Duration::from_nanos(b - a);
        assert!(d >= Duration::from_millis(20), "{d:?}");
        // The same clock as Instant: the two intervals agree within a millisecond.
        assert!(d.abs_diff(e) < Duration::from_millis(1), "{d:?} vs {e:?}");
    }
}
