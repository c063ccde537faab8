//! Text values of types that give them a syntax and a canonical form: uuid,
//! json, jsonb, bytea, PostgreSQL's numeric and SQLite's NUMERIC affinity.
//! The coercion converts source text through these
//! (and the existing keys the database returns as text), so that a bad value
//! names its row and column before anything is written, and values equal to
//! the database are equal to the check: a uuid in any case or with braces is
//! one value, jsonb compares regardless of key order and whitespace.

use datafusion::arrow::array::{Array, ArrayRef, BinaryBuilder, StringArray, StringBuilder};
use std::sync::Arc;

/// How values of a column's type are read from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TextForm {
    /// `uuid`: 32 hex digits, any case, hyphens and braces optional; stored
    /// as the canonical lowercase `8-4-4-4-12` form.
    Uuid,
    /// `json`: valid JSON, kept exactly as written (json compares as text).
    Json,
    /// `jsonb`: valid JSON in a canonical form (keys sorted, the last of a
    /// repeated key kept, no whitespace, numbers as PostgreSQL's numeric
    /// prints them), which stores the same jsonb value as the original.
    Jsonb,
    /// `numeric` without precision: exact, as text (no Arrow decimal holds
    /// every value), written as PostgreSQL prints it (`1e3` is `1000`, the
    /// scale kept: `1.50` stays `1.50`).
    Numeric,
    /// `bytea`: PostgreSQL's input forms, `\x` and hex digits, or the escape
    /// form (bytes as written, `\\` a backslash, `\ooo` an octal byte).
    Bytea,
    /// SQLite's NUMERIC affinity (`NUMERIC`, `DECIMAL(10,2)`, and every
    /// declared type SQLite's rules give that affinity): a number is stored
    /// as an INTEGER where it is a 64-bit integer, else as a REAL (`12.50` is
    /// `12.5`, `1e3` is `1000`), and is held here in the text of that stored
    /// value, so that it is compared as SQLite compares it and an integer
    /// with more than 15 digits is never rounded through a double. `strict`
    /// columns (declared NUMERIC or DECIMAL) refuse text that is no number;
    /// others keep it as text, as SQLite does.
    SqliteNumeric { strict: bool },
    /// A PostgreSQL array (`text[]`, `int[][]`, ...): the literal in the form
    /// PostgreSQL prints it, so `{a, "b"}` and `{a,b}` are one value (keys
    /// compare the elements by their type: [`crate::key_form`]). A literal
    /// this does not read (explicit bounds) is left to the server as it is.
    PgArray,
    /// A decimal wider than an Arrow decimal (MySQL's `DECIMAL(65,30)`,
    /// PostgreSQL's `numeric(50,2)`), as text with exactly `scale` fraction
    /// digits, as the server stores and prints it (`1.5` is `1.500...`);
    /// more fraction digits than that are refused unless they are zeros
    /// (the server would round them).
    WideDecimal { scale: u8 },
    /// MySQL's `TINYINT(1)` (what `BOOLEAN` is there): a small integer that
    /// also reads the boolean words (`true` is 1, `no` is 0), as a column
    /// that is a boolean to its users and holds `2` to the server.
    IntegerOrBoolean { unsigned: bool },
    /// MySQL's `YEAR`: four digits as the year they spell (0, or 1901 to
    /// 2155), one or two digits as the server reads them from text (`0` to
    /// `69` are 2000 to 2069, `70` to `99` 1970 to 1999), so that `24` is
    /// the 2024 the table holds.
    MysqlYear,
    /// Binary from hex digits (a `\x` or `0x` prefix allowed), by option.
    Hex,
    /// Binary from base64 (standard alphabet, padding optional), by option.
    Base64,
}

impl TextForm {
    /// The form of a column of `kind` whose declared type is `sql_type`
    /// (the database's dialect says).
    pub fn of(kind: crate::db::DbKind, sql_type: &str) -> Option<Self> {
        kind.dialect().text_form(sql_type)
    }

    /// The form of a PostgreSQL column whose type prints as `sql_type`.
    pub(crate) fn postgres(sql_type: &str) -> Option<Self> {
        match sql_type {
            "uuid" => Some(TextForm::Uuid),
            "json" => Some(TextForm::Json),
            "jsonb" => Some(TextForm::Jsonb),
            "bytea" => Some(TextForm::Bytea),
            "numeric" => Some(TextForm::Numeric),
            array if array.ends_with("[]") => Some(TextForm::PgArray),
            numeric => TextForm::wide_decimal(numeric.strip_prefix("numeric(")?),
        }
    }

