//! Network namespaces: open a netns path once, check it really is a network namespace, and enter
//! it through a guard that restores the original namespace on drop (also while unwinding), or run
//! code in it on a dedicated thread; create namespaces (bound at a path, or held only by an fd) and
//! remove bound ones.
//!
//! A network namespace belongs to a thread, so [`NetnsGuard`] is `!Send`. The plugin is
//! single-threaded; other users (tests, the kubelet, `ferry`) use [`NetnsFd::run_on_thread`], which
//! never moves a thread of theirs. Entering a namespace in a child between `fork` and `exec` is
//! [`crate::process::OnExec`].

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

/// `NSFS_MAGIC` from `linux/magic.h`: the filesystem of `/proc/*/ns/*` and bind-mounted netns.
const NSFS_MAGIC: libc::__fsword_t = 0x6e73_6673;
/// `NS_GET_NSTYPE` ioctl (`linux/nsfs.h`): `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Why a netns path could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path does not exist.
    #[error("netns {0} does not exist")]
    NotFound(PathBuf),
    /// The path exists but is not a network namespace.
    #[error("{0} is not a network namespace")]
    NotNetns(PathBuf),
    /// Another I/O failure.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// An open network namespace.
#[derive(Debug)]
pub struct NetnsFd {
    file: File,
    path: PathBuf,
}

impl NetnsFd {
    /// Opens `path` and verifies that it is a network namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<NetnsFd, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => NetnsError::NotFound(path.clone()),
            _ => NetnsError::Io {
                op: "open",
                path: path.clone(),
                source: e,
            },
        })?;
        // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: the fd is open for the duration of the call and `st` is a valid out pointer.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
            let source = io::Error::last_os_error();
            return Err(NetnsError::Io {
                op: "fstatfs",
                path,
                source,
            });
        }
        if st.f_type != NSFS_MAGIC {
            return Err(NetnsError::NotNetns(path));
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
        let ty = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if ty != libc::CLONE_NEWNET {
            return Err(NetnsError::NotNetns(path));
        }
        Ok(NetnsFd { file, path })
    }

    /// The current thread's network namespace.
    pub fn current() -> Result<NetnsFd, NetnsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// The path this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the calling thread into this namespace until the guard drops.
    pub fn enter(&self) -> Result<NetnsGuard, NetnsError> {
        let original = NetnsFd::current()?;
        setns(self.as_fd()).map_err(|source| NetnsError::Io {
            op: "setns",
            path: self.path.clone(),
            source,
        })?;
        Ok(NetnsGuard {
            original,
            _not_send: PhantomData,
        })
    }

    /// Runs `f` inside this namespace on the calling thread, then switches back.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let _guard = self.enter()?;
        Ok(f())
    }

    /// Runs `f` on a new OS thread that has entered this namespace (the thread ends with `f`, so
    /// no thread of the caller ever changes namespace). A panic in `f` is resumed in the caller.
    pub fn run_on_thread<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let fd = self.as_fd();
        on_thread(|| {
            setns(fd).map_err(|source| NetnsError::Io {
                op: "setns",
                path: self.path.clone(),
                source,
            })?;
            Ok(f())
        })
    }

    /// Creates a new network namespace held only by the returned fd (and by whatever `setup`
    /// leaves inside it, such as sockets): it disappears when the last of those closes. `setup`
    /// runs inside it on a short-lived thread of its own; a panic in it is resumed in the caller.
    pub fn new_anonymous<T: Send>(
        setup: impl FnOnce() -> T + Send,
    ) -> Result<(NetnsFd, T), NetnsError> {
        on_thread(|| {
            unshare_net()?;
            let ns = NetnsFd::current()?;
            Ok((ns, setup()))
        })
    }
}

impl From<NetnsFd> for OwnedFd {
    fn from(ns: NetnsFd) -> OwnedFd {
        ns.file.into()
    }
}

