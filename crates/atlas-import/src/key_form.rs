//! Key forms: how values of a column compare where the database's equality
//! is looser than the text it stores.
//!
//! A value is written as the source gives it (PostgreSQL keeps `2.50` in an
//! unconstrained `numeric`, `24:00:00` in an `interval`), but the database
//! compares it by value: `2.5 = 2.50`, `interval '1 day' = '24:00:00'`,
//! `'{"a":1.0}'::jsonb = '{"a":1}'`. The duplicate check compares the
//! [`KeyForm`] of such a column instead of the value: a text in which values
//! the database holds equal are equal. It is used for keys only (the
//! partitioning of the check, the file's keys, the existing keys read back,
//! the upsert's staging); what is written stays as it was.
//!
//! A value a key form cannot read is compared as written (the server reads
//! more spellings than this does; such a value is never refused here).

use std::net::IpAddr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;

use crate::db::DbKind;
use crate::schema::{FractionRounding, SecondsPrecision, TargetColumn};
use crate::typed_text::{TextForm, json, numeric, pg_array_with, uuid};

/// How a key column's values are compared, where that is not as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KeyForm {
    /// One value of the column's type.
    Value(ValueForm),
    /// A PostgreSQL array: element by element, each by its form, NULLs equal.
    Array(ValueForm),
}

/// How one value (or one array element) compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ValueForm {
    /// As written.
    AsWritten,
    /// An integer by its value (`01` = `1` = `+1`).
    Integer,
    /// A floating-point number by its value (`1.0` = `1`).
    Float,
    /// A boolean by its value (`true` = `t` = `yes` = `1`).
    Boolean,
    /// A uuid in any case, with or without hyphens and braces.
    Uuid,
    /// An exact number by its value, whatever its scale (`2.5` = `2.50`).
    Numeric,
    /// JSON as jsonb compares it: key order, whitespace and the scale of
    /// numbers do not count.
    Jsonb,
    /// An interval by its length as PostgreSQL compares it: a month is 30
    /// days, a day 24 hours (`1 day` = `24:00:00`, `1 mon` = `30 days`),
    /// after the column drops what its fields and digits do not keep
    /// (`interval(2)`, `interval year to month`).
    Interval(IntervalKept),
    /// An `inet`/`cidr` address by its bytes and prefix length (`10.0.0.1`
    /// = `10.0.0.1/32`, IPv6 in any spelling).
    Inet,
    /// A MAC address in any of its spellings (`08:00:2b:01:02:03` =
    /// `0800.2b01.0203`), by its 6 bytes.
    MacAddr,
    /// An EUI-64 MAC address (`macaddr8`), by its 8 bytes; a 6-byte address
    /// is widened as PostgreSQL widens it (`ff:fe` in the middle).
    MacAddr8,
    /// Text compared regardless of case (`citext`).
    CaseInsensitive,
    /// `character(n)`: text without the spaces that pad it (PostgreSQL
    /// stores `ab` as `ab   ` and compares without them).
    BlankPadded,
    /// `time`: a time of day by its microseconds (`12:34` = `12:34:00.000`),
    /// at the digits of a second the column keeps, dropped as its database
    /// drops them (`12:34:56.7896` is `12:34:56.79` in PostgreSQL's
    /// `time(2)`).
    Time(SecondsPrecision),
    /// `timetz`: a time of day and its UTC offset, both compared as
    /// PostgreSQL compares them (`12:00+02` = `12:00:00+02:00`, but not
    /// `10:00+00`), the time at the column's digits as [`ValueForm::Time`].
    TimeTz(SecondsPrecision),
    /// A range of integers (`int4range`, `int8range`) in PostgreSQL's
    /// canonical form, lower bound in, upper out (`[1,4]` = `[1,5)`,
    /// `(3,3)` = `empty`).
    IntegerRange,
    /// A range of dates (`daterange`), canonical as integer ranges are.
    DateRange,
    /// A range of `numeric` or `timestamp` bounds (`numrange`, `tsrange`):
    /// each bound by its value (`[1.5,2)` = `[1.50,2)`; a timestamp in any
    /// spelling PostgreSQL prints), an unbounded side open, equal bounds
    /// not both in `empty`.
    ContinuousRange(RangeBound),
    /// A PostgreSQL `tsvector` by its lexemes and their positions, in any
    /// order and quoting (`b a:2` = `'a':2 'b'`; a lexeme given twice is
    /// one, its positions merged).
    TsVector,
    /// A PostgreSQL bit string (`bit(n)`, `varbit`) by its bits, written in
    /// binary digits or in hex after an `x` (`x1F` = `00011111`).
    BitString,
    /// A PostgreSQL geometric type, by its numbers as doubles, in any of the
    /// type's spellings (`1.5, 2` = `(1.5,2)` for a point; a box by its
    /// corners as PostgreSQL orders them; a path open or closed).
    Geometric(Shape),
    /// MySQL's SET: its members in any order, each once (`b,a,a` is stored
    /// as `a,b`); in any case under a case-insensitive collation (`A` names
    /// the member `a`).
    MemberSet { case_insensitive: bool },
}

/// What an interval column keeps of a value: PostgreSQL truncates the
/// parts below its last field (`interval day`: no time) and rounds the
/// seconds to its digits, half away from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IntervalKept {
    /// The last field kept.
    last: IntervalField,
    /// The digits of a second kept (six without `(p)`).
    seconds: SecondsPrecision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum IntervalField {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl IntervalKept {
    /// What `interval`, `interval(2)`, `interval day to second(3)`,
    /// `interval year to month` keep.
    fn of(sql_type: &str) -> Self {
        let fields = sql_type.split('(').next().unwrap_or_default();
        let last = match fields.split_whitespace().last() {
            Some("year") => IntervalField::Year,
            Some("month") => IntervalField::Month,
            Some("day") => IntervalField::Day,
            Some("hour") => IntervalField::Hour,
            Some("minute") => IntervalField::Minute,
            _ => IntervalField::Second,
        };
        IntervalKept {
            last,
            seconds: SecondsPrecision::new(
                type_modifier(sql_type).unwrap_or(6),
                FractionRounding::HalfAwayFromZero,
            ),
        }
    }

    /// `parts` as the column holds them.
    fn apply(self, parts: &mut IntervalParts) {
        let truncate = |micros: i128, unit: i128| micros / unit * unit;
        match self.last {
            IntervalField::Year => {
                parts.months = truncate(parts.months, 12);
                parts.days = 0;
                parts.micros = 0;
            }
            IntervalField::Month => {
                parts.days = 0;
                parts.micros = 0;
            }
            IntervalField::Day => parts.micros = 0,
            IntervalField::Hour => parts.micros = truncate(parts.micros, 3_600_000_000),
            IntervalField::Minute => parts.micros = truncate(parts.micros, 60_000_000),
            IntervalField::Second => {
                if let Ok(micros) = i64::try_from(parts.micros) {
                    parts.micros = i128::from(self.seconds.apply(micros));
                }
            }
        }
    }
}

/// The bounds of a [`ValueForm::ContinuousRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RangeBound {
    Numeric,
    /// A timestamp without time zone.
    Timestamp,
}

/// The geometric types of PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Shape {
    Point,
    /// `{A,B,C}` (a line written through two points is compared as written).
    Line,
    Lseg,
    Box,
    Path,
    Polygon,
    Circle,
}