    /// [`TextForm::WideDecimal`] for the arguments `p,s)` of a decimal type
    /// whose precision `p` is more than an Arrow decimal holds (38 digits).
    fn wide_decimal(arguments: &str) -> Option<Self> {
        let (precision, scale) = arguments.split(')').next()?.split_once(',')?;
        let precision: u32 = precision.trim().parse().ok()?;
        let scale: u8 = scale.trim().parse().ok()?;
        (precision > 38).then_some(TextForm::WideDecimal { scale })
    }

    /// The form of a MySQL/MariaDB column whose type prints as `sql_type`:
    /// MySQL's JSON is stored normalized (key order and whitespace do not
    /// count), so it compares in jsonb's canonical form (MariaDB's JSON is a
    /// LONGTEXT and prints so: compared as text); MariaDB's UUID is a uuid;
    /// a DECIMAL wider than 38 digits is text of its scale.
    pub(crate) fn mysql(sql_type: &str) -> Option<Self> {
        let t = sql_type.to_ascii_lowercase();
        match t.as_str() {
            "json" => return Some(TextForm::Jsonb),
            // MariaDB's UUID prints lowercase with the usual hyphens.
            "uuid" => return Some(TextForm::Uuid),
            "year" | "year(4)" => return Some(TextForm::MysqlYear),
            _ => {}
        }
        if let Some(rest) = t.strip_prefix("tinyint(1)") {
            return Some(TextForm::IntegerOrBoolean {
                unsigned: rest.contains("unsigned"),
            });
        }
        TextForm::wide_decimal(t.strip_prefix("decimal(")?)
    }

    /// The form of a SQLite column declared `declared`: NUMERIC affinity by
    /// SQLite's rules, except the names atlas-import reads as booleans and
    /// dates (SQLite gives them NUMERIC affinity too).
    pub(crate) fn sqlite(declared: &str) -> Option<Self> {
        let t = declared.to_ascii_uppercase();
        let other_affinity = [
            "INT", "CHAR", "CLOB", "TEXT", "BLOB", "REAL", "FLOA", "DOUB",
        ]
        .iter()
        .any(|name| t.contains(name));
        let read_as_other = ["BOOL", "DATE", "TIME"].iter().any(|name| t.contains(name));
        if t.trim().is_empty() || other_affinity || read_as_other {
            return None;
        }
        Some(TextForm::SqliteNumeric {
            strict: t.contains("NUMERIC") || t.contains("DECIMAL"),
        })
    }

    /// The Arrow type the form produces.
    pub fn data_type(self) -> datafusion::arrow::datatypes::DataType {
        use datafusion::arrow::datatypes::DataType;
        match self {
            TextForm::Bytea | TextForm::Hex | TextForm::Base64 => DataType::Binary,
            TextForm::IntegerOrBoolean { unsigned: false } => DataType::Int8,
            TextForm::IntegerOrBoolean { unsigned: true } | TextForm::MysqlYear => DataType::Int16,
            _ => DataType::Utf8,
        }
    }

    /// Converts every value of `text`; `Err(index)` names the first that
    /// does not fit.
    pub fn convert(self, text: &StringArray) -> Result<ArrayRef, usize> {
        match self {
            TextForm::Bytea => return binary_from_text(text, bytea),
            TextForm::Hex => {
                return binary_from_text(text, |value, out| {
                    let value = value.trim();
                    let digits = value
                        .strip_prefix("\\x")
                        .or_else(|| value.strip_prefix("0x"))
                        .unwrap_or(value);
                    hex_digits(digits, out)
                });
            }
            TextForm::Base64 => {
                return binary_from_text(text, |value, out| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode_vec(value.trim().trim_end_matches('='), out)
                        .ok()
                });
            }
            TextForm::IntegerOrBoolean { unsigned } => {
                let range = if unsigned { 0..=255 } else { -128..=127 };
                let numbers = small_integers(text, |v| integer_or_boolean(v, &range))?;
                return Ok(
                    datafusion::arrow::compute::cast(&numbers, &self.data_type())
                        .expect("numbers in the range of the form's type"),
                );
            }
            TextForm::MysqlYear => {
                return small_integers(text, mysql_year).map(|years| Arc::new(years) as ArrayRef);
            }
            _ => {}
        }
        let mut out = StringBuilder::with_capacity(text.len(), text.value_data().len());
        let mut canonical = String::new();
        for i in 0..text.len() {
            if text.is_null(i) {
                out.append_null();
                continue;
            }
            let value = text.value(i);
            canonical.clear();
            let ok = match self {
                TextForm::Uuid => uuid(value, &mut canonical),
                TextForm::Json => {
                    let ok = json(value, &mut canonical);
                    canonical.clear();
                    canonical.push_str(value);
                    ok
                }
                TextForm::Jsonb => json(value, &mut canonical),
                TextForm::Numeric => numeric(value, &mut canonical),
                TextForm::SqliteNumeric { strict } => match sqlite_number(value) {
                    Some(number) => {
                        number.write(&mut canonical);
                        true
                    }
                    None => {
                        canonical.push_str(value);
                        !strict
                    }
                },
                TextForm::WideDecimal { scale } => {
                    fixed_scale(value, usize::from(scale), &mut canonical)
                }
                TextForm::PgArray => {
                    if pg_array(value, &mut canonical).is_none() {
                        canonical.clear();
                        canonical.push_str(value);
                    }
                    true
                }
                TextForm::Bytea
                | TextForm::Hex
                | TextForm::Base64
                | TextForm::IntegerOrBoolean { .. }
                | TextForm::MysqlYear => {
                    unreachable!("forms of other types are handled above")
                }
            };
            if !ok {
                return Err(i);
            }
            out.append_value(&canonical);
        }
        Ok(Arc::new(out.finish()))
    }
}

