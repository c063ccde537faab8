//! Integration tests of atlas-import against real databases: SQLite files made
//! per test and the PostgreSQL server (`ATLAS_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`).

mod cli;
mod cluster;
mod codec;
mod common;
mod connections;
mod contract;
mod explain;
mod formats;
mod fuzz_regressions;
mod lossless;
mod mysql_paths;
mod names;
mod plans;
mod reliability;
mod semantics;
mod stores;
mod types;
