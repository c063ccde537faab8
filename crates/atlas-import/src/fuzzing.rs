//! Entry points of the fuzz targets (`fuzz/`), kept in the library so the
//! inputs that once found bugs replay in the ordinary test suite
//! (`tests/it/fuzz_regressions.rs`) through exactly the same code.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use crate::convert::{coerce_array, coerce_array_lenient};

/// The statement parser must return, never panic, on any text.
pub fn statement_parser(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::sql::parse_statements(text);
    }
}

/// The types values are coerced to.
const TARGETS: [DataType; 12] = [
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::UInt64,
    DataType::Float32,
    DataType::Float64,
    DataType::Boolean,
    DataType::Date32,
    DataType::Timestamp(TimeUnit::Microsecond, None),
    DataType::Decimal128(12, 3),
    DataType::Utf8,
];

/// Coercion must never panic, and must agree with itself: the strict and
/// the lenient paths fail on the same values, and what converts is never
/// NULL unless the text was blank (typed columns) or missing (text columns,
/// which keep every value exactly, whitespace included).
pub fn coercion(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let target = &TARGETS[usize::from(selector) % TARGETS.len()];
    let text = String::from_utf8_lossy(rest);
    let values: Vec<Option<&str>> = text
        .split('\u{1f}')
        .map(|v| (v != "\u{0}").then_some(v))
        .collect();
    let array: ArrayRef = Arc::new(StringArray::from(values.clone()));
    let strict = coerce_array(&array, target);
    let (lenient, failures) = coerce_array_lenient(&array, target);
    assert_eq!(lenient.len(), array.len());
    assert_eq!(lenient.data_type(), target);
    match &strict {
        Ok(converted) => {
            assert!(
                failures.is_empty(),
                "strict passed, lenient failed: {failures:?}"
            );
            assert_eq!(converted.len(), array.len());
            for (i, value) in values.iter().enumerate() {
                if *target == DataType::Utf8 {
                    let kept = converted.as_any().downcast_ref::<StringArray>().unwrap();
                    assert_eq!(kept.is_valid(i).then(|| kept.value(i)), *value);
                    continue;
                }
                let blank = value.is_none_or(|v| v.trim().is_empty());
                if converted.is_null(i) {
                    assert!(blank, "{value:?} became NULL as {target}");
                }
            }
        }
        Err(first) => {
            assert!(
                !failures.is_empty(),
                "strict failed at {first:?}, lenient did not"
            );
            for failure in &failures {
                assert!(lenient.is_null(failure.index));
            }
        }
    }
}
