//! The built-in IPAM's file-backed reservation store.
//!
//! Layout under `<dataDir>/<network>/`:
//!
//! | file | content |
//! |---|---|
//! | `lock` | `flock`ed for the duration of every operation; also holds the rotation hints |
//! | `<ip>` | one reservation: `{"containerId","ifname","bootId"}` |
//! | `by-attachment/<containerId>%<ifname>` | the attachment's IPs, one per line (an index, so DEL is O(1)) |
//! | `boot_id` | the boot whose stale reservations were last reclaimed |
//!
//! Every operation holds the lock, so no reader ever sees a half-written file; a reservation is
//! claimed with an exclusive create (`O_EXCL`), so an address is never handed out twice. Leak-proofing: reservations record the boot they
//! were made in, and the first operation after a reboot drops every reservation from an earlier
//! boot (pods do not survive reboots, and runtimes never send DEL for them); GC drops everything
//! not in the runtime's list of valid attachments.

use crate::config::{Range, RangeSet};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Failures of the reservation store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No free address is left in a range set.
    #[error("no free IP address left in range set {ranges}")]
    Exhausted {
        /// The range set, human-readable.
        ranges: String,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Removes `path`; a file that is already gone is not an error (release and DEL are idempotent).
fn remove_if_present(op: &'static str, path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(op, path)(e)),
        _ => Ok(()),
    }
}

/// The owner of a reserved address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// Container id.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
    /// Boot id at reservation time.
    pub boot_id: String,
}

/// One reservation read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The reserved address.
    pub ip: IpAddr,
    /// Its owner.
    pub owner: Owner,
}

/// The current boot id (`/proc/sys/kernel/random/boot_id`).
pub fn current_boot_id() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

/// An open, locked reservation store for one network. The lock is released on drop.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    boot_id: String,
    lock: File,
}

const INDEX_DIR: &str = "by-attachment";
/// Bytes per rotation-hint record in the lock file (an IPv6 address is at most 39 characters).
const HINT_LEN: usize = 48;

