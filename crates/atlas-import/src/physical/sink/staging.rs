//! What an upsert learns while its updates go into the stage.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, UInt64Type};

use crate::db::{STAGE_LOCATION, STAGE_ROW};
use crate::error::AtlasError;
use crate::key::{EncodedKeys, Fingerprint, Fingerprints, KeyEncoder, KeyHasher};

/// What an upsert learns while its rows whose key exists go into the stage:
/// which staged updates a later row of the same key supersedes, which carry
/// the location of the row they update, and the patterns of NULL key parts
/// among those that do not.
pub(super) struct Staging {
    key: KeyEncoder,
    hasher: KeyHasher,
    /// Rows staged so far (the next `atlas_row`).
    pub(super) staged: u64,
    /// The latest staged update of each key.
    latest: Fingerprints<u64>,
    /// Staged updates a later one of the same key supersedes.
    pub(super) superseded: Vec<u64>,
    /// Positions in the key that are NULL, per pattern seen among updates
    /// without a location.
    pub(super) null_patterns: BTreeSet<Vec<usize>>,
    /// Whether the stage takes locations.
    locations: bool,
    /// Per staged row, whether it carries a location.
    located: Vec<bool>,
    keys: EncodedKeys,
    fingerprints: Vec<Fingerprint>,
}

impl Staging {
    /// Staging of updates keyed by `key`; `locations`: the stage takes the
    /// rows' locations (see `UpsertStatements::locates_rows`).
    pub(super) fn new(key: KeyEncoder, locations: bool) -> Self {
        Self {
            key,
            hasher: KeyHasher::random(),
            staged: 0,
            latest: Fingerprints::new(),
            superseded: Vec::new(),
            null_patterns: BTreeSet::new(),
            locations,
            located: Vec::new(),
            keys: EncodedKeys::default(),
            fingerprints: Vec::new(),
        }
    }

    /// The staged updates that remain once the superseded ones are removed:
    /// (with a location, without one).
    pub(super) fn remaining(&self) -> (u64, u64) {
        let all = self.staged - self.superseded.len() as u64;
        if !self.locations {
            return (0, all);
        }
        let located = self.located.iter().filter(|&&l| l).count()
            - self
                .superseded
                .iter()
                .filter(|&&n| self.located[n as usize])
                .count();
        (located as u64, all - located as u64)
    }

    /// `rows` (the written columns, every row an update) as stage rows: the
    /// columns, the row number, and where the stage takes them the location
    /// of the row each updates (`locations`: UInt64, NULL where unknown).
    pub(super) fn stage(
        &mut self,
        rows: RecordBatch,
        locations: &ArrayRef,
    ) -> crate::error::Result<RecordBatch> {
        let first = self.staged;
        self.staged += rows.num_rows() as u64;
        self.key.encode(&rows, &mut self.keys)?;
        self.hasher.fingerprints(&self.keys, &mut self.fingerprints);
        let key_arrays: Vec<&ArrayRef> =
            self.key.columns().iter().map(|&c| rows.column(c)).collect();
        let locations = locations.as_primitive_opt::<UInt64Type>().ok_or_else(|| {
            AtlasError::Internal("the check's row locations are not UInt64".into())
        })?;
        for row in 0..rows.num_rows() {
            let number = first + row as u64;
            if let Some(earlier) = self.latest.replace(self.fingerprints[row], number) {
                self.superseded.push(earlier);
            }
            let located = self.locations && locations.is_valid(row);
            if self.locations {
                self.located.push(located);
            }
            if !located && key_arrays.iter().any(|a| a.is_null(row)) {
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
        if self.locations {
            // A location is `block << 16 | offset`: 48 bits.
            let signed: Int64Array = locations.unary(|l| l as i64);
            columns.push(Arc::new(signed));
            fields.push(Arc::new(Field::new(STAGE_LOCATION, DataType::Int64, true)));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(AtlasError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::UInt64Array;

    /// Staged rows of key `k` with the location of their existing row.
    fn stage(staging: &mut Staging, keys: Vec<Option<i64>>, locations: Vec<Option<u64>>) {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let rows = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(keys))]).unwrap();
        let locations: ArrayRef = Arc::new(UInt64Array::from(locations));
        let staged = staging.stage(rows, &locations).unwrap();
        let column = staged.column_by_name(STAGE_LOCATION).unwrap();
        assert_eq!(
            column
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .len(),
            3
        );
    }

    #[test]
    fn counts_what_remains_by_location_and_by_key() {
        let mut staging = Staging::new(KeyEncoder::new(vec![0]), true);
        // Key 1 found at location 5, superseded by its later row (also
        // located); key 2 first inserted by the import (no location); a NULL
        // key found in the table.
        stage(
            &mut staging,
            vec![Some(1), Some(2), None],
            vec![Some(5), None, Some(9)],
        );
        stage(
            &mut staging,
            vec![Some(1), Some(3), Some(4)],
            vec![Some(5), None, None],
        );
        assert_eq!(staging.superseded, vec![0]);
        assert_eq!(staging.remaining(), (2, 3));
        // Only updates found by key need a statement per NULL pattern.
        assert!(staging.null_patterns.is_empty());
        stage(
            &mut staging,
            vec![None, Some(7), Some(8)],
            vec![None, None, None],
        );
        assert_eq!(staging.null_patterns.len(), 1);

        // A stage without locations: everything by key.
        let mut staging = Staging::new(KeyEncoder::new(vec![0]), false);
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let rows = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 1]))]);
        let unknown: ArrayRef = Arc::new(UInt64Array::from(vec![None, None]));
        let staged = staging.stage(rows.unwrap(), &unknown).unwrap();
        assert!(staged.column_by_name(STAGE_LOCATION).is_none());
        assert_eq!(staging.remaining(), (0, 1));
    }
}
