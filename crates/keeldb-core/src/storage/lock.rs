//! The exclusive lock that makes one handle the only writer of a database directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the lock file in a database directory. It contains a '.', so it can never be
/// mistaken for a collection.
pub const LOCK_FILE_NAME: &str = "keeldb.lock";

/// An exclusive `flock` on `keeldb.lock`, held for as long as this value lives. `flock`
/// belongs to the open file description, so a second handle in the same process is refused
/// just like one in another process; the kernel releases it if the process dies.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, or returns `Error::Locked` at once if another handle has it.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path: PathBuf = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::Locked { path }),
            Err(TryLockError::Error(e)) => Err(Error::io("flock", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_in_the_same_process_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path()).expect("first");
        let second = DirLock::acquire(dir.path());
        assert_eq!(second.err().map(|e| e.code()), Some("KEEL_LOCKED"));
        drop(first);
        assert!(DirLock::acquire(dir.path()).is_ok());
    }
}