impl Store {
    /// Opens (creating if needed) and locks the store of `network` under `data_dir`, then
    /// reclaims reservations from earlier boots if this is the first use in this boot.
    pub fn open(data_dir: &Path, network: &str, boot_id: &str) -> Result<Store, StoreError> {
        let dir = data_dir.join(network);
        let index = dir.join(INDEX_DIR);
        if !index.is_dir() {
            fs::create_dir_all(&index).map_err(io_err("create directory", &index))?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        // flock(LOCK_EX), held until `lock` is closed.
        lock.lock().map_err(io_err("lock", &lock_path))?;
        let store = Store {
            dir,
            boot_id: boot_id.to_owned(),
            lock,
        };
        store.reclaim_if_new_boot()?;
        Ok(store)
    }

    fn reclaim_if_new_boot(&self) -> Result<(), StoreError> {
        let marker = self.dir.join("boot_id");
        let last = fs::read_to_string(&marker).unwrap_or_default();
        if last.trim() == self.boot_id {
            return Ok(());
        }
        let boot = self.boot_id.clone();
        self.retain(|r| r.owner.boot_id == boot)?;
        write_atomic(&marker, self.boot_id.as_bytes())
    }

    /// Reserves one address from each range set for `(container_id, ifname)`. An attachment
    /// that already holds addresses gets the same addresses back (ADD after a crash converges).
    pub fn allocate(
        &self,
        sets: &[RangeSet],
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<(IpAddr, Range)>, StoreError> {
        // Index only: a scan here would make every ADD O(reservations). A reservation orphaned by
        // a crash between its file and its index is released by DEL's scan fallback, GC or reboot.
        let existing = self
            .lookup_indexed(container_id, ifname)?
            .unwrap_or_default();
        let owner = Owner {
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
            boot_id: self.boot_id.clone(),
        };
        let body = serde_json::to_vec(&owner).unwrap_or_default();
        let mut got = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            if let Some(ip) = existing
                .iter()
                .find(|ip| set.iter().any(|r| r.subnet.contains(**ip)))
            {
                let range = set.iter().find(|r| r.subnet.contains(*ip)).cloned();
                got.push((*ip, range.unwrap_or_else(|| set[0].clone())));
                continue;
            }
            match self.reserve_in_set(i, set, &body) {
                Ok(found) => got.push(found),
                Err(e) => {
                    // Undo this call's reservations so a failed ADD holds nothing.
                    for (ip, _) in &got {
                        if !existing.contains(ip) {
                            let _ = fs::remove_file(self.dir.join(ip.to_string()));
                        }
                    }
                    return Err(e);
                }
            }
        }
        let ips: Vec<IpAddr> = got.iter().map(|(ip, _)| *ip).collect();
        self.write_index(container_id, ifname, &ips)?;
        Ok(got)
    }

    fn reserve_in_set(
        &self,
        set_index: usize,
        set: &RangeSet,
        body: &[u8],
    ) -> Result<(IpAddr, Range), StoreError> {
        let last = self.rotation_hint(set_index);
        for (ip, range) in SetIter::new(set, last) {
            let path = self.dir.join(ip.to_string());
            // Exclusive create under the store lock: the file is ours. A crash before the write
            // leaves an empty file, which names no owner and so is released by GC or at reboot.
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(body).map_err(io_err("write", &path))?;
                    self.set_rotation_hint(set_index, ip);
                    return Ok((ip, range.clone()));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("reserve", &path)(e)),
            }
        }
        let ranges = set
            .iter()
            .map(|r| format!("{}-{} in {}", r.start, r.end, r.subnet))
            .collect::<Vec<_>>()
            .join(", ");
        Err(StoreError::Exhausted { ranges })
    }

    /// Where the last search of range set `set_index` ended (host-local's rotation: a just-freed
    /// address is not handed out again at once). Kept as fixed-size records in the lock file,
    /// rewritten in place, so no allocation pays for creating or truncating a file.
    fn rotation_hint(&self, set_index: usize) -> Option<IpAddr> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; HINT_LEN];
        let off = u64::try_from(set_index * HINT_LEN).ok()?;
        let n = self.lock.read_at(&mut buf, off).ok()?;
        std::str::from_utf8(&buf[..n])
            .ok()?
            .trim_end_matches(['\0', ' ', '\n'])
            .parse()
            .ok()
    }

    /// Records the hint; it is advisory, so a failed or torn write only restarts the search at
    /// the beginning of the range.
    fn set_rotation_hint(&self, set_index: usize, ip: IpAddr) {
        use std::os::unix::fs::FileExt;
        let mut buf = [b' '; HINT_LEN];
        let text = ip.to_string();
        buf[..text.len()].copy_from_slice(text.as_bytes());
        buf[HINT_LEN - 1] = b'\n';
        if let Ok(off) = u64::try_from(set_index * HINT_LEN) {
            let _ = self.lock.write_all_at(&buf, off);
        }
    }

    fn index_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join(INDEX_DIR)
            .join(format!("{container_id}%{ifname}"))
    }

    fn write_index(
        &self,
        container_id: &str,
        ifname: &str,
        ips: &[IpAddr],
    ) -> Result<(), StoreError> {
        // Written in place under the lock. A torn index (crash mid-write) names fewer addresses:
        // one naming none makes lookups scan the reservation files, and anything it misses is
        // released by GC or at reboot.
        let text: String = ips.iter().map(|ip| format!("{ip}\n")).collect();
        let path = self.index_path(container_id, ifname);
        fs::write(&path, text).map_err(io_err("write", &path))
    }

    /// The addresses the index records for `(container_id, ifname)` (and whose reservation files
    /// still name that owner); `None` when there is no index entry.
    pub fn lookup_indexed(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Vec<IpAddr>>, StoreError> {
        let index = self.index_path(container_id, ifname);
        match fs::read_to_string(&index) {
            Ok(text) => Ok(Some(
                text.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .filter(|ip: &IpAddr| {
                        self.read(*ip)
                            .is_some_and(|o| o.container_id == container_id && o.ifname == ifname)
                    })
                    .collect(),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &index)(e)),
        }
    }

    /// The addresses held by `(container_id, ifname)`: the index, or a scan of every reservation
    /// when the index entry is missing (a crash between the reservation and its index).
    pub fn lookup(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        match self.lookup_indexed(container_id, ifname)? {
            Some(ips) if !ips.is_empty() => Ok(ips),
            _ => Ok(self
                .reservations()?
                .into_iter()
                .filter(|r| r.owner.container_id == container_id && r.owner.ifname == ifname)
                .map(|r| r.ip)
                .collect()),
        }
    }

    fn read(&self, ip: IpAddr) -> Option<Owner> {
        let bytes = fs::read(self.dir.join(ip.to_string())).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Releases everything `(container_id, ifname)` holds; returns the released addresses.
    /// Releasing nothing is not an error (DEL is idempotent).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        let ips = self.lookup(container_id, ifname)?;
        for ip in &ips {
            remove_if_present("release", &self.dir.join(ip.to_string()))?;
        }
        remove_if_present("remove", &self.index_path(container_id, ifname))?;
        Ok(ips)
    }

    /// Undoes part of an allocation: releases `ips` where the reservation still names
    /// `(container_id, ifname)`, and drops them from the attachment's index (removing the index
    /// when nothing is left). Whatever else the attachment holds stays reserved.
    pub fn release_some(
        &self,
        container_id: &str,
        ifname: &str,
        ips: &[IpAddr],
    ) -> Result<(), StoreError> {
        for ip in ips {
            let ours = self
                .read(*ip)
                .is_some_and(|o| o.container_id == container_id && o.ifname == ifname);
            if !ours {
                continue;
            }
            remove_if_present("release", &self.dir.join(ip.to_string()))?;
        }
        let index = self.index_path(container_id, ifname);
        let text = match fs::read_to_string(&index) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("read", &index)(e)),
        };
        let left: Vec<IpAddr> = text
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|ip| !ips.contains(ip))
            .collect();
        if left.is_empty() {
            remove_if_present("remove", &index)
        } else {
            self.write_index(container_id, ifname, &left)
        }
    }

    /// Every reservation of `network` under `data_dir`, read under a shared lock without
    /// creating or reclaiming anything: for readers such as the agent's pod fast path, which
    /// must not serialise against the plugin's ADD / DEL or act on the store. A store that does
    /// not exist yet holds none. Writers use [`Store::open`].
    pub fn read_reservations(
        data_dir: &Path,
        network: &str,
    ) -> Result<Vec<Reservation>, StoreError> {
        let dir = data_dir.join(network);
        let lock_path = dir.join("lock");
        let lock = match OpenOptions::new().read(true).open(&lock_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("open", &lock_path)(e)),
        };
        // flock(LOCK_SH): no writer is half-way through while we read.
        lock.lock_shared().map_err(io_err("lock", &lock_path))?;
        Store {
            dir,
            boot_id: String::new(),
            lock,
        }
        .reservations()
    }

    /// Every reservation on disk (unreadable files are reported as owned by nobody).
    pub fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let owner = self.read(ip).unwrap_or_else(|| Owner {
                container_id: String::new(),
                ifname: String::new(),
                boot_id: String::new(),
            });
            out.push(Reservation { ip, owner });
        }
        out.sort_by_key(|r| r.ip);
        Ok(out)
    }

    /// Keeps only the reservations `keep` accepts (and index entries pointing at them); returns
    /// what was released.
    pub fn retain(
        &self,
        keep: impl Fn(&Reservation) -> bool,
    ) -> Result<Vec<Reservation>, StoreError> {
        let mut released = Vec::new();
        let mut kept: HashSet<(String, String)> = HashSet::new();
        for r in self.reservations()? {
            if keep(&r) {
                kept.insert((r.owner.container_id.clone(), r.owner.ifname.clone()));
            } else {
                let path = self.dir.join(r.ip.to_string());
                if let Err(e) = fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        return Err(io_err("release", &path)(e));
                    }
                }
                released.push(r);
            }
        }
        let index_dir = self.dir.join(INDEX_DIR);
        for entry in fs::read_dir(&index_dir).map_err(io_err("list", &index_dir))? {
            let entry = entry.map_err(io_err("list", &index_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = name
                .split_once('%')
                .map(|(c, i)| (c.to_owned(), i.to_owned()));
            if !key.is_some_and(|k| kept.contains(&k)) {
                let _ = fs::remove_file(entry.path());
            }
        }
        // Leftover temporaries of crashed writers (never ours: we hold the lock).
        for entry in fs::read_dir(&self.dir)
            .map_err(io_err("list", &self.dir))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || (name.starts_with('.') && name.ends_with(".tmp")) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(released)
    }
}

