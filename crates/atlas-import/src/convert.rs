//! Value coercion: every source column is converted to its target column's type
//! here, and nowhere else. The same code converts the existing keys that the
//! database returns as text, so "equal after coercion" (`'007'` = `7`) holds by
//! construction.
//!
//! Rules: text is kept exactly, whitespace included (whether an empty field
//! is NULL or the empty string is the reader's call: the CSV reader makes an
//! unquoted empty field NULL and a quoted `""` the empty string); numbers,
//! booleans, dates and timestamps are trimmed before parsing, and an empty or
//! whitespace-only value is NULL in those columns.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BinaryArray, BooleanArray, BooleanBuilder,
    PrimitiveArray, StringArray, new_null_array,
};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options, nullif};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::schema::{FractionRounding, SecondsPrecision};
use crate::typed_text::TextForm;

/// The first value of an array that could not be converted.
#[derive(Debug, Clone, PartialEq)]
pub struct CoerceFailure {
    /// Index of the value in the array.
    pub index: usize,
    /// The value as it appeared in the source.
    pub value: String,
}

/// Converts `array` to `target`, or names the first value that does not fit.
pub fn coerce_array(array: &ArrayRef, target: &DataType) -> Result<ArrayRef, CoerceFailure> {
    coerce_array_for(array, target, UNSAID_TIMESTAMPS)
}

/// How timestamp text is read where no database says: digits past the
/// microsecond rounded half up, a written zone converting the time.
const UNSAID_TIMESTAMPS: SecondsPrecision = SecondsPrecision {
    digits: 6,
    rounding: FractionRounding::HalfUp,
    ignores_written_zone: false,
};

/// [`coerce_array`], where timestamp text is read as `timestamps`, the
/// target database's way (its rule for digits past the microsecond, and
/// for a written zone).
fn coerce_array_for(
    array: &ArrayRef,
    target: &DataType,
    timestamps: SecondsPrecision,
) -> Result<ArrayRef, CoerceFailure> {
    match array.data_type() {
        DataType::Null => Ok(new_null_array(target, array.len())),
        DataType::Utf8 => {
            coerce_strings(array.as_any().downcast_ref().unwrap(), target, timestamps)
        }
        DataType::Utf8View | DataType::LargeUtf8 => {
            let utf8 = cast(array, &DataType::Utf8).map_err(|_| first_failure(array, None))?;
            coerce_strings(utf8.as_any().downcast_ref().unwrap(), target, timestamps)
        }
        source if source == target => Ok(Arc::clone(array)),
        source if is_nested(source) && *target == DataType::Utf8 => {
            nested_to_json(array).map(|json| Arc::new(json) as ArrayRef)
        }
        DataType::Float32 | DataType::Float64
            if matches!(target, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
        {
            // As PostgreSQL casts a double to numeric: through its text of 15
            // significant digits (1.005 is 1.01 in a numeric(10,2), not the
            // 1.00 its binary value rounds to).
            let doubles =
                cast(array, &DataType::Float64).map_err(|_| first_failure(array, None))?;
            let text: StringArray = doubles
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map(|v| format!("{v:.14e}")))
                .collect();
            coerce_strings(&text, target, timestamps)
                .map_err(|failure| describe(array, failure.index, None))
        }
        _ => {
            let options = CastOptions {
                safe: true,
                ..Default::default()
            };
            let converted = cast_with_options(array, target, &options)
                .map_err(|_| first_failure(array, None))?;
            check_no_new_nulls(array, &converted, None)?;
            Ok(converted)
        }
    }
}

/// Converts `array` to the type of `column` and checks the column's length
/// limit, or names the first value that does not fit.
pub fn coerce_column(
    array: &ArrayRef,
    column: &crate::schema::TargetColumn,
) -> Result<ArrayRef, CoerceFailure> {
    if let Some((form, text)) = typed_text(array, column) {
        return form
            .convert(&text)
            .map(|converted| as_stored(converted, column))
            .map_err(|index| describe(array, index, Some(&text)));
    }
    let converted = as_held(
        coerce_array_for(array, &column.data_type, timestamps_of(column))?,
        array,
        column,
    );
    let Some(max) = column.max_chars else {
        return Ok(converted);
    };
    let (converted, too_long) = within_length(converted, max);
    match too_long.first() {
        Some(&index) => Err(describe(array, index, array.as_any().downcast_ref())),
        None => Ok(converted),
    }
}

/// [`coerce_column`] that sets every value that does not fit to NULL and
/// returns them.
pub fn coerce_column_lenient(
    array: &ArrayRef,
    column: &crate::schema::TargetColumn,
) -> (ArrayRef, Vec<CoerceFailure>) {
    if let Some((form, text)) = typed_text(array, column) {
        if let Ok(converted) = form.convert(&text) {
            return (as_stored(converted, column), Vec::new());
        }
        let mut failures = Vec::new();
        let mut bad = vec![false; text.len()];
        for (i, bad) in bad.iter_mut().enumerate() {
            if text.is_valid(i) && form.convert(&text.slice(i, 1)).is_err() {
                failures.push(describe(array, i, Some(&text)));
                *bad = true;
            }
        }
        let cleaned = nullif(&text, &BooleanArray::from(bad)).expect("mask has the array's length");
        let cleaned = cleaned
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("text stays text");
        let converted = form
            .convert(cleaned)
            .unwrap_or_else(|_| new_null_array(&column.data_type, text.len()));
        return (as_stored(converted, column), failures);
    }
    let (converted, mut failures) =
        coerce_array_lenient_for(array, &column.data_type, timestamps_of(column));
    let converted = as_held(converted, array, column);
    let Some(max) = column.max_chars else {
        return (converted, failures);
    };
    let (converted, long) = within_length(converted, max);
    if long.is_empty() {
        return (converted, failures);
    }
    let mut mask = vec![false; converted.len()];
    for &i in &long {
        mask[i] = true;
        failures.push(describe(array, i, array.as_any().downcast_ref()));
    }
    failures.sort_by_key(|f| f.index);
    let cleaned =
        nullif(&converted, &BooleanArray::from(mask)).expect("mask has the array's length");
    (cleaned, failures)
}

/// `zone` (a database's name of its time zone) where it is a zone Arrow
/// reads and not UTC; `None` for UTC, or with a warning for a zone Arrow
/// cannot read (PostgreSQL's POSIX forms, `UTC+3`; a MySQL server's
/// system zone abbreviated `CEST`): timestamps written without a zone are
/// then read in UTC.
pub(crate) fn zone_other_than_utc(zone: &str) -> Option<String> {
    let zone = zone.trim().trim_matches('\'');
    const UTC: [&str; 10] = [
        "utc",
        "etc/utc",
        "gmt",
        "etc/gmt",
        "universal",
        "etc/universal",
        "zulu",
        "etc/zulu",
        "uct",
        "+00:00",
    ];
    if UTC.contains(&zone.to_ascii_lowercase().as_str()) {
        return None;
    }
    match zone.parse::<datafusion::arrow::array::timezone::Tz>() {
        Ok(_) => Some(zone.to_string()),
        Err(_) => {
            tracing::warn!(
                "the database's time zone '{zone}' is not one atlas-import reads: \
                 timestamps written without a zone are read in UTC"
            );
            None
        }
    }
}