impl KeyForm {
    /// The key form of a column on `kind` of type `sql_type` (for a
    /// PostgreSQL domain, its base type) read as `text_form` into
    /// `data_type`, or `None` where its values compare as they are held.
    pub fn of(
        kind: DbKind,
        sql_type: &str,
        text_form: Option<TextForm>,
        data_type: &DataType,
    ) -> Option<Self> {
        if *data_type != DataType::Utf8 {
            return None;
        }
        match text_form {
            Some(TextForm::Numeric) => Some(KeyForm::Value(ValueForm::Numeric)),
            Some(TextForm::Jsonb) => Some(KeyForm::Value(ValueForm::Jsonb)),
            Some(TextForm::PgArray) => {
                let element = sql_type.split('[').next().unwrap_or_default();
                match ValueForm::of_postgres(element.trim()) {
                    ValueForm::AsWritten => None,
                    form => Some(KeyForm::Array(form)),
                }
            }
            Some(_) => None,
            // Types held as text without a text form (PostgreSQL's interval,
            // inet, ...): the dialect says.
            None => kind.dialect().text_key_form(sql_type),
        }
    }

    /// The same form with a time's digits of a second kept and dropped as
    /// `precision` says (a form of anything else is returned as it is).
    pub fn at_precision(self, precision: SecondsPrecision) -> Self {
        let at = |form| match form {
            ValueForm::Time(_) => ValueForm::Time(precision),
            ValueForm::TimeTz(_) => ValueForm::TimeTz(precision),
            other => other,
        };
        match self {
            KeyForm::Value(form) => KeyForm::Value(at(form)),
            KeyForm::Array(form) => KeyForm::Array(at(form)),
        }
    }

    /// The key forms of `columns`.
    pub fn of_columns<'a>(
        columns: impl IntoIterator<Item = &'a TargetColumn>,
    ) -> Vec<Option<Self>> {
        columns.into_iter().map(|c| c.key_form).collect()
    }

    /// The key text of every value of `array` (text; anything else is
    /// returned as it is).
    pub fn apply(self, array: &ArrayRef) -> ArrayRef {
        let Some(text) = array.as_string_opt::<i32>() else {
            return Arc::clone(array);
        };
        Arc::new(self.apply_text(text))
    }

    fn apply_text(self, text: &StringArray) -> StringArray {
        let mut out = StringBuilder::with_capacity(text.len(), text.value_data().len());
        let mut key = String::new();
        for value in text.iter() {
            match value {
                None => out.append_null(),
                Some(value) => {
                    key.clear();
                    self.write(value, &mut key);
                    out.append_value(&key);
                }
            }
        }
        out.finish()
    }

    /// Writes the key text of `value`, as the column holds it (after its
    /// text form), into `out`.
    pub fn write(self, value: &str, out: &mut String) {
        match self {
            // Held in canonical form already (the column's text form wrote
            // it): only the scale of its numbers is left to drop.
            KeyForm::Value(ValueForm::Numeric) => {
                let start = out.len();
                out.push_str(value);
                strip_fraction_zeros(out, start);
            }
            KeyForm::Value(ValueForm::Jsonb) => {
                let start = out.len();
                out.push_str(value);
                if value.contains('.') {
                    jsonb_numbers_by_value(out, start);
                }
            }
            KeyForm::Value(form) => form.write(value, out),
            KeyForm::Array(element) => {
                let start = out.len();
                let read = pg_array_with(value, out, &|e, out| element.write(e, out));
                if read.is_none() {
                    out.truncate(start);
                    out.push_str(value);
                }
            }
        }
    }
}

impl std::fmt::Display for KeyForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyForm::Value(form) => write!(f, "{form}"),
            KeyForm::Array(element) => write!(f, "array of {element}"),
        }
    }
}

impl std::fmt::Display for ValueForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ValueForm::AsWritten => "text",
            ValueForm::Integer => "integer",
            ValueForm::Float => "float",
            ValueForm::Boolean => "boolean",
            ValueForm::Uuid => "uuid",
            ValueForm::Numeric => "numeric",
            ValueForm::Jsonb => "jsonb",
            ValueForm::Interval(_) => "interval",
            ValueForm::Inet => "inet",
            ValueForm::MacAddr => "macaddr",
            ValueForm::MacAddr8 => "macaddr8",
            ValueForm::CaseInsensitive => "citext",
            ValueForm::BlankPadded => "character",
            ValueForm::Time(_) => "time",
            ValueForm::TimeTz(_) => "timetz",
            ValueForm::IntegerRange => "integer range",
            ValueForm::ContinuousRange(RangeBound::Numeric) => "numeric range",
            ValueForm::ContinuousRange(RangeBound::Timestamp) => "timestamp range",
            ValueForm::DateRange => "daterange",
            ValueForm::TsVector => "tsvector",
            ValueForm::BitString => "bit string",
            ValueForm::Geometric(_) => "geometric",
            ValueForm::MemberSet { .. } => "set",
        })
    }
}

impl ValueForm {
    /// The form of a PostgreSQL type as the catalog prints it.
    pub(crate) fn of_postgres(sql_type: &str) -> Self {
        let base = sql_type.split('(').next().unwrap_or_default().trim();
        match base {
            "smallint" | "integer" | "bigint" => ValueForm::Integer,
            "real" | "double precision" => ValueForm::Float,
            "boolean" => ValueForm::Boolean,
            "uuid" => ValueForm::Uuid,
            "numeric" => ValueForm::Numeric,
            "jsonb" => ValueForm::Jsonb,
            "inet" | "cidr" => ValueForm::Inet,
            "macaddr" => ValueForm::MacAddr,
            "macaddr8" => ValueForm::MacAddr8,
            "citext" => ValueForm::CaseInsensitive,
            "character" | "bpchar" => ValueForm::BlankPadded,
            "int4range" | "int8range" => ValueForm::IntegerRange,
            "numrange" => ValueForm::ContinuousRange(RangeBound::Numeric),
            "tsrange" => ValueForm::ContinuousRange(RangeBound::Timestamp),
            "daterange" => ValueForm::DateRange,
            "bit" | "bit varying" => ValueForm::BitString,
            "tsvector" => ValueForm::TsVector,
            "point" => ValueForm::Geometric(Shape::Point),
            "line" => ValueForm::Geometric(Shape::Line),
            "lseg" => ValueForm::Geometric(Shape::Lseg),
            "box" => ValueForm::Geometric(Shape::Box),
            "path" => ValueForm::Geometric(Shape::Path),
            "polygon" => ValueForm::Geometric(Shape::Polygon),
            "circle" => ValueForm::Geometric(Shape::Circle),
            interval if interval == "interval" || interval.starts_with("interval ") => {
                ValueForm::Interval(IntervalKept::of(sql_type))
            }
            // `time`, `time(3) without time zone`, `time with time zone`:
            // PostgreSQL rounds to the digits of `(p)`, six without.
            time if time.starts_with("time") && !time.starts_with("timestamp") => {
                let precision = SecondsPrecision::new(
                    type_modifier(sql_type).unwrap_or(6),
                    FractionRounding::HalfAwayFromZero,
                );
                if sql_type.ends_with(" with time zone") {
                    ValueForm::TimeTz(precision)
                } else {
                    ValueForm::Time(precision)
                }
            }
            _ => ValueForm::AsWritten,
        }
    }

