//! Fuzz target `payload_log`: see `keeldb_fuzz::checks::payload_log` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keeldb_fuzz::checks::payload_log(data));