/// Timestamps read as UTC, where their source named no zone (text without
/// one, or with one the database drops; a timestamp without a time zone),
/// moved to the instant their wall time is in `zone`, the database's: as
/// PostgreSQL places it, the later of two instants in a transition's
/// overlap, the offset before it in its gap (`02:30` on a spring-forward
/// night in Berlin is 01:30 UTC).
fn placed_in_zone(
    converted: ArrayRef,
    source: &ArrayRef,
    zone: &str,
    timestamps: SecondsPrecision,
) -> ArrayRef {
    let (Ok(tz), Some(instants)) = (
        zone.parse::<datafusion::arrow::array::timezone::Tz>(),
        converted.as_primitive_opt::<TimestampMicrosecondType>(),
    ) else {
        return converted;
    };
    if matches!(source.data_type(), DataType::Timestamp(_, Some(_))) {
        return converted;
    }
    let text = match source.data_type() {
        DataType::Utf8 => Some(Arc::clone(source)),
        DataType::LargeUtf8 | DataType::Utf8View => cast(source, &DataType::Utf8).ok(),
        _ => None,
    };
    let text = text.as_ref().and_then(|t| t.as_string_opt::<i32>());
    // A zone the database drops (MariaDB's) leaves the wall time.
    let names_zone = |i: usize| {
        !timestamps.ignores_written_zone
            && text.is_some_and(|t| {
                let value = t.value(i).trim();
                without_zone(value).len() != value.len()
            })
    };
    let moved: PrimitiveArray<TimestampMicrosecondType> = instants
        .iter()
        .enumerate()
        .map(|(i, instant)| {
            let instant = instant?;
            Some(match names_zone(i) {
                true => instant,
                false => wall_time_in(instant, &tz).unwrap_or(instant),
            })
        })
        .collect();
    Arc::new(moved.with_data_type(converted.data_type().clone()))
}

/// The instant (µs since 1970) at which clocks in `tz` show the wall time
/// `wall` (µs since 1970 read as UTC).
fn wall_time_in(wall: i64, tz: &datafusion::arrow::array::timezone::Tz) -> Option<i64> {
    use chrono::{LocalResult, Offset, TimeZone};
    let naive = chrono::DateTime::from_timestamp_micros(wall)?.naive_utc();
    let offset = match tz.offset_from_local_datetime(&naive) {
        LocalResult::Single(offset) => offset.fix(),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.fix(), b.fix());
            // The later instant: the smaller offset east.
            if a.local_minus_utc() <= b.local_minus_utc() {
                a
            } else {
                b
            }
        }
        LocalResult::None => tz
            .offset_from_local_datetime(&(naive - chrono::TimeDelta::hours(1)))
            .earliest()?
            .fix(),
    };
    Some(wall - i64::from(offset.local_minus_utc()) * 1_000_000)
}

/// Values converted from `source` as `column` holds them: placed in its
/// database's zone ([`placed_in_zone`]), then [`as_stored`].
fn as_held(
    converted: ArrayRef,
    source: &ArrayRef,
    column: &crate::schema::TargetColumn,
) -> ArrayRef {
    let converted = match &column.unzoned_in {
        Some(zone) => placed_in_zone(converted, source, zone, timestamps_of(column)),
        None => converted,
    };
    as_stored(converted, column)
}

/// How the database of `column` reads timestamp text.
fn timestamps_of(column: &crate::schema::TargetColumn) -> SecondsPrecision {
    column.seconds_precision.unwrap_or(UNSAID_TIMESTAMPS)
}

/// Converted values as `column` will hold them, where the database would
/// change them on the way in: timestamps where it keeps fewer digits of a
/// second than microseconds (it rounds or cuts the rest), bytes shorter
/// than a `BINARY(n)` (it pads them with zero bytes), a MySQL ENUM or SET
/// value given by number (it stores the labels).
fn as_stored(converted: ArrayRef, column: &crate::schema::TargetColumn) -> ArrayRef {
    if let Some(width) = column.zero_padded_width {
        return zero_padded(converted, width);
    }
    if column.numbers_name_labels
        && let Some(labels) = MemberLabels::of(&column.sql_type)
    {
        return labels.by_number(converted);
    }
    if let Some(precision) = column.seconds_precision
        && precision.rounding == FractionRounding::Truncate
        && let Some(cut) = converted
            .as_string_opt::<i32>()
            .and_then(times_within_microseconds)
    {
        return Arc::new(cut);
    }
    let Some(precision) = column.seconds_precision.filter(|p| !p.keeps_microseconds()) else {
        return converted;
    };
    let Some(micros) = converted.as_primitive_opt::<TimestampMicrosecondType>() else {
        return converted;
    };
    // `unary` drops the time zone: the column's type is kept.
    Arc::new(
        micros
            .unary::<_, TimestampMicrosecondType>(|v| precision.apply(v))
            .with_data_type(micros.data_type().clone()),
    )
}

/// The labels of a MySQL `ENUM(...)` or `SET(...)` column, which reads a
/// number that is none of them as the label it counts to: the ENUM's `n`th
/// label, the SET's members whose bits the number sets.
#[derive(Debug, PartialEq)]
struct MemberLabels {
    set: bool,
    labels: Vec<String>,
}

impl MemberLabels {
    /// The labels of the column type `sql_type` (`enum('a','it''s')`), or
    /// `None` for any other type.
    fn of(sql_type: &str) -> Option<Self> {
        let lower = sql_type.get(..5)?.to_ascii_lowercase();
        let (set, list) = match lower.as_str() {
            "enum(" => (false, &sql_type[5..]),
            _ if lower.starts_with("set(") => (true, &sql_type[4..]),
            _ => return None,
        };
        let mut labels = Vec::new();
        let mut chars = list.chars().peekable();
        loop {
            if chars.next()? != '\'' {
                return None;
            }
            let mut label = String::new();
            loop {
                match chars.next()? {
                    '\'' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        label.push('\'');
                    }
                    '\'' => break,
                    c => label.push(c),
                }
            }
            labels.push(label);
            match chars.next()? {
                ',' => continue,
                ')' => break,
                _ => return None,
            }
        }
        Some(Self { set, labels })
    }

    /// `converted` (text) with each number that is no label replaced by the
    /// labels it names; a number naming none (0, past the last) is left
    /// for the server to refuse.
    fn by_number(&self, converted: ArrayRef) -> ArrayRef {
        let Some(text) = converted.as_string_opt::<i32>() else {
            return converted;
        };
        let named = |value: &str| -> Option<String> {
            let value = value.trim();
            if value.is_empty()
                || !value.bytes().all(|b| b.is_ascii_digit())
                || self.labels.iter().any(|l| l.eq_ignore_ascii_case(value))
            {
                return None;
            }
            let number: u64 = value.parse().ok()?;
            if self.set {
                let members: Vec<&str> = (0..self.labels.len().min(64))
                    .filter(|bit| number & (1 << bit) != 0)
                    .map(|bit| self.labels[bit].as_str())
                    .collect();
                let all_named = self.labels.len() >= 64 || number >> self.labels.len() == 0;
                all_named.then(|| members.join(","))
            } else {
                let index = usize::try_from(number).ok()?.checked_sub(1)?;
                self.labels.get(index).cloned()
            }
        };
        if !text.iter().flatten().any(|value| named(value).is_some()) {
            return converted;
        }
        let stored: StringArray = text
            .iter()
            .map(|value| value.map(|v| named(v).unwrap_or_else(|| v.to_string())))
            .collect();
        Arc::new(stored)
    }
}