/// Runs `f` on a scoped thread and returns its result, resuming its panic here.
fn on_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Creates a network namespace kept alive by a bind mount at `path` (as `ip netns add` and
/// runtimes do; `/run/netns/<name>` makes it one `ip netns` knows): the file is created (with its
/// directory; an existing file is refused), then a short-lived thread unshares a new namespace and
/// bind-mounts it there. On failure the file is removed again.
pub fn create_bound(path: &Path) -> Result<(), NetnsError> {
    let io_err = |op: &'static str, p: &Path| {
        let path = p.to_owned();
        move |source| NetnsError::Io { op, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        if dir == Path::new(RUN_DIR) {
            share_run_dir().map_err(io_err("make a shared mount point of", dir))?;
        }
    }
    // O_EXCL, as `ip netns add`: an existing name is refused (AlreadyExists), not mounted over.
    File::create_new(path).map_err(io_err("create", path))?;
    let made = on_thread(|| {
        unshare_net()?;
        // The thread ends right after; the bind mount keeps the namespace alive.
        bind_mount(Path::new("/proc/thread-self/ns/net"), path).map_err(io_err("bind-mount", path))
    });
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Where `ip netns` keeps its namespaces.
pub const RUN_DIR: &str = "/run/netns";

/// Makes [`RUN_DIR`] a shared mount point of its own before a namespace is bound there, as
/// `ip netns add` does (a recursive bind of the directory onto itself, then shared), under the
/// same `flock` of the directory iproute2 takes (concurrent adds would stack binds). Otherwise a
/// later `ip netns add` does it over namespaces already bound there: their mounts stay below the
/// new one, where `umount` no longer reaches them, and removing their files fails with EBUSY (a
/// `ferry down` that could not finish). When the directory is not a mount point yet but already
/// holds namespace mounts (bound by an older ferry), it is left as it is: binding it now would
/// hide those the same way.
fn share_run_dir() -> io::Result<()> {
    let lock = File::open(RUN_DIR)?;
    // SAFETY: a valid descriptor, open for the duration of the call.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let dir = CString::new(RUN_DIR).map_err(io::Error::other)?;
    let none = c"none";
    let mut bound = false;
    loop {
        // SAFETY: valid NUL-terminated strings that outlive the call; a propagation change takes
        // no source and no data.
        let rc = unsafe {
            libc::mount(
                c"".as_ptr(),
                dir.as_ptr(),
                none.as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        // EINVAL: not a mount point yet; make it one (once), unless namespaces are bound below.
        if err.raw_os_error() != Some(libc::EINVAL) || bound {
            return Err(err);
        }
        if mounts_below(RUN_DIR)? {
            return Ok(());
        }
        // SAFETY: as above; a bind mount takes no data.
        let rc = unsafe {
            libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                none.as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        bound = true;
    }
    // The lock goes with `lock`.
}

/// Whether a mount point lies below `dir` on the mount that holds `dir` now (mounts a later
/// mount covers are still listed in `mountinfo`, in mount order, but are not where `dir`'s
/// entries live).
fn mounts_below(dir: &str) -> io::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    // (mount id, parent id, mount point)
    let mounts: Vec<(&str, &str, &str)> = info
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((f.next()?, f.next()?, f.nth(2)?))
        })
        .collect();
    let dir = dir.trim_end_matches('/');
    let holds = |m: &str| m == "/" || dir == m || dir.starts_with(&format!("{m}/"));
    // The covering mount: the last listed of those holding `dir` (a later mount hides what the
    // earlier ones hold at or below its mount point).
    let Some(cover) = mounts.iter().rev().find(|m| holds(m.2)).map(|m| m.0) else {
        return Ok(false);
    };
    let prefix = format!("{dir}/");
    Ok(mounts
        .iter()
        .any(|m| m.1 == cover && m.2.starts_with(&prefix)))
}

/// Unmounts and removes a namespace created by [`create_bound`] (or `ip netns add`); fine if it is
/// already gone or not mounted.
pub fn remove_bound(path: &Path) -> Result<(), NetnsError> {
    if !path.exists() {
        return Ok(());
    }
    match crate::fs::umount_detach(path) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {}
        Err(source) => {
            return Err(NetnsError::Io {
                op: "unmount",
                path: path.to_owned(),
                source,
            })
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Io {
            op: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

fn bind_mount(src: &Path, target: &Path) -> io::Result<()> {
    let src = CString::new(src.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let target = CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call; a bind mount
    // takes no filesystem type and no data (null pointers are allowed for both).
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into a new network namespace.
#[expect(
    clippy::disallowed_methods,
    reason = "ferry-sys::netns is the one place that unshares network namespaces"
)]
fn unshare_net() -> Result<(), NetnsError> {
    // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNET only moves this thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(NetnsError::Io {
            op: "unshare(CLONE_NEWNET)",
            path: PathBuf::from("/proc/thread-self/ns/net"),
            source: io::Error::last_os_error(),
        })
    }
}

impl AsFd for NetnsFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn setns(fd: BorrowedFd<'_>) -> io::Result<()> {
    setns_raw(fd.as_raw_fd())
}

/// `setns(fd, CLONE_NEWNET)` for the calling thread. Async-signal-safe (no allocation), so
/// [`crate::process::OnExec`] calls it between `fork` and `exec`.
#[expect(
    clippy::disallowed_methods,
    reason = "ferry-sys::netns is the one place that calls setns"
)]
pub(crate) fn setns_raw(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns only reads the fd (an invalid one is EBADF); no memory is shared.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Restores the thread's original network namespace on drop. `!Send`: it belongs to the thread.
#[derive(Debug)]
pub struct NetnsGuard {
    original: NetnsFd,
    _not_send: PhantomData<*const ()>,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.original.as_fd()) {
            // Continuing in the wrong namespace would act on the wrong host: stop here.
            eprintln!("ferry: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(path: &str) -> PathBuf {
        std::fs::read_link(path).unwrap()
    }

    #[test]
    fn namespaces_made_run_in_and_removed() {
        if !crate::process::is_root() {
            eprintln!("SKIPPED namespaces_made_run_in_and_removed: needs root");
            return;
        }
        let here = inode("/proc/thread-self/ns/net");
        let (ns, inside) = NetnsFd::new_anonymous(|| inode("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(inside, here);
        assert_eq!(
            ns.run_on_thread(|| inode("/proc/thread-self/ns/net"))
                .unwrap(),
            inside
        );
        assert_eq!(inode("/proc/thread-self/ns/net"), here);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netns/a");
        create_bound(&path).unwrap();
        let again = create_bound(&path).unwrap_err();
        assert!(
            matches!(&again, NetnsError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{again}"
        );
        let bound = NetnsFd::open(&path).unwrap();
        let in_bound = bound
            .run_on_thread(|| inode("/proc/thread-self/ns/net"))
            .unwrap();
        assert_ne!(in_bound, here);
        drop(bound);
        remove_bound(&path).unwrap();
        assert!(!path.exists());
        remove_bound(&path).unwrap();
        assert!(matches!(NetnsFd::open(&path), Err(NetnsError::NotFound(_))));
    }

    #[test]
    fn a_plain_file_is_not_a_netns() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            NetnsFd::open(f.path()),
            Err(NetnsError::NotNetns(_))
        ));
    }
}
