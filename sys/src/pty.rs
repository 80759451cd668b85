//! Pseudo-terminals, for `kubectl exec -t`: open a master/slave pair, give a child the slave as
//! its controlling terminal (between fork and exec), and set the window size on a resize.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A master/slave pair. The master is non-blocking and close-on-exec; the slave is close-on-exec
/// (hand it to a child as stdin/stdout/stderr).
#[derive(Debug)]
pub struct Pty {
    /// The side this process reads the terminal's output from and writes its input to.
    pub master: OwnedFd,
    /// The side the child uses as its terminal.
    pub slave: OwnedFd,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens a new pseudo-terminal of `rows` x `cols` characters.
pub fn open(rows: u16, cols: u16) -> io::Result<Pty> {
    // SAFETY: posix_openpt has no memory preconditions; a valid fd is owned at once.
    let master = unsafe {
        OwnedFd::from_raw_fd(check(libc::posix_openpt(
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK,
        ))?)
    };
    // SAFETY: grantpt/unlockpt only take the fd, which is open for the duration.
    check(unsafe { libc::grantpt(master.as_raw_fd()) })?;
    // SAFETY: as above.
    check(unsafe { libc::unlockpt(master.as_raw_fd()) })?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r writes at most `name.len()` bytes (NUL included) into `name`.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: on success ptsname_r stored a NUL-terminated string in `name`.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: `path` is a valid C string; a valid fd is owned at once.
    let slave = unsafe {
        OwnedFd::from_raw_fd(check(libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?)
    };
    set_window_size(&master, rows, cols)?;
    Ok(Pty { master, slave })
}

/// Sets the window size of the terminal `fd` (either side); the foreground process group gets
/// `SIGWINCH`.
pub fn set_window_size(fd: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
    check(unsafe {
        libc::ioctl(
            fd.as_fd().as_raw_fd(),
            libc::TIOCSWINSZ,
            std::ptr::from_ref(&ws),
        )
    })?;
    Ok(())
}

/// Makes `cmd`'s child start a new session and take its stdin (which must be the slave of a
/// [`Pty`]) as its controlling terminal, between fork and exec. Register it after any
/// [`crate::process::OnExec`] (without its `new_session`): `pre_exec` hooks run in order.
pub fn controlling_terminal_on_exec(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // syscalls (setsid, ioctl) on fd 0; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn a_child_sees_the_terminal_and_its_size() {
        let pty = open(33, 101).expect("openpty");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "stty size; tty -s && echo tty"])
            .stdin(pty.slave.try_clone().unwrap())
            .stdout(pty.slave.try_clone().unwrap())
            .stderr(pty.slave.try_clone().unwrap());
        controlling_terminal_on_exec(&mut cmd);
        let mut child = cmd.spawn().expect("spawn");
        drop(cmd);
        drop(pty.slave);
        assert!(child.wait().unwrap().success());
        // Blocking reads from here on; EIO once the slave is gone and the buffer is drained.
        let mut master = std::fs::File::from(pty.master);
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(_) => break,
            }
        }
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("33 101"), "{out:?}");
        assert!(out.contains("tty"), "{out:?}");
    }
}
