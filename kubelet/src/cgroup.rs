//! cgroup v2 directories for pods and containers: `<cgroup root>/<pod uid>/<container>`.
//!
//! The kubelet uses them to find and kill every process of a container (`cgroup.kill`, also the
//! ones the main process forked) and to know when a container is really gone
//! (`cgroup.events: populated 0`). Resource limits are written when the hierarchy has the
//! controllers enabled (on hybrid hosts the v2 tree often has none; then only grouping is used).
//! The mechanism is `ferry_sys::cgroup`; this module adds the kubelet's policy (log, don't fail;
//! wait without blocking the runtime).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup2 mount point (from `/proc/self/mountinfo`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    ferry_sys::cgroup::mount()
}

/// Creates `dir` (and parents) as cgroups.
pub fn create(dir: &Path) -> std::io::Result<()> {
    ferry_sys::cgroup::create(dir)
}

/// Whether any process is left in `dir` or below.
pub fn populated(dir: &Path) -> bool {
    ferry_sys::cgroup::populated(dir)
}

/// SIGKILLs every process in `dir` and below.
pub fn kill(dir: &Path) {
    if dir.exists() {
        if let Err(e) = ferry_sys::cgroup::kill(dir) {
            tracing::warn!("cgroup.kill in {}: {e}", dir.display());
        }
    }
}

/// Kills everything in `dir`, waits (up to `timeout`) until it is empty and removes the cgroup
/// tree bottom-up. Returns whether it is gone.
pub async fn destroy(dir: &Path, timeout: Duration) -> bool {
    if !dir.exists() {
        return true;
    }
    kill(dir);
    let deadline = tokio::time::Instant::now() + timeout;
    while populated(dir) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One attempt per cgroup (no blocking retry on the runtime): a busy one stays for the next
    // round.
    let _ = ferry_sys::cgroup::remove_tree(dir, Duration::ZERO);
    !dir.exists()
}

/// Writes `memory.max` / `cpu.max` for a container when the controllers are available.
pub fn set_limits(dir: &Path, memory_bytes: Option<i64>, cpu_millis: Option<i64>) {
    ferry_sys::cgroup::set_limits(dir, memory_bytes, cpu_millis);
}