    /// Writes the key text of `value` (as written: an array's element) into
    /// `out`: `value` itself where this form does not read it.
    pub fn write(self, value: &str, out: &mut String) {
        let start = out.len();
        let read = match self {
            ValueForm::AsWritten => false,
            ValueForm::Integer => value
                .trim()
                .parse::<i64>()
                .map(|i| out.push_str(&i.to_string()))
                .is_ok(),
            ValueForm::Float => float(value, out),
            ValueForm::Boolean => boolean(value).map(|b| out.push(b)).is_some(),
            ValueForm::Uuid => uuid(value, out),
            ValueForm::Numeric => numeric(value, out) && strip_fraction_zeros(out, start),
            ValueForm::Jsonb => json(value, out) && jsonb_numbers_by_value(out, start),
            ValueForm::Interval(kept) => interval_span(value, kept)
                .map(|span| out.push_str(&span.to_string()))
                .is_some(),
            ValueForm::Inet => inet(value, out),
            ValueForm::MacAddr => mac(value, 6, out),
            ValueForm::MacAddr8 => mac(value, 8, out),
            ValueForm::CaseInsensitive => {
                out.extend(value.chars().flat_map(char::to_lowercase));
                true
            }
            ValueForm::BlankPadded => {
                out.push_str(value.trim_end_matches(' '));
                true
            }
            // Only a time alone: `1:00 PM` is 13:00 to PostgreSQL.
            ValueForm::Time(precision) => signed_time(value.trim(), precision)
                .map(|micros| out.push_str(&micros.to_string()))
                .is_some(),
            ValueForm::TimeTz(precision) => time_with_offset(value, precision)
                .map(|(micros, offset)| out.push_str(&format!("{micros}{offset:+}")))
                .is_some(),
            ValueForm::IntegerRange => discrete_range(value, out, |bound| {
                bound.parse::<i64>().ok().map(i128::from)
            }),
            ValueForm::DateRange => discrete_range(value, out, |bound| {
                chrono::NaiveDate::parse_from_str(bound, "%Y-%m-%d")
                    .ok()
                    .map(|date| i128::from(chrono::Datelike::num_days_from_ce(&date)))
            }),
            ValueForm::ContinuousRange(bound) => continuous_range(bound, value, out),
            ValueForm::TsVector => ts_vector(value, out),
            ValueForm::BitString => bits(value, out),
            ValueForm::Geometric(shape) => geometric(shape, value, out),
            ValueForm::MemberSet { case_insensitive } => {
                let mut members: Vec<std::borrow::Cow<'_, str>> = value
                    .split(',')
                    .map(|m| m.trim_end_matches(' '))
                    .filter(|m| !m.is_empty())
                    .map(|m| match case_insensitive {
                        true => m.to_lowercase().into(),
                        false => m.into(),
                    })
                    .collect();
                members.sort_unstable();
                members.dedup();
                out.push_str(&members.join(","));
                true
            }
        };
        if !read {
            out.truncate(start);
            out.push_str(value);
        }
    }
}

/// A `tsvector` as PostgreSQL stores it: its lexemes sorted, each once,
/// with its positions sorted, each once (the highest weight where one is
/// given twice), into `out`; `false` where `value` is not one this reads.
fn ts_vector(value: &str, out: &mut String) -> bool {
    use std::collections::BTreeMap;
    let mut lexemes: BTreeMap<String, BTreeMap<u16, char>> = BTreeMap::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            break;
        };
        let mut lexeme = String::new();
        if first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    None => return false,
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        lexeme.push('\'');
                    }
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => lexeme.push(c),
                        None => return false,
                    },
                    Some(c) => lexeme.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != ':') {
                match c {
                    '\\' => match chars.next() {
                        Some(c) => lexeme.push(c),
                        None => return false,
                    },
                    '\'' => return false,
                    c => lexeme.push(c),
                }
            }
        }
        let positions = lexemes.entry(lexeme).or_default();
        if chars.next_if_eq(&':').is_none() {
            continue;
        }
        loop {
            let mut digits = String::new();
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                digits.push(d);
            }
            let Ok(position) = digits.parse::<u16>() else {
                return false;
            };
            let weight = chars
                .next_if(|c| matches!(c.to_ascii_uppercase(), 'A'..='D'))
                .map_or('D', |c| c.to_ascii_uppercase());
            // A is the highest weight.
            let kept = positions.entry(position).or_insert(weight);
            *kept = (*kept).min(weight);
            if chars.next_if_eq(&',').is_none() {
                break;
            }
        }
        if chars.peek().is_some_and(|c| !c.is_whitespace()) {
            return false;
        }
    }
    for (i, (lexeme, positions)) in lexemes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push('\'');
        out.push_str(&lexeme.replace('\'', "''"));
        out.push('\'');
        for (j, (position, weight)) in positions.iter().enumerate() {
            out.push(if j == 0 { ':' } else { ',' });
            out.push_str(&position.to_string());
            if *weight != 'D' {
                out.push(*weight);
            }
        }
    }
    true
}

/// The binary digits of a bit string written in them or, after an `x`, in
/// hex digits (four bits each), into `out`; `false` for anything else.
fn bits(value: &str, out: &mut String) -> bool {
    let Some(hex) = value.strip_prefix(['x', 'X']) else {
        out.push_str(value);
        return value.bytes().all(|b| b == b'0' || b == b'1');
    };
    for digit in hex.chars() {
        let Some(nibble) = digit.to_digit(16) else {
            return false;
        };
        out.push_str(&format!("{nibble:04b}"));
    }
    true
}

/// The key of a `shape` written `value` in any of its PostgreSQL spellings:
/// its numbers as doubles, in the order PostgreSQL keeps them, into `out`;
/// `false` where `value` is not one this reads.
fn geometric(shape: Shape, value: &str, out: &mut String) -> bool {
    let text = value.trim();
    let Ok(mut numbers) = text
        .split(|c: char| c.is_whitespace() || "()[]<>{},".contains(c))
        .filter(|token| !token.is_empty())
        .map(str::parse::<f64>)
        .collect::<Result<Vec<f64>, _>>()
    else {
        return false;
    };
    let first = text.chars().next();
    let count_fits = match shape {
        Shape::Point => numbers.len() == 2,
        // `{A,B,C}`; a line through two points PostgreSQL turns into one.
        Shape::Line => numbers.len() == 3 && first == Some('{'),
        Shape::Lseg | Shape::Box => numbers.len() == 4,
        Shape::Circle => numbers.len() == 3,
        Shape::Path | Shape::Polygon => numbers.len() >= 2 && numbers.len().is_multiple_of(2),
    };
    if !count_fits {
        return false;
    }
    if shape == Shape::Box {
        // PostgreSQL keeps the upper right corner first.
        let (x1, y1, x2, y2) = (numbers[0], numbers[1], numbers[2], numbers[3]);
        numbers = vec![x1.max(x2), y1.max(y2), x1.min(x2), y1.min(y2)];
    }
    if shape == Shape::Path {
        // Square brackets make an open path; anything else a closed one.
        out.push_str(if first == Some('[') { "[" } else { "(" });
    }
    for (i, number) in numbers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&number.to_string());
    }
    true
}

/// Drops the zeros that end the fraction of the number at `out[start..]`
/// (and the point, if nothing is left after it). Always `true`.
fn strip_fraction_zeros(out: &mut String, start: usize) -> bool {
    if out[start..].contains('.') {
        let kept = out.trim_end_matches('0').trim_end_matches('.').len();
        out.truncate(kept);
    }
    true
}

/// Rewrites the canonical JSON at `out[start..]` with every number's
/// fraction zeros dropped (`1.50` as `1.5`, `2.0` as `2`): jsonb compares
/// numbers by value. Always `true`.
fn jsonb_numbers_by_value(out: &mut String, start: usize) -> bool {
    let canonical = out.split_off(start);
    let bytes = canonical.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let mut number_start: Option<usize> = None;
    let mut copied = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        let in_number = b.is_ascii_digit() || b == b'.' || b == b'-';
        match (number_start, in_number) {
            (None, true) => number_start = Some(i),
            (Some(from), false) => {
                out.push_str(&canonical[copied..from]);
                push_number_by_value(out, &canonical[from..i]);
                copied = i;
                number_start = None;
            }
            _ => {}
        }
        if b == b'"' {
            in_string = true;
        }
    }
    if let Some(from) = number_start {
        out.push_str(&canonical[copied..from]);
        push_number_by_value(out, &canonical[from..]);
        copied = canonical.len();
    }
    out.push_str(&canonical[copied..]);
    true
}

fn push_number_by_value(out: &mut String, number: &str) {
    let start = out.len();
    out.push_str(number);
    strip_fraction_zeros(out, start);
}

