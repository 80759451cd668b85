//! Files and mounts: replace a file atomically (temporary file in the same directory, then
//! `rename`), write a file only when its content changes, read `/proc/self/mountinfo` (with its
//! octal escapes undone) and detach mounts.
//!
//! The temporary file is `.<name>.tmp` next to the target: hidden, and ending in `.tmp`, so
//! directory watchers that skip dot files and `*.tmp` (containerd's CNI conf-dir watcher does)
//! only ever see the rename. One writer per target file at a time is assumed (every caller holds
//! a lock or is the file's only writer).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A filesystem operation that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct FsError {
    /// What was being done (`write`, `rename`, ...).
    pub op: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

impl FsError {
    fn new<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
        move |source| FsError {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

impl From<FsError> for io::Error {
    fn from(e: FsError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

/// What survives a crash of the machine (not of the process: a process crash never leaves a
/// half-written target, whatever is chosen here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// No `fsync`: after a power loss the file may be empty or old.
    #[default]
    None,
    /// `fsync` the data before the rename: the file is old or new, never empty.
    Data,
    /// `fsync` the data, rename, then `fsync` the directory: the rename itself is durable.
    DataAndRename,
}

/// How [`write_atomic`] writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Permission bits of the new file (exactly these, whatever the umask); `None` for the
    /// default (`0o666` minus the umask).
    pub mode: Option<u32>,
    /// What survives a crash of the machine.
    pub durability: Durability,
    /// Create the parent directory (and its parents) if missing.
    pub create_dir: bool,
}

impl WriteOptions {
    /// Mode `0o600`: only the owner reads the file (tokens, state, cached results).
    pub fn private() -> WriteOptions {
        WriteOptions {
            mode: Some(0o600),
            ..WriteOptions::default()
        }
    }

    /// Sets [`WriteOptions::durability`].
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> WriteOptions {
        self.durability = durability;
        self
    }

    /// Sets [`WriteOptions::create_dir`].
    #[must_use]
    pub fn create_dir(mut self, create: bool) -> WriteOptions {
        self.create_dir = create;
        self
    }
}

/// A temporary file name for one [`write_atomic`] call on `path`: `.<name>.<pid>-<n>.tmp`, unique
/// per process and call, so two writers of one file never share (or remove) each other's
/// temporary; the last rename wins, as with any atomic replace.
pub fn temp_path(path: &Path) -> Result<PathBuf, FsError> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| FsError {
        op: "write",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}-{n}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Replaces `path` with `bytes` atomically: readers see the old file or the new one, never a
/// part. The temporary file is removed again if anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8], opts: WriteOptions) -> Result<(), FsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if opts.create_dir {
        std::fs::create_dir_all(dir).map_err(FsError::new("create directory", dir))?;
    }
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut open = OpenOptions::new();
        open.write(true).create_new(true);
        if let Some(mode) = opts.mode {
            open.mode(mode);
        }
        // The name is this call's own; a leftover of that name (an earlier process with the same
        // pid that crashed) is removed and created anew, never reused: whoever opened it while it
        // had another mode would read the new content through their descriptor.
        let mut f = match open.open(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&tmp).map_err(FsError::new("remove", &tmp))?;
                open.open(&tmp)
            }
            r => r,
        }
        .map_err(FsError::new("write", &tmp))?;
        if let Some(mode) = opts.mode {
            // `open` applies the umask: set exactly `mode` (before any byte is written).
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(FsError::new("chmod", &tmp))?;
        }
        f.write_all(bytes).map_err(FsError::new("write", &tmp))?;
        if opts.durability != Durability::None {
            f.sync_all().map_err(FsError::new("fsync", &tmp))?;
        }
        drop(f);
        std::fs::rename(&tmp, path).map_err(FsError::new("rename", path))?;
        if opts.durability == Durability::DataAndRename {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(FsError::new("fsync", dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Like [`write_atomic`], but leaves `path` alone when it already holds exactly `bytes`.
/// Returns whether the file was (re)written.
pub fn write_if_changed(path: &Path, bytes: &[u8], opts: WriteOptions) -> Result<bool, FsError> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    write_atomic(path, bytes, opts).map(|()| true)
}

/// One line of `/proc/self/mountinfo`, with the mount point unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The filesystem type (`cgroup2`, `nsfs`, `tmpfs`, ...).
    pub fstype: String,
}

/// Parses the text of a mountinfo file; lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            // `id parent maj:min root mount-point options [optional...] - fstype source opts`
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount_point = left.split(' ').nth(4)?;
            Some(Mount {
                mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// The mounts of this process's mount namespace (empty if `/proc` cannot be read).
pub fn mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` (three octal digits).
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |c: &u8| (b'0'..=b'7').contains(c);
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] <= b'3' && b[i + 1..i + 4].iter().all(octal)
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Detaches (lazily unmounts, `MNT_DETACH`) the mount at `path`.
pub fn umount_detach(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/run/a\040b\134c"), r"/run/a b\c");
        assert_eq!(unescape_mountinfo(r"/run/x\04"), r"/run/x\04");
        assert_eq!(unescape_mountinfo(r"/run/x\400"), r"/run/x\400");
        assert_eq!(unescape_mountinfo(r"\011tab"), "\ttab");
    }

    #[test]
    fn mountinfo_lines() {
        let text = "20 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    41 25 0:4 net:[4026532] /run/my\\040ns rw shared:5 - nsfs nsfs rw\n\
                    garbage\n";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                Mount {
                    mount_point: "/sys/fs/cgroup/unified".into(),
                    fstype: "cgroup2".into()
                },
                Mount {
                    mount_point: "/run/my ns".into(),
                    fstype: "nsfs".into()
                },
            ]
        );
        assert!(!mounts().is_empty());
    }

    #[test]
    fn atomic_write_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.json");
        assert!(write_atomic(&p, b"x", WriteOptions::default()).is_err());
        let opts = WriteOptions::private()
            .durability(Durability::DataAndRename)
            .create_dir(true);
        write_atomic(&p, b"one", opts).unwrap();
        write_atomic(&p, b"two", opts).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        let t = temp_path(&p).unwrap();
        let t = t.file_name().unwrap().to_string_lossy();
        assert!(t.starts_with(".state.json.") && t.ends_with(".tmp"), "{t}");
        assert_ne!(
            temp_path(&p).unwrap(),
            temp_path(&p).unwrap(),
            "unique per call"
        );
        // A failed rename (target is a non-empty directory) leaves no temporary behind.
        let d = dir.path().join("sub/d");
        std::fs::create_dir_all(d.join("x")).unwrap();
        assert_eq!(write_atomic(&d, b"z", opts).unwrap_err().op, "rename");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn concurrent_writers_of_one_file_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(p, &[i; 64], WriteOptions::default()).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&p).unwrap();
        assert_eq!(got.len(), 64);
        assert!(
            got.iter().all(|b| *b == got[0]),
            "one writer's content, whole"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn write_if_changed_skips_equal_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let o = WriteOptions::default();
        assert!(write_if_changed(&p, b"a", o).unwrap());
        assert!(!write_if_changed(&p, b"a", o).unwrap());
        assert!(write_if_changed(&p, b"b", o).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"b");
    }
}
