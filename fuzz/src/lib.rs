//! keeldb's fuzz targets, as plain functions (`checks`), so that the libFuzzer binaries in
//! `fuzz_targets/` and the corpus replay in keeldb-core's tests share one definition.

pub mod checks;