/// A floating-point number by its value; `-0` is `0`, every NaN one value.
fn float(value: &str, out: &mut String) -> bool {
    let text = value.trim();
    let Ok(number) = text.parse::<f64>() else {
        return match text.to_ascii_lowercase().as_str() {
            "infinity" | "+infinity" => {
                out.push_str("inf");
                true
            }
            "-infinity" => {
                out.push_str("-inf");
                true
            }
            _ => false,
        };
    };
    let number = if number == 0.0 { 0.0 } else { number };
    if number.is_nan() {
        out.push_str("NaN");
    } else {
        out.push_str(&number.to_string());
    }
    true
}

/// PostgreSQL's boolean spellings, as `t` or `f`.
fn boolean(value: &str) -> Option<char> {
    crate::convert::parse_bool(value).map(|b| if b { 't' } else { 'f' })
}

/// An address with its prefix length, IPv6 in its canonical spelling.
/// IPv4 is read as PostgreSQL reads it: octets with leading zeros, and
/// fewer than four (`10.1/16` is `10.1.0.0/16`); where no length is given,
/// the full length, or for fewer than four octets the length `cidr`
/// imputes (`10.1` is `10.1.0.0/16`; `inet` refuses such an address).
fn inet(value: &str, out: &mut String) -> bool {
    let text = value.trim();
    let (address, bits) = text.split_once('/').unwrap_or((text, ""));
    let (address, imputed_bits) = match address.parse::<IpAddr>() {
        Ok(address) => (address, if address.is_ipv4() { 32 } else { 128 }),
        Err(_) => match short_ipv4(address) {
            Some((address, imputed)) => (IpAddr::V4(address), imputed),
            None => return false,
        },
    };
    let full = if address.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        "" => imputed_bits,
        bits => match bits.parse::<u8>() {
            Ok(b) if b <= full => b,
            _ => return false,
        },
    };
    use std::fmt::Write;
    let _ = write!(out, "{address}/{bits}");
    true
}

/// An IPv4 address of one to four decimal octets (leading zeros allowed),
/// the missing octets zero, with the prefix length PostgreSQL's `cidr`
/// imputes where none is given: the address's class, widened to the
/// octets written (`224` alone is `224.0.0.0/4`).
fn short_ipv4(text: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let mut octets = [0u8; 4];
    let mut written = 0;
    for part in text.split('.') {
        if written == 4 || part.is_empty() || part.len() > 3 {
            return None;
        }
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        octets[written] = part.parse().ok()?;
        written += 1;
    }
    let class_bits = match octets[0] {
        240.. => 32,
        224.. => 8,
        192.. => 24,
        128.. => 16,
        _ => 8,
    };
    let mut bits = class_bits.max(written as u8 * 8);
    if bits == 8 && octets[0] == 224 {
        bits = 4;
    }
    Some((octets.into(), bits))
}

/// A MAC address of `bytes` bytes as lowercase hex digits, separators
/// (`:`, `-`, `.`) dropped; a 6-byte address for 8 bytes widened with
/// `fffe` in the middle.
fn mac(value: &str, bytes: usize, out: &mut String) -> bool {
    let digits: String = value
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    match (digits.len(), bytes) {
        (12, 6) | (16, 8) => out.push_str(&digits),
        (12, 8) => {
            out.push_str(&digits[..6]);
            out.push_str("fffe");
            out.push_str(&digits[6..]);
        }
        _ => return false,
    }
    true
}

const MICROS_PER_SECOND: f64 = 1e6;
const MICROS_PER_DAY: i128 = 86_400_000_000;
const DAYS_PER_MONTH: i128 = 30;

/// An interval's parts as PostgreSQL keeps them.
#[derive(Debug, Default, PartialEq)]
struct IntervalParts {
    months: i128,
    days: i128,
    micros: i128,
}

impl IntervalParts {
    /// Adds `amount` of `unit`, its fraction spread to the smaller parts as
    /// PostgreSQL spreads it (a fraction of a year in whole months, of a
    /// month in days of 30 and the rest in time, of a day in time).
    fn add(&mut self, amount: f64, unit: Unit) {
        let whole = amount.trunc();
        let fraction = amount - whole;
        match unit {
            Unit::Months(per) => {
                let months = amount * f64::from(per);
                if per >= 12 {
                    self.months += months.round() as i128;
                } else {
                    let whole = months.trunc();
                    self.months += whole as i128;
                    self.add_days(months - whole, 30.0);
                }
            }
            Unit::Days(per) => {
                self.days += whole as i128 * i128::from(per);
                self.add_days(fraction, f64::from(per));
            }
            Unit::Micros(per) => self.micros += (amount * per).round() as i128,
        }
    }

    /// Adds `fraction` of a span of `days` days.
    fn add_days(&mut self, fraction: f64, days: f64) {
        let days = fraction * days;
        let whole = days.trunc();
        self.days += whole as i128;
        self.micros += ((days - whole) * 86_400.0 * MICROS_PER_SECOND).round() as i128;
    }

    /// The length PostgreSQL compares intervals by, in microseconds.
    fn span(&self) -> i128 {
        (self.months * DAYS_PER_MONTH + self.days) * MICROS_PER_DAY + self.micros
    }

    fn negate(&mut self) {
        self.months = -self.months;
        self.days = -self.days;
        self.micros = -self.micros;
    }
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Months(u32),
    Days(u32),
    Micros(f64),
}

/// An interval unit as PostgreSQL spells it.
fn unit(word: &str) -> Option<Unit> {
    Some(match word {
        "microsecond" | "microseconds" | "microsecon" | "us" | "usec" | "usecs" => {
            Unit::Micros(1.0)
        }
        "millisecond" | "milliseconds" | "millisecon" | "ms" | "msec" | "msecs" => {
            Unit::Micros(1e3)
        }
        "second" | "seconds" | "s" | "sec" | "secs" => Unit::Micros(MICROS_PER_SECOND),
        "minute" | "minutes" | "m" | "min" | "mins" => Unit::Micros(60.0 * MICROS_PER_SECOND),
        "hour" | "hours" | "h" | "hr" | "hrs" => Unit::Micros(3_600.0 * MICROS_PER_SECOND),
        "day" | "days" | "d" => Unit::Days(1),
        "week" | "weeks" | "w" => Unit::Days(7),
        "month" | "months" | "mon" | "mons" => Unit::Months(1),
        "year" | "years" | "y" | "yr" | "yrs" => Unit::Months(12),
        "decade" | "decades" | "dec" | "decs" => Unit::Months(120),
        "century" | "centuries" | "c" | "cent" => Unit::Months(1_200),
        "millennium" | "millennia" | "mil" | "mils" => Unit::Months(12_000),
        _ => return None,
    })
}

/// The opening bracket, the text of the lower and upper bounds (empty for
/// an unbounded side) and the closing bracket of the range literal
/// `value`; `Err(true)` once `empty` is written to `out` for it,
/// `Err(false)` where it is none or has a bound with a comma or an escape
/// of its own (not read here).
fn range_bounds<'a>(
    value: &'a str,
    out: &mut String,
) -> Result<(char, &'a str, &'a str, char), bool> {
    let text = value.trim();
    if text.eq_ignore_ascii_case("empty") {
        out.push_str("empty");
        return Err(true);
    }
    let (Some(open), Some(close)) = (text.chars().next(), text.chars().last()) else {
        return Err(false);
    };
    if !matches!(open, '[' | '(') || !matches!(close, ']' | ')') || text.len() < 2 {
        return Err(false);
    }
    let inner = &text[1..text.len() - 1];
    match inner.split_once(',') {
        Some((lower, upper)) if !inner.contains('\\') && !upper.contains(',') => {
            Ok((open, lower, upper, close))
        }
        _ => Err(false),
    }
}

