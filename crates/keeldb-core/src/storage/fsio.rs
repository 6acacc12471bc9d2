//! Small file-system protocols shared by every file keeldb writes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Suffix of a file being written by [`write_atomic`]; such files are removed at open.
pub const TEMP_SUFFIX: &str = ".tmp";

/// fsyncs a directory, making the creates, renames and unlinks in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let handle = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    handle
        .sync_all()
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    #[cfg(feature = "planted-bugs")]
    crate::planted::record(crate::planted::EventKind::SyncDir, dir);
    Ok(())
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old file or the new
/// one: write a temp file, fsync it, rename it over the target, fsync the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let target = dir.join(name);
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|e| Error::io("create", &temp, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("write", &temp, e))?;
    file.sync_all().map_err(|e| Error::io("fsync", &temp, e))?;
    #[cfg(feature = "planted-bugs")]
    crate::planted::record(crate::planted::EventKind::SyncFile, &temp);
    drop(file);
    fs::rename(&temp, &target).map_err(|e| Error::io("rename", &target, e))?;
    #[cfg(feature = "planted-bugs")]
    crate::planted::record(crate::planted::EventKind::Rename, &target);
    #[cfg(feature = "planted-bugs")]
    if crate::planted::active(crate::planted::Bug::NoDirFsync) {
        return Ok(());
    }
    sync_dir(dir)
}

/// Removes the temp files a crash in [`write_atomic`] may have left in `dir`.
pub fn remove_stale_temps(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let is_temp = entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX);
        if is_temp && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| Error::io("remove stale temp file", &path, e))?;
        }
    }
    Ok(())
}

/// Reads a whole small file, refusing one larger than `limit_bytes` before reading it (a
/// hostile file must not make keeldb allocate its declared size).
pub fn read_small(path: &Path, limit_bytes: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len > limit_bytes {
        return Err(Error::corrupted(
            path,
            limit_bytes,
            format!("file is {len} bytes, more than the {limit_bytes} keeldb ever writes there"),
        ));
    }
    // A file can be as large as its limit (64 GiB for the index) or be sparse: ask for the
    // memory without aborting, so that a refusal is a typed error.
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
        .map_err(|_| {
            let source = std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes to read it"),
            );
            Error::io("read", path, source)
        })?;
    file.take(limit_bytes)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(bytes)
}

/// Opens a file for reading, refusing anything that is not a regular file (a symlink
/// planted in a collection directory is refused, not followed).
pub fn open_regular(path: &Path) -> Result<File> {
    check_regular(path)?;
    File::open(path).map_err(|e| Error::io("open", path, e))
}

/// Opens a file for reading and writing, refusing anything that is not a regular file.
pub fn open_regular_rw(path: &Path) -> Result<File> {
    check_regular(path)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// A file keeldb wrote must exist and be a regular file: a missing one means the collection
/// was damaged, a symlink or directory means someone else put it there.
fn check_regular(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(()),
        Ok(_) => Err(Error::corrupted(path, 0, "expected a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::corrupted(path, 0, "file is missing"))
        }
        Err(e) => Err(Error::io("stat", path, e)),
    }
}
