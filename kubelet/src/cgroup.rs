//! cgroup v2 directories for pods and containers: `<cgroup root>/<pod uid>/<container>`.
//!
//! The kubelet uses them to find and kill every process of a container (`cgroup.kill`, also the
//! ones the main process forked) and to know when a container is really gone
//! (`cgroup.events: populated 0`). Resource limits are written when the hierarchy has the
//! controllers enabled (on hybrid hosts the v2 tree often has none; then only grouping is used).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup2 mount point (from `/proc/self/mountinfo`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mount = pre.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount))
    })
}

/// Creates `dir` (and parents) as cgroups.
pub fn create(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Whether any process is left in `dir` or below.
pub fn populated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(s) => s.lines().any(|l| l.trim() == "populated 1"),
        Err(_) => false,
    }
}

/// SIGKILLs every process in `dir` and below.
pub fn kill(dir: &Path) {
    if dir.exists() {
        if let Err(e) = std::fs::write(dir.join("cgroup.kill"), "1") {
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
    remove_tree(dir);
    !dir.exists()
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Writes `memory.max` / `cpu.max` for a container when the controllers are available.
pub fn set_limits(dir: &Path, memory_bytes: Option<i64>, cpu_millis: Option<i64>) {
    if let Some(m) = memory_bytes {
        let f = dir.join("memory.max");
        if f.exists() {
            let _ = std::fs::write(f, m.to_string());
        }
    }
    if let Some(c) = cpu_millis {
        let f = dir.join("cpu.max");
        if f.exists() {
            let _ = std::fs::write(f, format!("{} 100000", c * 100));
        }
    }
}
