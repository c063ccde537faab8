//! Reads PostgreSQL's `COPY ... TO STDOUT (FORMAT binary)` into Arrow batches
//! of the key columns' types, so the existing keys reach the duplicate check
//! without being printed as text and parsed back.
//!
//! A column whose type has no direct binary reading here (numeric and the
//! rest) is selected as `::text` and arrives as text, which the check then
//! converts with the same coercion as the import's own values.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use super::key_batch::{KeyBatchBuilder, KeyColumnBuilder};
use crate::error::{AtlasError, Result};
use crate::schema::TargetColumn;

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// The signature that opens a binary COPY stream.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// How one key column travels: in its own binary form, or as text.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wire {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Date,
    Timestamp,
    /// A row's `ctid` (see [`location_column`]).
    Location,
    Text,
}

impl Wire {
    fn of(column: &TargetColumn) -> Self {
        match &column.data_type {
            DataType::UInt64 if column.sql_type == "tid" => Wire::Location,
            DataType::Boolean => Wire::Bool,
            DataType::Int16 => Wire::Int16,
            DataType::Int32 => Wire::Int32,
            DataType::Int64 => Wire::Int64,
            DataType::Float32 => Wire::Float32,
            DataType::Float64 => Wire::Float64,
            DataType::Date32 => Wire::Date,
            DataType::Timestamp(TimeUnit::Microsecond, _) => Wire::Timestamp,
            _ => Wire::Text,
        }
    }
}

/// Whether `column` holds text whose binary COPY form is the text itself
/// (text, varchar, char, name, citext, json), so it travels without a cast
/// in either direction. An array of them (`character varying(10)[]`) has a
/// binary form of its own.
pub(crate) fn binary_form_is_text(column: &TargetColumn) -> bool {
    column.data_type == DataType::Utf8
        && !column.sql_type.ends_with("[]")
        && matches!(
            column.sql_type.split('(').next().unwrap_or_default(),
            "text" | "character varying" | "character" | "name" | "citext" | "json"
        )
}

/// The pseudo-column that reads each row's `ctid` after the key columns, as
/// `block << 16 | offset` (see `UpsertStatements`, which finds the rows by it).
pub(crate) fn location_column() -> TargetColumn {
    TargetColumn::of_type("ctid", "tid", DataType::UInt64)
}

