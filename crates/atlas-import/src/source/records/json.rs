//! JSON documents: an array of objects (one record each) or a single object.

use serde_json::Value;

use super::TextRecords;
use crate::error::{AtlasError, Result};

/// The text of a JSON value as a field: strings as they are, numbers and
/// booleans as written, `null` as NULL, nested arrays and objects as JSON.
fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        nested => Some(nested.to_string()),
    }
}

/// Reads newline-delimited JSON (one object per line) into records. Values
/// stay text whatever their JSON type, so a column whose lines mix `30` and
/// `"7"` reads as well as any other.
pub(crate) fn read_json_lines(reader: impl std::io::Read, source: &str) -> Result<TextRecords> {
    let mut records = TextRecords::default();
    let values =
        serde_json::Deserializer::from_reader(std::io::BufReader::new(reader)).into_iter::<Value>();
    for value in values {
        let value = value.map_err(|e| AtlasError::Source {
            source_name: source.to_string(),
            message: format!(
                "not valid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        })?;
        let Value::Object(object) = value else {
            return Err(AtlasError::Source {
                source_name: source.to_string(),
                message: format!(
                    "record {} is not a JSON object (each line must be an object)",
                    records.len() + 1
                ),
            });
        };
        for (name, value) in &object {
            records.field(name, field_text(value));
        }
        records.end_record();
    }
    Ok(records)
}

/// Reads a JSON document (`[{...}, ...]` or `{...}`) into records.
pub(crate) fn read_json_document(bytes: &[u8], source: &str) -> Result<TextRecords> {
    let error = |message: String| AtlasError::Source {
        source_name: source.to_string(),
        message,
    };
    let document: Value = serde_json::from_slice(bytes).map_err(|e| {
        error(format!(
            "not valid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let mut records = TextRecords::default();
    let add = |records: &mut TextRecords, object: &serde_json::Map<String, Value>| {
        for (name, value) in object {
            records.field(name, field_text(value));
        }
        records.end_record();
    };
    match &document {
        Value::Object(object) => add(&mut records, object),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let Value::Object(object) = item else {
                    return Err(error(format!(
                        "element {} of the top-level array is not an object (records must be objects)",
                        i + 1
                    )));
                };
                add(&mut records, object);
            }
        }
        _ => {
            return Err(error(
                "the document must be an array of objects or one object".into(),
            ));
        }
    }
    Ok(records)
}
