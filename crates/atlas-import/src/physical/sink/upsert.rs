//! `ON DUPLICATE UPDATE` in the sink: the rows whose key is new go straight
//! into the table, the others into one stage, then one join applies them
//! (see [`UpsertStatements`]).
//!
//! The check flags every row before it reaches the sink, so the split needs
//! no statement. Only one bulk write can be open on a connection
//! (PostgreSQL's `COPY`, MySQL's `LOAD DATA`, MariaDB's array binding), so
//! the [`Router`] lets the open write take the rows of its destination as
//! they come while the others wait in memory; once [`SWITCH_BYTES`] or
//! [`SWITCH_CHUNKS`] chunks of them wait, that write ends and one into the
//! other destination begins with them:
//!
//! ```text
//!  input ──route by flag──▶ new keys ──▶ write into the table ─┐ one open at a time,
//!                      └──▶ existing ─▶ write into the stage ──┘ switched as the other side fills
//!  end: DELETE superseded updates, UPDATE ... FROM stage (the key's index or a hash join)
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::{filter_record_batch, not};
use datafusion::execution::SendableRecordBatchStream;

use super::staging::Staging;
use super::write::SinkWrite;
use crate::db::{ChunkStream, UpsertStatements};
use crate::error::{AtlasError, Result};
use crate::key::KeyEncoder;
use crate::key_form::KeyForm;
use crate::physical::transaction::not_open;

/// An upsert's join reads the table first when it holds at most this many
/// times the staged rows (MySQL/MariaDB).
const TABLE_FIRST_RATIO: u64 = 4;

/// Memory of rows waiting for the other destination's write that ends the
/// open one: each switch is one more statement, each byte waiting is
/// memory the import holds (1M rows of the benches' 11 columns, new and
/// existing keys alternating row by row: 9 writes; in two blocks: 2).
const SWITCH_BYTES: usize = 8 << 20;

/// Chunks of rows (`chunk_rows`) waiting for the other destination's write
/// that end the open one, if [`SWITCH_BYTES`] has not: narrow rows, or
/// small chunks asked for.
const SWITCH_CHUNKS: usize = 8;

/// Where an upsert writes a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Destination {
    /// A key new to the table (and first in the import): inserted as it comes.
    Table,
    /// A key that exists, in the table or earlier in the import: staged.
    Stage,
}

