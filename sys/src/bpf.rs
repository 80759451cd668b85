//! The two `bpf(2)` commands aya 0.14 does not expose for cgroup links: `BPF_OBJ_GET` of a
//! pinned link (aya's `PinnedLink` keeps its descriptor private) and `BPF_LINK_UPDATE` (aya only
//! uses it inside its XDP and TC attach). With them the agent swaps the program behind a pinned
//! cgroup link in one step, so a program upgrade leaves no moment without a program attached.
//!
//! Errors are plain [`io::Error`]s from `errno`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// `BPF_OBJ_GET` (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_OBJ_GET: libc::c_long = 7;
/// `BPF_LINK_UPDATE`.
const BPF_LINK_UPDATE: libc::c_long = 29;
/// `BPF_F_RDONLY` / `BPF_F_WRONLY` unset: read-write access.
const FILE_FLAGS_RW: u32 = 0;

/// The `BPF_OBJ_*` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}

const _: () = assert!(std::mem::size_of::<ObjAttr>() == 24);

/// The `link_update` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

const _: () = assert!(std::mem::size_of::<LinkUpdateAttr>() == 16);

/// Opens a pinned BPF object (link, map or program) on bpffs.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        file_flags: FILE_FLAGS_RW,
        ..ObjAttr::default()
    };
    let fd = bpf(
        BPF_OBJ_GET,
        (&raw mut attr).cast(),
        std::mem::size_of::<ObjAttr>(),
    )?;
    // SAFETY: BPF_OBJ_GET returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Replaces the program behind `link` by `new_prog` (`BPF_LINK_UPDATE`), atomically: every hook
/// run sees the old or the new program.
pub fn link_update(link: BorrowedFd<'_>, new_prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: fd_u32(link)?,
        new_prog_fd: fd_u32(new_prog)?,
        ..LinkUpdateAttr::default()
    };
    bpf(
        BPF_LINK_UPDATE,
        (&raw mut attr).cast(),
        std::mem::size_of::<LinkUpdateAttr>(),
    )
    .map(|_| ())
}

fn fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The `bpf(2)` funnel of this module.
fn bpf(cmd: libc::c_long, attr: *mut libc::c_void, size: usize) -> io::Result<libc::c_int> {
    // SAFETY: `attr` points at a live, initialised `#[repr(C)]` prefix of `union bpf_attr` of
    // `size` bytes (the kernel zero-extends shorter attrs); any path it names is a live CString.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    libc::c_int::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obj_get_of_a_missing_pin_is_enoent_or_eperm() {
        let err = obj_get(Path::new("/sys/fs/bpf/ferry-no-such-pin")).unwrap_err();
        assert!(
            matches!(
                err.raw_os_error(),
                Some(libc::ENOENT | libc::EPERM | libc::ENOSYS)
            ),
            "{err}"
        );
    }
}