/// Small integers read from each value of `text` by `read`, blank as
/// NULL; `Err(index)` names the first value `read` refuses.
fn small_integers(
    text: &StringArray,
    read: impl Fn(&str) -> Option<i16>,
) -> Result<datafusion::arrow::array::Int16Array, usize> {
    let mut values = Vec::with_capacity(text.len());
    for (i, value) in text.iter().enumerate() {
        let value = value.map(str::trim).filter(|v| !v.is_empty());
        values.push(match value {
            None => None,
            Some(value) => Some(read(value).ok_or(i)?),
        });
    }
    Ok(values.into())
}

/// An integer in `range` or a boolean word (1 and 0).
fn integer_or_boolean(value: &str, range: &std::ops::RangeInclusive<i16>) -> Option<i16> {
    crate::convert::parse_integer(value)
        .and_then(|n| i16::try_from(n).ok())
        .or_else(|| crate::convert::parse_bool(value).map(i16::from))
        .filter(|n| range.contains(n))
}

/// The year a MySQL `YEAR` column stores for the text `value`: `0000` is
/// the zero year, any other number below 70 (`0`, `00`, `24`, `0024`) a
/// year from 2000, 70 to 99 one from 1970, as the server reads text.
fn mysql_year(value: &str) -> Option<i16> {
    if value.is_empty() || value.len() > 4 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: i16 = value.parse().ok()?;
    match number {
        0 if value.len() == 4 => Some(0),
        0..=69 => Some(2000 + number),
        70..=99 => Some(1900 + number),
        1901..=2155 => Some(number),
        _ => None,
    }
}

/// A decimal literal (`-0012.5`, `+3`, `.25`, `1.5e3`) with exactly `scale`
/// fraction digits, into `out`; `false` for anything else, or for fraction
/// digits beyond `scale` that are not zeros.
fn fixed_scale(value: &str, scale: usize, out: &mut String) -> bool {
    let plain = without_exponent(value);
    let text = plain.trim();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !all_digits(whole) || !all_digits(fraction) {
        return false;
    }
    let (kept, beyond) = fraction.split_at(fraction.len().min(scale));
    if beyond.bytes().any(|b| b != b'0') {
        return false;
    }
    let whole = whole.trim_start_matches('0');
    let zero = whole.is_empty() && kept.bytes().all(|b| b == b'0');
    if negative && !zero {
        out.push('-');
    }
    out.push_str(if whole.is_empty() { "0" } else { whole });
    if scale > 0 {
        out.push('.');
        out.push_str(kept);
        out.extend(std::iter::repeat_n('0', scale - kept.len()));
    }
    true
}

/// A number as SQLite stores it in a column of NUMERIC affinity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SqliteNumber {
    Integer(i64),
    Real(f64),
}

impl SqliteNumber {
    /// The text of the stored value: the integer, or the shortest decimal
    /// that reads back as the same double, without an exponent, so that an
    /// integral REAL prints as the INTEGER it equals (`1e3` and `1000`).
    fn write(self, out: &mut String) {
        use std::fmt::Write;
        let _ = match self {
            SqliteNumber::Integer(i) => write!(out, "{i}"),
            // -0.0 = 0.0 in SQLite.
            SqliteNumber::Real(0.0) => write!(out, "0"),
            SqliteNumber::Real(r) => write!(out, "{r}"),
        };
    }
}