/// Writes `path` atomically (temporary file `.<name>.<pid>-<n>.tmp` in the same directory, then
/// rename).
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    ferry_sys::fs::write_atomic(path, data, ferry_sys::fs::WriteOptions::default()).map_err(|e| {
        StoreError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    })
}

/// Iterates over the usable addresses of a range set, starting after `last` and wrapping, never
/// yielding a range's gateway.
struct SetIter<'a> {
    set: &'a [Range],
    sizes: Vec<u128>,
    total: u128,
    pos: u128,
    left: u128,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// Most addresses examined per allocation: bounds the work on huge, nearly full IPv6 ranges.
const MAX_PROBES: u128 = 1 << 20;

impl<'a> SetIter<'a> {
    fn new(set: &'a [Range], last: Option<IpAddr>) -> Self {
        let sizes: Vec<u128> = set
            .iter()
            .map(|r| to_u128(r.end).saturating_sub(to_u128(r.start)) + 1)
            .collect();
        let total: u128 = sizes.iter().sum();
        // Start right after the last reservation if it lies in this set, else at the beginning.
        let mut pos = total.saturating_sub(1);
        if let Some(last) = last {
            let mut base = 0;
            for (r, size) in set.iter().zip(&sizes) {
                if r.subnet.contains(last) && last >= r.start && last <= r.end {
                    pos = base + (to_u128(last) - to_u128(r.start));
                    break;
                }
                base += size;
            }
        }
        SetIter {
            set,
            sizes,
            total,
            pos,
            left: total.min(MAX_PROBES),
        }
    }
}