/// A range of a discrete type (`[1,4]`, `(,10)`, `empty`) in the canonical
/// form PostgreSQL stores it in: the lower bound included, the upper
/// excluded, an unbounded side open, nothing in it `empty`. `step` reads a
/// bound as a number of steps (integers; days for dates); `false` where a
/// part is not read (a quoted bound, `infinity`).
fn discrete_range(value: &str, out: &mut String, step: impl Fn(&str) -> Option<i128>) -> bool {
    let (open, lower, upper, close) = match range_bounds(value, out) {
        Ok(bounds) => bounds,
        Err(read) => return read,
    };
    let bound = |b: &str| -> Option<Option<i128>> {
        let b = b.trim();
        if b.is_empty() {
            Some(None)
        } else {
            step(b).map(Some)
        }
    };
    let (Some(lower), Some(upper)) = (bound(lower), bound(upper)) else {
        return false;
    };
    let lower = lower.map(|l| if open == '(' { l + 1 } else { l });
    let upper = upper.map(|u| if close == ']' { u + 1 } else { u });
    if let (Some(l), Some(u)) = (lower, upper)
        && l >= u
    {
        out.push_str("empty");
        return true;
    }
    let side = |b: Option<i128>| b.map(|b| b.to_string()).unwrap_or_default();
    let open = if lower.is_some() { '[' } else { '(' };
    out.push_str(&format!("{open}{},{})", side(lower), side(upper)));
    true
}

/// A range of a continuous type (`[1.5,2)`, `(,"2024-01-01 10:00")`) as
/// PostgreSQL compares it: each bound by its value, an unbounded side
/// open, equal bounds `empty` unless both are in; `false` where a part is
/// not read (`infinity`, a bound with escapes).
fn continuous_range(bound: RangeBound, value: &str, out: &mut String) -> bool {
    let (open, lower, upper, close) = match range_bounds(value, out) {
        Ok(bounds) => bounds,
        Err(read) => return read,
    };
    // A timestamp bound with a space is quoted.
    let key = |b: &str| -> Option<Option<String>> {
        let b = b.trim();
        let b = b
            .strip_prefix('"')
            .and_then(|b| b.strip_suffix('"'))
            .unwrap_or(b);
        if b.is_empty() {
            return Some(None);
        }
        let mut key = String::new();
        match bound {
            RangeBound::Numeric => {
                (numeric(b, &mut key) && strip_fraction_zeros(&mut key, 0)).then_some(())?
            }
            RangeBound::Timestamp => key.push_str(&timestamp_micros(b)?.to_string()),
        }
        Some(Some(key))
    };
    let (Some(lower), Some(upper)) = (key(lower), key(upper)) else {
        return false;
    };
    if lower.is_some() && lower == upper && !(open == '[' && close == ']') {
        out.push_str("empty");
        return true;
    }
    let open = if lower.is_some() { open } else { '(' };
    let close = if upper.is_some() { close } else { ')' };
    out.push(open);
    out.push_str(lower.as_deref().unwrap_or_default());
    out.push(',');
    out.push_str(upper.as_deref().unwrap_or_default());
    out.push(close);
    true
}

/// The microseconds since 1970 of a timestamp without zone written
/// `2024-01-02 10:00[:00[.ffffff]]` (or with a `T`), or a date alone.
fn timestamp_micros(value: &str) -> Option<i64> {
    let value = value.trim();
    let (date, time) = match value.split_once([' ', 'T']) {
        Some((date, time)) => (date, Some(time.trim())),
        None => (value, None),
    };
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let micros_of_day = match time {
        None => 0,
        Some(time) => {
            let exact = SecondsPrecision::new(6, FractionRounding::HalfAwayFromZero);
            let (micros, rest) = time_of_day(time, exact)?;
            if !rest.is_empty() {
                return None;
            }
            micros
        }
    };
    let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros();
    Some(midnight + micros_of_day)
}

/// The digits of `(p)` in a type's name (`time(3) without time zone`,
/// `datetime(6)`).
pub(crate) fn type_modifier(sql_type: &str) -> Option<u8> {
    let (_, after) = sql_type.split_once('(')?;
    after.split(')').next()?.trim().parse().ok()
}

/// The microseconds since midnight of the time of day `value` begins with
/// (`H:MM`, `HH:MM:SS`, `HH:MM:SS.ffffff`; up to `24:00:00`), at the digits
/// of a second `precision` keeps, and the rest of `value` after it.
fn time_of_day(value: &str, precision: SecondsPrecision) -> Option<(i64, &str)> {
    fn digits(text: &str, min: usize, max: usize) -> Option<(i64, usize)> {
        let n = text.bytes().take_while(u8::is_ascii_digit).count();
        if !(min..=max).contains(&n) {
            return None;
        }
        Some((text[..n].parse().ok()?, n))
    }
    // One digit of minutes or seconds is read as both databases read it
    // (`2:3:4` is 02:03:04).
    let (hours, n) = digits(value, 1, 2)?;
    let rest = value[n..].strip_prefix(':')?;
    let (minutes, n) = digits(rest, 1, 2)?;
    let mut rest = &rest[n..];
    let (mut seconds, mut micros) = (0, 0);
    if let Some(after) = rest.strip_prefix(':') {
        let (s, n) = digits(after, 1, 2)?;
        seconds = s;
        rest = &after[n..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            // Past the microsecond: the database's rule for the rest.
            let (f, _) = digits(&fraction[..n.min(6)], 1, 6)?;
            micros = f * 10i64.pow(6 - n.min(6) as u32)
                + i64::from(n > 6 && precision.rounding.rounds_up(&fraction[..n]));
            rest = &fraction[n..];
        }
    }
    if minutes > 59 || seconds > 59 || hours > 24 || (hours == 24 && minutes + seconds + micros > 0)
    {
        return None;
    }
    let micros = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros;
    Some((precision.apply(micros), rest))
}

/// A `time` value in microseconds at `precision`: a time of day, or a
/// MySQL TIME, a signed span of up to 838 hours (`-1:00`, `100:00:00`,
/// and with days first: `1 02:00` and `1 02` are 26:00:00).
fn signed_time(value: &str, precision: SecondsPrecision) -> Option<i64> {
    const MICROS_PER_HOUR: i64 = 3_600_000_000;
    let (negative, body) = match value.strip_prefix('-') {
        Some(body) => (true, body),
        None => (false, value),
    };
    let n = body.bytes().take_while(u8::is_ascii_digit).count();
    let hours: i64 = body[..n].parse().ok()?;
    let after_days = body[n..].trim_start_matches(' ');
    let micros = if n <= 2 && after_days.len() < body.len() - n && !after_days.is_empty() {
        // MySQL's `D HH:MM:SS` (also `D HH:MM`, `D HH`): `hours` are days.
        let days = hours;
        let time = match after_days.len() == 2 && after_days.bytes().all(|b| b.is_ascii_digit()) {
            true => after_days.parse::<i64>().ok()? * MICROS_PER_HOUR,
            false => {
                let (micros, rest) = time_of_day(after_days, precision)?;
                (rest.is_empty() && micros < 24 * MICROS_PER_HOUR).then_some(micros)?
            }
        };
        let micros = days * 24 * MICROS_PER_HOUR + time;
        (micros < 839 * MICROS_PER_HOUR).then_some(micros)?
    } else if hours < 24 {
        let (micros, rest) = time_of_day(body, precision)?;
        rest.is_empty().then_some(micros)?
    } else if n <= 3 && hours <= 838 {
        // The minutes and seconds as a time of day from midnight.
        let from_midnight = format!("0{}", &body[n..]);
        let (micros, rest) = time_of_day(&from_midnight, precision)?;
        rest.is_empty()
            .then_some(hours * MICROS_PER_HOUR + micros)?
    } else {
        return None;
    };
    Some(if negative { -micros } else { micros })
}

