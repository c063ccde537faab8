//! The inputs kept in `fuzz/regressions/<target>/` replay through the fuzz
//! targets' own entry points on every `cargo test` (no nightly needed).

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no inputs in {}", dir.display());
}

#[test]
fn statement_parser_regressions() {
    replay("statement_parser", atlas_import::fuzzing::statement_parser);
}

#[test]
fn coercion_regressions() {
    replay("coercion", atlas_import::fuzzing::coercion);
}
