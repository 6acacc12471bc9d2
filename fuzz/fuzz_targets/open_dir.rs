//! Fuzz target `open_dir`: see `keeldb_fuzz::checks::open_dir` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keeldb_fuzz::checks::open_dir(data));
