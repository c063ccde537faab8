//! Top-level tests, examples and benches of atlas-import, and the deterministic
//! data generator they share.

pub mod datagen;