/// Times of day (MariaDB's `TIME` text) with the digits of a second past
/// the microsecond cut, as the server cuts them (with a note, which would
/// refuse the load); `None` where no time has such digits.
fn times_within_microseconds(times: &StringArray) -> Option<StringArray> {
    let past_micros = |time: &str| -> Option<usize> {
        let fraction = time.rfind('.')?;
        let digits = time[fraction + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        (time[..fraction].contains(':') && digits > 6).then_some(fraction + 7)
    };
    if !times
        .iter()
        .flatten()
        .any(|time| past_micros(time).is_some())
    {
        return None;
    }
    let cut = times
        .iter()
        .map(|time| {
            time.map(|time| match past_micros(time) {
                Some(cut) => {
                    let digits_end =
                        cut + time[cut..].bytes().take_while(u8::is_ascii_digit).count();
                    format!("{}{}", &time[..cut], &time[digits_end..])
                }
                None => time.to_string(),
            })
        })
        .collect();
    Some(cut)
}

/// Binary values shorter than `width` bytes padded with zero bytes to it
/// (longer ones are left to the database, which refuses them).
fn zero_padded(converted: ArrayRef, width: usize) -> ArrayRef {
    let Some(bytes) = converted.as_binary_opt::<i32>() else {
        return converted;
    };
    if bytes.iter().flatten().all(|value| value.len() >= width) {
        return converted;
    }
    let padded: BinaryArray = bytes
        .iter()
        .map(|value| {
            value.map(|value| {
                let mut stored = value.to_vec();
                if stored.len() < width {
                    stored.resize(width, 0);
                }
                stored
            })
        })
        .collect();
    Arc::new(padded)
}

/// The text form of `column`'s type and `array` as text, when `array` is
/// text going into a column whose type reads text its own way.
fn typed_text(
    array: &ArrayRef,
    column: &crate::schema::TargetColumn,
) -> Option<(TextForm, StringArray)> {
    let form = column
        .text_form
        .filter(|f| f.data_type() == column.data_type)?;
    if is_nested(array.data_type()) {
        let text = match form {
            TextForm::PgArray => lists_to_pg_arrays(array),
            _ => nested_to_json(array),
        };
        return Some((form, text.ok()?));
    }
    // Numbers of any source type are read by the form as text: SQLite
    // stores them by value, a wide DECIMAL holds its own scale (a Parquet
    // decimal's text `1.5000000000` is `1.500…0` of 30 digits there).
    let any_source = matches!(
        form,
        TextForm::SqliteNumeric { .. } | TextForm::WideDecimal { .. } | TextForm::Numeric
    );
    if !any_source
        && !matches!(
            array.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
        )
    {
        return None;
    }
    let text = cast(array, &DataType::Utf8).ok()?;
    Some((form, text.as_any().downcast_ref::<StringArray>()?.clone()))
}

/// Whether values of `data_type` are nested (structs, lists, maps), which
/// a table holds as JSON.
pub fn is_nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(..)
            | DataType::Map(..)
    )
}

/// Nested values as JSON text (NULL members written, maps as objects).
fn nested_to_json(array: &ArrayRef) -> Result<StringArray, CoerceFailure> {
    let field = Arc::new(datafusion::arrow::datatypes::Field::new(
        "value",
        array.data_type().clone(),
        true,
    ));
    let options = arrow_json::writer::EncoderOptions::default().with_explicit_nulls(true);
    let mut encoder = arrow_json::writer::make_encoder(&field, array.as_ref(), &options)
        .map_err(|_| first_failure(array, None))?;
    let mut buf = Vec::new();
    text_per_value(array, |i, text| {
        buf.clear();
        encoder.encode(i, &mut buf);
        text.push_str(std::str::from_utf8(&buf).ok()?);
        Some(())
    })
}

/// Each non-NULL value of `array` as the text `write(i, text)` makes of it;
/// a value it refuses names its row.
fn text_per_value(
    array: &ArrayRef,
    mut write: impl FnMut(usize, &mut String) -> Option<()>,
) -> Result<StringArray, CoerceFailure> {
    let mut out = datafusion::arrow::array::StringBuilder::new();
    let mut text = String::new();
    for i in 0..array.len() {
        if array.is_null(i) {
            out.append_null();
            continue;
        }
        text.clear();
        write(i, &mut text).ok_or_else(|| describe(array, i, None))?;
        out.append_value(&text);
    }
    Ok(out.finish())
}

/// Lists as PostgreSQL array literals (lists of lists as arrays of more
/// dimensions), each element as its text; a value that is no list, or
/// holds a NULL list inside another, names its row.
fn lists_to_pg_arrays(array: &ArrayRef) -> Result<StringArray, CoerceFailure> {
    text_per_value(array, |i, literal| {
        push_pg_array(array.as_ref(), i, literal)
    })
}

/// List `i` of `array` as an array literal, into `out`.
fn push_pg_array(array: &dyn Array, i: usize, out: &mut String) -> Option<()> {
    use datafusion::arrow::array::AsArray;
    let elements: ArrayRef = match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().value(i),
        DataType::LargeList(_) => array.as_list::<i64>().value(i),
        DataType::FixedSizeList(..) => array.as_fixed_size_list().value(i),
        _ => return None,
    };
    let inner_lists = matches!(
        elements.data_type(),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
    );
    let text = if inner_lists {
        None
    } else {
        Some(cast(&elements, &DataType::Utf8).ok()?)
    };
    out.push('{');
    for j in 0..elements.len() {
        if j > 0 {
            out.push(',');
        }
        match &text {
            // A sub-array cannot be NULL.
            None if elements.is_null(j) => return None,
            None => push_pg_array(elements.as_ref(), j, out)?,
            Some(text) => {
                let text = text.as_string::<i32>();
                crate::typed_text::push_array_element(out, text.is_valid(j).then(|| text.value(j)));
            }
        }
    }
    out.push('}');
    Some(())
}

/// Text values of `array` cut to `max` characters where only spaces are
/// past it (PostgreSQL and MySQL store such a value so: `ab  ` in a
/// `VARCHAR(3)` is `ab `), and the indices of the values longer than `max`
/// otherwise, which the databases refuse.
fn within_length(array: ArrayRef, max: usize) -> (ArrayRef, Vec<usize>) {
    let Some(text) = array.as_string_opt::<i32>() else {
        return (array, Vec::new());
    };
    // Where the `max`-th character ends, for a value longer than that.
    let cut_at = |value: &str| {
        (value.len() > max)
            .then(|| value.char_indices().nth(max).map(|(at, _)| at))
            .flatten()
    };
    let only_spaces_past =
        |value: &str, at: usize| value.as_bytes()[at..].iter().all(|&b| b == b' ');
    let mut too_long = Vec::new();
    let mut padded = false;
    for (i, value) in text.iter().enumerate() {
        if let Some(value) = value
            && let Some(at) = cut_at(value)
        {
            match only_spaces_past(value, at) {
                true => padded = true,
                false => too_long.push(i),
            }
        }
    }
    if !padded {
        return (array, too_long);
    }
    let cut: StringArray = text
        .iter()
        .map(|value| {
            value.map(|value| match cut_at(value) {
                Some(at) if only_spaces_past(value, at) => &value[..at],
                _ => value,
            })
        })
        .collect();
    (Arc::new(cut), too_long)
}