/// The `SELECT` list that sends `columns` as [`KeyDecoder`] reads them.
pub(crate) fn select_list(columns: &[TargetColumn]) -> (String, bool) {
    let mut casts = false;
    let list = columns
        .iter()
        .map(|c| {
            let name = super::quote_ident(&c.name);
            // Text types travel as text already; the rest that has no binary
            // reading here is printed by the server.
            if Wire::of(c) == Wire::Text && !binary_form_is_text(c) {
                casts = true;
                format!("{name}::text")
            } else {
                name
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    (list, casts)
}

impl Wire {
    /// The type `column`'s values arrive as.
    fn data_type(column: &TargetColumn) -> DataType {
        match Wire::of(column) {
            Wire::Bool => DataType::Boolean,
            Wire::Int16 => DataType::Int16,
            Wire::Int32 => DataType::Int32,
            Wire::Int64 => DataType::Int64,
            Wire::Float32 => DataType::Float32,
            Wire::Float64 => DataType::Float64,
            Wire::Date => DataType::Date32,
            Wire::Timestamp => column.data_type.clone(),
            Wire::Location => DataType::UInt64,
            Wire::Text => DataType::Utf8,
        }
    }
}

/// Appends one value in its binary form to `builder`; why not, if its
/// length or bytes are wrong.
fn append(builder: &mut KeyColumnBuilder, v: &[u8]) -> std::result::Result<(), &'static str> {
    fn fixed<const N: usize>(v: &[u8]) -> std::result::Result<[u8; N], &'static str> {
        v.try_into().map_err(|_| "a value of the wrong length")
    }
    match builder {
        KeyColumnBuilder::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
        KeyColumnBuilder::Int16(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
        KeyColumnBuilder::Int32(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
        KeyColumnBuilder::Int64(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
        KeyColumnBuilder::Float32(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
        KeyColumnBuilder::Float64(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
        KeyColumnBuilder::Date(b) => {
            b.append_value(i32::from_be_bytes(fixed(v)?).saturating_add(PG_EPOCH_DAYS))
        }
        KeyColumnBuilder::Timestamp(b, _) => {
            b.append_value(i64::from_be_bytes(fixed(v)?).saturating_add(PG_EPOCH_MICROS))
        }
        KeyColumnBuilder::Text(b) => {
            b.append_value(std::str::from_utf8(v).map_err(|_| "a value that is not UTF-8")?)
        }
        // A tid: the block (4 bytes) and the line pointer in it (2 bytes).
        KeyColumnBuilder::UInt64(b) => {
            let tid = fixed::<6>(v)?;
            let block = u32::from_be_bytes(tid[..4].try_into().expect("4 bytes"));
            let offset = u16::from_be_bytes(tid[4..].try_into().expect("2 bytes"));
            b.append_value(u64::from(block) << 16 | u64::from(offset))
        }
    }
    Ok(())
}

/// Decodes a binary COPY stream of the key columns into batches.
pub(crate) struct KeyDecoder {
    batch: KeyBatchBuilder,
    /// Bytes of a tuple that is not complete yet.
    pending: Vec<u8>,
    header_done: bool,
    finished: bool,
    batch_rows: usize,
    rows: u64,
    table: String,
}

impl KeyDecoder {
    pub(crate) fn new(columns: &[TargetColumn], batch_rows: usize, table: &str) -> Self {
        Self {
            batch: KeyBatchBuilder::new(columns, Wire::data_type),
            pending: Vec::new(),
            header_done: false,
            finished: false,
            batch_rows: batch_rows.max(1),
            rows: 0,
            table: table.to_string(),
        }
    }

    fn malformed(&self, what: &str) -> AtlasError {
        AtlasError::Source {
            source_name: format!("existing rows of table '{}'", self.table),
            message: format!("unexpected binary COPY output: {what}"),
        }
    }

    /// Feeds the next bytes of the stream; complete batches go to `on_batch`.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<()> {
        self.pending.extend_from_slice(bytes);
        let data = std::mem::take(&mut self.pending);
        let mut pos = 0;
        if !self.header_done {
            if data.len() < SIGNATURE.len() + 8 {
                self.pending = data;
                return Ok(());
            }
            if &data[..SIGNATURE.len()] != SIGNATURE {
                return Err(self.malformed("no PGCOPY signature"));
            }
            let extension = u32::from_be_bytes(
                data[SIGNATURE.len() + 4..SIGNATURE.len() + 8]
                    .try_into()
                    .expect("4 bytes"),
            ) as usize;
            let header = SIGNATURE.len() + 8 + extension;
            if data.len() < header {
                self.pending = data;
                return Ok(());
            }
            pos = header;
            self.header_done = true;
        }
        let width = self.batch.columns.len();
        while !self.finished {
            let Some(count) = data.get(pos..pos + 2) else {
                break;
            };
            let count = i16::from_be_bytes(count.try_into().expect("2 bytes"));
            if count == -1 {
                self.finished = true;
                pos += 2;
                break;
            }
            if count as usize != width {
                return Err(self.malformed("a row with another number of fields"));
            }
            // Is the whole tuple here?
            let mut end = pos + 2;
            let mut complete = true;
            for _ in 0..width {
                let Some(len) = data.get(end..end + 4) else {
                    complete = false;
                    break;
                };
                let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
                end += 4 + len.max(0) as usize;
                if end > data.len() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            let mut at = pos + 2;
            for builder in &mut self.batch.columns {
                let len = i32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                at += 4;
                if len < 0 {
                    builder.append_null();
                } else {
                    let value = &data[at..at + len as usize];
                    at += len as usize;
                    if let Err(what) = append(builder, value) {
                        return Err(self.malformed(what));
                    }
                }
            }
            pos = end;
            self.rows += 1;
            if self.batch.rows() >= self.batch_rows {
                on_batch(self.batch.finish()?)?;
            }
        }
        self.pending = data[pos..].to_vec();
        Ok(())
    }

    /// Ends the stream: the last rows go to `on_batch`; returns the rows read.
    pub(crate) fn finish(
        mut self,
        on_batch: &mut (dyn FnMut(RecordBatch) -> Result<()> + Send),
    ) -> Result<u64> {
        if !self.finished || !self.pending.is_empty() {
            return Err(self.malformed("the stream ended early"));
        }
        if self.batch.rows() > 0 {
            on_batch(self.batch.finish()?)?;
        }
        Ok(self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};

    fn column(name: &str, data_type: DataType, sql_type: &str) -> TargetColumn {
        TargetColumn {
            name: name.into(),
            sql_type: sql_type.into(),
            data_type,
            nullable: true,
            has_default: false,
            generated: false,
            max_chars: None,
            text_form: crate::typed_text::TextForm::of(crate::db::DbKind::Postgres, sql_type),
            key_form: None,
            seconds_precision: None,
            zero_padded_width: None,
            numbers_name_labels: false,
            unzoned_in: None,
        }
    }

    /// Decodes `stream` fed in pieces of `piece` bytes: the rows and batches.
    fn decode(columns: &[TargetColumn], stream: &[u8], piece: usize) -> (u64, Vec<RecordBatch>) {
        let mut batches = Vec::new();
        let mut decoder = KeyDecoder::new(columns, 1000, "t");
        let mut on_batch = |b: RecordBatch| -> Result<()> {
            batches.push(b);
            Ok(())
        };
        for piece in stream.chunks(piece) {
            decoder.feed(piece, &mut on_batch).unwrap();
        }
        let rows = decoder.finish(&mut on_batch).unwrap();
        (rows, batches)
    }

    #[test]
    fn decodes_tuples_split_anywhere() {
        let columns = [
            column("n", DataType::Int64, "bigint"),
            column("t", DataType::Utf8, "text"),
            column(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "timestamp",
            ),
        ];
        let mut stream = SIGNATURE.to_vec();
        stream.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        for (n, t) in [(Some(7i64), Some("ü")), (None, None)] {
            stream.extend_from_slice(&3i16.to_be_bytes());
            match n {
                Some(n) => {
                    stream.extend_from_slice(&8i32.to_be_bytes());
                    stream.extend_from_slice(&n.to_be_bytes());
                }
                None => stream.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            match t {
                Some(t) => {
                    stream.extend_from_slice(&(t.len() as i32).to_be_bytes());
                    stream.extend_from_slice(t.as_bytes());
                }
                None => stream.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            stream.extend_from_slice(&8i32.to_be_bytes());
            stream.extend_from_slice(&0i64.to_be_bytes());
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        let (rows, batches) = decode(&columns, &stream, 5);
        assert_eq!(rows, 2);
        let b = &batches[0];
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 7);
        assert!(b.column(0).is_null(1));
        assert_eq!(b.column(1).as_string::<i32>().value(0), "ü");
        assert_eq!(
            b.column(2)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            PG_EPOCH_MICROS
        );
    }

    #[test]
    fn a_location_is_block_and_line_pointer() {
        let columns = [location_column()];
        assert_eq!(select_list(&columns), ("\"ctid\"".to_string(), false));
        let mut stream = SIGNATURE.to_vec();
        stream.extend_from_slice(&[0; 8]);
        stream.extend_from_slice(&1i16.to_be_bytes());
        stream.extend_from_slice(&6i32.to_be_bytes());
        stream.extend_from_slice(&70_000u32.to_be_bytes());
        stream.extend_from_slice(&7u16.to_be_bytes());
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        let (rows, batches) = decode(&columns, &stream, stream.len());
        assert_eq!(rows, 1);
        let location = batches[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
            .value(0);
        assert_eq!(location, 70_000 << 16 | 7);
    }

    #[test]
    fn numeric_and_other_types_travel_as_text() {
        let (list, casts) = select_list(&[
            column("a", DataType::Decimal128(10, 2), "numeric(10,2)"),
            column("b", DataType::Utf8, "character varying(20)"),
            column("c", DataType::Utf8, "uuid"),
        ]);
        assert_eq!(list, "\"a\"::text, \"b\", \"c\"::text");
        assert!(casts);
    }
}
