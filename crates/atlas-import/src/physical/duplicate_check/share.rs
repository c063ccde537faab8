//! [`KeyShare`]: the keys one task of a distributed check needs, those that
//! hash into its partition, as the shuffle before it hashed the import's
//! rows (DataFusion's and Ballista's hash partitioning: the key forms'
//! arrays, `create_hashes` with `REPARTITION_RANDOM_STATE`, modulo the
//! partition count).

use datafusion::arrow::array::ArrayRef;
use datafusion::common::hash_utils::create_hashes;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::repartition::REPARTITION_RANDOM_STATE;
use tokio::sync::watch;

use crate::key_form::KeyForm;

/// Which keys of the table one check task keeps: a task runs one partition
/// of the check, and learns which from its first row (a task's plan does not
/// know its partition's global number).
#[derive(Debug)]
pub struct KeyShare {
    partitioner: KeyPartitioner,
    /// `Some(Some(p))` once the first row said partition `p`; `Some(None)`
    /// when the task had no rows (it needs no keys).
    assigned: watch::Sender<Option<Option<usize>>>,
}

/// The hash partitioning of keys into `partitions` partitions.
#[derive(Debug, Clone)]
pub struct KeyPartitioner {
    partitions: usize,
    forms: Vec<Option<KeyForm>>,
}

impl KeyPartitioner {
    /// The partition count.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The partition of each row of `keys` (the key's columns in key order,
    /// as the target types hold them).
    pub fn partitions_of(&self, keys: &[ArrayRef]) -> Result<Vec<usize>> {
        let rows = keys.first().map_or(0, |k| k.len());
        let arrays: Vec<ArrayRef> = keys
            .iter()
            .zip(&self.forms)
            .map(|(array, form)| match form {
                Some(form) => form.apply(array),
                None => ArrayRef::clone(array),
            })
            .collect();
        let mut hashes = vec![0; rows];
        create_hashes(
            &arrays,
            REPARTITION_RANDOM_STATE.random_state(),
            &mut hashes,
        )?;
        let partitions = self.partitions as u64;
        Ok(hashes.iter().map(|h| (h % partitions) as usize).collect())
    }
}

impl KeyShare {
    /// The share of one of `partitions` partitions of a key compared in `forms`.
    pub fn new(partitions: usize, forms: Vec<Option<KeyForm>>) -> Self {
        Self {
            partitioner: KeyPartitioner {
                partitions: partitions.max(1),
                forms,
            },
            assigned: watch::channel(None).0,
        }
    }

    /// How keys are partitioned.
    pub fn partitioner(&self) -> &KeyPartitioner {
        &self.partitioner
    }

    /// Learns this task's partition from its first rows and checks every
    /// batch's rows (`keys`: their key columns) are in it: a shuffle that
    /// hashed otherwise than the plan says (or a task reading several
    /// partitions) fails the task rather than miss a key.
    pub fn check_rows(&self, keys: &[ArrayRef]) -> Result<()> {
        let partitions = self.partitioner.partitions_of(keys)?;
        let Some(&first) = partitions.first() else {
            return Ok(());
        };
        let expected = match *self.assigned.borrow() {
            Some(Some(assigned)) => assigned,
            _ => first,
        };
        if partitions.iter().any(|&p| p != expected) {
            return Err(DataFusionError::Internal(format!(
                "a check task's rows are not of one of {} hash partitions: the \
                 shuffle before the check partitions otherwise than its plan",
                self.partitioner.partitions
            )));
        }
        if self.assigned.borrow().is_none() {
            self.assigned.send_replace(Some(Some(expected)));
        }
        Ok(())
    }

    /// Says this task had no rows.
    pub fn assign_none(&self) {
        if self.assigned.borrow().is_none() {
            self.assigned.send_replace(Some(None));
        }
    }

    /// This task's partition, once known; `None` for a task without rows.
    pub async fn assigned(&self) -> Option<usize> {
        let mut receiver = self.assigned.subscribe();
        match receiver.wait_for(Option::is_some).await {
            Ok(value) => value.flatten(),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::repartition::BatchPartitioner;

    use super::*;

    /// The share's partitions are DataFusion's hash partitioner's.
    #[test]
    fn partitions_as_the_hash_partitioner() {
        let keys: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..200).map(|i| format!("user{i}@example.com")),
        ));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "email",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::clone(&keys)]).unwrap();
        let share = KeyShare::new(4, vec![None]);
        let ours = share.partitioner().partitions_of(&[keys]).unwrap();
        let mut partitioner = BatchPartitioner::new_hash_partitioner(
            vec![Arc::new(Column::new("email", 0))],
            4,
            Default::default(),
        )
        .unwrap();
        let mut theirs = vec![usize::MAX; 200];
        partitioner
            .partition(batch, |partition, part| {
                let emails = part
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                for email in emails.iter().flatten() {
                    let i: usize = email[4..email.find('@').unwrap()].parse().unwrap();
                    theirs[i] = partition;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(ours, theirs);
        assert!(ours.iter().any(|&p| p != ours[0]), "spread over partitions");
    }
}
