//! The one error type of the engine.
//!
//! Every variant maps to a stable code (`Error::code`) that the JavaScript layer exposes as
//! `KeelError.code`. Messages carry the actual values involved, so a person can act on them.

use std::path::PathBuf;

/// A result whose error is the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in keeldb. Callers match on [`Error::code`] rather than on the
/// variant, which may gain fields.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something keeldb refuses: an empty or oversized id, a non-finite
    /// float, a bad collection name, an option out of range. Nothing was written.
    #[error("{0}")]
    InvalidArgument(String),

    /// A vector's length does not match the collection's dimension. Nothing was written.
    /// The message names the record and both lengths.
    #[error("{0}")]
    DimensionMismatch(String),

    /// A named collection does not exist. (The name is shown escaped: it may be any text a
    /// caller passed, NUL included.)
    #[error("collection '{}' does not exist", .0.escape_debug())]
    NotFound(String),

    /// A collection of that name exists already.
    #[error("collection '{0}' already exists")]
    Exists(String),

    /// Another handle, in this process or another, holds the database directory.
    #[error("database directory {} is locked by another open handle (in this or another process)", path.display())]
    Locked {
        /// The lock file that could not be taken.
        path: PathBuf,
    },

    /// The handle was closed.
    #[error("{0} is closed")]
    Closed(&'static str),

    /// Bytes on disk are not what keeldb wrote. `offset` is the byte position in `file`
    /// where the problem was found.
    #[error("corrupt file {}: at byte {offset}: {reason}", file.display())]
    Corrupted {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first bad byte found.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What keeldb was doing ("fsync", "open", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// An earlier write or sync failed, so the state on disk is unknown. The collection
    /// refuses writes until the database is reopened, which recovers from the log.
    #[error("{what} is poisoned by an earlier failure ({cause}); close and reopen the database")]
    Poisoned {
        /// The collection (or "database").
        what: String,
        /// The failure that poisoned it.
        cause: String,
    },

    /// A bug in keeldb cut an operation short: its outcome is unknown (the message says
    /// what was known). Reopening the database shows what is stored.
    #[error("{0}")]
    Internal(String),

    /// A file was written by a newer keeldb (format version or record kind unknown here).
    #[error("{}: {what} {found} is not supported by this keeldb (supports up to {supported})", file.display())]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// "format version" or "record kind".
        what: &'static str,
        /// The value found on disk.
        found: u32,
        /// The highest value this build understands.
        supported: u32,
    },
}

impl Error {
    /// The stable code of this error, as exposed to JavaScript.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "KEEL_INVALID_ARGUMENT",
            Error::DimensionMismatch(_) => "KEEL_DIMENSION_MISMATCH",
            Error::NotFound(_) => "KEEL_NOT_FOUND",
            Error::Exists(_) => "KEEL_EXISTS",
            Error::Locked { .. } => "KEEL_LOCKED",
            Error::Closed(_) => "KEEL_CLOSED",
            Error::Corrupted { .. } => "KEEL_CORRUPT",
            Error::Io { .. } => "KEEL_IO",
            Error::Poisoned { .. } => "KEEL_POISONED",
            Error::UnsupportedVersion { .. } => "KEEL_UNSUPPORTED_VERSION",
            Error::Internal(_) => "KEEL_INTERNAL",
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupted(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupted {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument(reason.into())
    }
}