/// Converts `array` to `target`, setting every value that does not fit to
/// NULL; returns the converted array and the values that did not fit.
pub fn coerce_array_lenient(array: &ArrayRef, target: &DataType) -> (ArrayRef, Vec<CoerceFailure>) {
    coerce_array_lenient_for(array, target, UNSAID_TIMESTAMPS)
}

/// [`coerce_array_lenient`], reading timestamp text as [`coerce_array_for`].
fn coerce_array_lenient_for(
    array: &ArrayRef,
    target: &DataType,
    timestamps: SecondsPrecision,
) -> (ArrayRef, Vec<CoerceFailure>) {
    let coerce = |array: &ArrayRef| coerce_array_for(array, target, timestamps);
    if let Ok(converted) = coerce(array) {
        return (converted, Vec::new());
    }
    // Rare: find every value that does not fit, one at a time.
    let mut failures = Vec::new();
    let mut bad = vec![false; array.len()];
    for (i, bad) in bad.iter_mut().enumerate() {
        if array.is_valid(i)
            && let Err(failure) = coerce(&array.slice(i, 1))
        {
            failures.push(CoerceFailure {
                index: i,
                value: failure.value,
            });
            *bad = true;
        }
    }
    let cleaned = nullif(array, &BooleanArray::from(bad)).expect("mask has the array's length");
    let converted = coerce(&cleaned).unwrap_or_else(|_| new_null_array(target, array.len()));
    (converted, failures)
}

/// Parses a boolean the way the original service accepted them, and
/// PostgreSQL's `on`/`off`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "f" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Parses an integer, accepting leading zeros, a sign, and a zero fraction (`7.0`).
pub fn parse_integer(s: &str) -> Option<i128> {
    let s = s.trim();
    if let Ok(v) = s.parse::<i128>() {
        return Some(v);
    }
    let (whole, fraction) = s.split_once('.')?;
    if !fraction.is_empty() && fraction.bytes().all(|b| b == b'0') {
        whole.parse::<i128>().ok()
    } else {
        None
    }
}

/// Parses a float (`1.5`, `1e3`, `NaN`, `inf`).
pub fn parse_float(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

/// Timestamp text without the zone written after its time (`Z`, `+02`,
/// `-05:30`, ` UTC`, ` +0100`); anything else as it is.
fn without_zone(value: &str) -> &str {
    let text = value.trim_end();
    // The zone follows the time: after the first colon.
    let Some(time) = text.find(':') else {
        return value;
    };
    let zone = text[time..]
        .find(|c: char| matches!(c, '+' | '-' | ' ') || c.is_ascii_alphabetic())
        .map(|at| time + at);
    match zone {
        Some(at) if is_zone(text[at..].trim_start()) => text[..at].trim_end(),
        _ => value,
    }
}

/// Whether `zone` is a zone written after a time: `Z`, `UTC`, `GMT`, or an
/// offset of hours, with minutes, with or without a colon.
fn is_zone(zone: &str) -> bool {
    if zone.eq_ignore_ascii_case("z")
        || zone.eq_ignore_ascii_case("utc")
        || zone.eq_ignore_ascii_case("gmt")
    {
        return true;
    }
    let Some(offset) = zone.strip_prefix(['+', '-']) else {
        return false;
    };
    let digits: String = offset.chars().filter(|&c| c != ':').collect();
    matches!(digits.len(), 2 | 4)
        && digits.bytes().all(|b| b.is_ascii_digit())
        && offset.find(':').is_none_or(|at| at == 2)
}

/// A date (or a timestamp's date) written `2024/01/02`, which PostgreSQL
/// and MySQL read, as `2024-01-02`, which Arrow's parser reads; any other
/// text as it is (`01/02/2024` is a day or a month first: not read).
fn with_dashes(s: &str) -> std::borrow::Cow<'_, str> {
    let bytes = s.as_bytes();
    let year_first = bytes.len() >= "2024/1/2".len()
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'/';
    if !year_first {
        return s.into();
    }
    let date_end = s.find([' ', 'T', 't']).unwrap_or(s.len());
    if s[..date_end].matches('/').count() != 2 {
        return s.into();
    }
    format!("{}{}", s[..date_end].replace('/', "-"), &s[date_end..]).into()
}

/// A timestamp written to the minute (`2024-01-01 10:00`, `...T10:00+02`,
/// which PostgreSQL and MySQL read) with its seconds, which Arrow's parser
/// needs; any other text as it is.
fn with_seconds(s: &str) -> std::borrow::Cow<'_, str> {
    let bytes = s.as_bytes();
    let minute_end = "2024-01-01 10:00".len();
    let shaped = bytes.len() >= minute_end
        && matches!(bytes[10], b' ' | b'T' | b't')
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[13] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15]
            .iter()
            .all(|&i| bytes[i].is_ascii_digit())
        && bytes.get(minute_end) != Some(&b':')
        && bytes.get(minute_end).is_none_or(|b| !b.is_ascii_digit());
    if !shaped {
        return s.into();
    }
    format!("{}:00{}", &s[..minute_end], &s[minute_end..]).into()
}

