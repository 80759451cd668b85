//! cgroup v2 operations: where the hierarchy is mounted, creating a cgroup, killing everything in
//! a subtree, waiting for it to empty, removing it bottom-up. The mechanism is `ferry_sys::cgroup`;
//! this module adds `ferry`'s messages.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup v2 mount: `/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on pure v2
/// (the first cgroup2 mount in `/proc/self/mountinfo`).
pub(crate) fn root() -> Result<PathBuf> {
    if let Some(dir) = ferry_sys::cgroup::mount() {
        if dir.join("cgroup.controllers").exists() && dir.join("cgroup.procs").exists() {
            return Ok(dir);
        }
    }
    bail!("no cgroup v2 hierarchy mounted (looked for a cgroup2 mount in /proc/self/mountinfo, usually /sys/fs/cgroup/unified or /sys/fs/cgroup; ferry up runs every process in its own cgroup)")
}

/// Creates the cgroup `path` (fine if it exists).
pub(crate) fn create(path: &Path) -> Result<()> {
    ferry_sys::cgroup::create(path).with_context(|| format!("creating cgroup {}", path.display()))
}

/// The pids in the subtree at `top`.
pub(crate) fn pids(top: &Path) -> Vec<i32> {
    ferry_sys::cgroup::pids(top)
}

/// SIGKILLs every process in the subtree at `top`: `cgroup.kill` where the kernel has it (5.14+),
/// else each pid listed in the subtree's `cgroup.procs`.
pub(crate) fn kill_all(top: &Path) -> Result<()> {
    ferry_sys::cgroup::kill(top)
        .with_context(|| format!("writing {}", top.join("cgroup.kill").display()))
}

/// Waits until the subtree at `top` is empty, killing again as processes appear (a process
/// forking while it is killed); false after `timeout`.
pub(crate) fn wait_empty(top: &Path, timeout: Duration) -> bool {
    ferry_sys::cgroup::wait_empty(top, timeout)
}

/// Removes the subtree at `top`, children first; returns how many cgroups were removed. A cgroup
/// whose last process is still exiting answers EBUSY for a moment, so each removal is retried
/// briefly.
pub(crate) fn remove_tree(top: &Path) -> Result<usize> {
    Ok(ferry_sys::cgroup::remove_tree(top, Duration::from_secs(2))?)
}