/// `value` as the number SQLite's NUMERIC affinity makes of it, or `None`
/// where SQLite keeps it as text (not a decimal literal: `0x1A`, `1,5`,
/// `nan`) or it is beyond a double (`1e400`). `inf` and `-inf` are the text
/// of an infinite REAL already in a table.
pub(crate) fn sqlite_number(value: &str) -> Option<SqliteNumber> {
    let text = value.trim();
    if text == "inf" || text == "-inf" {
        return text.parse().ok().map(SqliteNumber::Real);
    }
    let bytes = text.as_bytes();
    let mut at = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let digits = |at: &mut usize| {
        let start = *at;
        while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at - start
    };
    let whole = digits(&mut at);
    let mut integer = true;
    let mut fraction = 0;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        integer = false;
        fraction = digits(&mut at);
    }
    if whole + fraction == 0 {
        return None;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        integer = false;
        at += usize::from(matches!(bytes.get(at), Some(b'+' | b'-')));
        if digits(&mut at) == 0 {
            return None;
        }
    }
    if at != bytes.len() {
        return None;
    }
    if integer && let Ok(i) = text.parse::<i64>() {
        return Some(SqliteNumber::Integer(i));
    }
    let real: f64 = text.parse().ok()?;
    real.is_finite().then_some(SqliteNumber::Real(real))
}

/// Binary key values the databases return as hex text (`HEX(col)`, or
/// PostgreSQL's `\x...`) as bytes; `Err(index)` names a value that is not hex.
pub fn hex_to_binary(text: &StringArray) -> Result<ArrayRef, usize> {
    binary_from_text(text, |value, out| {
        hex_digits(value.strip_prefix("\\x").unwrap_or(value), out)
    })
}

/// Every value of `text` decoded into bytes by `decode`; `Err(index)` names
/// the first it refuses.
fn binary_from_text(
    text: &StringArray,
    decode: impl Fn(&str, &mut Vec<u8>) -> Option<()>,
) -> Result<ArrayRef, usize> {
    let mut out = BinaryBuilder::with_capacity(text.len(), text.value_data().len());
    let mut bytes = Vec::new();
    for i in 0..text.len() {
        if text.is_null(i) {
            out.append_null();
            continue;
        }
        bytes.clear();
        decode(text.value(i), &mut bytes).ok_or(i)?;
        out.append_value(&bytes);
    }
    Ok(Arc::new(out.finish()))
}

/// The canonical form of a uuid, into `out`.
pub(crate) fn uuid(value: &str, out: &mut String) -> bool {
    let trimmed = value.trim();
    let inner = trimmed
        .strip_prefix('{')
        .and_then(|v| v.strip_suffix('}'))
        .unwrap_or(trimmed);
    let digits: Vec<u8> = inner.bytes().filter(|&b| b != b'-').collect();
    if digits.len() != 32 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    for (i, d) in digits.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(d.to_ascii_lowercase() as char);
    }
    true
}

/// Pairs of hex digits (whitespace between them ignored) as bytes.
fn hex_digits(hex: &str, out: &mut Vec<u8>) -> Option<()> {
    let mut digits = hex.bytes().filter(|b| !b.is_ascii_whitespace());
    while let Some(high) = digits.next() {
        let low = digits.next()?;
        let high = (high as char).to_digit(16)?;
        let low = (low as char).to_digit(16)?;
        out.push((high * 16 + low) as u8);
    }
    Some(())
}

/// PostgreSQL's bytea input forms, decoded into `out`.
fn bytea(value: &str, out: &mut Vec<u8>) -> Option<()> {
    if let Some(hex) = value.strip_prefix("\\x") {
        return hex_digits(hex, out);
    }
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes.get(i + 1..i + 4)?;
            if !(b'0'..=b'3').contains(&octal[0])
                || !octal[1..].iter().all(|d| (b'0'..=b'7').contains(d))
            {
                return None;
            }
            out.push(octal.iter().fold(0u8, |n, d| n * 8 + (d - b'0')));
            i += 4;
        }
    }
    Some(())
}

/// A PostgreSQL array literal (`{a,"b c",NULL}`, `{{1,2},{3,4}}`) in the
/// form PostgreSQL prints it: whitespace around unquoted elements dropped,
/// an element quoted only where it must be. Element values are kept as
/// written (`{01}` stays `01`; the server reads them by the element type).
/// `None` where `value` is no array literal this reads (e.g. one with
/// explicit bounds, `[1:2]={1,2}`), which is then left to the server.
fn pg_array(value: &str, out: &mut String) -> Option<()> {
    pg_array_with(value, out, &|element, out| out.push_str(element))
}

/// [`pg_array`] with each non-NULL element written by `element` (given the
/// element as read, escapes decoded), then quoted as PostgreSQL would.
pub(crate) fn pg_array_with(
    value: &str,
    out: &mut String,
    element: &dyn Fn(&str, &mut String),
) -> Option<()> {
    let mut parser = ArrayParser {
        text: value.trim().as_bytes(),
        at: 0,
        element,
        written: String::new(),
    };
    parser.array(out, 0)?;
    (parser.at == parser.text.len()).then_some(())
}

