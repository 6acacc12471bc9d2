//! Fuzz target `index_file`: see `keeldb_fuzz::checks::index_file` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keeldb_fuzz::checks::index_file(data));
