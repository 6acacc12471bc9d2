//! Files on disk: the file-system door ([`vfs`]), atomic replacement, directory sync, the
//! directory lock, the memory-mapped vector file and the payload log files.
//!
//! Invariant: only `storage` and `wal` open files, and only through a [`vfs::Vfs`]. Every failure is returned as
//! `Error::Io` naming the operation and the path; nothing here retries a failed write or
//! sync (the caller poisons its handle instead).

pub mod fsio;
pub mod lock;
pub mod payload_log;
#[cfg(feature = "sim")]
pub mod sim;
pub mod vectors;
pub mod vfs;
