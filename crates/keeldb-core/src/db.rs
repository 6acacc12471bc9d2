//! A database: a locked directory of collections.
//!
//! Creating a collection builds its files in a hidden temp directory and renames it into
//! place; dropping one renames it to a hidden name before deleting it. Both renames are
//! made durable with a directory fsync, and leftovers of either are removed at open, so a
//! crash never leaves half a collection visible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::collection::{self, Collection, CollectionOptions};
use crate::error::{Error, Result};
use crate::storage::fsio;
use crate::storage::lock::{DirLock, LOCK_FILE_NAME};
use crate::storage::vfs::{NodeKind, RealFs, Vfs};
use crate::types::{validate_collection_name, Durability, Metric, RecoveryPolicy, DIMENSION_MAX};

/// Prefix of a collection directory being created.
const CREATING_PREFIX: &str = ".creating-";
/// Prefix of a collection directory being dropped.
const DROPPING_PREFIX: &str = ".dropping-";
/// Default log size that triggers a checkpoint.
pub const CHECKPOINT_THRESHOLD_BYTES_DEFAULT: u64 = 64 << 20;
/// Default share of garbage in a payload log that triggers compaction: at one half, the
/// rewrite copies at most as many bytes as the writes that made the garbage.
pub const COMPACTION_GARBAGE_RATIO_DEFAULT: f64 = 0.5;
/// Default payload log size below which compaction never triggers by itself.
pub const COMPACTION_MIN_BYTES_DEFAULT: u64 = 1 << 20;

/// How a database is opened.
#[derive(Debug, Clone, Copy)]
pub struct DbOptions {
    /// Durability of writes that do not name one.
    pub durability: Durability,
    /// What replay does with damage in the middle of a log.
    pub recovery: RecoveryPolicy,
    /// The log size past which a write triggers a checkpoint; exact only with
    /// `checkpoint_scales_with_index` off.
    pub checkpoint_threshold_bytes: u64,
    /// Whether that size also grows with the collection (the default; the JavaScript
    /// binding turns it off when `checkpointThresholdBytes` is given): a checkpoint rewrites
    /// the id and payload indexes whole, so a write then triggers one only once the log is
    /// also past four times their size, up to 1 GiB (see `CollectionOptions`).
    pub checkpoint_scales_with_index: bool,
    /// Share of garbage (superseded and delete frames) in a payload log, above 0 and at
    /// most 1, at which a write triggers compaction.
    pub compaction_garbage_ratio: f64,
    /// Payload log size below which compaction never triggers by itself.
    pub compaction_min_bytes: u64,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            durability: Durability::Fsync,
            recovery: RecoveryPolicy::Salvage,
            checkpoint_threshold_bytes: CHECKPOINT_THRESHOLD_BYTES_DEFAULT,
            checkpoint_scales_with_index: true,
            compaction_garbage_ratio: COMPACTION_GARBAGE_RATIO_DEFAULT,
            compaction_min_bytes: COMPACTION_MIN_BYTES_DEFAULT,
        }
    }
}

#[derive(Debug)]
struct Open {
    _lock: DirLock,
    collections: BTreeMap<String, Arc<Collection>>,
}

/// An open database. Shared between threads; every method takes `&self`.
#[derive(Debug)]
pub struct Db {
    fs: Arc<dyn Vfs>,
    path: PathBuf,
    options: DbOptions,
    open: Mutex<Option<Open>>,
}

impl Db {
    /// Opens (creating if needed) the database in `path`: takes its lock, clears leftovers
    /// of interrupted creates and drops, and opens and recovers every collection.
    pub fn open(path: &Path, options: DbOptions) -> Result<Db> {
        Db::open_in(RealFs::shared(), path, options)
    }

