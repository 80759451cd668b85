//! The two `bpf(2)` commands aya 0.14 does not expose for cgroup links: `BPF_OBJ_GET` of a
//! pinned link (aya's `PinnedLink` keeps its descriptor private) and `BPF_LINK_UPDATE` (aya only
//! uses it inside its XDP and TC attach). With them the agent swaps the program behind a pinned
//! cgroup link in one step, so a program upgrade leaves no moment without a program attached.
//!
//! [`prog_test_run`] (`BPF_PROG_TEST_RUN`, which aya 0.14 does not wrap either) runs a loaded
//! program on a test packet for the packet tests of the tc programs.
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

/// `BPF_PROG_TEST_RUN`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (`BPF_PROG_TEST_RUN`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

const _: () = assert!(std::mem::size_of::<TestRunAttr>() == 80);

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (e.g. a `TC_ACT_*` code; `-1` reads as `u32::MAX`).
    pub retval: u32,
    /// The packet after the program (as long as the kernel reported).
    pub data_out: Vec<u8>,
}

/// Runs a loaded program once on `data_in` (`BPF_PROG_TEST_RUN`; for tc programs a packet from
/// its Ethernet header, run in the caller's network namespace) and returns its verdict and the
/// packet as it left. `out_capacity` bounds the output copy (`ENOSPC` if the packet grew beyond).
pub fn prog_test_run(
    prog: BorrowedFd<'_>,
    data_in: &[u8],
    out_capacity: usize,
) -> io::Result<TestRun> {
    test_run(prog, data_in, out_capacity, &[])
}

/// [`prog_test_run`] for an XDP program, as if the packet arrived on the device with index
/// `ingress_ifindex` (of the caller's network namespace): the program's `ctx->ingress_ifindex`
/// and the FIB lookups it makes from there. `XDP_TX` / `XDP_REDIRECT` send nothing; the
/// packet as the program left it comes back.
pub fn prog_test_run_xdp(
    prog: BorrowedFd<'_>,
    data_in: &[u8],
    out_capacity: usize,
    ingress_ifindex: u32,
) -> io::Result<TestRun> {
    let len =
        u32::try_from(data_in.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex (the kernel wants data 0, data_end the packet's length, no metadata).
    let md: [u32; 6] = [0, len, 0, ingress_ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
    test_run(prog, data_in, out_capacity, &ctx)
}

fn test_run(
    prog: BorrowedFd<'_>,
    data_in: &[u8],
    out_capacity: usize,
    ctx_in: &[u8],
) -> io::Result<TestRun> {
    let mut out = vec![0u8; out_capacity];
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog)?,
        data_size_in: u32::try_from(data_in.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        data_size_out: u32::try_from(out.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        data_in: data_in.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: u32::try_from(ctx_in.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        ctx_in: if ctx_in.is_empty() {
            0
        } else {
            ctx_in.as_ptr() as u64
        },
        ..TestRunAttr::default()
    };
    bpf(
        BPF_PROG_TEST_RUN,
        (&raw mut attr).cast(),
        std::mem::size_of::<TestRunAttr>(),
    )?;
    out.truncate(attr.data_size_out as usize);
    Ok(TestRun {
        retval: attr.retval,
        data_out: out,
    })
}

fn fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The `bpf(2)` funnel of this module.
fn bpf(cmd: libc::c_long, attr: *mut libc::c_void, size: usize) -> io::Result<libc::c_int> {
    // SAFETY: `attr` points at a live, initialised `#[repr(C)]` prefix of `union bpf_attr` of
    // `size` bytes (the kernel zero-extends shorter attrs); any path it names is a live CString and
    // any buffer it names (test run input / output) is live and as long as the attr says.
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