/// A `timetz` value: its time of day in microseconds and its UTC offset in
/// seconds east (`+HH`, `+HH:MM`, `+HHMM`, `+HH:MM:SS`, `Z`).
fn time_with_offset(value: &str, precision: SecondsPrecision) -> Option<(i64, i64)> {
    let (micros, rest) = time_of_day(value.trim(), precision)?;
    let zone = rest.trim_start();
    if zone.eq_ignore_ascii_case("z") {
        return Some((micros, 0));
    }
    let (sign, zone) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let parts: Vec<&str> = if zone.contains(':') {
        zone.split(':').collect()
    } else if zone.len() > 2 {
        // `+0530`, `+053000`
        zone.as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap_or("x"))
            .collect()
    } else {
        vec![zone]
    };
    if parts.is_empty()
        || parts.len() > 3
        || parts[0].is_empty()
        || parts[0].len() > 2
        || parts[1..].iter().any(|p| p.len() != 2)
        || parts.iter().any(|p| !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut seconds = 0;
    for (part, scale) in parts.iter().zip([3600, 60, 1]) {
        seconds += part.parse::<i64>().ok()? * scale;
    }
    Some((micros, sign * seconds))
}

/// The length of an interval in PostgreSQL's input forms (`1 day 02:00:00`,
/// `@ 1 hour ago`, `1-2` years-months, ISO 8601 `P1DT2H`), in microseconds.
fn interval_span(value: &str, kept: IntervalKept) -> Option<i128> {
    let trimmed = value.trim();
    let text = if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    };
    let mut parts = match text.strip_prefix('p') {
        Some(designators) => iso_interval(designators)?,
        None => postgres_interval(&text)?,
    };
    kept.apply(&mut parts);
    Some(parts.span())
}

/// ISO 8601 designators after the `P`: `1Y2M3W4DT5H6M7.5S`.
fn iso_interval(text: &str) -> Option<IntervalParts> {
    let mut parts = IntervalParts::default();
    let mut time = false;
    let mut rest = text;
    let mut any = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('t') {
            time = true;
            rest = after;
            continue;
        }
        let end = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let amount: f64 = rest[..end].parse().ok()?;
        let unit = match (rest.as_bytes()[end], time) {
            (b'y', false) => Unit::Months(12),
            (b'm', false) => Unit::Months(1),
            (b'w', false) => Unit::Days(7),
            (b'd', false) => Unit::Days(1),
            (b'h', true) => Unit::Micros(3_600.0 * MICROS_PER_SECOND),
            (b'm', true) => Unit::Micros(60.0 * MICROS_PER_SECOND),
            (b's', true) => Unit::Micros(MICROS_PER_SECOND),
            _ => return None,
        };
        parts.add(amount, unit);
        any = true;
        rest = &rest[end + 1..];
    }
    any.then_some(parts)
}

/// PostgreSQL's own forms: numbers with units, a `[-]h:m[:s]` time, a
/// `y-m` years-months field, a bare number of days before a time or of
/// seconds at the end, `@` and `ago`.
fn postgres_interval(text: &str) -> Option<IntervalParts> {
    let tokens = interval_tokens(text);
    let mut parts = IntervalParts::default();
    let mut ago = false;
    let mut any = false;
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        i += 1;
        if token == "@" {
            continue;
        }
        if token == "ago" {
            ago = true;
            continue;
        }
        if token.contains(':') {
            parts.micros += time_field(token)?;
            any = true;
            continue;
        }
        if let Some(months) = year_month_field(token) {
            parts.months += months;
            any = true;
            continue;
        }
        let amount: f64 = token.parse().ok()?;
        if !token.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        let unit = match tokens.get(i).and_then(|word| unit(word)) {
            Some(unit) => {
                i += 1;
                unit
            }
            None if tokens.get(i).is_some_and(|t| t.contains(':')) => Unit::Days(1),
            None if i == tokens.len() => Unit::Micros(MICROS_PER_SECOND),
            None => return None,
        };
        parts.add(amount, unit);
        any = true;
    }
    if ago {
        parts.negate();
    }
    any.then_some(parts)
}

/// Whitespace-separated words, a number and a unit written together
/// (`1day`, `3h`) split apart.
fn interval_tokens(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    for word in text.split_whitespace() {
        let split = word
            .char_indices()
            .skip(1)
            .find(|&(i, c)| c.is_ascii_alphabetic() && word.as_bytes()[i - 1].is_ascii_digit());
        match split {
            Some((at, _)) if !word.contains(':') => {
                tokens.push(&word[..at]);
                tokens.push(&word[at..]);
            }
            _ => tokens.push(word),
        }
    }
    tokens
}

/// `[+-]h:m[:s[.f]]` (or `m:s.f`) in microseconds.
fn time_field(token: &str) -> Option<i128> {
    let (negative, body) = match token.as_bytes().first()? {
        b'-' => (true, &token[1..]),
        b'+' => (false, &token[1..]),
        _ => (false, token),
    };
    let fields: Vec<&str> = body.split(':').collect();
    let number = |s: &str| -> Option<f64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            .then(|| s.parse().ok())
            .flatten()
    };
    let seconds = match fields.as_slice() {
        [h, m] if !m.contains('.') => number(h)? * 3_600.0 + number(m)? * 60.0,
        [m, s] => number(m)? * 60.0 + number(s)?,
        [h, m, s] => number(h)? * 3_600.0 + number(m)? * 60.0 + number(s)?,
        _ => return None,
    };
    let micros = (seconds * MICROS_PER_SECOND).round() as i128;
    Some(if negative { -micros } else { micros })
}