/// Timestamp text as Arrow's parser reads it, and whether it gave up half a
/// microsecond or more: seconds added to a time written to the minute
/// ([`with_seconds`]), and digits of a second past the sixth dropped
/// (`.1234567`, as SQL Server's `datetime2` writes them), which the caller
/// rounds by the database's rule ([`FractionRounding::rounds_up`]).
fn timestamp_text(s: &str, sub_micros: FractionRounding) -> (std::borrow::Cow<'_, str>, bool) {
    let text = with_seconds(s);
    let bytes = text.as_bytes();
    let seconds_end = "2024-01-01 10:00:00".len();
    let shaped = bytes.len() > seconds_end + 7
        && matches!(bytes[10], b' ' | b'T' | b't')
        && bytes[13] == b':'
        && bytes[16] == b':'
        && bytes[seconds_end] == b'.';
    if !shaped {
        return (text, false);
    }
    let digits = bytes[seconds_end + 1..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits <= 6 {
        return (text, false);
    }
    let kept_end = seconds_end + 1 + 6;
    let rest = seconds_end + 1 + digits;
    let round_up = sub_micros.rounds_up(&text[seconds_end + 1..rest]);
    (
        format!("{}{}", &text[..kept_end], &text[rest..]).into(),
        round_up,
    )
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn coerce_strings(
    values: &StringArray,
    target: &DataType,
    timestamps: SecondsPrecision,
) -> Result<ArrayRef, CoerceFailure> {
    match target {
        DataType::Utf8 => Ok(Arc::new(values.clone())),
        DataType::LargeUtf8 | DataType::Utf8View => {
            Ok(cast(values, target).expect("utf8 casts to other string types"))
        }
        DataType::Int8 => parse_ints::<Int8Type>(values),
        DataType::Int16 => parse_ints::<Int16Type>(values),
        DataType::Int32 => parse_ints::<Int32Type>(values),
        DataType::Int64 => parse_ints::<Int64Type>(values),
        DataType::UInt8 => parse_ints::<UInt8Type>(values),
        DataType::UInt16 => parse_ints::<UInt16Type>(values),
        DataType::UInt32 => parse_ints::<UInt32Type>(values),
        DataType::UInt64 => parse_ints::<UInt64Type>(values),
        DataType::Float64 => parse_floats::<Float64Type>(values, Some),
        DataType::Float32 => parse_floats::<Float32Type>(values, |v| {
            let narrowed = v as f32;
            (narrowed.is_finite() || !v.is_finite()).then_some(narrowed)
        }),
        DataType::Boolean => {
            let mut out = BooleanBuilder::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                match v {
                    None => out.append_null(),
                    Some(s) if is_blank(s) => out.append_null(),
                    Some(s) => match parse_bool(s) {
                        Some(b) => out.append_value(b),
                        None => return Err(failure_at(values, i)),
                    },
                }
            }
            Ok(Arc::new(out.finish()))
        }
        _ => {
            // Dates, timestamps, decimals and the rest: trim, blank to NULL, then
            // Arrow's own parsers; a value that becomes NULL did not parse.
            let micros = matches!(target, DataType::Timestamp(TimeUnit::Microsecond, _));
            let decimal = matches!(target, DataType::Decimal128(..) | DataType::Decimal256(..));
            let date = matches!(target, DataType::Date32);
            let mut round_up = vec![false; if micros { values.len() } else { 0 }];
            let trimmed: StringArray = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let s = v.map(str::trim).filter(|s| !s.is_empty())?;
                    if decimal {
                        // Arrow's decimal parser reads no exponent.
                        return Some(crate::typed_text::without_exponent(s));
                    }
                    if date {
                        return Some(with_dashes(s));
                    }
                    if !micros {
                        return Some(std::borrow::Cow::Borrowed(s));
                    }
                    let s = match timestamps.ignores_written_zone {
                        true => without_zone(s),
                        false => s,
                    };
                    let sub_micros = timestamps.rounding;
                    let (text, up) = match with_dashes(s) {
                        std::borrow::Cow::Borrowed(s) => timestamp_text(s, sub_micros),
                        std::borrow::Cow::Owned(dashed) => {
                            let (text, up) = timestamp_text(&dashed, sub_micros);
                            (text.into_owned().into(), up)
                        }
                    };
                    round_up[i] = up;
                    Some(text)
                })
                .collect();
            let trimmed: ArrayRef = Arc::new(trimmed);
            let options = CastOptions {
                safe: true,
                ..Default::default()
            };
            let converted = cast_with_options(&trimmed, target, &options)
                .map_err(|_| first_failure(&trimmed, Some(values)))?;
            check_no_new_nulls(&trimmed, &converted, Some(values))?;
            if !round_up.contains(&true) {
                return Ok(converted);
            }
            let rounded: PrimitiveArray<TimestampMicrosecondType> = converted
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .zip(&round_up)
                .map(|(v, &up)| v.map(|v| if up { v.saturating_add(1) } else { v }))
                .collect();
            Ok(Arc::new(rounded.with_data_type(target.clone())))
        }
    }
}

fn parse_ints<T>(values: &StringArray) -> Result<ArrayRef, CoerceFailure>
where
    T: ArrowPrimitiveType,
    T::Native: TryFrom<i128>,
{
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        out.push(match v {
            None => None,
            Some(s) if is_blank(s) => None,
            Some(s) => match parse_integer(s).and_then(|n| T::Native::try_from(n).ok()) {
                Some(n) => Some(n),
                None => return Err(failure_at(values, i)),
            },
        });
    }
    Ok(Arc::new(PrimitiveArray::<T>::from_iter(out)))
}

fn parse_floats<T>(
    values: &StringArray,
    narrow: impl Fn(f64) -> Option<T::Native>,
) -> Result<ArrayRef, CoerceFailure>
where
    T: ArrowPrimitiveType,
{
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        out.push(match v {
            None => None,
            Some(s) if is_blank(s) => None,
            Some(s) => match parse_float(s).and_then(&narrow) {
                Some(n) => Some(n),
                None => return Err(failure_at(values, i)),
            },
        });
    }
    Ok(Arc::new(PrimitiveArray::<T>::from_iter(out)))
}

fn failure_at(values: &StringArray, index: usize) -> CoerceFailure {
    CoerceFailure {
        index,
        value: values.value(index).to_string(),
    }
}

/// Finds the first row that was valid in `input` and is NULL in `converted`.
/// `original` is the untrimmed text, used for the message when given.
fn check_no_new_nulls(
    input: &ArrayRef,
    converted: &ArrayRef,
    original: Option<&StringArray>,
) -> Result<(), CoerceFailure> {
    if converted.null_count() == input.null_count() {
        return Ok(());
    }
    match (0..input.len()).find(|&i| input.is_valid(i) && converted.is_null(i)) {
        Some(index) => Err(describe(input, index, original)),
        None => Ok(()),
    }
}

fn first_failure(input: &ArrayRef, original: Option<&StringArray>) -> CoerceFailure {
    let index = (0..input.len()).find(|&i| input.is_valid(i)).unwrap_or(0);
    describe(input, index, original)
}

fn describe(input: &ArrayRef, index: usize, original: Option<&StringArray>) -> CoerceFailure {
    let value = match original {
        Some(text) if text.is_valid(index) => text.value(index).to_string(),
        _ => ArrayFormatter::try_new(input.as_ref(), &FormatOptions::default())
            .map(|f| f.value(index).to_string())
            .unwrap_or_default(),
    };
    CoerceFailure { index, value }
}

/// Infers a column type from text values, for creating a missing table, so
/// that **no value changes its meaning**: a column gets a non-text type only
/// if every value converts to it and back to the same text, up to how a
/// number is written (`5595.20` as 5595.2 is fine; `+1555...` as 1555... and
/// `0012` as 12 are not).
///
/// - integers that fit 64 bits: `Int64`;
/// - numbers a double holds exactly (its shortest text has the same digits):
///   `Float64`;
/// - other plain decimals (integers past 64 bits, more digits than a double
///   holds) up to 38 digits: `Decimal128(p, s)` (each database decides how to
///   store it exactly);
/// - `true`/`false`/`t`/`f`: `Boolean` (yes/no/y/n stay text: they are
///   answers, not booleans, until a table declares a boolean);
/// - `YYYY-MM-DD`: `Date32`; `YYYY-MM-DD[ T]HH:MM:SS[.ffffff]`: `Timestamp`;
/// - anything else: text.
///
/// Blank values do not vote; surrounding whitespace is how a number is
/// written, not part of it.
#[derive(Debug, Clone)]
pub struct TypeInference {
    seen_value: bool,
    int: bool,
    float: bool,
    decimal: bool,
    bool_: bool,
    date: bool,
    timestamp: bool,
    /// Most digits before the point of a decimal.
    int_digits: usize,
    /// Most digits after the point of a decimal.
    scale: usize,
}

