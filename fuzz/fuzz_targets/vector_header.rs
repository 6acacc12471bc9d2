//! Fuzz target `vector_header`: see `keeldb_fuzz::checks::vector_header` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keeldb_fuzz::checks::vector_header(data));
