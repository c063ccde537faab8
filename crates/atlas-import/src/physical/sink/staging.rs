//! What an upsert learns while its updates go into the stage.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};

use crate::db::STAGE_ROW;
use crate::error::AtlasError;
use crate::key::{EncodedKeys, Fingerprint, Fingerprints, KeyEncoder, KeyHasher};

/// What an upsert learns while its rows whose key exists go into the stage:
/// which staged updates a later row of the same key supersedes, and the
/// patterns of NULL key parts among them.
pub(super) struct Staging {
    key: KeyEncoder,
    hasher: KeyHasher,
    /// Rows staged so far (the next `atlas_row`).
    pub(super) staged: u64,
    /// The latest staged update of each key.
    latest: Fingerprints<u64>,
    /// Staged updates a later one of the same key supersedes.
    pub(super) superseded: Vec<u64>,
    /// Positions in the key that are NULL, per pattern seen among updates.
    pub(super) null_patterns: BTreeSet<Vec<usize>>,
    keys: EncodedKeys,
    fingerprints: Vec<Fingerprint>,
}

impl Staging {
    pub(super) fn new(key: KeyEncoder) -> Self {
        Self {
            key,
            hasher: KeyHasher::random(),
            staged: 0,
            latest: Fingerprints::new(),
            superseded: Vec::new(),
            null_patterns: BTreeSet::new(),
            keys: EncodedKeys::default(),
            fingerprints: Vec::new(),
        }
    }

    /// `rows` (the written columns, every row an update) as stage rows: the
    /// columns, then the row number.
    pub(super) fn stage(&mut self, rows: RecordBatch) -> crate::error::Result<RecordBatch> {
        let first = self.staged;
        self.staged += rows.num_rows() as u64;
        self.key.encode(&rows, &mut self.keys)?;
        self.hasher.fingerprints(&self.keys, &mut self.fingerprints);
        let key_arrays: Vec<&ArrayRef> =
            self.key.columns().iter().map(|&c| rows.column(c)).collect();
        for row in 0..rows.num_rows() {
            let number = first + row as u64;
            if let Some(earlier) = self.latest.replace(self.fingerprints[row], number) {
                self.superseded.push(earlier);
            }
            if key_arrays.iter().any(|a| a.is_null(row)) {
                let pattern = (0..key_arrays.len())
                    .filter(|&p| key_arrays[p].is_null(row))
                    .collect();
                self.null_patterns.insert(pattern);
            }
        }
        let numbers: ArrayRef = Arc::new(Int64Array::from_iter_values(
            (first..self.staged).map(|n| n as i64),
        ));
        let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
        columns.push(numbers);
        let mut fields: Vec<FieldRef> = rows.schema().fields().to_vec();
        fields.push(Arc::new(Field::new(STAGE_ROW, DataType::Int64, false)));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(AtlasError::from)
    }
}
