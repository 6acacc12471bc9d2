//! keeldb's storage engine: an embedded, crash-safe vector store.
//!
//! A [`Db`] is a directory of named collections. Each [`Collection`] keeps its vectors in a
//! memory-mapped file of fixed-size slots, its ids in an index written at each checkpoint,
//! and every change since that checkpoint in a CRC-framed write-ahead log that is replayed
//! at open. See docs/ARCHITECTURE.md for the map and docs/FORMAT.md for the bytes.
//!
//! This crate knows nothing of JavaScript; the napi binding wraps it.

#![deny(unsafe_code)]

pub mod collection;
pub mod commit;
pub mod db;
pub mod error;
pub mod format;
pub mod payloads;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod search;
pub mod storage;
pub mod types;
pub mod wal;

pub use collection::{
    Collection, CollectionOptions, CollectionStats, CommitTimes, Record, SearchHit, SearchRequest,
};
pub use commit::{Completion, PreparedBatch};
pub use db::{Db, DbOptions};
pub use error::{Error, Result};
pub use format::json::PayloadText;
pub use types::{Durability, Id, Metric, RecoveryPolicy};
