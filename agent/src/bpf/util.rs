//! Helpers the object wrappers (`sock_lb`, `maps`, `nodeport`, `fastpath`) share: loading an
//! object with pinned maps, typed program lookup, error construction, map deletes that tolerate
//! absent keys, pin removal.

use std::fs;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::{Path, PathBuf};

use aya::maps::{MapError, MapInfo};
use aya::programs::links::{FdLink, LinkError};
use aya::programs::{Program, ProgramError};
use aya::{Ebpf, EbpfLoader};

use super::{object::EmbeddedObject, sock_lb::check_on_bpffs, BpfError};

/// The program `name` of `object`'s loaded [`Ebpf`], as its concrete type `T`.
pub(super) fn program_mut<'a, T>(
    ebpf: &'a mut Ebpf,
    object: &'static str,
    name: &'static str,
) -> Result<&'a mut T, BpfError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(BpfError::MissingProgram {
        object,
        program: name,
    })?;
    program
        .try_into()
        .map_err(|source| program_error("type check", name, source))
}

/// [`program_mut`], shared.
pub(super) fn program<'a, T>(
    ebpf: &'a Ebpf,
    object: &'static str,
    name: &'static str,
) -> Result<&'a T, BpfError>
where
    &'a T: TryFrom<&'a Program, Error = ProgramError>,
{
    let program = ebpf.program(name).ok_or(BpfError::MissingProgram {
        object,
        program: name,
    })?;
    program
        .try_into()
        .map_err(|source| program_error("type check", name, source))
}

/// A failed program operation.
pub(super) fn program_error(
    op: &'static str,
    program: &'static str,
    source: ProgramError,
) -> BpfError {
    BpfError::Program {
        op,
        program,
        source: Box::new(source),
    }
}

/// Swaps the program behind the pinned link at `pin` for `prog_fd` (`BPF_LINK_UPDATE`): no
/// moment without a program. `Ok(true)`: swapped. `Ok(false)`: there is no pin, or the link
/// outlived its netdev (the interface was deleted and recreated under the same name: the kernel
/// detached it, `ENOLINK`), whose pin is removed: the caller attaches afresh.
pub(super) fn update_pinned_netdev_link(
    pin: &Path,
    prog_fd: BorrowedFd<'_>,
) -> Result<bool, BpfError> {
    if !pin.exists() {
        return Ok(false);
    }
    let link = ferry_sys::bpf::obj_get(pin).map_err(|source| BpfError::Pin {
        op: "open link pin",
        path: pin.to_owned(),
        source,
    })?;
    match ferry_sys::bpf::link_update(link.as_fd(), prog_fd) {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::info!(
                pin = %pin.display(),
                error = %e,
                "pinned link not updatable (interface recreated?): attaching afresh"
            );
            fs::remove_file(pin).map_err(|source| BpfError::Pin {
                op: "remove stale link pin",
                path: pin.to_owned(),
                source,
            })?;
            Ok(false)
        }
    }
}

/// Pins a new attachment's link at `pin`: the pin holds the link (and the attachment) after
/// the program's descriptor closes, across agent restarts.
pub(super) fn pin_link<L>(link: L, program: &'static str, pin: &Path) -> Result<(), BpfError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    let link = FdLink::try_from(link).map_err(|source| BpfError::Link {
        program,
        source: Box::new(source),
    })?;
    let _pinned = link.pin(pin).map_err(|source| BpfError::PinObject {
        path: pin.to_owned(),
        source: Box::new(source),
    })?;
    Ok(())
}

/// A failed map operation.
pub(super) fn map_error(op: &'static str, map: &'static str, source: MapError) -> BpfError {
    BpfError::Map {
        op,
        map,
        source: Box::new(source),
    }
}

/// Removes each pin of `paths`; missing ones are fine. Returns how many were removed.
pub(super) fn remove_pins(paths: impl IntoIterator<Item = PathBuf>) -> Result<usize, BpfError> {
    let mut removed = 0;
    for path in paths {
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BpfError::Pin {
                    op: "remove pin",
                    path,
                    source,
                })
            }
        }
    }
    Ok(removed)
}

/// Loads `object` with its maps pinned under `pin_dir` (created if missing; it must be on
/// bpffs): pinned maps are reused, missing ones created and pinned, and a pinned map
/// whose shape differs from the object's ([`remove_stale_pins`]) replaced. No program is loaded
/// into the kernel yet.
pub(super) fn load_pinned(object: &EmbeddedObject, pin_dir: &Path) -> Result<Ebpf, BpfError> {
    let bytes = object.bytes()?;
    check_on_bpffs(pin_dir)?;
    fs::create_dir_all(pin_dir).map_err(|source| BpfError::Pin {
        op: "create directory",
        path: pin_dir.to_owned(),
        source,
    })?;
    for (name, was) in remove_stale_pins(object, bytes, pin_dir)? {
        tracing::warn!(
            object = object.name,
            map = %name,
            pinned = %was,
            "pinned map has another shape than this build's (an upgrade changed it): \
             replaced by a new, empty one"
        );
    }
    EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(bytes)
        .map_err(|source| BpfError::Load {
            object: object.name,
            source: Box::new(source),
        })
}

/// Removes the pins under `pin_dir` of `object`'s pinned maps whose kernel map differs from the
/// object's definition in type, key or value size, entries or flags, so that the loader creates
/// them afresh (aya reuses a pin as it is: a program would then index past a smaller array of
/// counters or read a value of another size). Returns (map, the pinned shape) for each one.
pub(super) fn remove_stale_pins(
    object: &EmbeddedObject,
    bytes: &[u8],
    pin_dir: &Path,
) -> Result<Vec<(String, String)>, BpfError> {
    let parsed = aya_obj::Object::parse(bytes).map_err(|source| BpfError::Parse {
        object: object.name,
        source: Box::new(source),
    })?;
    let mut removed = Vec::new();
    for (name, def) in &parsed.maps {
        if !matches!(def.pinning(), aya_obj::maps::PinningType::ByName) {
            continue;
        }
        let pin = pin_dir.join(name);
        if !pin.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&pin).map_err(|e| map_error_named("open pin", name, e))?;
        let want = (
            def.map_type(),
            def.key_size(),
            def.value_size(),
            def.max_entries(),
            def.map_flags(),
        );
        let have = (
            info.map_type().map_or(u32::MAX, |t| t as u32),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
            info.map_flags(),
        );
        if want != have {
            remove_pins([pin])?;
            removed.push((
                name.clone(),
                format!(
                    "type {} key {} value {} entries {} flags {:#x} (now {} {} {} {} {:#x})",
                    have.0, have.1, have.2, have.3, have.4, want.0, want.1, want.2, want.3, want.4
                ),
            ));
        }
    }
    Ok(removed)
}

/// [`map_error`] for a map known only by its (runtime) name.
fn map_error_named(op: &'static str, name: &str, source: MapError) -> BpfError {
    BpfError::Pin {
        op,
        path: PathBuf::from(name),
        source: std::io::Error::other(source.to_string()),
    }
}

/// A map delete's result: `true` deleted, `false` the key was absent.
pub(super) fn absent_ok(r: Result<(), MapError>, map: &'static str) -> Result<bool, BpfError> {
    match r {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(map_error("remove", map, e)),
    }
}
