//! Fuzz target `wal_replay`: see `keeldb_fuzz::checks::wal_replay` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keeldb_fuzz::checks::wal_replay(data));
