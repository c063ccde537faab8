//! A deterministic generator of messy CSV files (quotes, commas, newlines,
//! unicode, empty fields) with 11 typed columns, for benchmarks and tests.
//!
//! Row `i` depends only on `i`, so the rows `0..m` and `m..m+n` of two files never
//! share a key (every row carries its own `customer_no` and `email`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The header line of generated files.
pub const HEADER: &str =
    "customer_no,email,full_name,city,age,balance,score,signup_date,last_login,active,notes";

/// The column definitions of a PostgreSQL table that holds generated rows.
pub const POSTGRES_COLUMNS: &str = "customer_no BIGINT, email TEXT, full_name TEXT, city TEXT, \
     age INTEGER, balance DOUBLE PRECISION, score DOUBLE PRECISION, signup_date DATE, \
     last_login TIMESTAMP, active BOOLEAN, notes TEXT";

/// The column definitions of a MySQL/MariaDB table that holds generated rows.
pub const MYSQL_COLUMNS: &str = "customer_no BIGINT, email TEXT, full_name TEXT, city TEXT, \
     age INT, balance DOUBLE, score DOUBLE, signup_date DATE, last_login DATETIME(6), \
     active BOOLEAN, notes TEXT";

/// The column definitions of an SQLite table that holds generated rows.
pub const SQLITE_COLUMNS: &str = "customer_no INTEGER, email TEXT, full_name TEXT, city TEXT, \
     age INTEGER, balance REAL, score REAL, signup_date DATE, last_login TIMESTAMP, \
     active BOOLEAN, notes TEXT";

/// The column names, comma-separated, in file order.
pub fn column_list() -> &'static str {
    HEADER
}

const FIRST: &[&str] = &[
    "Ada", "Grace", "Linus", "Zoë", "Björn", "José", "Ming", "Aïcha", "O'Brien", "Søren",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Ångström",
    "Müller",
    "García",
    "李",
    "Dubois",
    "Smith",
    "Nakamura",
];
const CITIES: &[&str] = &[
    "Paris",
    "São Paulo",
    "Zürich",
    "東京",
    "New York, NY",
    "Kraków",
    "Reykjavík",
    "Cairo",
    "Montréal",
    "Oslo",
];
const NOTES: &[&str] = &[
    "",
    "prefers email",
    "said \"call me later\"",
    "VIP, handle with care",
    "line one\nline two",
    "naïve café, crème brûlée",
    "",
    "returns: 3, complaints: 0",
];

/// splitmix64: a tiny, good, deterministic mixer.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn quote(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Appends row `i` as of `revision` (without the line end) to `out`: every
/// revision of a row has the same `customer_no` and `email` and other values
/// drawn anew, so that an upsert of a later revision changes the rows it
/// updates (revision 0: the rows as first written).
pub fn row(i: u64, revision: u64, out: &mut String) {
    use std::fmt::Write as _;
    let r = mix(i ^ revision.wrapping_mul(0x5851_f42d_4c95_7f2d));
    let pick = |shift: u32, n: usize| ((r >> shift) as usize) % n;
    let first = FIRST[pick(0, FIRST.len())];
    let last = LAST[pick(8, LAST.len())];
    let _ = write!(out, "{},user{}@example.com,", 100_000 + i, i);
    quote(out, &format!("{last}, {first}"));
    out.push(',');
    quote(out, CITIES[pick(16, CITIES.len())]);
    out.push(',');
    if !r.is_multiple_of(17) {
        let _ = write!(out, "{}", 18 + (r >> 20) % 70);
    }
    out.push(',');
    if !r.is_multiple_of(11) {
        let _ = write!(out, "{}.{:02}", (r >> 24) % 100_000, (r >> 40) % 100);
    }
    let day = (r >> 28) % 3650;
    let date = chrono_like_date(day);
    let _ = write!(
        out,
        ",{}.{},{},{} {:02}:{:02}:{:02},{},",
        (r >> 32) % 100,
        (r >> 36) % 10,
        date,
        date,
        (r >> 44) % 24,
        (r >> 50) % 60,
        (r >> 56) % 60,
        if r & 1 == 0 { "true" } else { "false" }
    );
    quote(out, NOTES[pick(4, NOTES.len())]);
}

/// `2015-01-01` plus `day` days, without a date library.
fn chrono_like_date(day: u64) -> String {
    let mut days = day;
    let mut year = 2015;
    loop {
        let len = if year % 4 == 0 { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let months = [
        31,
        if year % 4 == 0 { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= months[month] {
        days -= months[month];
        month += 1;
    }
    format!("{year}-{:02}-{:02}", month + 1, days + 1)
}

/// Writes rows `first..first + count` as of `revision` (see [`row`]) with a
/// header to `path`; returns the bytes written.
pub fn write_csv(path: &Path, first: u64, count: u64, revision: u64) -> std::io::Result<u64> {
    let mut file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut line = String::with_capacity(256);
    let mut bytes = 0u64;
    writeln!(file, "{HEADER}")?;
    bytes += HEADER.len() as u64 + 1;
    for i in first..first + count {
        line.clear();
        row(i, revision, &mut line);
        line.push('\n');
        file.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    file.flush()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic_and_have_11_fields() {
        let (mut a, mut b) = (String::new(), String::new());
        row(42, 0, &mut a);
        row(42, 0, &mut b);
        assert_eq!(a, b);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(a.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(record.len(), 11);
        assert_eq!(&record[1], "user42@example.com");
        assert_eq!(chrono_like_date(0), "2015-01-01");
        assert_eq!(chrono_like_date(365 + 59), "2016-02-29");
    }

    /// A later revision of a row keeps its keys and changes its values.
    #[test]
    fn revisions_keep_the_keys_and_change_the_rest() {
        let fields = |revision| {
            let mut line = String::new();
            row(7, revision, &mut line);
            csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line.as_bytes())
                .records()
                .next()
                .unwrap()
                .unwrap()
        };
        let (first, second) = (fields(0), fields(1));
        assert_eq!((&first[0], &first[1]), (&second[0], &second[1]));
        assert_ne!(first, second);
        assert_eq!(&first[0], "100007");
    }
}
