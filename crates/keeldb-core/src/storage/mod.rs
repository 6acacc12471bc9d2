//! Files on disk: atomic replacement, directory sync, the directory lock, the
//! memory-mapped vector file and the payload log files.
//!
//! Invariant: only `storage` and `wal` open files. Every failure is returned as
//! `Error::Io` naming the operation and the path; nothing here retries a failed write or
//! sync (the caller poisons its handle instead).

pub mod fsio;
pub mod lock;
pub mod payload_log;
pub mod vectors;
