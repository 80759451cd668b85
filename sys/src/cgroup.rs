//! cgroup v2: where the hierarchy is mounted, creating a cgroup, killing everything in a subtree,
//! waiting for it to empty, removing it bottom-up, and resource limits.
//!
//! Ferry runs every component and container in a cgroup of its own so that it can find and kill
//! every process that belongs to it (also the ones a main process forked) and know when they are
//! really gone (`cgroup.events: populated 0`). Joining a cgroup between `fork` and `exec` is
//! [`crate::process::OnExec::join_cgroup`].

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first cgroup2 mount point in `/proc/self/mountinfo`: `/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn mount() -> Option<PathBuf> {
    crate::fs::mounts()
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.mount_point)
}

/// Creates the cgroup `dir` (and its parents); fine if it exists.
pub fn create(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Opens `<dir>/cgroup.procs` for writing (to join the cgroup, see
/// [`crate::process::OnExec::join_cgroup`]).
pub fn open_procs(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
}

/// Every cgroup in the subtree at `top`, parents before children (empty if `top` is missing).
pub fn subtree(top: &Path) -> Vec<PathBuf> {
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

/// The pids in the subtree at `top`, sorted.
pub fn pids(top: &Path) -> Vec<i32> {
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
pub fn kill(top: &Path) -> io::Result<()> {
    let kill_file = top.join("cgroup.kill");
    if kill_file.exists() {
        return std::fs::write(&kill_file, b"1");
    }
    for pid in pids(top) {
        crate::process::kill(pid);
    }
    Ok(())
}

/// True while a process is in the subtree at `top` (`populated 1` in `cgroup.events`; a missing
/// cgroup holds nothing).
pub fn populated(top: &Path) -> bool {
    match std::fs::read_to_string(top.join("cgroup.events")) {
        Ok(s) => s.lines().any(|l| l.trim() == "populated 1"),
        Err(_) => false,
    }
}

/// Waits (blocking) until the subtree at `top` is empty, killing again every 500 ms as processes
/// appear (a process forking while it is killed); false after `timeout`.
pub fn wait_empty(top: &Path, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    let mut last_kill = Instant::now();
    while populated(top) {
        if Instant::now() >= end {
            return false;
        }
        if last_kill.elapsed() > Duration::from_millis(500) {
            let _ = kill(top);
            last_kill = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Removes the subtree at `top`, children first; returns how many cgroups were removed (a missing
/// one is fine). A cgroup whose last process is still exiting answers EBUSY for a moment, so each
/// removal is retried for up to `retry` (`Duration::ZERO`: once). A cgroup that cannot be removed
/// does not stop the others; the first failure is returned at the end.
pub fn remove_tree(top: &Path, retry: Duration) -> Result<usize, crate::fs::FsError> {
    let mut removed = 0;
    let mut first_err = None;
    let mut cgroups = subtree(top);
    cgroups.reverse();
    for cg in cgroups {
        // After a failure, no more waiting: its parents cannot go either.
        let end = Instant::now()
            + if first_err.is_some() {
                Duration::ZERO
            } else {
                retry
            };
        loop {
            match std::fs::remove_dir(&cg) {
                Ok(()) => {
                    removed += 1;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(_) if Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => {
                    first_err.get_or_insert(crate::fs::FsError {
                        op: "removing cgroup",
                        path: cg,
                        source,
                    });
                    break;
                }
            }
        }
    }
    match first_err {
        None => Ok(removed),
        Some(e) => Err(e),
    }
}

/// Writes `memory.max` (bytes) and `cpu.max` (millicores, as a quota per 100 ms period) where the
/// controllers are enabled; on hierarchies without them (hybrid hosts often have none in the v2
/// tree) the cgroup only groups processes.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_and_removal_on_plain_directories() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        create(&top.join("a/b")).unwrap();
        create(&top.join("c")).unwrap();
        std::fs::write(top.join("a/cgroup.procs"), "7\n3\n").unwrap();
        std::fs::write(top.join("c/cgroup.procs"), "3\n").unwrap();
        let tree = subtree(&top);
        assert_eq!(tree[0], top);
        assert_eq!(tree.len(), 4);
        assert_eq!(pids(&top), vec![3, 7]);
        assert!(!populated(&top));
        std::fs::write(top.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(populated(&top));
        // Plain directories with files in them cannot be rmdir'ed; a real cgroup can.
        assert!(remove_tree(&top, Duration::ZERO).is_err());
        assert_eq!(
            remove_tree(&dir.path().join("missing"), Duration::ZERO).unwrap(),
            0
        );
    }

    #[test]
    fn a_real_cgroup_is_joined_killed_and_removed() {
        let Some(root) = mount() else {
            eprintln!("SKIPPED a_real_cgroup_is_joined_killed_and_removed: no cgroup2 mount");
            return;
        };
        if !crate::process::is_root() {
            eprintln!("SKIPPED a_real_cgroup_is_joined_killed_and_removed: needs root");
            return;
        }
        let cg = root.join(format!("ferry-sys-test-{}", std::process::id()));
        create(&cg).unwrap();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        crate::process::OnExec::new()
            .join_cgroup(open_procs(&cg).unwrap())
            .unwrap()
            .install(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert_eq!(pids(&cg), vec![pid]);
        assert!(populated(&cg));
        kill(&cg).unwrap();
        child.wait().unwrap();
        assert!(wait_empty(&cg, Duration::from_secs(5)));
        assert_eq!(remove_tree(&cg, Duration::from_secs(2)).unwrap(), 1);
        assert!(!cg.exists());
    }
}
