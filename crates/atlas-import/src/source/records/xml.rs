//! XML: each child of the root element is a record (or, with
//! `OPTIONS (record 'name')`, each element of that name); the record's
//! attributes and child elements are its fields, a child's text its value.

use std::io::BufReader;
use std::path::Path;

use quick_xml::Reader;
use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::{BytesStart, Event};

use super::TextRecords;
use crate::error::{AtlasError, Result};

/// A field being read: its name, its text so far, and its element's depth.
struct OpenField {
    name: String,
    text: String,
    depth: usize,
}

fn local_name(element: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(element.local_name().as_ref()).into_owned()
}

/// Reads the XML file at `path` into records.
pub(crate) fn read_xml(path: &Path, record: Option<&str>, source: &str) -> Result<TextRecords> {
    let file = std::fs::File::open(path).map_err(|e| AtlasError::io(source, e))?;
    let mut reader = Reader::from_reader(BufReader::new(file));
    let mut records = TextRecords::default();
    let mut buf = Vec::new();
    // Depth of the element being read: the root is 1.
    let mut depth = 0usize;
    let mut record_depth: Option<usize> = None;
    let mut field: Option<OpenField> = None;
    let error = |reader: &Reader<BufReader<std::fs::File>>, message: String| AtlasError::Source {
        source_name: source.to_string(),
        message: format!("{message} (at byte {})", reader.buffer_position()),
    };
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| error(&reader, format!("not well-formed XML: {e}")))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                depth += 1;
                let name = local_name(e);
                let starts_record = record_depth.is_none()
                    && match record {
                        Some(wanted) => name == wanted,
                        None => depth == 2,
                    };
                if starts_record {
                    record_depth = Some(depth);
                    for attribute in e.attributes() {
                        let attribute =
                            attribute.map_err(|e| error(&reader, format!("bad attribute: {e}")))?;
                        let value = attribute
                            .decode_and_unescape_value(reader.decoder())
                            .map_err(|e| error(&reader, format!("bad attribute value: {e}")))?;
                        let key = String::from_utf8_lossy(attribute.key.local_name().as_ref())
                            .into_owned();
                        records.field(&key, Some(value.into_owned()));
                    }
                } else if record_depth.is_some_and(|d| depth == d + 1) {
                    field = Some(OpenField {
                        name,
                        text: String::new(),
                        depth,
                    });
                }
                if empty {
                    close(&mut depth, &mut record_depth, &mut field, &mut records);
                }
            }
            Event::End(_) => close(&mut depth, &mut record_depth, &mut field, &mut records),
            Event::Text(ref t) => {
                if let Some(open) = field.as_mut() {
                    let text = t
                        .xml_content()
                        .map_err(|e| error(&reader, format!("bad text: {e}")))?;
                    open.text.push_str(&text);
                }
            }
            Event::CData(ref t) => {
                if let Some(open) = field.as_mut() {
                    let text = t
                        .decode()
                        .map_err(|e| error(&reader, format!("bad CDATA: {e}")))?;
                    open.text.push_str(&text);
                }
            }
            Event::GeneralRef(ref r) => {
                if let Some(open) = field.as_mut() {
                    if let Some(c) = r
                        .resolve_char_ref()
                        .map_err(|e| error(&reader, format!("bad character reference: {e}")))?
                    {
                        open.text.push(c);
                    } else {
                        let name = r
                            .decode()
                            .map_err(|e| error(&reader, format!("bad entity: {e}")))?;
                        let resolved = resolve_xml_entity(&name)
                            .ok_or_else(|| error(&reader, format!("unknown entity '&{name};'")))?;
                        open.text.push_str(resolved);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if depth != 0 {
        return Err(AtlasError::Source {
            source_name: source.to_string(),
            message: "the document ends before its elements are closed (truncated file?)".into(),
        });
    }
    Ok(records)
}

/// Closes the element at `depth`: ends a field or a record.
fn close(
    depth: &mut usize,
    record_depth: &mut Option<usize>,
    field: &mut Option<OpenField>,
    records: &mut TextRecords,
) {
    if field.as_ref().is_some_and(|f| f.depth == *depth) {
        let open = field.take().expect("checked");
        let value = (!open.text.is_empty()).then_some(open.text);
        records.field(&open.name, value);
    } else if *record_depth == Some(*depth) {
        records.end_record();
        *record_depth = None;
    }
    *depth = depth.saturating_sub(1);
}
