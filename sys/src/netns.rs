//! Network namespaces: open a netns path once, check it really is a network namespace, and enter
//! it through a guard that restores the original namespace on drop (also while unwinding).
//!
//! A network namespace belongs to a thread, so [`NetnsGuard`] is `!Send`. The plugin is
//! single-threaded; other users (tests, the kubelet) must call it from a dedicated thread.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
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
}

impl AsFd for NetnsFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn setns(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns only reads the fd, which is valid for the call.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
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
