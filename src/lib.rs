//! Top-level tests, examples and benches of atlas-import.