impl Default for TypeInference {
    fn default() -> Self {
        Self {
            seen_value: false,
            int: true,
            float: true,
            decimal: true,
            bool_: true,
            date: true,
            timestamp: true,
            int_digits: 0,
            scale: 0,
        }
    }
}

/// The most digits an inferred decimal may have (Arrow's `Decimal128`).
const MAX_DECIMAL_DIGITS: usize = 38;

/// A number as written, reduced to what it means: sign, significant digits
/// and the power of ten of the last one. `None` for text that is not a
/// number, or that a number would not write back (a `+` sign, leading zeros).
fn number_meaning(s: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !all_digits(fraction) || whole.len() + fraction.len() == 0 {
        return None;
    }
    if whole.len() > 1 && whole.starts_with('0') {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits[leading..].trim_end_matches('0');
    if significant.is_empty() {
        return Some((false, "0".into(), 0));
    }
    let trailing = digits.len() - leading - significant.len();
    let power = exponent - fraction.len() as i64 + trailing as i64;
    Some((negative, significant.to_string(), power))
}

/// Whether `s` parses as a finite double whose shortest text means the same
/// number (no digit lost or invented).
fn double_keeps(s: &str) -> bool {
    let Some(meaning) = number_meaning(s) else {
        return false;
    };
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => number_meaning(&format!("{v:e}")) == Some(meaning),
        _ => false,
    }
}

/// Digits before and after the point of a plain decimal (`-12.50`), or `None`.
fn decimal_shape(s: &str) -> Option<(usize, usize)> {
    number_meaning(s)?;
    if s.contains(['e', 'E']) {
        return None;
    }
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let whole = whole.trim_start_matches('0');
    Some((whole.len(), fraction.len()))
}

/// Whether `s` is a timestamp whose fraction fits microseconds.
fn timestamp_keeps(s: &str) -> bool {
    if s.len() < 19 {
        return false;
    }
    let parsed = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"));
    if parsed.is_err() {
        return false;
    }
    match s[19..].strip_prefix('.') {
        Some(fraction) => fraction.len() <= 6 || fraction[6..].bytes().all(|b| b == b'0'),
        None => s.len() == 19,
    }
}

