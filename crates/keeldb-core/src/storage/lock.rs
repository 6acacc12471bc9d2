//! The exclusive lock that makes one handle the only writer of a database directory.

use std::path::{Path, PathBuf};

use super::vfs::{LockGuard, Vfs};
use crate::error::{Error, Result};

/// Name of the lock file in a database directory. It contains a '.', so it can never be
/// mistaken for a collection.
pub const LOCK_FILE_NAME: &str = "keeldb.lock";

/// An exclusive lock on `keeldb.lock` (`flock` on the real file system), held for as long
/// as this value lives. `flock` belongs to the open file description, so a second handle in
/// the same process is refused just like one in another process; the kernel releases it if
/// the process dies.
#[derive(Debug)]
pub struct DirLock {
    _guard: LockGuard,
}

impl DirLock {
    /// Takes the lock on `dir`, or returns `Error::Locked` at once if another handle has it.
    pub fn acquire(fs: &dyn Vfs, dir: &Path) -> Result<DirLock> {
        let path: PathBuf = dir.join(LOCK_FILE_NAME);
        match fs.try_lock(&path) {
            Ok(Some(guard)) => Ok(DirLock { _guard: guard }),
            Ok(None) => Err(Error::Locked { path }),
            Err(e) => Err(Error::io("lock", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::vfs::RealFs;

    #[test]
    fn second_lock_in_the_same_process_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(&RealFs, dir.path()).expect("first");
        let second = DirLock::acquire(&RealFs, dir.path());
        assert_eq!(second.err().map(|e| e.code()), Some("KEEL_LOCKED"));
        drop(first);
        assert!(DirLock::acquire(&RealFs, dir.path()).is_ok());
    }
}