    /// [`Db::open`] on the file system `fs` (the crash tests pass a simulated disk).
    pub fn open_in(fs: Arc<dyn Vfs>, path: &Path, options: DbOptions) -> Result<Db> {
        if options.checkpoint_threshold_bytes == 0 {
            return Err(Error::invalid(
                "checkpoint threshold must be at least 1 byte",
            ));
        }
        let ratio = options.compaction_garbage_ratio;
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(Error::invalid(format!(
                "compaction garbage ratio must be above 0 and at most 1, got {ratio}"
            )));
        }
        if path.as_os_str().is_empty() {
            return Err(Error::invalid("the database path is empty"));
        }
        refuse_foreign_dir(&*fs, path)?;
        create_dir_durably(&*fs, path)?;
        let lock = DirLock::acquire(&*fs, path)?;
        let mut collections = BTreeMap::new();
        let entries = fs
            .read_dir(path)
            .map_err(|e| Error::io("read directory", path, e))?;
        let mut names = Vec::new();
        let mut leftovers = Vec::new();
        for entry in entries {
            let name = entry.name;
            let entry_path = path.join(&name);
            if name.starts_with(CREATING_PREFIX) || name.starts_with(DROPPING_PREFIX) {
                check_leftover(&*fs, &entry_path, entry.kind)?;
                leftovers.push(entry_path);
                continue;
            }
            if validate_collection_name(&name).is_err() {
                continue; // the lock file, or something that is not ours
            }
            if entry.kind != NodeKind::Dir {
                return Err(Error::corrupted(
                    &entry_path,
                    0,
                    "a collection must be a directory (symlinks are not followed)",
                ));
            }
            names.push(name);
        }
        // Only once every entry was found to be ours.
        for leftover in leftovers {
            fs.remove_dir_all(&leftover)
                .map_err(|e| Error::io("remove leftover directory", &leftover, e))?;
        }
        names.sort_unstable();
        fsio::sync_dir(&*fs, path)?;
        for name in names {
            let c = Collection::open(
                Arc::clone(&fs),
                &name,
                &path.join(&name),
                collection_options(&options),
            )?;
            collections.insert(name, c);
        }
        Ok(Db {
            fs,
            path: path.to_owned(),
            options,
            open: Mutex::new(Some(Open {
                _lock: lock,
                collections,
            })),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a collection. Fails with `Exists` if the name is taken.
    pub fn create_collection(
        &self,
        name: &str,
        dimension: u32,
        metric: Metric,
    ) -> Result<Arc<Collection>> {
        validate_collection_name(name)?;
        if dimension == 0 || dimension > DIMENSION_MAX {
            return Err(Error::invalid(format!(
                "dimension must be an integer from 1 to {DIMENSION_MAX}, got {dimension}"
            )));
        }
        let mut guard = self.lock()?;
        let open = guard.as_mut().ok_or(Error::Closed("database"))?;
        if open.collections.contains_key(name) {
            return Err(Error::Exists(name.to_owned()));
        }
        let staging = self.path.join(format!("{CREATING_PREFIX}{name}"));
        let fs = &*self.fs;
        if fs.kind(&staging).is_ok() {
            fs.remove_dir_all(&staging)
                .map_err(|e| Error::io("remove", &staging, e))?;
        }
        fs.create_dir(&staging)
            .map_err(|e| Error::io("create directory", &staging, e))?;
        collection::create_files(fs, &staging, dimension, metric)?;
        let target = self.path.join(name);
        fs.rename(&staging, &target)
            .map_err(|e| Error::io("rename", &target, e))?;
        fsio::sync_dir(fs, &self.path)?;
        let c = Collection::open(
            Arc::clone(&self.fs),
            name,
            &target,
            collection_options(&self.options),
        )?;
        open.collections.insert(name.to_owned(), Arc::clone(&c));
        Ok(c)
    }

    /// The open collection `name`, or `NotFound`.
    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        let guard = self.lock()?;
        let open = guard.as_ref().ok_or(Error::Closed("database"))?;
        open.collections
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// Names of every collection, sorted.
    pub fn list_collections(&self) -> Result<Vec<String>> {
        let guard = self.lock()?;
        let open = guard.as_ref().ok_or(Error::Closed("database"))?;
        Ok(open.collections.keys().cloned().collect())
    }

    /// Closes and deletes a collection and its files.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        validate_collection_name(name)?;
        let mut guard = self.lock()?;
        let open = guard.as_mut().ok_or(Error::Closed("database"))?;
        let c = open
            .collections
            .remove(name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        // Its handles see `Closed` from now on; nothing of it needs to be durable any more.
        c.close_without_checkpoint()?;
        let doomed = self.path.join(format!("{DROPPING_PREFIX}{name}"));
        let fs = &*self.fs;
        fs.rename(&self.path.join(name), &doomed)
            .map_err(|e| Error::io("rename", &doomed, e))?;
        fsio::sync_dir(fs, &self.path)?;
        fs.remove_dir_all(&doomed)
            .map_err(|e| Error::io("remove", &doomed, e))?;
        fsio::sync_dir(fs, &self.path)
    }

    /// Checkpoints and closes every collection, then releases the lock. Later calls get
    /// `Closed`; closing twice is a no-op. The first error is returned, after every
    /// collection has been closed.
    pub fn close(&self) -> Result<()> {
        let mut guard = self.lock()?;
        let Some(open) = guard.take() else {
            return Ok(());
        };
        let mut first_error = None;
        for c in open.collections.values() {
            if let Err(e) = c.close() {
                first_error.get_or_insert(e);
            }
        }
        drop(open);
        first_error.map_or(Ok(()), Err)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Option<Open>>> {
        self.open.lock().map_err(|_| Error::Poisoned {
            what: "database".to_owned(),
            cause: "a thread panicked while holding its lock".to_owned(),
        })
    }
}

/// Refuses, before anything is written, a `path` that exists and is not a database: a
/// directory with entries but neither `keeldb.lock` nor a collection (a directory holding
/// `collection.json`). Open would otherwise lock it and delete its `.creating-*` and
/// `.dropping-*` entries as leftovers of ours. A database copied without its lock file is
/// still recognised by its collections, and `lost+found` (the root of a new ext4 volume)
/// does not count. In a database, a leftover that is not keeldb's is refused here too
/// ([`check_leftover`]), so such an open writes nothing either.
fn refuse_foreign_dir(fs: &dyn Vfs, path: &Path) -> Result<()> {
    let entries = match fs.read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read directory", path, e)),
    };
    let ours = entries.iter().all(|entry| entry.name == "lost+found")
        || entries.iter().any(|entry| {
            entry.name == LOCK_FILE_NAME
                || (entry.kind == NodeKind::Dir
                    && validate_collection_name(&entry.name).is_ok()
                    && fs
                        .kind(&path.join(&entry.name).join(collection::CONFIG_FILE))
                        .is_ok())
        });
    if ours {
        // And its leftovers, before the lock file is made (open checks them again under
        // the lock, before it removes any).
        for entry in &entries {
            if entry.name.starts_with(CREATING_PREFIX) || entry.name.starts_with(DROPPING_PREFIX) {
                check_leftover(fs, &path.join(&entry.name), entry.kind)?;
            }
        }
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{} is not a keeldb database: it holds other files and no {LOCK_FILE_NAME} or \
         collection (open a new or empty directory)",
        path.display()
    )))
}

