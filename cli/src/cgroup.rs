//! cgroup v2 operations: where the hierarchy is mounted, creating a cgroup, killing everything in
//! a subtree, waiting for it to empty, removing it bottom-up.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cgroup v2 mount: `/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on pure v2.
pub(crate) fn root() -> Result<PathBuf> {
    for dir in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let dir = Path::new(dir);
        if dir.join("cgroup.controllers").exists() && dir.join("cgroup.procs").exists() {
            return Ok(dir.to_owned());
        }
    }
    bail!("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup (ferry up runs every process in its own cgroup)")
}

/// Creates the cgroup `path` (fine if it exists).
pub(crate) fn create(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating cgroup {}", path.display())),
    }
}

/// Every cgroup in the subtree at `top`, parents before children.
pub(crate) fn subtree(top: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if !top.is_dir() {
        return out;
    }
    let mut stack = vec![top.to_owned()];
    while let Some(dir) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(dir);
    }
    out.sort_by_key(|p| p.components().count());
    out
}

/// The pids in the subtree at `top`.
pub(crate) fn pids(top: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = subtree(top)
        .iter()
        .filter_map(|cg| std::fs::read_to_string(cg.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in the subtree at `top`: `cgroup.kill` where the kernel has it (5.14+),
/// else each pid listed in the subtree's `cgroup.procs`.
pub(crate) fn kill_all(top: &Path) -> Result<()> {
    let kill_file = top.join("cgroup.kill");
    if kill_file.exists() {
        return std::fs::write(&kill_file, b"1")
            .with_context(|| format!("writing {}", kill_file.display()));
    }
    for pid in pids(top) {
        crate::sys::kill(pid);
    }
    Ok(())
}

/// True while a process is in the subtree at `top` (`populated 1` in `cgroup.events`).
pub(crate) fn populated(top: &Path) -> bool {
    match std::fs::read_to_string(top.join("cgroup.events")) {
        Ok(s) => s.lines().any(|l| l.trim() == "populated 1"),
        // No cgroup.events (cgroup gone): nothing runs there.
        Err(_) => false,
    }
}

/// Waits until the subtree at `top` is empty, killing again as processes appear (a process
/// forking while it is killed); false after `timeout`.
pub(crate) fn wait_empty(top: &Path, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    let mut last_kill = Instant::now();
    while populated(top) {
        if Instant::now() >= end {
            return false;
        }
        if last_kill.elapsed() > Duration::from_millis(500) {
            let _ = kill_all(top);
            last_kill = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Removes the subtree at `top`, children first; returns how many cgroups were removed. A cgroup
/// whose last process is still exiting answers EBUSY for a moment, so each removal is retried
/// briefly.
pub(crate) fn remove_tree(top: &Path) -> Result<usize> {
    let mut removed = 0;
    let mut cgroups = subtree(top);
    cgroups.reverse();
    for cg in cgroups {
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            match std::fs::remove_dir(&cg) {
                Ok(()) => {
                    removed += 1;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("removing cgroup {}", cg.display()))
                }
            }
        }
    }
    Ok(removed)
}
