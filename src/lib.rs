//! The deterministic data generator the benches and examples of the
//! `atlas-import` binary share (the binary itself is `src/main.rs`).

pub mod datagen;