struct ArrayParser<'a> {
    text: &'a [u8],
    at: usize,
    element: &'a dyn Fn(&str, &mut String),
    /// The element being written (reused).
    written: String,
}

impl ArrayParser<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn array(&mut self, out: &mut String, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH || self.text.get(self.at) != Some(&b'{') {
            return None;
        }
        self.at += 1;
        out.push('{');
        self.skip_space();
        if self.text.get(self.at) == Some(&b'}') {
            self.at += 1;
            out.push('}');
            return Some(());
        }
        loop {
            self.skip_space();
            match *self.text.get(self.at)? {
                b'{' => self.array(out, depth + 1)?,
                b'"' => {
                    let element = self.quoted()?;
                    self.push_element(out, Some(&element));
                }
                _ => {
                    let element = self.unquoted()?;
                    let null = element.eq_ignore_ascii_case("NULL");
                    self.push_element(out, (!null).then_some(&element));
                }
            }
            self.skip_space();
            match *self.text.get(self.at)? {
                b',' => out.push(','),
                b'}' => {
                    self.at += 1;
                    out.push('}');
                    return Some(());
                }
                _ => return None,
            }
            self.at += 1;
        }
    }

    fn push_element(&mut self, out: &mut String, element: Option<&str>) {
        let Some(element) = element else {
            return push_array_element(out, None);
        };
        self.written.clear();
        (self.element)(element, &mut self.written);
        push_array_element(out, Some(&self.written));
    }

    /// A double-quoted element, its backslash escapes decoded.
    fn quoted(&mut self) -> Option<String> {
        self.at += 1;
        let mut bytes = Vec::new();
        loop {
            match *self.text.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return String::from_utf8(bytes).ok();
                }
                b'\\' => {
                    bytes.push(*self.text.get(self.at + 1)?);
                    self.at += 2;
                }
                byte => {
                    bytes.push(byte);
                    self.at += 1;
                }
            }
        }
    }

    /// An unquoted element up to the next `,` or `}`, escapes decoded and
    /// the whitespace after it dropped (what follows an escape is kept).
    fn unquoted(&mut self) -> Option<String> {
        let mut bytes = Vec::new();
        let mut kept = 0;
        loop {
            match *self.text.get(self.at)? {
                b',' | b'}' => break,
                b'{' | b'"' => return None,
                b'\\' => {
                    bytes.push(*self.text.get(self.at + 1)?);
                    self.at += 2;
                    kept = bytes.len();
                }
                byte => {
                    bytes.push(byte);
                    self.at += 1;
                    if !byte.is_ascii_whitespace() {
                        kept = bytes.len();
                    }
                }
            }
        }
        bytes.truncate(kept);
        if bytes.is_empty() {
            return None;
        }
        String::from_utf8(bytes).ok()
    }
}

