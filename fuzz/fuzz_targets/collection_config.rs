//! Fuzz target `collection_config`: see `keeldb_fuzz::checks::collection_config` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keeldb_fuzz::checks::collection_config(data));
