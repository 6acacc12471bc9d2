//! Fuzz target `payload_index`: see `keeldb_fuzz::checks::payload_index` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keeldb_fuzz::checks::payload_index(data));