/// Refuses a `.creating-*` or `.dropping-*` entry that keeldb did not leave: one that is a
/// file, or a directory holding anything but a collection's own files. A symlink (or
/// another special file) is unlinked as before: removing it never touches a target.
fn check_leftover(fs: &dyn Vfs, path: &Path, kind: NodeKind) -> Result<()> {
    let foreign = |what: String| {
        Err(Error::corrupted(
            path,
            0,
            format!(
                "not a leftover of keeldb: {what}, which keeldb never writes there; move it \
                 out of the database directory"
            ),
        ))
    };
    match kind {
        NodeKind::Other => return Ok(()), // a symlink: unlinked, never followed
        NodeKind::Dir => {}
        NodeKind::File => return foreign("it is a file".to_owned()),
    }
    let entries = match fs.read_dir(path) {
        Ok(entries) => entries,
        // Gone since the directory was listed: before the lock, the process that holds it
        // may have renamed or removed it meanwhile. Nothing is left to check or remove.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read directory", path, e)),
    };
    for entry in entries {
        let base = entry
            .name
            .strip_suffix(fsio::TEMP_SUFFIX)
            .unwrap_or(&entry.name);
        let known = [
            collection::CONFIG_FILE,
            collection::VECTORS_FILE,
            collection::INDEX_FILE,
            collection::WAL_FILE,
            crate::payloads::PAYLOAD_INDEX_FILE,
        ]
        .contains(&base)
            || crate::storage::payload_log::parse_file_name(base).is_some();
        if entry.kind != NodeKind::File || !known {
            return foreign(format!("it holds {:?}", entry.name));
        }
    }
    Ok(())
}