/// One array element as PostgreSQL prints it: NULL bare, and quoted (with
/// `"` and `\` escaped) where it is empty, reads as NULL, or holds a
/// character the array syntax gives a meaning.
pub(crate) fn push_array_element(out: &mut String, element: Option<&str>) {
    let Some(element) = element else {
        out.push_str("NULL");
        return;
    };
    let quote = element.is_empty()
        || element.eq_ignore_ascii_case("NULL")
        || element
            .bytes()
            .any(|b| matches!(b, b'{' | b'}' | b',' | b'"' | b'\\') || b.is_ascii_whitespace());
    if !quote {
        out.push_str(element);
        return;
    }
    out.push('"');
    for c in element.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Validates `value` as JSON and writes its canonical form into `out`.
pub(crate) fn json(value: &str, out: &mut String) -> bool {
    let mut parser = Parser {
        text: value.as_bytes(),
        at: 0,
    };
    parser.skip_space();
    let ok = parser.value(out, 0).is_some();
    parser.skip_space();
    ok && parser.at == parser.text.len()
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 512;

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self
            .text
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        if self.text.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, out: &mut String, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_space();
        match *self.text.get(self.at)? {
            b'{' => {
                self.at += 1;
                let mut members: Vec<(String, String)> = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.skip_space();
                        let key = self.string()?;
                        if !self.eat(b':') {
                            return None;
                        }
                        let mut member = String::new();
                        self.value(&mut member, depth + 1)?;
                        // A repeated key: the last one counts, as in jsonb.
                        members.retain(|(k, _)| *k != key);
                        members.push((key, member));
                        if self.eat(b'}') {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                members.sort_by(|a, b| a.0.cmp(&b.0));
                out.push('{');
                for (i, (key, member)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_string(out, key);
                    out.push(':');
                    out.push_str(member);
                }
                out.push('}');
            }
            b'[' => {
                self.at += 1;
                out.push('[');
                if !self.eat(b']') {
                    let mut first = true;
                    loop {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        self.value(out, depth + 1)?;
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                out.push(']');
            }
            b'"' => {
                let s = self.string()?;
                push_string(out, &s);
            }
            b't' => self.literal(b"true", out)?,
            b'f' => self.literal(b"false", out)?,
            b'n' => self.literal(b"null", out)?,
            _ => self.number(out)?,
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8], out: &mut String) -> Option<()> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            out.push_str(std::str::from_utf8(word).ok()?);
            Some(())
        } else {
            None
        }
    }

    /// A string literal, decoded.
    fn string(&mut self) -> Option<String> {
        if self.text.get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        let mut bytes = Vec::new();
        loop {
            let byte = *self.text.get(self.at)?;
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let escape = *self.text.get(self.at)?;
                    self.at += 1;
                    let decoded = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let unit = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&unit) {
                                if !self.text[self.at..].starts_with(b"\\u") {
                                    return None;
                                }
                                self.at += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return None;
                                }
                                0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                unit
                            };
                            // PostgreSQL refuses \u0000 in jsonb text.
                            if code == 0 {
                                return None;
                            }
                            char::from_u32(code)?
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(decoded.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return None,
                _ => bytes.push(byte),
            }
        }
        String::from_utf8(bytes).ok()
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.at..self.at + 4)?;
        self.at += 4;
        let text = std::str::from_utf8(digits).ok()?;
        u32::from_str_radix(text, 16).ok()
    }

    /// A number, written as PostgreSQL's numeric prints it: the exponent
    /// applied, the scale kept (`1.50` stays, `1.5e1` is `15`, `-0` is `0`).
    fn number(&mut self, out: &mut String) -> Option<()> {
        let start = self.at;
        let negative = self.text.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let int = &self.text[int_start..self.at];
        if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
            return None;
        }
        let mut frac: &[u8] = &[];
        if self.text.get(self.at) == Some(&b'.') {
            self.at += 1;
            let frac_start = self.at;
            while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
                self.at += 1;
            }
            frac = &self.text[frac_start..self.at];
            if frac.is_empty() {
                return None;
            }
        }
        let mut exponent: i64 = 0;
        if matches!(self.text.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            let sign = match self.text.get(self.at) {
                Some(b'-') => {
                    self.at += 1;
                    -1
                }
                Some(b'+') => {
                    self.at += 1;
                    1
                }
                _ => 1,
            };
            let exp_start = self.at;
            while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
                self.at += 1;
            }
            let digits = std::str::from_utf8(&self.text[exp_start..self.at]).ok()?;
            if digits.is_empty() {
                return None;
            }
            exponent = sign * digits.parse::<i64>().ok().filter(|e| *e <= 1000)?;
        }
        if exponent == 0 && !(negative && int.iter().chain(frac).all(|&d| d == b'0')) {
            out.push_str(std::str::from_utf8(&self.text[start..self.at]).ok()?);
            return Some(());
        }
        push_numeric(out, negative, int, frac, exponent);
        Some(())
    }
}

/// The number `±int.frac × 10^exponent` as PostgreSQL's numeric prints it:
/// the exponent applied, the scale `max(0, frac digits − exponent)` kept, no
/// leading zeros, no sign on zero.
fn push_numeric(out: &mut String, negative: bool, int: &[u8], frac: &[u8], exponent: i64) {
    let digits: Vec<u8> = int.iter().chain(frac).copied().collect();
    // Digits before the decimal point.
    let point = int.len() as i64 + exponent;
    let scale = (frac.len() as i64 - exponent).max(0) as usize;
    let mut whole = String::new();
    let mut fraction = String::new();
    for (i, &d) in digits.iter().enumerate() {
        if (i as i64) < point {
            whole.push(d as char);
        } else {
            fraction.push(d as char);
        }
    }
    for _ in digits.len() as i64..point {
        whole.push('0');
    }
    if point < 0 {
        fraction.insert_str(0, &"0".repeat((-point) as usize));
    }
    let whole = whole.trim_start_matches('0');
    fraction.truncate(scale);
    while fraction.len() < scale {
        fraction.push('0');
    }
    let zero = whole.is_empty() && fraction.bytes().all(|d| d == b'0');
    if negative && !zero {
        out.push('-');
    }
    out.push_str(if whole.is_empty() { "0" } else { whole });
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(&fraction);
    }
}

