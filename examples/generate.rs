//! Writes a deterministic messy CSV file (11 columns: quotes, commas, newlines,
//! unicode, empty fields) for trying atlas-import on large inputs.
//!
//! Run: `cargo run --release --example generate -- OUT.csv ROWS [FIRST_ROW [REVISION]]`
//! (a later revision: the same keys with other values, for trying upserts)

use atlas_import_cli::datagen;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(rows)) = (args.first(), args.get(1).and_then(|r| r.parse().ok())) else {
        eprintln!("usage: generate OUT.csv ROWS [FIRST_ROW [REVISION]]");
        std::process::exit(2);
    };
    let first = args.get(2).and_then(|f| f.parse().ok()).unwrap_or(0);
    let revision = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(0);
    match datagen::write_csv(std::path::Path::new(out), first, rows, revision) {
        Ok(bytes) => println!("wrote {rows} rows ({bytes} bytes) to {out}"),
        Err(e) => {
            eprintln!("error: cannot write {out}: {e}");
            std::process::exit(1);
        }
    }
}