/// Creates `path` and any missing parents, each made durable in its parent (a database
/// directory that a power loss could unlink would take acknowledged writes with it).
fn create_dir_durably(fs: &dyn Vfs, path: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at {
        match fs.kind(dir) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(dir),
            Err(e) => return Err(Error::io("stat", dir, e)),
        }
        at = dir.parent().filter(|p| !p.as_os_str().is_empty());
    }
    fs.create_dir_all(path)
        .map_err(|e| Error::io("create directory", path, e))?;
    for dir in missing {
        // The parent of a relative "db" is "": the current directory.
        let parent = match dir.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => continue,
        };
        fsio::sync_dir(fs, parent)?;
    }
    Ok(())
}

fn collection_options(options: &DbOptions) -> CollectionOptions {
    CollectionOptions {
        durability: options.durability,
        recovery: options.recovery,
        checkpoint_threshold_bytes: options.checkpoint_threshold_bytes,
        checkpoint_scales_with_index: options.checkpoint_scales_with_index,
        compaction_garbage_ratio: options.compaction_garbage_ratio,
        compaction_min_bytes: options.compaction_min_bytes,
    }
}

impl Drop for Db {
    /// Dropping an unclosed database is a crash as far as its files go: nothing is
    /// checkpointed, replay at the next open restores every acknowledged write. But its
    /// collections are closed before the lock is released, so a collection handle kept from
    /// it gets `Closed` instead of appending to a log the next opener owns.
    fn drop(&mut self) {
        let open = match self.open.get_mut() {
            Ok(open) => open.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(open) = open {
            for c in open.collections.values() {
                // Only a poisoned lock can fail here; its holders already get errors.
                let _ = c.close_without_checkpoint();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;
    use crate::storage::vfs::{DirEntry, LockGuard, OpenMode, VfsFile};

    /// A file system where only `existing` exists; it records directory creates and syncs.
    #[derive(Debug, Default)]
    struct Recorder {
        existing: Vec<PathBuf>,
        log: Mutex<Vec<String>>,
    }

    impl Vfs for Recorder {
        fn open(&self, _: &Path, _: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn kind(&self, path: &Path) -> io::Result<NodeKind> {
            match self.existing.iter().any(|e| e == path) {
                true => Ok(NodeKind::Dir),
                false => Err(io::ErrorKind::NotFound.into()),
            }
        }
        fn read_dir(&self, _: &Path) -> io::Result<Vec<DirEntry>> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn rename(&self, _: &Path, _: &Path) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn remove_file(&self, _: &Path) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn create_dir(&self, _: &Path) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.push(format!("mkdir -p {}", path.display()));
            Ok(())
        }
        fn remove_dir_all(&self, _: &Path) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.push(format!("sync {}", dir.display()));
            Ok(())
        }
        fn try_lock(&self, _: &Path) -> io::Result<Option<LockGuard>> {
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    #[test]
    fn a_leftover_gone_before_it_is_read_is_no_error() {
        // Open checks leftovers before it takes the lock, while the process holding it may
        // rename or remove them: that was KEEL_IO instead of KEEL_LOCKED.
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join(format!("{DROPPING_PREFIX}x"));
        assert!(check_leftover(&crate::storage::vfs::RealFs, &gone, NodeKind::Dir).is_ok());
    }

    fn created(path: &str, existing: &[&str]) -> Vec<String> {
        let fs = Recorder {
            existing: existing.iter().map(PathBuf::from).collect(),
            ..Recorder::default()
        };
        create_dir_durably(&fs, Path::new(path)).expect("create");
        fs.log.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn every_directory_created_is_synced_in_its_parent() {
        assert_eq!(
            created("/a/b/c", &["/a"]),
            ["mkdir -p /a/b/c", "sync /a/b", "sync /a"]
        );
        // A relative one-component path lives in the current directory.
        assert_eq!(created("db", &[]), ["mkdir -p db", "sync ."]);
        assert_eq!(created("x/db", &["x"]), ["mkdir -p x/db", "sync x"]);
        // Nothing created, nothing synced.
        assert_eq!(created("/a", &["/a"]), ["mkdir -p /a"]);
    }
}