impl TypeInference {
    /// Narrows the candidates with one array of text values.
    pub fn observe(&mut self, values: &StringArray) {
        for s in values.iter().flatten() {
            let s = s.trim();
            if s.is_empty() {
                continue;
            }
            self.seen_value = true;
            if self.int {
                self.int = s.parse::<i64>().is_ok_and(|v| v.to_string() == s);
            }
            if self.float {
                self.float = double_keeps(s);
            }
            if self.decimal {
                match decimal_shape(s) {
                    Some((whole, fraction)) => {
                        self.int_digits = self.int_digits.max(whole);
                        self.scale = self.scale.max(fraction);
                        self.decimal = self.int_digits + self.scale <= MAX_DECIMAL_DIGITS;
                    }
                    None => self.decimal = false,
                }
            }
            if self.bool_ {
                self.bool_ = matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "false" | "t" | "f"
                );
            }
            if self.date {
                self.date =
                    s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
            }
            if self.timestamp {
                self.timestamp = timestamp_keeps(s);
            }
            if !(self.int
                || self.float
                || self.decimal
                || self.bool_
                || self.date
                || self.timestamp)
            {
                return;
            }
        }
    }

    /// The inferred type.
    pub fn data_type(&self) -> DataType {
        if !self.seen_value {
            DataType::Utf8
        } else if self.int {
            DataType::Int64
        } else if self.float {
            DataType::Float64
        } else if self.decimal {
            DataType::Decimal128(
                (self.int_digits + self.scale).max(1) as u8,
                self.scale as i8,
            )
        } else if self.bool_ {
            DataType::Boolean
        } else if self.date {
            DataType::Date32
        } else if self.timestamp {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        } else {
            DataType::Utf8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TargetColumn;
    use datafusion::arrow::array::{AsArray, Int64Array};

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn integers_accept_leading_zeros_and_blank_is_null() {
        let out = coerce_array(
            &strings(&[Some("007"), Some(" 7 "), Some(""), Some("  "), None]),
            &DataType::Int64,
        )
        .unwrap();
        let out = out.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(out.value(0), 7);
        assert_eq!(out.value(1), 7);
        assert_eq!(out.null_count(), 3);
    }

    #[test]
    fn bad_integer_names_index_and_value() {
        let err = coerce_array(&strings(&[Some("1"), Some("x1")]), &DataType::Int32).unwrap_err();
        assert_eq!(
            err,
            CoerceFailure {
                index: 1,
                value: "x1".into()
            }
        );
        let err = coerce_array(&strings(&[Some("300")]), &DataType::Int8).unwrap_err();
        assert_eq!(err.index, 0);
    }

    #[test]
    fn text_is_kept_exactly() {
        let out = coerce_array(
            &strings(&[Some(" a "), Some("   "), Some(""), None]),
            &DataType::Utf8,
        )
        .unwrap();
        let out = out.as_string::<i32>();
        assert_eq!(out.value(0), " a ");
        assert_eq!(out.value(1), "   ");
        assert_eq!(out.value(2), "");
        assert!(out.is_null(3));
    }

    #[test]
    fn decimals_read_an_exponent_and_round_as_the_databases_do() {
        let out = coerce_array(
            &strings(&[
                Some("1e2"),
                Some(" 1.005E0 "),
                Some("-2.675e+0"),
                Some("25e-3"),
            ]),
            &DataType::Decimal128(10, 2),
        )
        .unwrap();
        let out = out.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        assert_eq!(out.values().to_vec(), vec![10000, 101, -268, 3]);
        assert!(coerce_array(&strings(&[Some("1e")]), &DataType::Decimal128(10, 2)).is_err());
        assert!(coerce_array(&strings(&[Some("NaNe")]), &DataType::Decimal128(10, 2)).is_err());
        assert!(coerce_array(&strings(&[Some("1e9")]), &DataType::Decimal128(10, 2)).is_err());
    }

    #[test]
    fn text_past_its_length_only_by_spaces_is_cut_as_stored() {
        let mut column = TargetColumn::text("v", "varchar(3)");
        column.max_chars = Some(3);
        let values = strings(&[Some("ab  "), Some("é    "), None, Some("abc"), Some("")]);
        let stored = coerce_column(&values, &column).unwrap();
        let stored = stored.as_string::<i32>();
        let stored: Vec<Option<&str>> = stored.iter().collect();
        assert_eq!(
            stored,
            [Some("ab "), Some("é  "), None, Some("abc"), Some("")]
        );
        let failure = coerce_column(&strings(&[Some("ab "), Some("ab c")]), &column).unwrap_err();
        assert_eq!((failure.index, failure.value.as_str()), (1, "ab c"));
        let (lenient, failures) =
            coerce_column_lenient(&strings(&[Some("abcd"), Some("ab   ")]), &column);
        assert_eq!(failures.len(), 1);
        assert!(lenient.is_null(0));
        assert_eq!(lenient.as_string::<i32>().value(1), "ab ");
    }

    #[test]
    fn doubles_become_decimals_through_their_fifteen_digits() {
        let doubles: ArrayRef = Arc::new(datafusion::arrow::array::Float64Array::from(vec![
            Some(1.005),
            Some(-2.675),
            Some(0.1 + 0.2),
            None,
        ]));
        let out = coerce_array(&doubles, &DataType::Decimal128(10, 2)).unwrap();
        let out = out.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            [Some(101), Some(-268), Some(30), None]
        );
        let nan: ArrayRef = Arc::new(datafusion::arrow::array::Float64Array::from(vec![
            1.0,
            f64::NAN,
        ]));
        let failure = coerce_array(&nan, &DataType::Decimal128(10, 2)).unwrap_err();
        assert_eq!((failure.index, failure.value.as_str()), (1, "NaN"));
        let wide: ArrayRef = Arc::new(datafusion::arrow::array::Float64Array::from(vec![1e12]));
        assert!(coerce_array(&wide, &DataType::Decimal128(10, 2)).is_err());
    }

    #[test]
    fn a_written_zone_is_dropped_where_the_database_drops_it() {
        for (value, wall_clock) in [
            ("2024-01-02 10:00:00+02", "2024-01-02 10:00:00"),
            ("2024-01-02T10:00:00Z", "2024-01-02T10:00:00"),
            ("2024-01-02 10:00:00.5 -05:30", "2024-01-02 10:00:00.5"),
            ("2024-01-02 10:00:00 +0100", "2024-01-02 10:00:00"),
            ("2024-01-02 10:00 UTC", "2024-01-02 10:00"),
            ("2024-01-02 10:00:00", "2024-01-02 10:00:00"),
            ("2024-01-02", "2024-01-02"),
            // Not a zone: left for the parser to refuse.
            ("2024-01-02 10:00:00 PM", "2024-01-02 10:00:00 PM"),
            ("2024-01-02 10:00:00+2", "2024-01-02 10:00:00+2"),
        ] {
            assert_eq!(without_zone(value), wall_clock, "{value}");
        }
        let mut column = TargetColumn::of_type(
            "at",
            "timestamp without time zone",
            DataType::Timestamp(TimeUnit::Microsecond, None),
        );
        let zoned = strings(&[Some("2024-01-02 10:00:00+02"), None, Some(" ")]);
        let converted = coerce_column(&zoned, &column).unwrap();
        let micros = converted.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            micros.value(0),
            1_704_189_600_000_000 - 7_200_000_000,
            "converted"
        );
        column.seconds_precision = Some(
            SecondsPrecision::new(6, FractionRounding::HalfAwayFromZero).ignoring_written_zone(),
        );
        let converted = coerce_column(&zoned, &column).unwrap();
        let micros = converted.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(micros.value(0), 1_704_189_600_000_000);
        assert!(micros.is_null(1) && micros.is_null(2));
        let bad = strings(&[Some("2024-01-02 10:00:00"), Some("soon")]);
        assert_eq!(coerce_column(&bad, &column).unwrap_err().index, 1);
    }

    #[test]
    fn enum_and_set_numbers_are_the_labels_they_count_to() {
        let labels = MemberLabels::of("enum('a','it''s','3')").unwrap();
        assert_eq!(labels.labels, ["a", "it's", "3"]);
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2"),
            Some("3"),
            Some("a"),
            Some("0"),
            Some("4"),
            None,
        ]));
        let stored = labels.by_number(text);
        let stored: Vec<Option<&str>> = stored.as_string::<i32>().iter().collect();
        // `3` is a label itself; 0 and 4 name none.
        assert_eq!(
            stored,
            [
                Some("it's"),
                Some("3"),
                Some("a"),
                Some("0"),
                Some("4"),
                None
            ]
        );
        let members = MemberLabels::of("set('a','b','c')").unwrap();
        assert!(members.set);
        let text: ArrayRef = Arc::new(StringArray::from(vec!["3", "5", "8", "b,a", "0"]));
        let stored = members.by_number(text);
        let stored: Vec<Option<&str>> = stored.as_string::<i32>().iter().collect();
        // 8 sets a fourth bit, which names no member; 0 is the empty set.
        assert_eq!(
            stored,
            [Some("a,b"), Some("a,c"), Some("8"), Some("b,a"), Some("")]
        );
        assert_eq!(MemberLabels::of("varchar(10)"), None);
        assert_eq!(MemberLabels::of("enum('a'"), None);
    }

    #[test]
    fn timestamps_without_a_zone_are_placed_in_the_databases_zone() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2024-01-02 10:00:00"),
            Some("2024-07-02 10:00:00"),
            // The spring gap and the autumn overlap in Berlin.
            Some("2024-03-31 02:30:00"),
            Some("2024-10-27 02:30:00"),
            Some("2024-01-02 10:00:00+00"),
            None,
        ]));
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let zones = UNSAID_TIMESTAMPS;
        let read = coerce_array_for(&text, &utc, zones).unwrap();
        let placed = placed_in_zone(read, &text, "Europe/Berlin", zones);
        assert_eq!(placed.data_type(), &utc);
        let shown: Vec<Option<String>> = placed
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|v| {
                v.and_then(chrono::DateTime::from_timestamp_micros)
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            })
            .collect();
        let expected = [
            "2024-01-02 09:00",
            "2024-07-02 08:00",
            "2024-03-31 01:30",
            "2024-10-27 01:30",
            "2024-01-02 10:00",
        ];
        assert_eq!(shown[..5], expected.map(|t| Some(t.to_string())));
        assert_eq!(shown[5], None);
        // A zone the database drops leaves the wall time, placed as any.
        let naive = DataType::Timestamp(TimeUnit::Microsecond, None);
        let dropping = SecondsPrecision::new(6, FractionRounding::Truncate).ignoring_written_zone();
        let zoned: ArrayRef = Arc::new(StringArray::from(vec!["2024-01-02 10:00:00+05"]));
        let read = coerce_array_for(&zoned, &naive, dropping).unwrap();
        let placed = placed_in_zone(read, &zoned, "+01:00", dropping);
        let micros = placed.as_primitive::<TimestampMicrosecondType>().value(0);
        let shown = chrono::DateTime::from_timestamp_micros(micros).unwrap();
        assert_eq!(shown.format("%H:%M").to_string(), "09:00");
        assert_eq!(zone_other_than_utc("Etc/UTC"), None);
        assert_eq!(zone_other_than_utc("UTC+3"), None);
        assert_eq!(
            zone_other_than_utc("Europe/Berlin").as_deref(),
            Some("Europe/Berlin")
        );
    }

    #[test]
    fn times_are_cut_at_the_microsecond() {
        let times = StringArray::from(vec![
            Some("12:34:56.123456789"),
            Some("-838:00:00.9999999"),
            Some("12:34:56.5"),
            Some("12:34"),
            None,
        ]);
        let cut: Vec<Option<String>> = times_within_microseconds(&times)
            .unwrap()
            .iter()
            .map(|t| t.map(str::to_string))
            .collect();
        assert_eq!(
            cut,
            [
                Some("12:34:56.123456".to_string()),
                Some("-838:00:00.999999".to_string()),
                Some("12:34:56.5".to_string()),
                Some("12:34".to_string()),
                None
            ]
        );
        let fine = StringArray::from(vec!["12:34:56.123456"]);
        assert!(times_within_microseconds(&fine).is_none());
    }

    #[test]
    fn short_bytes_of_a_binary_column_are_padded_as_stored() {
        let mut column = TargetColumn::of_type("b", "binary(4)", DataType::Binary);
        column.zero_padded_width = Some(4);
        let values: ArrayRef = Arc::new(BinaryArray::from(vec![
            Some(&b"ab"[..]),
            None,
            Some(&b"abcd"[..]),
            Some(&b"abcdef"[..]),
        ]));
        let stored = coerce_column(&values, &column).unwrap();
        let stored = stored.as_binary::<i32>();
        assert_eq!(stored.value(0), b"ab\0\0");
        assert!(stored.is_null(1));
        assert_eq!(stored.value(2), b"abcd");
        assert_eq!(stored.value(3), b"abcdef", "left to the database to refuse");
    }

    #[test]
    fn dates_written_year_first_with_slashes_read_as_with_dashes() {
        let dates = coerce_array(
            &strings(&[Some("2024/01/02"), Some("2024/1/2")]),
            &DataType::Date32,
        )
        .unwrap();
        let dates = dates.as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        assert_eq!(dates.values().to_vec(), vec![19724, 19724]);
        let at = coerce_array(
            &strings(&[Some("2024/01/02 10:00:00"), Some("2024/01/02T10:00")]),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )
        .unwrap();
        let at = at.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.value(0), 1_704_189_600_000_000);
        assert_eq!(at.value(1), 1_704_189_600_000_000);
        for ambiguous in ["01/02/2024", "2024/01", "2024/01/02/03"] {
            assert!(
                coerce_array(&strings(&[Some(ambiguous)]), &DataType::Date32).is_err(),
                "{ambiguous}"
            );
        }
    }

    #[test]
    fn timestamps_to_the_minute_read_with_zero_seconds() {
        for (written, read) in [
            ("2024-01-01 10:00", "2024-01-01 10:00:00"),
            ("2024-01-01T10:00+02", "2024-01-01T10:00:00+02"),
            ("2024-01-01 10:00 UTC", "2024-01-01 10:00:00 UTC"),
            ("2024-01-01 10:00:30", "2024-01-01 10:00:30"),
            ("2024-01-01 10:000", "2024-01-01 10:000"),
            ("2024-01-01", "2024-01-01"),
            ("a", "a"),
        ] {
            assert_eq!(with_seconds(written), read, "{written}");
        }
        // Digits past microseconds round as PostgreSQL and MySQL round them.
        for (written, micros) in [
            ("2024-01-01 10:00:00.1234564", 1_704_103_200_123_456),
            ("2024-01-01 10:00:00.1234565", 1_704_103_200_123_457),
            ("2024-01-01T10:00:00.9999999Z", 1_704_103_201_000_000),
            ("1969-12-31 23:59:59.9999995", 0),
        ] {
            let target = DataType::Timestamp(TimeUnit::Microsecond, None);
            let read = coerce_array(&strings(&[Some(written)]), &target).unwrap();
            assert_eq!(
                read.as_primitive::<TimestampMicrosecondType>().value(0),
                micros,
                "{written}"
            );
        }
        let target = DataType::Timestamp(TimeUnit::Microsecond, None);
        let minutes = coerce_array(&strings(&[Some("2024-01-01 10:00")]), &target).unwrap();
        let seconds = coerce_array(&strings(&[Some("2024-01-01 10:00:00")]), &target).unwrap();
        assert_eq!(&minutes, &seconds);
    }

    #[test]
    fn booleans_and_dates() {
        let out = coerce_array(
            &strings(&[Some("Yes"), Some("n"), Some("0")]),
            &DataType::Boolean,
        )
        .unwrap();
        let out = out.as_boolean();
        assert!(out.value(0) && !out.value(1) && !out.value(2));
        let err = coerce_array(&strings(&[Some("2024-02-30")]), &DataType::Date32).unwrap_err();
        assert_eq!(err.value, "2024-02-30");
        assert!(coerce_array(&strings(&[Some(" 2024-02-29 ")]), &DataType::Date32).is_ok());
    }

    fn inferred(values: &[&str]) -> DataType {
        let mut types = TypeInference::default();
        types.observe(&StringArray::from(values.to_vec()));
        types.data_type()
    }

    #[test]
    fn inference_never_changes_a_value() {
        // A phone number's plus, a code's leading zeros.
        assert_eq!(inferred(&["+15551234567", "+15550000000"]), DataType::Utf8);
        assert_eq!(inferred(&["0012", "7"]), DataType::Utf8);
        // Past 64 bits, and a 17-digit integer beside one: exact decimals.
        assert_eq!(
            inferred(&["12345678901234567890", "1"]),
            DataType::Decimal128(20, 0)
        );
        assert_eq!(
            inferred(&["12345678901234567", "1.5"]),
            DataType::Decimal128(18, 1)
        );
        // A double holds these exactly, however they are written.
        assert_eq!(inferred(&["5595.20", "1e3", "-0.5"]), DataType::Float64);
        // Answers are not booleans; true/false and t/f are.
        assert_eq!(inferred(&["Y", "N"]), DataType::Utf8);
        assert_eq!(inferred(&["Yes", "No"]), DataType::Utf8);
        assert_eq!(inferred(&["true", "F"]), DataType::Boolean);
        // Nanoseconds do not fit a timestamp column.
        assert_eq!(inferred(&["2024-01-01 10:00:00.123456789"]), DataType::Utf8);
        assert_eq!(
            inferred(&["2024-01-01T10:00:00.5", "2024-01-02 00:00:00"]),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        // Too many digits for any exact number type: text.
        assert_eq!(
            inferred(&["1234567890123456789012345678901234567890"]),
            DataType::Utf8
        );
    }

    #[test]
    fn number_meanings() {
        assert_eq!(number_meaning("5595.20"), number_meaning("5.5952e3"));
        assert_eq!(number_meaning("0.0"), Some((false, "0".into(), 0)));
        assert_eq!(number_meaning("+1"), None);
        assert_eq!(number_meaning("007"), None);
        assert_eq!(number_meaning("1.2.3"), None);
        assert!(!double_keeps("12345678901234567"));
        assert!(double_keeps("0.1"));
    }

    #[test]
    fn inference_keeps_codes_as_text() {
        let mut zip = TypeInference::default();
        zip.observe(&StringArray::from(vec!["02134", "10001"]));
        assert_eq!(zip.data_type(), DataType::Utf8);
        let mut n = TypeInference::default();
        n.observe(&StringArray::from(vec![Some("1"), None, Some("-5")]));
        assert_eq!(n.data_type(), DataType::Int64);
        let mut f = TypeInference::default();
        f.observe(&StringArray::from(vec!["1", "2.5"]));
        assert_eq!(f.data_type(), DataType::Float64);
        let mut d = TypeInference::default();
        d.observe(&StringArray::from(vec!["2024-01-01"]));
        assert_eq!(d.data_type(), DataType::Date32);
    }
}
