//! Helpers the object wrappers (`sock_lb`, `maps`, `nodeport`, `fastpath`) share: loading an
//! object with pinned maps, typed program lookup, error construction, map deletes that tolerate
//! absent keys, pin removal.

use std::fs;
use std::path::{Path, PathBuf};

use aya::maps::MapError;
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
/// bpffs): pinned maps are reused as they are, missing ones created and pinned. No program is
/// loaded into the kernel yet.
pub(super) fn load_pinned(object: &EmbeddedObject, pin_dir: &Path) -> Result<Ebpf, BpfError> {
    let bytes = object.bytes()?;
    check_on_bpffs(pin_dir)?;
    fs::create_dir_all(pin_dir).map_err(|source| BpfError::Pin {
        op: "create directory",
        path: pin_dir.to_owned(),
        source,
    })?;
    EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(bytes)
        .map_err(|source| BpfError::Load {
            object: object.name,
            source: Box::new(source),
        })
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