impl<'a> Iterator for SetIter<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        while self.left > 0 {
            self.left -= 1;
            self.pos = (self.pos + 1) % self.total;
            let mut idx = self.pos;
            for (r, size) in self.set.iter().zip(&self.sizes) {
                if idx < *size {
                    let mut ip = r.start;
                    // Step from the range start; ranges are small for IPv4, and IPv6 steps are u128 adds.
                    ip = match ip {
                        IpAddr::V4(v) => IpAddr::V4(std::net::Ipv4Addr::from(
                            u32::from(v).wrapping_add(u32::try_from(idx).unwrap_or(0)),
                        )),
                        IpAddr::V6(v) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v) + idx)),
                    };
                    if Some(ip) == r.gateway {
                        break;
                    }
                    return Some((ip, r));
                }
                idx -= size;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{make_range, next_ip};

    fn set(subnet: &str) -> RangeSet {
        vec![make_range(subnet.parse().unwrap(), None, None, None).unwrap()]
    }

    #[test]
    fn allocates_skipping_gateway_and_rotating() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "net", "boot1").unwrap();
        let sets = vec![set("10.0.0.0/29")]; // .1 gateway, .2-.6 usable
        let a = s.allocate(&sets, "c1", "eth0").unwrap();
        assert_eq!(a[0].0.to_string(), "10.0.0.2");
        let b = s.allocate(&sets, "c2", "eth0").unwrap();
        assert_eq!(b[0].0.to_string(), "10.0.0.3");
        s.release("c1", "eth0").unwrap();
        // Rotation: the freed .2 is not handed out again straight away.
        let c = s.allocate(&sets, "c3", "eth0").unwrap();
        assert_eq!(c[0].0.to_string(), "10.0.0.4");
        // Same attachment again: same address.
        assert_eq!(s.allocate(&sets, "c3", "eth0").unwrap()[0].0, c[0].0);
    }

    #[test]
    fn rotation_survives_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let sets = vec![set("10.0.0.0/24"), set("fd00::/64")];
        let first = Store::open(dir.path(), "net", "b")
            .unwrap()
            .allocate(&sets, "c1", "eth0")
            .unwrap();
        let s = Store::open(dir.path(), "net", "b").unwrap();
        s.release("c1", "eth0").unwrap();
        let second = s.allocate(&sets, "c2", "eth0").unwrap();
        assert_eq!(first[0].0.to_string(), "10.0.0.2");
        assert_eq!(
            second[0].0.to_string(),
            "10.0.0.3",
            "the hint outlives the process"
        );
        assert_eq!(second[1].0.to_string(), "fd00::3");
    }

    #[test]
    fn exhaustion_is_clear_and_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "net", "boot1").unwrap();
        let sets = vec![set("10.0.0.0/30")]; // only .2
        s.allocate(&sets, "c1", "eth0").unwrap();
        let e = s.allocate(&sets, "c2", "eth0").unwrap_err();
        assert!(matches!(e, StoreError::Exhausted { .. }), "{e}");
        assert!(e.to_string().contains("10.0.0.2-10.0.0.2"), "{e}");
        assert_eq!(s.reservations().unwrap().len(), 1);
        // Two sets where the second is exhausted: the first set's reservation is undone.
        let sets2 = vec![set("10.1.0.0/24"), set("10.0.0.0/30")];
        assert!(s.allocate(&sets2, "c2", "eth0").is_err());
        assert_eq!(s.reservations().unwrap().len(), 1);
        assert!(s.lookup("c2", "eth0").unwrap().is_empty());
    }

    #[test]
    fn release_some_takes_back_only_the_named_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "net", "b").unwrap();
        let v4 = vec![set("10.0.0.0/24")];
        let held = s.allocate(&v4, "c1", "eth0").unwrap()[0].0;
        let index = dir.path().join("net/by-attachment/c1%eth0");
        let before = fs::read(&index).unwrap();
        // A later ADD of the same attachment with a second range set gets `held` back plus one
        // new address; undoing that ADD must restore exactly the state before it.
        let both = vec![set("10.0.0.0/24"), set("fd00::/120")];
        let got = s.allocate(&both, "c1", "eth0").unwrap();
        assert_eq!(got[0].0, held);
        let new = got[1].0;
        s.release_some("c1", "eth0", &[new]).unwrap();
        assert_eq!(fs::read(&index).unwrap(), before, "index as it was");
        assert_eq!(s.lookup("c1", "eth0").unwrap(), vec![held]);
        assert!(!dir.path().join(format!("net/{new}")).exists());
        // An address owned by someone else is never released through this attachment.
        let other = s.allocate(&v4, "c2", "eth0").unwrap()[0].0;
        s.release_some("c1", "eth0", &[other]).unwrap();
        assert_eq!(s.lookup("c2", "eth0").unwrap(), vec![other]);
        // Releasing everything an attachment holds removes its index.
        s.release_some("c2", "eth0", &[other]).unwrap();
        assert!(!dir.path().join("net/by-attachment/c2%eth0").exists());
        assert!(s.lookup("c2", "eth0").unwrap().is_empty());
    }

    #[test]
    fn release_is_idempotent_and_new_boot_reclaims() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), "net", "boot1").unwrap();
            s.allocate(&[set("10.0.0.0/24")], "c1", "eth0").unwrap();
            assert_eq!(s.release("c1", "eth0").unwrap().len(), 1);
            assert!(s.release("c1", "eth0").unwrap().is_empty());
            s.allocate(&[set("10.0.0.0/24")], "c2", "eth0").unwrap();
        }
        let s = Store::open(dir.path(), "net", "boot2").unwrap();
        assert!(
            s.reservations().unwrap().is_empty(),
            "previous boot's reservation reclaimed"
        );
        assert!(s.lookup("c2", "eth0").unwrap().is_empty());
    }

    #[test]
    fn gc_keeps_only_valid_attachments_and_scan_fallback_works() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "net", "b").unwrap();
        let sets = vec![set("10.0.0.0/24"), set("fd00::/120")];
        for c in ["a", "b", "c"] {
            assert_eq!(s.allocate(&sets, c, "eth0").unwrap().len(), 2);
        }
        // Lose b's index (crash between reservation and index): lookup scans.
        fs::remove_file(dir.path().join("net/by-attachment/b%eth0")).unwrap();
        assert_eq!(s.lookup("b", "eth0").unwrap().len(), 2);
        let released = s.retain(|r| r.owner.container_id == "b").unwrap();
        assert_eq!(released.len(), 4);
        let left: Vec<_> = s
            .reservations()
            .unwrap()
            .into_iter()
            .map(|r| r.owner.container_id)
            .collect();
        assert_eq!(left, vec!["b", "b"]);
    }

    #[test]
    fn iterates_multi_range_sets_with_wrap() {
        let r1 = make_range(
            "10.0.0.0/24".parse().unwrap(),
            Some("10.0.0.10".parse().unwrap()),
            Some("10.0.0.11".parse().unwrap()),
            None,
        )
        .unwrap();
        let r2 = make_range(
            "10.0.1.0/24".parse().unwrap(),
            Some("10.0.1.1".parse().unwrap()),
            Some("10.0.1.2".parse().unwrap()),
            None,
        )
        .unwrap();
        let set = vec![r1, r2];
        let got: Vec<String> = SetIter::new(&set, Some("10.0.0.11".parse().unwrap()))
            .map(|(ip, _)| ip.to_string())
            .collect();
        // 10.0.1.1 is r2's default gateway and is skipped.
        assert_eq!(got, vec!["10.0.1.2", "10.0.0.10", "10.0.0.11"]);
        assert_eq!(
            next_ip("10.0.0.255".parse().unwrap()).to_string(),
            "10.0.1.0"
        );
    }
}
