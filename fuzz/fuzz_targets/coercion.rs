//! Any values into the coercion to every target type.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atlas_import::fuzzing::coercion(data));
