//! The write-ahead log: appending records with the requested durability, and replaying
//! them at open under a [`crate::RecoveryPolicy`].
//!
//! Invariant: a record is appended only at the end of bytes that replay understood (or,
//! after a checkpoint, from the start over records it made redundant); a torn tail is cut
//! off (and the cut fsynced) before the writer is created.

pub mod replay;
pub mod writer;