/// A numeric value as PostgreSQL reads it (sign, digits with an optional
/// point, optional exponent; `NaN`, `Infinity`), written as it prints it.
pub(crate) fn numeric(value: &str, out: &mut String) -> bool {
    let value = value.trim();
    let (negative, body) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    let lower = body.to_ascii_lowercase();
    if lower == "nan" && body.len() == value.len() {
        out.push_str("NaN");
        return true;
    }
    if lower == "infinity" || lower == "inf" {
        out.push_str(if negative { "-Infinity" } else { "Infinity" });
        return true;
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => match body[at + 1..].parse::<i64>() {
            Ok(e) if e.abs() <= 1000 => (&body[..at], e),
            _ => return false,
        },
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return false;
    }
    push_numeric(out, negative, int.as_bytes(), frac.as_bytes(), exponent);
    true
}

/// A number written with an exponent (`1.5E+3`, `25e-1`) as plain decimal
/// text (`1500`, `2.5`), exactly, as PostgreSQL's and MySQL's decimal
/// types read it; anything else as it is.
pub(crate) fn without_exponent(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['e', 'E']) {
        return value.into();
    }
    // `numeric` reads NaN and Infinity too, but neither has an `e`.
    let mut plain = String::new();
    match numeric(value, &mut plain) {
        true => plain.into(),
        false => value.into(),
    }
}