impl Destination {
    fn other(self) -> Self {
        match self {
            Destination::Table => Destination::Stage,
            Destination::Stage => Destination::Table,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Rows of one destination waiting for its write.
#[derive(Debug, Default)]
struct Waiting {
    batches: VecDeque<RecordBatch>,
    rows: usize,
    bytes: usize,
}

/// An upsert's input split by the check's flag (column `flag`: set where the
/// key exists), held until the write of its destination takes it.
#[derive(Debug)]
pub(super) struct Router {
    flag: usize,
    /// Rows waiting for the other destination that end the open write.
    switch_rows: usize,
    waiting: [Waiting; 2],
    input_ended: bool,
}

impl Router {
    pub(super) fn new(flag: usize, chunk_rows: usize) -> Self {
        Self {
            flag,
            switch_rows: SWITCH_CHUNKS.saturating_mul(chunk_rows.max(1)),
            waiting: Default::default(),
            input_ended: false,
        }
    }

    /// Splits `rows` by their flag into the two destinations' queues.
    pub(super) fn route(&mut self, rows: RecordBatch) -> Result<()> {
        let flag = rows.column(self.flag).as_boolean();
        let existing = flag.true_count();
        if existing == 0 {
            self.push(Destination::Table, rows);
        } else if existing == rows.num_rows() {
            self.push(Destination::Stage, rows);
        } else {
            let new = not(flag).map_err(AtlasError::from)?;
            let staged = filter_record_batch(&rows, flag).map_err(AtlasError::from)?;
            self.push(
                Destination::Table,
                filter_record_batch(&rows, &new).map_err(AtlasError::from)?,
            );
            self.push(Destination::Stage, staged);
        }
        Ok(())
    }

    fn push(&mut self, destination: Destination, rows: RecordBatch) {
        let waiting = &mut self.waiting[destination.index()];
        waiting.rows += rows.num_rows();
        waiting.bytes += rows.get_array_memory_size();
        waiting.batches.push_back(rows);
    }

    fn take(&mut self, destination: Destination) -> Option<RecordBatch> {
        let waiting = &mut self.waiting[destination.index()];
        let rows = waiting.batches.pop_front()?;
        waiting.rows -= rows.num_rows();
        waiting.bytes -= rows.get_array_memory_size();
        Some(rows)
    }

    /// Whether the write into `destination` should end: the input has
    /// ended, or enough rows wait for the other destination.
    fn ends(&self, destination: Destination) -> bool {
        let other = &self.waiting[destination.other().index()];
        self.input_ended || other.bytes >= SWITCH_BYTES || other.rows >= self.switch_rows
    }

    /// The destination of the first write: the table unless only updates
    /// have come so far.
    pub(super) fn first(&self) -> Destination {
        if self.waiting[Destination::Table.index()].batches.is_empty() {
            Destination::Stage
        } else {
            Destination::Table
        }
    }

    /// The destination of the write after one into `ended`, `None` when
    /// every row is written.
    pub(super) fn after(&self, ended: Destination) -> Option<Destination> {
        let other = ended.other();
        if !self.waiting[other.index()].batches.is_empty() {
            Some(other)
        } else if !self.input_ended || !self.waiting[ended.index()].batches.is_empty() {
            Some(ended)
        } else {
            None
        }
    }
}

/// The state of the stream of one write of an upsert.
struct RouteState<'a> {
    destination: Destination,
    router: &'a mut Router,
    input: &'a mut SendableRecordBatchStream,
    sink: &'a SinkWrite<'a>,
    staging: &'a mut Staging,
}

async fn next_routed(state: RouteState<'_>) -> Option<(Result<RecordBatch>, RouteState<'_>)> {
    loop {
        if let Some(rows) = state.router.take(state.destination) {
            // The check's location column follows its flag.
            let locations = Arc::clone(rows.column(state.router.flag + 1));
            let rows = state
                .sink
                .written(&rows)
                .and_then(|rows| match state.destination {
                    Destination::Table => Ok(rows),
                    Destination::Stage => state.staging.stage(rows, &locations),
                });
            return Some((rows, state));
        }
        if state.router.ends(state.destination) {
            return None;
        }
        match state.sink.next_rows(state.input).await {
            Ok(Some(rows)) => {
                state.sink.sent(rows.num_rows());
                if let Err(e) = state.router.route(rows) {
                    return Some((Err(e), state));
                }
            }
            Ok(None) => state.router.input_ended = true,
            Err(e) => return Some((Err(e), state)),
        }
    }
}

impl SinkWrite<'_> {
    /// `ON DUPLICATE UPDATE`: the new keys into the table and the others
    /// into one stage, by the bulk path as they come, then the join updating
    /// the table from the stage (see [`UpsertStatements`]). Returns the rows
    /// inserted.
    pub(super) async fn upsert(
        &self,
        first: RecordBatch,
        input: &mut SendableRecordBatchStream,
    ) -> Result<u64> {
        let settings = &self.sink.settings;
        let statements = UpsertStatements::new(
            settings.db_kind,
            &settings.table,
            &settings.columns,
            &settings.key_columns,
        )
        .with_locations(settings.locate_rows);
        let mut guard = self.transaction.slot().lock().await;
        let tx = guard.as_mut().ok_or_else(not_open)?;
        for sql in statements.create_stage() {
            tx.execute(sql).await?;
        }
        let key = KeyEncoder::new(settings.key_columns.clone()).with_forms(KeyForm::of_columns(
            settings.key_columns.iter().map(|&i| &settings.columns[i]),
        ));
        let mut staging = Staging::new(key, statements.locates_rows());
        let (stage_table, stage_columns) = (statements.stage_table(), statements.stage_columns());

        let mut router = Router::new(settings.columns.len(), settings.chunk_rows);
        self.sent(first.num_rows());
        router.route(first)?;
        let mut inserted = 0;
        let mut next = Some(router.first());
        while let Some(destination) = next {
            self.begin_statement();
            let state = RouteState {
                destination,
                router: &mut router,
                input: &mut *input,
                sink: self,
                staging: &mut staging,
            };
            let mut rows: ChunkStream<'_> = Box::pin(futures::stream::unfold(state, next_routed));
            match destination {
                Destination::Table => {
                    inserted += tx
                        .write_chunk(&settings.table, &settings.columns, &mut rows)
                        .await?;
                }
                Destination::Stage => {
                    tx.write_chunk(&stage_table, &stage_columns, &mut rows)
                        .await?;
                }
            }
            drop(rows);
            next = router.after(destination);
        }

        if staging.staged > 0 {
            for sql in statements.remove_superseded(&staging.superseded) {
                tx.execute(sql).await?;
            }
            let (located, by_key) = staging.remaining();
            tracing::info!(
                "Upsert into '{}': {located} rows to update by their location, {by_key} by a join on the key",
                settings.table
            );
            if located > 0
                && let Some(sql) = statements.located_update()
            {
                let updated = tx.execute_join(sql).await?;
                if updated != located {
                    return Err(AtlasError::Internal(format!(
                        "the update by row location changed {updated} rows of '{}' where {located} \
                         were staged (a trigger or a row security policy that skips rows?); \
                         nothing was written",
                        settings.table
                    )));
                }
            }
            if by_key > 0 {
                // Where the table is not much larger than the stage, the join
                // reads it in order (see `UpsertStatements::updates`).
                let table_first = tx
                    .estimated_rows(&settings.table)
                    .await?
                    .is_some_and(|rows| rows <= TABLE_FIRST_RATIO * by_key);
                for sql in statements.prepare_join() {
                    tx.execute(sql).await?;
                }
                let patterns: Vec<Vec<usize>> = staging.null_patterns.iter().cloned().collect();
                for sql in statements.updates(&patterns, table_first) {
                    tx.execute_join(sql).await?;
                }
            }
        }
        tx.execute(statements.drop_stage()).await?;
        self.metrics.inserted.fetch_add(inserted, Ordering::Relaxed);
        Ok(inserted)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BooleanArray, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::{Destination, Router, SWITCH_BYTES};

    fn rows(values: &[i64], existing: &[bool]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("flag", DataType::Boolean, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(values.to_vec())),
                Arc::new(BooleanArray::from(existing.to_vec())),
            ],
        )
        .unwrap()
    }

