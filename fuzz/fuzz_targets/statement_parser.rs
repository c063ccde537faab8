//! Any text into the statement parser (IMPORT, CHECK, EXPLAIN and DataFusion SQL).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atlas_import::fuzzing::statement_parser(data));