/// `[+-]y-m` in months.
fn year_month_field(token: &str) -> Option<i128> {
    let (negative, body) = match token.as_bytes().first()? {
        b'-' => (true, &token[1..]),
        b'+' => (false, &token[1..]),
        _ => (false, token),
    };
    let (years, months) = body.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(years) || !digits(months) {
        return None;
    }
    let total = years.parse::<i128>().ok()? * 12 + months.parse::<i128>().ok()?;
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of `value` as the column would hold it: numeric and jsonb
    /// values through their text form first.
    fn key(form: KeyForm, value: &str) -> String {
        let text_form = match form {
            KeyForm::Value(ValueForm::Numeric) => Some(TextForm::Numeric),
            KeyForm::Value(ValueForm::Jsonb) => Some(TextForm::Jsonb),
            _ => None,
        };
        let held = text_form
            .and_then(|f| f.convert(&StringArray::from(vec![value])).ok())
            .map(|a| a.as_string::<i32>().value(0).to_string())
            .unwrap_or_else(|| value.to_string());
        let mut out = String::new();
        form.write(&held, &mut out);
        out
    }

    fn same(form: KeyForm, a: &str, b: &str) {
        assert_eq!(key(form, a), key(form, b), "{a} = {b}");
    }

    fn different(form: KeyForm, a: &str, b: &str) {
        assert_ne!(key(form, a), key(form, b), "{a} <> {b}");
    }

    #[test]
    fn numeric_compares_by_value_whatever_its_scale() {
        let form = KeyForm::Value(ValueForm::Numeric);
        same(form, "2.5", "2.50");
        same(form, "2", "2.000");
        same(form, "1e3", "1000.0");
        same(form, "-0.00", "0");
        same(form, "NaN", "nan");
        different(form, "2.5", "2.05");
        different(form, "10", "1");
        assert_eq!(key(form, "120.500"), "120.5");
        assert_eq!(key(form, "not a number"), "not a number");
    }

    #[test]
    fn jsonb_compares_numbers_by_value() {
        let form = KeyForm::Value(ValueForm::Jsonb);
        same(
            form,
            r#"{"a": 1.0, "b": [2.50, "3.0"]}"#,
            r#"{"b":[2.5,"3.0"],"a":1}"#,
        );
        same(form, "10.00", "1e1");
        different(form, r#"{"a": "1.0"}"#, r#"{"a": "1"}"#);
        different(form, r#"{"a": 10}"#, r#"{"a": 1}"#);
        different(form, "[100]", "[1]");
        assert_eq!(key(form, r#"{"x": -0.50}"#), r#"{"x":-0.5}"#);
    }

    #[test]
    fn intervals_keep_their_columns_fields_and_digits() {
        let two = KeyForm::Value(ValueForm::of_postgres("interval(2)"));
        same(two, "1.239 seconds", "00:00:01.24");
        same(two, "-1.235 seconds", "-00:00:01.24");
        different(two, "1.23 seconds", "00:00:01.24");
        let seconds = KeyForm::Value(ValueForm::of_postgres("interval second(0)"));
        same(seconds, "1 day 00:00:01.5", "1 day 00:00:02");
        let months = KeyForm::Value(ValueForm::of_postgres("interval year to month"));
        same(months, "1 year 2 mons 3 days 04:00", "1 year 2 mons");
        let years = KeyForm::Value(ValueForm::of_postgres("interval year"));
        same(years, "1 year 11 mons", "1 year");
        let days = KeyForm::Value(ValueForm::of_postgres("interval day"));
        same(days, "3 days 04:05", "3 days");
        let hours = KeyForm::Value(ValueForm::of_postgres("interval day to hour"));
        same(hours, "3 days 04:05:06", "3 days 04:00:00");
        let minutes = KeyForm::Value(ValueForm::of_postgres("interval minute"));
        same(minutes, "00:04:59.9", "00:04:00");
    }

    #[test]
    fn intervals_compare_by_length() {
        let form = KeyForm::Value(ValueForm::of_postgres("interval"));
        same(form, "1 day", "24:00:00");
        same(form, "1 day", "24 hours");
        same(form, "1 mon", "30 days");
        same(form, "1 year 2 mons 3 days 04:05:06", "1-2 3 4:05:06");
        same(form, "P1Y2M3DT4H5M6S", "1 year 2 mons 3 days 04:05:06");
        same(form, "@ 1 hour ago", "-01:00:00");
        same(form, "-1 days +02:00:00", "-22:00:00");
        same(form, "1.5 days", "1 day 12:00:00");
        same(form, "1day 3h", "1 day 03:00:00");
        same(form, "90 seconds", "00:01:30");
        same(form, "5", "00:00:05");
        same(form, "1 week", "7 days");
        same(form, "0.5 year", "6 mons");
        same(form, "00:00:00.5", "500 milliseconds");
        different(form, "1 day", "1 day 00:00:01");
        different(form, "1 mon", "31 days");
        // Not an interval this reads: compared as written.
        assert_eq!(key(form, "forever"), "forever");
    }

    #[test]
    fn addresses_and_mac_addresses_compare_by_bytes() {
        let inet = KeyForm::Value(ValueForm::Inet);
        same(inet, "10.0.0.1", "10.0.0.1/32");
        same(inet, "2001:0db8:0000::0001", "2001:db8::1/128");
        different(inet, "10.0.0.1/8", "10.0.0.1/16");
        // PostgreSQL's short IPv4 forms and the lengths cidr imputes.
        same(inet, "10.1/16", "10.1.0.0/16");
        same(inet, "10.1", "10.1.0.0/16");
        same(inet, "10", "10.0.0.0/8");
        same(inet, "10.1.2", "10.1.2.0/24");
        same(inet, "224", "224.0.0.0/4");
        same(inet, "010.0.0.1", "10.0.0.1/32");
        same(inet, "192.168.1.0", "192.168.1.0/32");
        different(inet, "10.1", "10.1.0.0");
        assert_eq!(key(inet, "10.1.2.3.4"), "10.1.2.3.4");
        assert_eq!(key(inet, "10.256"), "10.256");
        let mac = KeyForm::Value(ValueForm::MacAddr);
        same(mac, "08:00:2B:01:02:03", "0800.2b01.0203");
        same(mac, "08-00-2b-01-02-03", "08002b010203");
        let mac8 = KeyForm::Value(ValueForm::MacAddr8);
        same(mac8, "08:00:2b:01:02:03", "08:00:2b:ff:fe:01:02:03");
        let citext = KeyForm::Value(ValueForm::CaseInsensitive);
        same(citext, "Straße", "STRAßE");
        different(citext, "a", "b");
    }

    #[test]
    fn times_and_padded_text_compare_as_postgresql_does() {
        let time = KeyForm::Value(ValueForm::of_postgres("time without time zone"));
        same(time, "12:34", "12:34:00");
        same(time, "1:02:03.5", "01:02:03.500000");
        same(time, "24:00", "24:00:00");
        different(time, "12:34", "12:34:01");
        different(time, "00:00:00.000001", "00:00:00");
        // Not a time this reads: compared as written.
        assert_eq!(key(time, "allballs"), "allballs");
        assert_eq!(key(time, "12:60"), "12:60");
        different(time, "1:00 PM", "01:00");
        // Past the column's digits, as PostgreSQL rounds them.
        let time2 = KeyForm::Value(ValueForm::of_postgres("time(2) without time zone"));
        same(time2, "12:34:56.7896", "12:34:56.79");
        same(time2, "12:34:56.785", "12:34:56.79");
        same(time2, "12:34:56.7849", "12:34:56.78");
        different(time2, "12:34:56.78", "12:34:56.79");
        same(time, "12:34:56.1234567", "12:34:56.123457");
        same(time, "12:34:56.0000005", "12:34:56");
        let cut = time.at_precision(SecondsPrecision::new(3, FractionRounding::Truncate));
        same(cut, "12:34:56.7896", "12:34:56.789");
        // MySQL's TIME: a signed span of up to 838 hours, cut or rounded
        // away from zero.
        same(cut, "-1:00:00.5559", "-01:00:00.555");
        same(cut, "100:00", "100:00:00.000");
        different(cut, "-1:00", "01:00");
        let mysql = time.at_precision(SecondsPrecision::new(2, FractionRounding::HalfUp));
        same(mysql, "-12:34:56.785", "-12:34:56.79");
        assert_eq!(key(mysql, "839:00:00"), "839:00:00");
        // Days first, as MySQL reads them; one digit of minutes or seconds.
        same(mysql, "1 02:00:00", "26:00");
        same(mysql, "1  2:3", "26:03:00");
        same(mysql, "1 02", "26:00:00");
        same(mysql, "-0 05:06", "-05:06:00");
        same(mysql, "34 22:59:59.5", "838:59:59.50");
        assert_eq!(key(mysql, "35 00:00"), "35 00:00");
        assert_eq!(key(mysql, "1 2"), "1 2");
        assert_eq!(key(mysql, "1 24:00"), "1 24:00");
        same(time, "2:3:4", "02:03:04");
        same(time, "12:34:5.5", "12:34:05.500");
        assert_eq!(key(time, "12:345"), "12:345");
        let timetz = KeyForm::Value(ValueForm::of_postgres("time with time zone"));
        same(timetz, "00:00+00", "00:00:00+00");
        let timetz0 = KeyForm::Value(ValueForm::of_postgres("time(0) with time zone"));
        same(timetz0, "12:00:00.5+02", "12:00:01+02");
        same(timetz, "12:00:00 +02:00", "12:00:00+02");
        same(timetz, "1:00-5", "01:00:00-05");
        same(timetz, "12:00+0530", "12:00:00+05:30");
        same(timetz, "12:00Z", "12:00:00+00");
        different(timetz, "12:00+02", "10:00+00");
        different(timetz, "12:00+02", "12:00-02");
        let ints = KeyForm::Value(ValueForm::IntegerRange);
        same(ints, "[1,4]", "[1,5)");
        same(ints, "(0, 5)", "[1,5)");
        same(ints, "(3,3)", "empty");
        same(ints, "[3,3]", "[3,4)");
        same(ints, "(,5]", "(,6)");
        same(ints, "[1,)", "[1,)");
        different(ints, "[1,5)", "[1,6)");
        different(ints, "(,5)", "[0,5)");
        let dates = KeyForm::Value(ValueForm::DateRange);
        same(dates, "[2024-01-01,2024-01-31]", "[2024-01-01,2024-02-01)");
        same(dates, "(2023-12-31,2024-02-01)", "[2024-01-01,2024-02-01)");
        // Not read: compared as written.
        assert_eq!(key(dates, "[2024-01-01,infinity)"), "[2024-01-01,infinity)");
        let vector = KeyForm::Value(ValueForm::of_postgres("tsvector"));
        same(vector, "b aa a c:3 c:1B ab", "'a' 'aa' 'ab' 'b' 'c':1B,3");
        same(vector, "'it''s' x:2A,1", "'it''s' 'x':1,2A");
        same(vector, "a:1 a:1B", "'a':1B");
        same(vector, "a\\ b", "'a b'");
        same(vector, "b a b", "'a' 'b'");
        different(vector, "a:1", "a:2");
        different(vector, "a:1A", "a:1");
        assert_eq!(key(vector, "'open"), "'open");
        let bit = KeyForm::Value(ValueForm::of_postgres("bit(8)"));
        same(bit, "x1F", "00011111");
        same(bit, "X1f", "00011111");
        different(bit, "x1F", "00011110");
        let varbit = KeyForm::Value(ValueForm::of_postgres("bit varying"));
        same(varbit, "xA", "1010");
        assert_eq!(key(varbit, "xZ"), "xZ");
        let numbers = KeyForm::Value(ValueForm::of_postgres("numrange"));
        same(numbers, "[1.5,2)", "[1.50,2.0)");
        same(numbers, "[1.5, 2)", "[\"1.5\",\"2\")");
        same(numbers, "(1,1)", "empty");
        same(numbers, "[1,1)", "empty");
        different(numbers, "[1,1]", "empty");
        same(numbers, "[,5]", "(,5]");
        different(numbers, "[1,2)", "[1,2]");
        let times = KeyForm::Value(ValueForm::of_postgres("tsrange"));
        same(
            times,
            "[2024-01-02 10:00,2024-01-03)",
            "[\"2024-01-02 10:00:00\",\"2024-01-03 00:00:00\")",
        );
        same(
            times,
            "[2024-01-02T10:00:00.500,)",
            "[\"2024-01-02 10:00:00.5\",)",
        );
        different(times, "[2024-01-02,2024-01-03)", "[2024-01-02,2024-01-04)");
        assert_eq!(key(times, "[2024-01-02,infinity)"), "[2024-01-02,infinity)");
        let point = KeyForm::Value(ValueForm::of_postgres("point"));
        same(point, "(1.5, 2.25)", "(1.5,2.25)");
        same(point, " 1.5 , 2.25 ", "(1.5,2.25)");
        same(point, "(1.50,2e0)", "(1.5,2)");
        different(point, "(1,2)", "(2,1)");
        assert_eq!(key(point, "(1,x)"), "(1,x)");
        let boxes = KeyForm::Value(ValueForm::of_postgres("box"));
        same(boxes, "(1,2),(3,4)", "(3,4),(1,2)");
        same(boxes, "((1,4),(3,2))", "(3,4),(1,2)");
        let path = KeyForm::Value(ValueForm::of_postgres("path"));
        same(path, "((1,2), (3,4))", "((1,2),(3,4))");
        same(path, "(1,2),(3,4)", "((1,2),(3,4))");
        different(path, "[(1,2),(3,4)]", "((1,2),(3,4))");
        let circle = KeyForm::Value(ValueForm::of_postgres("circle"));
        same(circle, "((1,2),3)", "<(1,2),3>");
        same(circle, "1,2,3", "<(1,2),3>");
        let line = KeyForm::Value(ValueForm::of_postgres("line"));
        same(line, "{1, 2, 3}", "{1,2,3}");
        assert_eq!(key(line, "[(1,2),(3,4)]"), "[(1,2),(3,4)]");
        let lseg = KeyForm::Value(ValueForm::of_postgres("lseg"));
        same(lseg, "(1,2),(3,4)", "[(1,2),(3,4)]");
        different(lseg, "[(3,4),(1,2)]", "[(1,2),(3,4)]");
        let set = KeyForm::Value(ValueForm::MemberSet {
            case_insensitive: false,
        });
        same(set, "b,a,a", "a,b");
        same(set, "", "");
        different(set, "a", "a,b");
        different(set, "A", "a");
        let set = KeyForm::Value(ValueForm::MemberSet {
            case_insensitive: true,
        });
        same(set, "B,a,A", "a,b");
        let padded = KeyForm::Value(ValueForm::BlankPadded);
        same(padded, "ab", "ab   ");
        different(padded, " ab", "ab");
        let pg = |sql_type: &str| ValueForm::of_postgres(sql_type);
        assert_eq!(pg("character(5)"), ValueForm::BlankPadded);
        let digits = |d| SecondsPrecision::new(d, FractionRounding::HalfAwayFromZero);
        assert_eq!(pg("time without time zone"), ValueForm::Time(digits(6)));
        assert_eq!(pg("time(3) without time zone"), ValueForm::Time(digits(3)));
        assert_eq!(pg("time with time zone"), ValueForm::TimeTz(digits(6)));
        assert_eq!(pg("time(0) with time zone"), ValueForm::TimeTz(digits(0)));
        assert_eq!(pg("timestamp without time zone"), ValueForm::AsWritten);
    }

    #[test]
    fn array_elements_compare_by_their_type() {
        let ints = KeyForm::Array(ValueForm::Integer);
        same(ints, "{01, +2, NULL}", "{1,2,NULL}");
        different(ints, "{1,2}", "{2,1}");
        different(ints, "{1,NULL}", "{1,0}");
        same(
            KeyForm::Array(ValueForm::Numeric),
            "{{1.50,2},{3,4}}",
            "{{1.5,2.0},{3,4}}",
        );
        same(KeyForm::Array(ValueForm::Boolean), "{true,no}", "{t,f}");
        same(
            KeyForm::Array(ValueForm::Uuid),
            "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
        );
    }

    #[test]
    fn forms_follow_the_column_type() {
        let pg = |sql_type: &str, text_form: Option<TextForm>| {
            KeyForm::of(DbKind::Postgres, sql_type, text_form, &DataType::Utf8)
        };
        assert_eq!(
            pg("interval", None),
            Some(KeyForm::Value(ValueForm::Interval(IntervalKept::of(
                "interval"
            ))))
        );
        assert_eq!(
            pg("citext", None),
            Some(KeyForm::Value(ValueForm::CaseInsensitive))
        );
        assert_eq!(pg("text", None), None);
        assert_eq!(
            pg("numeric", Some(TextForm::Numeric)),
            Some(KeyForm::Value(ValueForm::Numeric))
        );
        assert_eq!(
            pg("integer[]", Some(TextForm::PgArray)),
            Some(KeyForm::Array(ValueForm::Integer))
        );
        assert_eq!(pg("text[]", Some(TextForm::PgArray)), None);
        assert_eq!(pg("uuid", Some(TextForm::Uuid)), None);
        // SQLite and MySQL compare such names as text.
        for kind in [DbKind::Sqlite, DbKind::MySql] {
            assert_eq!(KeyForm::of(kind, "citext", None, &DataType::Utf8), None);
        }
        assert_eq!(
            KeyForm::of(
                DbKind::MySql,
                "json",
                Some(TextForm::Jsonb),
                &DataType::Utf8
            ),
            Some(KeyForm::Value(ValueForm::Jsonb))
        );
    }
}
