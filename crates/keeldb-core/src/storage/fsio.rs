//! Small file-system protocols shared by every file keeldb writes.

use std::path::Path;
use std::sync::Arc;

use super::vfs::{NodeKind, OpenMode, Vfs, VfsFile, VfsView};
use crate::error::{Error, Result};

/// Suffix of a file being written by [`write_atomic`]; such files are removed at open.
pub const TEMP_SUFFIX: &str = ".tmp";

/// fsyncs a directory, making the creates, renames and unlinks in it durable.
pub fn sync_dir(fs: &dyn Vfs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    #[cfg(feature = "planted-bugs")]
    crate::planted::record(crate::planted::EventKind::SyncDir, dir);
    Ok(())
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old file or the new
/// one: write a temp file, fsync it, rename it over the target, fsync the directory.
pub fn write_atomic(fs: &dyn Vfs, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    write_atomic_with(fs, dir, name, |write| write(bytes)).map(|_| ())
}

/// [`write_atomic`] of the bytes `fill` hands to the function it is given, one chunk after
/// another (a file of any size is written without being held in memory whole). Returns
/// how many bytes the file holds.
pub fn write_atomic_with(
    fs: &dyn Vfs,
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
) -> Result<u64> {
    let target = dir.join(name);
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let file = fs
        .open(&temp, OpenMode::Replace)
        .map_err(|e| Error::io("create", &temp, e))?;
    let mut written = 0u64;
    fill(&mut |chunk: &[u8]| {
        file.write_all_at(chunk, written)
            .map_err(|e| Error::io("write", &temp, e))?;
        written += chunk.len() as u64;
        Ok(())
    })?;
    file.sync_all().map_err(|e| Error::io("fsync", &temp, e))?;
    #[cfg(feature = "planted-bugs")]
    crate::planted::record(crate::planted::EventKind::SyncFile, &temp);
    drop(file);
    fs.rename(&temp, &target)
        .map_err(|e| Error::io("rename", &target, e))?;
    #[cfg(feature = "planted-bugs")]
    crate::planted::record(crate::planted::EventKind::Rename, &target);
    #[cfg(feature = "planted-bugs")]
    if crate::planted::active(crate::planted::Bug::NoDirFsync) {
        return Ok(written);
    }
    sync_dir(fs, dir).map(|()| written)
}

/// Removes the temp files a crash in [`write_atomic`] may have left in `dir`.
pub fn remove_stale_temps(fs: &dyn Vfs, dir: &Path) -> Result<()> {
    let entries = fs
        .read_dir(dir)
        .map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        if entry.name.ends_with(TEMP_SUFFIX) && entry.kind == NodeKind::File {
            let path = dir.join(&entry.name);
            fs.remove_file(&path)
                .map_err(|e| Error::io("remove stale temp file", &path, e))?;
        }
    }
    Ok(())
}

/// Reads a whole small file, refusing one larger than `limit_bytes` before reading it (a
/// hostile file must not make keeldb allocate its declared size).
pub fn read_small(fs: &dyn Vfs, path: &Path, limit_bytes: u64) -> Result<Vec<u8>> {
    read_all(&*open_within(fs, path, limit_bytes)?, path)
}

/// Maps a whole file for reading, refusing one larger than `limit_bytes`: for the indexes
/// opening reads whole, which are large (tens of MB for a million ids), and copying them
/// into fresh memory first cost a page fault per 4 KiB on top of the copy.
pub fn map_small(fs: &dyn Vfs, path: &Path, limit_bytes: u64) -> Result<Box<dyn VfsView>> {
    open_within(fs, path, limit_bytes)?
        .map_read()
        .map_err(|e| Error::io("map", path, e))
}

/// Refuses the file at `path` if its header (the uid at offset `at`) names another
/// collection than `uid`, the one whose directory holds it (see
/// [`crate::format::config::CollectionConfig::uid`]). A uid of 0 on either side, written
/// before format 3, matches any.
pub fn check_uid(path: &Path, at: u64, uid: u32, found: u32) -> Result<()> {
    if uid == 0 || found == 0 || uid == found {
        return Ok(());
    }
    Err(Error::corrupted(
        path,
        at,
        format!(
            "the file belongs to another collection (its uid is {found}, this collection's is \
             {uid}): it was moved or copied here; put back this collection's own file"
        ),
    ))
}

/// Opens a regular file for reading, refusing one larger than `limit_bytes`.
fn open_within(fs: &dyn Vfs, path: &Path, limit_bytes: u64) -> Result<Arc<dyn VfsFile>> {
    let file = open_regular(fs, path)?;
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    if len > limit_bytes {
        return Err(Error::corrupted(
            path,
            limit_bytes,
            format!("file is {len} bytes, more than the {limit_bytes} keeldb ever writes there"),
        ));
    }
    Ok(file)
}

/// Reads the whole of an open file.
pub fn read_all(file: &dyn VfsFile, path: &Path) -> Result<Vec<u8>> {
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
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
    bytes.resize(len as usize, 0);
    let got = file
        .read_at(&mut bytes, 0)
        .map_err(|e| Error::io("read", path, e))?;
    bytes.truncate(got);
    Ok(bytes)
}

/// The length of the regular file `path`.
pub fn file_len(fs: &dyn Vfs, path: &Path) -> Result<u64> {
    open_regular(fs, path)?
        .len()
        .map_err(|e| Error::io("stat", path, e))
}

/// Opens a file for reading, refusing anything that is not a regular file (a symlink
/// planted in a collection directory is refused, not followed).
pub fn open_regular(fs: &dyn Vfs, path: &Path) -> Result<Arc<dyn VfsFile>> {
    check_regular(fs, path)?;
    fs.open(path, OpenMode::Read)
        .map_err(|e| Error::io("open", path, e))
}

/// Opens a file for reading and writing, refusing anything that is not a regular file.
pub fn open_regular_rw(fs: &dyn Vfs, path: &Path) -> Result<Arc<dyn VfsFile>> {
    check_regular(fs, path)?;
    fs.open(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", path, e))
}

/// A file keeldb wrote must exist and be a regular file: a missing one means the collection
/// was damaged, a symlink or directory means someone else put it there.
fn check_regular(fs: &dyn Vfs, path: &Path) -> Result<()> {
    match fs.kind(path) {
        Ok(NodeKind::File) => Ok(()),
        Ok(_) => Err(Error::corrupted(path, 0, "expected a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::corrupted(path, 0, "file is missing"))
        }
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::vfs::RealFs;

    #[test]
    fn write_atomic_with_writes_each_chunk_after_the_last_and_replaces_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = RealFs::shared();
        write_atomic(&*fs, dir.path(), "f", b"old contents, longer than the new").expect("write");
        let chunks: [&[u8]; 3] = [b"one ", b"", b"two three"];
        let written = write_atomic_with(&*fs, dir.path(), "f", |flush| {
            chunks.iter().try_for_each(|chunk| flush(chunk))
        })
        .expect("write");
        assert_eq!(written, 13);
        assert_eq!(
            std::fs::read(dir.path().join("f")).expect("read"),
            b"one two three"
        );
        assert!(!dir.path().join(format!("f{TEMP_SUFFIX}")).exists());
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = RealFs::shared();
        write_atomic(&*fs, dir.path(), "f", b"old").expect("write");
        let failed = write_atomic_with(&*fs, dir.path(), "f", |flush| {
            flush(b"new")?;
            Err(Error::invalid("the encoder gave up"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), b"old");
    }
}