    fn values(rows: &RecordBatch) -> Vec<i64> {
        rows.column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    /// Rows split by their flag keep their order on each side; the write
    /// switches only once enough waits for the other side, and ends when
    /// both sides are written.
    #[test]
    fn rows_split_by_flag_in_order() {
        let mut router = Router::new(1, 1_000_000);
        router
            .route(rows(&[1, 2, 3, 4], &[false, true, false, true]))
            .unwrap();
        router.route(rows(&[5, 6], &[true, true])).unwrap();
        assert_eq!(router.first(), Destination::Table);
        let table = router.take(Destination::Table).unwrap();
        assert_eq!(values(&table), vec![1, 3]);
        assert!(router.take(Destination::Table).is_none());
        assert!(
            !router.ends(Destination::Table),
            "little waits: keep writing"
        );
        let staged: Vec<i64> = std::iter::from_fn(|| router.take(Destination::Stage))
            .flat_map(|rows| values(&rows))
            .collect();
        assert_eq!(staged, vec![2, 4, 5, 6]);

        let many = vec![7; SWITCH_BYTES / 8 + 1];
        router.route(rows(&many, &vec![true; many.len()])).unwrap();
        assert!(
            router.ends(Destination::Table),
            "enough waits for the stage"
        );
        assert_eq!(router.after(Destination::Table), Some(Destination::Stage));
        router.take(Destination::Stage).unwrap();
        router.input_ended = true;
        assert!(router.ends(Destination::Stage));
        assert_eq!(router.after(Destination::Stage), None);

        let mut updates_only = Router::new(1, 1_000_000);
        updates_only.route(rows(&[1], &[true])).unwrap();
        assert_eq!(updates_only.first(), Destination::Stage);

        // Small chunks: a few rows waiting end the write.
        let mut small = Router::new(1, 1);
        small.route(rows(&[1; 7], &[true; 7])).unwrap();
        assert!(!small.ends(Destination::Table));
        small.route(rows(&[1], &[true])).unwrap();
        assert!(small.ends(Destination::Table));
    }
}