/// `value` as a JSON string literal, escaped as PostgreSQL prints jsonb.
fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(form: TextForm, value: &str) -> Option<String> {
        let array = StringArray::from(vec![value]);
        let converted = form.convert(&array).ok()?;
        Some(
            converted
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0)
                .to_string(),
        )
    }

    #[test]
    fn sqlite_numbers_take_the_text_of_the_stored_value() {
        let strict = TextForm::SqliteNumeric { strict: true };
        let lenient = TextForm::SqliteNumeric { strict: false };
        for (value, stored) in [
            ("1234567890123456789", "1234567890123456789"),
            ("+0042", "42"),
            (" 7 ", "7"),
            ("12.50", "12.5"),
            ("1e3", "1000"),
            ("5.", "5"),
            (".5", "0.5"),
            ("-0.0", "0"),
            ("0.1", "0.1"),
            ("1e-7", "0.0000001"),
            // Beyond 64 bits: a REAL, as SQLite stores it.
            ("123456789012345678901", "123456789012345680000"),
            ("-inf", "-inf"),
        ] {
            assert_eq!(canonical(strict, value).as_deref(), Some(stored), "{value}");
        }
        for text in ["abc", "0x1A", "1,5", "nan", "1e", "e5", ".", "+", "1e400"] {
            assert_eq!(canonical(strict, text), None, "{text}");
            assert_eq!(canonical(lenient, text).as_deref(), Some(text), "{text}");
        }
        assert_eq!(
            TextForm::of(crate::db::DbKind::Sqlite, "DECIMAL(10,2)"),
            Some(strict)
        );
        assert_eq!(
            TextForm::of(crate::db::DbKind::Sqlite, "STRING"),
            Some(lenient)
        );
        for other in [
            "INTEGER",
            "VARCHAR(5)",
            "REAL",
            "BLOB",
            "",
            "BOOLEAN",
            "DATETIME",
        ] {
            assert_eq!(
                TextForm::of(crate::db::DbKind::Sqlite, other),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn wide_mysql_decimals_take_their_scale() {
        let form = TextForm::of(crate::db::DbKind::MySql, "decimal(65,3)").unwrap();
        assert_eq!(form, TextForm::WideDecimal { scale: 3 });
        assert_eq!(
            TextForm::of(crate::db::DbKind::Postgres, "numeric(50,3)"),
            Some(form)
        );
        assert_eq!(
            TextForm::of(crate::db::DbKind::Postgres, "numeric(38,3)"),
            None
        );
        for (value, stored) in [
            ("1.5", "1.500"),
            ("-0012.25", "-12.250"),
            ("+3", "3.000"),
            (".5", "0.500"),
            ("2.1230000", "2.123"),
            ("-0.000", "0.000"),
            // An exponent, as the servers read it.
            ("1e3", "1000.000"),
            ("1.5E-2", "0.015"),
        ] {
            assert_eq!(canonical(form, value).as_deref(), Some(stored), "{value}");
        }
        for bad in ["1.2345", "1.2345e0", "1e", "NaN", "abc", "", "-", "1.2.3"] {
            assert_eq!(canonical(form, bad), None, "{bad}");
        }
        assert_eq!(
            TextForm::of(crate::db::DbKind::MySql, "decimal(10,2)"),
            None
        );
        assert_eq!(
            TextForm::of(crate::db::DbKind::MySql, "json"),
            Some(TextForm::Jsonb)
        );
    }

    #[test]
    fn arrays_take_the_form_postgres_prints() {
        for (value, printed) in [
            ("{a, \"b\" ,NULL}", "{a,b,NULL}"),
            (" { 1 , 2 } ", "{1,2}"),
            (
                "{\"b c\",\"\",\"null\",\"q\\\"x\"}",
                "{\"b c\",\"\",\"null\",\"q\\\"x\"}",
            ),
            ("{{1,2},{3,NULL}}", "{{1,2},{3,NULL}}"),
            ("{}", "{}"),
            ("{a\\,b}", "{\"a,b\"}"),
            // Explicit bounds: left to the server as written.
            ("[0:1]={1,2}", "[0:1]={1,2}"),
        ] {
            assert_eq!(
                canonical(TextForm::PgArray, value).as_deref(),
                Some(printed),
                "{value}"
            );
        }
    }

    #[test]
    fn mysql_years_read_as_the_server_reads_text() {
        let text = StringArray::from(vec![
            Some("0000"),
            Some("0"),
            Some("000"),
            Some("24"),
            Some("0024"),
            Some("70"),
            Some("99"),
            Some("1901"),
            Some("2155"),
            Some(" "),
            None,
        ]);
        let years = TextForm::MysqlYear.convert(&text).unwrap();
        let years: Vec<Option<i16>> = years
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int16Array>()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(
            years,
            [0, 2000, 2000, 2024, 2024, 1970, 1999, 1901, 2155]
                .map(Some)
                .into_iter()
                .chain([None, None])
                .collect::<Vec<_>>()
        );
        for bad in ["100", "1900", "2156", "24.5", "-1", "year"] {
            let text = StringArray::from(vec![Some("1999"), Some(bad)]);
            assert_eq!(TextForm::MysqlYear.convert(&text).unwrap_err(), 1, "{bad}");
        }
    }

    #[test]
    fn uuids_in_any_spelling_are_one_value() {
        let canonical_form = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for spelling in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert_eq!(
                canonical(TextForm::Uuid, spelling).as_deref(),
                Some(canonical_form)
            );
        }
        assert_eq!(canonical(TextForm::Uuid, "a0eebc99-9c0b"), None);
        assert_eq!(
            canonical(TextForm::Uuid, "g0eebc999c0b4ef8bb6d6bb9bd380a11"),
            None
        );
    }

    #[test]
    fn jsonb_is_canonical_and_json_exact() {
        assert_eq!(
            canonical(
                TextForm::Jsonb,
                r#" {"b": [1, 2.50, 1.5e1, -0, 1e-2], "a": "x\u00e9\n", "b": true} "#
            )
            .as_deref(),
            Some("{\"a\":\"xé\\n\",\"b\":true}")
        );
        assert_eq!(
            canonical(
                TextForm::Jsonb,
                "[1, 2.50, 1.5e1, -0, 1e-2, 12E+1, -1.50e-3]"
            )
            .as_deref(),
            Some("[1,2.50,15,0,0.01,120,-0.00150]")
        );
        assert_eq!(
            canonical(TextForm::Json, " {\"b\": 1, \"a\": 2} ").as_deref(),
            Some(" {\"b\": 1, \"a\": 2} ")
        );
        for bad in [
            "{",
            "{\"a\" 1}",
            "[1,]",
            "01",
            "\"\\u0000\"",
            "tru",
            "1 2",
            "",
        ] {
            assert_eq!(canonical(TextForm::Jsonb, bad), None, "{bad}");
        }
    }

    #[test]
    fn numeric_is_exact_as_postgresql_prints_it() {
        for (value, printed) in [
            (
                "123456789012345678901234567890.123456789012345678901",
                "123456789012345678901234567890.123456789012345678901",
            ),
            (" +007.50 ", "7.50"),
            (".5", "0.5"),
            ("5.", "5"),
            ("1.5e3", "1500"),
            ("-0.00", "0.00"),
            ("nan", "NaN"),
            ("-inf", "-Infinity"),
        ] {
            assert_eq!(
                canonical(TextForm::Numeric, value).as_deref(),
                Some(printed),
                "{value}"
            );
        }
        for bad in ["", ".", "1.2.3", "1e", "abc", "--1"] {
            assert_eq!(canonical(TextForm::Numeric, bad), None, "{bad}");
        }
    }

    #[test]
    fn bytea_reads_hex_and_escape_forms() {
        let bytes = |value: &str| {
            let mut out = Vec::new();
            bytea(value, &mut out).map(|()| out)
        };
        assert_eq!(bytes("\\x48656C6c6f"), Some(b"Hello".to_vec()));
        assert_eq!(bytes("a\\\\b\\001"), Some(b"a\\b\x01".to_vec()));
        assert_eq!(bytes("\\x4"), None);
        assert_eq!(bytes("\\q"), None);
    }
}
