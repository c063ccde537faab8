//! Compact, exact key sets.
//!
//! A key (the values of the key columns of one row, after coercion) is encoded
//! into a short byte string: per column a marker byte (0 = NULL, 1 = value) then
//! the value (fixed-width little-endian for numbers, dates and timestamps; a
//! varint length and the bytes for text). The encoding is prefix-free, so equal
//! byte strings mean equal keys, and NULL equals NULL as the contract says.
//!
//! The duplicate check compares keys by their [`Fingerprint`]s: two
//! independently keyed 64-bit aHash values of the encoded bytes, keys drawn
//! for each import ([`KeyHasher`]), held in [`Fingerprints`] sets of 16 or 24 bytes a key
//! instead of the keys themselves. Two different keys share a fingerprint
//! with a probability of about n^2 / 2^129 for n keys (below 10^-20 at 10^9
//! keys): far below the error rate of the hardware the check runs on, so a
//! fingerprint match is taken as a key match.
//!
//! A [`KeySet`] keeps encoded keys themselves in one arena and indexes them
//! with a hash table of positions; every hit is verified against the arena
//! bytes. It serves where the keys are few and needed whole (the rows of one
//! chunk that update existing rows).

use datafusion::arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, BooleanArray, GenericBinaryArray, GenericStringArray,
    StringViewArray,
};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::error::{AtlasError, Result};
use crate::key_form::KeyForm;

/// Encodes the key columns of batches into byte strings.
#[derive(Debug, Clone)]
pub struct KeyEncoder {
    columns: Vec<usize>,
    /// Per key column, the form its values are compared in, where that is
    /// not as they are held.
    forms: Vec<Option<KeyForm>>,
}

/// The encoded keys of one batch: key `i` is `bytes[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Default)]
pub struct EncodedKeys {
    bytes: Vec<u8>,
    offsets: Vec<usize>,
}

impl EncodedKeys {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Key `i`.
    pub fn key(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i]..self.offsets[i + 1]]
    }
}

enum ColumnWriter<'a> {
    Fixed { data: ArrayData, width: usize },
    Float32(&'a datafusion::arrow::array::Float32Array),
    Float64(&'a datafusion::arrow::array::Float64Array),
    Bool(&'a BooleanArray),
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
    Utf8View(&'a StringViewArray),
    Binary(&'a GenericBinaryArray<i32>),
    LargeBinary(&'a GenericBinaryArray<i64>),
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = bytes.len();
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(bytes);
}

impl<'a> ColumnWriter<'a> {
    fn try_new(array: &'a ArrayRef) -> Result<Self> {
        Ok(match array.data_type() {
            DataType::Float32 => ColumnWriter::Float32(array.as_primitive::<Float32Type>()),
            DataType::Float64 => ColumnWriter::Float64(array.as_primitive::<Float64Type>()),
            DataType::Boolean => ColumnWriter::Bool(array.as_boolean()),
            DataType::Utf8 => ColumnWriter::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => ColumnWriter::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => ColumnWriter::Utf8View(array.as_string_view()),
            DataType::Binary => ColumnWriter::Binary(array.as_binary::<i32>()),
            DataType::LargeBinary => ColumnWriter::LargeBinary(array.as_binary::<i64>()),
            dt if dt.is_primitive() => ColumnWriter::Fixed {
                width: dt.primitive_width().expect("primitive types have a width"),
                data: array.to_data(),
            },
            other => {
                return Err(AtlasError::Usage(format!(
                    "columns of type {other} cannot be part of a duplicate-check key"
                )));
            }
        })
    }

    #[inline]
    fn write(&self, row: usize, out: &mut Vec<u8>) {
        macro_rules! null_or {
            ($arr:expr, $body:expr) => {
                if $arr.is_null(row) {
                    out.push(0);
                } else {
                    out.push(1);
                    $body
                }
            };
        }
        match self {
            ColumnWriter::Fixed { data, width } => null_or!(data, {
                let start = (data.offset() + row) * width;
                out.extend_from_slice(&data.buffers()[0].as_slice()[start..start + width])
            }),
            ColumnWriter::Float32(a) => null_or!(a, {
                let v = a.value(row);
                // -0.0 equals 0.0 and NaN equals NaN in the databases' comparisons.
                let v = if v == 0.0 {
                    0.0
                } else if v.is_nan() {
                    f32::NAN
                } else {
                    v
                };
                out.extend_from_slice(&v.to_bits().to_le_bytes())
            }),
            ColumnWriter::Float64(a) => null_or!(a, {
                let v = a.value(row);
                let v = if v == 0.0 {
                    0.0
                } else if v.is_nan() {
                    f64::NAN
                } else {
                    v
                };
                out.extend_from_slice(&v.to_bits().to_le_bytes())
            }),
            ColumnWriter::Bool(a) => null_or!(a, out.push(a.value(row) as u8)),
            ColumnWriter::Utf8(a) => null_or!(a, put_bytes(out, a.value(row).as_bytes())),
            ColumnWriter::LargeUtf8(a) => null_or!(a, put_bytes(out, a.value(row).as_bytes())),
            ColumnWriter::Utf8View(a) => null_or!(a, put_bytes(out, a.value(row).as_bytes())),
            ColumnWriter::Binary(a) => null_or!(a, put_bytes(out, a.value(row))),
            ColumnWriter::LargeBinary(a) => null_or!(a, put_bytes(out, a.value(row))),
        }
    }
}

impl KeyEncoder {
    /// An encoder for the columns at `columns` (indices into the batches it sees).
    pub fn new(columns: Vec<usize>) -> Self {
        let forms = vec![None; columns.len()];
        Self { columns, forms }
    }

    /// Compares key column `i` in `forms[i]` (see [`KeyForm`]).
    pub fn with_forms(mut self, forms: Vec<Option<KeyForm>>) -> Self {
        assert_eq!(forms.len(), self.columns.len(), "a form per key column");
        self.forms = forms;
        self
    }

    /// The key column indices.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// Encodes every row of `batch` into `out` (cleared first).
    pub fn encode(&self, batch: &RecordBatch, out: &mut EncodedKeys) -> Result<()> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .zip(&self.forms)
            .map(|(&c, form)| match form {
                Some(form) => form.apply(batch.column(c)),
                None => std::sync::Arc::clone(batch.column(c)),
            })
            .collect();
        let writers = arrays
            .iter()
            .map(ColumnWriter::try_new)
            .collect::<Result<Vec<_>>>()?;
        out.bytes.clear();
        out.offsets.clear();
        out.offsets.reserve(batch.num_rows() + 1);
        out.offsets.push(0);
        for row in 0..batch.num_rows() {
            for writer in &writers {
                writer.write(row, &mut out.bytes);
            }
            out.offsets.push(out.bytes.len());
        }
        Ok(())
    }

    /// `col=value, ...` for row `row`, for messages.
    pub fn describe(&self, batch: &RecordBatch, row: usize) -> String {
        let schema = batch.schema();
        let options = FormatOptions::default().with_null("NULL");
        self.columns
            .iter()
            .map(|&c| {
                let column = batch.column(c);
                let value = ArrayFormatter::try_new(column.as_ref(), &options)
                    .map(|f| f.value(row).to_string())
                    .unwrap_or_default();
                // Quote text so commas and newlines inside values stay readable.
                let value = match column.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                        if column.is_valid(row) =>
                    {
                        format!("{value:?}")
                    }
                    _ => value,
                };
                format!("{}={}", schema.field(c).name(), value)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A key's 128-bit fingerprint.
pub type Fingerprint = u128;

/// Fingerprints encoded keys: two 64-bit aHash values under keys derived
/// from a seed chosen once per import, shared by everything that compares
/// keys of that import.
#[derive(Clone)]
pub struct KeyHasher {
    seed: u64,
    high: ahash::RandomState,
    low: ahash::RandomState,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHasher")
            .field("seed", &self.seed)
            .finish()
    }
}

impl PartialEq for KeyHasher {
    fn eq(&self, other: &Self) -> bool {
        self.seed == other.seed
    }
}

impl Eq for KeyHasher {}

impl std::hash::Hash for KeyHasher {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.seed.hash(state);
    }
}

/// The next value of a SplitMix64 sequence (to spread one seed into keys).
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl KeyHasher {
    /// A hasher with this seed.
    pub fn with_seed(seed: u64) -> Self {
        let mut state = seed;
        let mut keys = [0u64; 8];
        keys.iter_mut().for_each(|k| *k = split_mix(&mut state));
        Self {
            seed,
            high: ahash::RandomState::with_seeds(keys[0], keys[1], keys[2], keys[3]),
            low: ahash::RandomState::with_seeds(keys[4], keys[5], keys[6], keys[7]),
        }
    }

    /// A hasher with a seed no one can predict.
    pub fn random() -> Self {
        use std::hash::BuildHasher;
        let seed =
            std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
        Self::with_seed(seed)
    }

    /// The seed (a plan setting: both sides of a comparison need it).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The fingerprint of one encoded key.
    #[inline]
    pub fn fingerprint(&self, key: &[u8]) -> Fingerprint {
        (u128::from(self.high.hash_one(key)) << 64) | u128::from(self.low.hash_one(key))
    }

    /// The low half of `key`'s fingerprint alone: what a
    /// [`ShortFingerprints`] set holds, at one hash instead of two.
    #[inline]
    pub fn short_fingerprint(&self, key: &[u8]) -> u64 {
        self.low.hash_one(key)
    }

    /// The fingerprints of every key of `keys`, into `out` (cleared first).
    pub fn fingerprints(&self, keys: &EncodedKeys, out: &mut Vec<Fingerprint>) {
        out.clear();
        out.extend((0..keys.len()).map(|i| self.fingerprint(keys.key(i))));
    }
}

/// The set of the keys of batches, built batch by batch: each batch's keys
/// encoded by `encoder`, fingerprinted by `hasher`, and added (with a value
/// per row where `V` is not `()`: an existing row's location).
pub struct KeyFingerprints<V: Copy = ()> {
    encoder: KeyEncoder,
    hasher: KeyHasher,
    keys: EncodedKeys,
    fingerprints: Vec<Fingerprint>,
    set: Fingerprints<V>,
}

impl<V: Copy> KeyFingerprints<V> {
    /// An empty set of the keys `encoder` reads, fingerprinted by `hasher`.
    pub fn new(encoder: KeyEncoder, hasher: KeyHasher) -> Self {
        Self {
            encoder,
            hasher,
            keys: EncodedKeys::default(),
            fingerprints: Vec::new(),
            set: Fingerprints::new(),
        }
    }

    /// Sized for `capacity` keys up front (an estimate).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.set = Fingerprints::with_capacity(capacity);
        self
    }

    /// Adds the keys of `batch`, row `i`'s with `value(i)`; a key seen
    /// before takes `repeated(earlier value, this one)`.
    pub fn add_with(
        &mut self,
        batch: &RecordBatch,
        value: impl Fn(usize) -> V,
        repeated: impl Fn(V, V) -> V,
    ) -> Result<()> {
        self.encoder.encode(batch, &mut self.keys)?;
        self.hasher.fingerprints(&self.keys, &mut self.fingerprints);
        for (i, &fingerprint) in self.fingerprints.iter().enumerate() {
            let value = value(i);
            if let Some(earlier) = self.set.insert(fingerprint, value) {
                self.set.replace(fingerprint, repeated(earlier, value));
            }
        }
        Ok(())
    }

    /// The set so far.
    pub fn set(&self) -> &Fingerprints<V> {
        &self.set
    }

    /// The set, its spare capacity released.
    pub fn finish(mut self) -> Fingerprints<V> {
        self.set.shrink_to_fit();
        self.set
    }
}

impl KeyFingerprints {
    /// Adds the keys of `batch`.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        self.add_with(batch, |_| (), |_, _| ())
    }
}

/// A set of fingerprints, each with a value (`()` for a plain set, a row
/// number for the keys of the import). Entries are 16 bytes plus the value
/// (a `u128` would align them to 16 and pad a `u64` value to 32).
pub struct Fingerprints<V: Copy> {
    table: HashTable<([u64; 2], V)>,
}

#[inline]
fn halves(fingerprint: Fingerprint) -> [u64; 2] {
    [fingerprint as u64, (fingerprint >> 64) as u64]
}

impl<V: Copy> std::fmt::Debug for Fingerprints<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fingerprints")
            .field("len", &self.len())
            .finish()
    }
}

impl<V: Copy> Default for Fingerprints<V> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
        }
    }
}

/// The table's hash of a fingerprint: its low half, already uniform.
#[inline]
fn low(halves: &[u64; 2]) -> u64 {
    halves[0]
}

impl<V: Copy> Fingerprints<V> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set with room for `capacity` fingerprints (an estimate:
    /// one too large to allocate leaves the set to grow as it fills).
    pub fn with_capacity(capacity: usize) -> Self {
        let mut table = HashTable::new();
        let _ = table.try_reserve(capacity, |(f, _): &([u64; 2], V)| low(f));
        Self { table }
    }

    /// Number of fingerprints.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The value of `fingerprint`, if present.
    #[inline]
    pub fn get(&self, fingerprint: Fingerprint) -> Option<V> {
        let key = halves(fingerprint);
        self.table
            .find(low(&key), |(f, _)| *f == key)
            .map(|&(_, v)| v)
    }

    /// Whether `fingerprint` is present.
    #[inline]
    pub fn contains(&self, fingerprint: Fingerprint) -> bool {
        self.get(fingerprint).is_some()
    }

    /// Inserts `fingerprint` with `value` unless present; returns the value
    /// already there when it was.
    #[inline]
    pub fn insert(&mut self, fingerprint: Fingerprint, value: V) -> Option<V> {
        match self.entry(fingerprint) {
            Entry::Occupied(e) => Some(e.get().1),
            Entry::Vacant(e) => {
                e.insert((halves(fingerprint), value));
                None
            }
        }
    }

    /// Sets the value of `fingerprint` to `value`, inserting it where
    /// absent; returns the value it replaced.
    #[inline]
    pub fn replace(&mut self, fingerprint: Fingerprint, value: V) -> Option<V> {
        match self.entry(fingerprint) {
            Entry::Occupied(mut e) => Some(std::mem::replace(&mut e.get_mut().1, value)),
            Entry::Vacant(e) => {
                e.insert((halves(fingerprint), value));
                None
            }
        }
    }

    #[inline]
    fn entry(&mut self, fingerprint: Fingerprint) -> Entry<'_, ([u64; 2], V)> {
        let key = halves(fingerprint);
        self.table
            .entry(low(&key), |(f, _)| *f == key, |(f, _)| low(f))
    }

    /// Bytes held, for memory accounting.
    pub fn memory_size(&self) -> usize {
        self.table.allocation_size()
    }

    /// Every fingerprint with its value, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (Fingerprint, V)> + '_ {
        self.table
            .iter()
            .map(|(f, v)| ((u128::from(f[1]) << 64) | u128::from(f[0]), *v))
    }

    /// Releases spare capacity once the set is complete.
    pub fn shrink_to_fit(&mut self) {
        self.table.shrink_to_fit(|(f, _)| low(f));
    }
}

/// The low halves of fingerprints, as a set: 8 bytes an entry where a
/// [`Fingerprints`] set takes 16, for a filter whose hits are confirmed
/// afterwards (the narrowing values of a key column: a false hit, one in
/// 2^64 / n, costs a key the probe reads for nothing, never a verdict).
#[derive(Default)]
pub struct ShortFingerprints {
    table: HashTable<u64>,
}

impl std::fmt::Debug for ShortFingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShortFingerprints")
            .field("len", &self.len())
            .finish()
    }
}

impl ShortFingerprints {
    /// An empty set with room for `capacity` fingerprints (an estimate, as
    /// [`Fingerprints::with_capacity`]).
    pub fn with_capacity(capacity: usize) -> Self {
        let mut table = HashTable::new();
        let _ = table.try_reserve(capacity, |&f| f);
        Self { table }
    }

    /// Whether a fingerprint with the low half of `fingerprint` is present.
    #[inline]
    pub fn contains(&self, fingerprint: Fingerprint) -> bool {
        let short = fingerprint as u64;
        self.table.find(short, |&f| f == short).is_some()
    }

    /// Number of fingerprints (distinct low halves).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes held, for memory accounting.
    pub fn memory_size(&self) -> usize {
        self.table.allocation_size()
    }

    /// Adds the low half `short` of a fingerprint
    /// ([`KeyHasher::short_fingerprint`]).
    #[inline]
    pub fn insert(&mut self, short: u64) {
        // The low half is uniform already: it is its own hash.
        if let Entry::Vacant(e) = self.table.entry(short, |&f| f == short, |&f| f) {
            e.insert(short);
        }
    }

    /// Adds every key of `keys`, fingerprinted by `hasher`.
    pub fn add_keys(&mut self, hasher: &KeyHasher, keys: &EncodedKeys) {
        for i in 0..keys.len() {
            self.insert(hasher.short_fingerprint(keys.key(i)));
        }
    }

    /// Releases spare capacity once the set is complete.
    pub fn shrink_to_fit(&mut self) {
        self.table.shrink_to_fit(|&f| f);
    }
}

impl FromIterator<Fingerprint> for ShortFingerprints {
    fn from_iter<I: IntoIterator<Item = Fingerprint>>(fingerprints: I) -> Self {
        let fingerprints = fingerprints.into_iter();
        let mut set = Self {
            table: HashTable::with_capacity(fingerprints.size_hint().0),
        };
        for fingerprint in fingerprints {
            set.insert(fingerprint as u64);
        }
        set
    }
}

/// Bytes per arena block; a larger key gets a block of its own.
const BLOCK_BYTES: usize = 1 << 20;

/// A set of encoded keys, optionally each with a `u64` payload (the source row
/// of its first occurrence, for keys of the import).
///
/// Keys live in an arena of fixed-size blocks (so growing never copies or
/// doubles the arena); each entry is a varint length, the key bytes and the
/// payload. The hash table holds only the entry's position (`block << 32 |
/// offset`); a lookup compares the candidate's bytes, so hits are exact.
pub struct KeySet {
    hasher: ahash::RandomState,
    table: HashTable<u64>,
    blocks: Vec<Vec<u8>>,
    payloads: bool,
    len: usize,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("len", &self.len())
            .field("memory_size", &self.memory_size())
            .finish()
    }
}

impl Default for KeySet {
    fn default() -> Self {
        Self::new()
    }
}

/// The key and the bytes after it (the payload) of the entry at `pos`.
#[inline]
fn entry(blocks: &[Vec<u8>], pos: u64) -> (&[u8], &[u8]) {
    let block = &blocks[(pos >> 32) as usize];
    let mut offset = (pos & 0xffff_ffff) as usize;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let byte = block[offset];
        offset += 1;
        len |= ((byte & 0x7f) as usize) << shift;
        if byte < 0x80 {
            break;
        }
        shift += 7;
    }
    (&block[offset..offset + len], &block[offset + len..])
}

impl KeySet {
    /// An empty set without payloads (existing keys).
    pub fn new() -> Self {
        Self {
            // Fixed seeds keep runs reproducible; fingerprints never leave the set.
            hasher: ahash::RandomState::with_seeds(
                0x243f_6a88_85a3_08d3,
                0x1319_8a2e_0370_7344,
                0xa409_3822_299f_31d0,
                0x082e_fa98_ec4e_6c89,
            ),
            table: HashTable::new(),
            blocks: Vec::new(),
            payloads: false,
            len: 0,
        }
    }

    /// An empty set that keeps a payload per key.
    pub fn with_payloads() -> Self {
        Self {
            payloads: true,
            ..Self::new()
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn payload_of(&self, rest: &[u8]) -> u64 {
        if self.payloads {
            u64::from_le_bytes(rest[..8].try_into().expect("payload is 8 bytes"))
        } else {
            0
        }
    }

    /// The payload of `key` (0 in a set without payloads) if present.
    pub fn get(&self, key: &[u8]) -> Option<u64> {
        let hash = self.hasher.hash_one(key);
        let blocks = &self.blocks;
        self.table
            .find(hash, |&pos| entry(blocks, pos).0 == key)
            .map(|&pos| self.payload_of(entry(blocks, pos).1))
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Inserts `key` with `payload` unless present; returns the payload already
    /// stored (0 in a set without payloads) when it was.
    pub fn insert(&mut self, key: &[u8], payload: u64) -> Option<u64> {
        let hash = self.hasher.hash_one(key);
        if let Some(&pos) = self
            .table
            .find(hash, |&pos| entry(&self.blocks, pos).0 == key)
        {
            return Some(self.payload_of(entry(&self.blocks, pos).1));
        }
        let pos = self.append(key, payload);
        let Self {
            table,
            blocks,
            hasher,
            ..
        } = self;
        table.insert_unique(hash, pos, |&p| hasher.hash_one(entry(blocks, p).0));
        self.len += 1;
        None
    }

    fn append(&mut self, key: &[u8], payload: u64) -> u64 {
        let needed = 10 + key.len() + 8;
        let fits = self
            .blocks
            .last()
            .is_some_and(|b| b.capacity() - b.len() >= needed);
        if !fits {
            self.blocks
                .push(Vec::with_capacity(BLOCK_BYTES.max(needed)));
        }
        let index = self.blocks.len() - 1;
        let block = &mut self.blocks[index];
        let pos = ((index as u64) << 32) | block.len() as u64;
        put_bytes(block, key);
        if self.payloads {
            block.extend_from_slice(&payload.to_le_bytes());
        }
        pos
    }

    /// Bytes held, for memory accounting.
    pub fn memory_size(&self) -> usize {
        self.table.allocation_size() + self.blocks.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Releases spare capacity once the set is complete.
    pub fn shrink_to_fit(&mut self) {
        if let Some(last) = self.blocks.last_mut() {
            last.shrink_to_fit();
        }
        let Self {
            table,
            blocks,
            hasher,
            ..
        } = self;
        table.shrink_to_fit(|&p| hasher.hash_one(entry(blocks, p).0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(1),
                    None,
                    None,
                    Some(1),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    Some("x"),
                    None,
                    None,
                    Some("xy"),
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn equal_rows_give_equal_keys_and_nulls_are_equal() {
        let enc = KeyEncoder::new(vec![0, 1]);
        let mut keys = EncodedKeys::default();
        enc.encode(&batch(), &mut keys).unwrap();
        assert_eq!(keys.key(0), keys.key(1));
        assert_eq!(keys.key(2), keys.key(3));
        assert_ne!(keys.key(0), keys.key(4));
        assert_eq!(enc.describe(&batch(), 2), "a=NULL, b=NULL");
        assert_eq!(enc.describe(&batch(), 0), "a=1, b=\"x\"");

        let mut set = KeySet::with_payloads();
        assert_eq!(set.insert(keys.key(0), 10), None);
        assert_eq!(set.insert(keys.key(1), 11), Some(10));
        assert_eq!(set.insert(keys.key(2), 12), None);
        assert_eq!(set.insert(keys.key(3), 13), Some(12));
        assert!(!set.contains(keys.key(4)));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn fingerprints_follow_keys() {
        let enc = KeyEncoder::new(vec![0, 1]);
        let mut keys = EncodedKeys::default();
        enc.encode(&batch(), &mut keys).unwrap();
        let hasher = KeyHasher::with_seed(7);
        let mut fps = Vec::new();
        hasher.fingerprints(&keys, &mut fps);
        assert_eq!(fps[0], fps[1]);
        assert_eq!(fps[2], fps[3]);
        assert_ne!(fps[0], fps[4]);
        assert_ne!(KeyHasher::with_seed(8).fingerprint(keys.key(0)), fps[0]);
        let mut set: Fingerprints<u64> = Fingerprints::new();
        for (row, fp) in fps.iter().enumerate() {
            set.insert(*fp, row as u64);
        }
        assert_eq!(set.len(), 3);
        assert_eq!(set.get(fps[1]), Some(0));
        assert_eq!(set.insert(fps[3], 9), Some(2));
        assert_eq!(set.get(fps[3]), Some(2), "insert keeps the first value");
        assert_eq!(set.replace(fps[3], 9), Some(2));
        assert_eq!(set.replace(fps[3], 10), Some(9));
        assert_eq!(set.get(fps[2]), Some(10));
        assert_eq!(set.replace(hasher.fingerprint(b"new"), 1), None);
        let mut plain: Fingerprints<()> = Fingerprints::new();
        for i in 0..100_000u64 {
            assert!(
                plain
                    .insert(hasher.fingerprint(&i.to_le_bytes()), ())
                    .is_none()
            );
        }
        assert!(plain.contains(hasher.fingerprint(&5u64.to_le_bytes())));
        assert!(plain.memory_size() < 100_000 * 40);
    }

    #[test]
    fn short_fingerprints_hold_the_low_halves_in_half_the_memory() {
        let hasher = KeyHasher::with_seed(7);
        let fingerprint = |i: u64| hasher.fingerprint(&i.to_le_bytes());
        let full: Fingerprints<()> = {
            let mut set = Fingerprints::new();
            for i in 0..100_000u64 {
                set.insert(fingerprint(i), ());
            }
            set
        };
        let short: ShortFingerprints = full.iter().map(|(f, _)| f).collect();
        assert_eq!(short.len(), 100_000);
        assert!((0..100_000u64).all(|i| short.contains(fingerprint(i))));
        assert!(!(100_000..200_000u64).any(|i| short.contains(fingerprint(i))));
        // Only the low half counts: the same low half is one entry.
        let twins: ShortFingerprints = [5u128, (1u128 << 64) | 5].into_iter().collect();
        assert_eq!(twins.len(), 1);
        assert!(twins.contains((7u128 << 64) | 5));
        assert!(short.memory_size() * 3 < full.memory_size() * 2);
        // Built from the keys directly, at one hash a key: the same set.
        let enc = KeyEncoder::new(vec![0]);
        let mut keys = EncodedKeys::default();
        enc.encode(&batch(), &mut keys).unwrap();
        let mut direct = ShortFingerprints::default();
        direct.add_keys(&hasher, &keys);
        direct.shrink_to_fit();
        assert_eq!(direct.len(), 2, "the first column holds 1 and NULL");
        assert!((0..keys.len()).all(|i| direct.contains(hasher.fingerprint(keys.key(i)))));
        assert!(!direct.contains(hasher.fingerprint(b"absent")));
    }

    #[test]
    fn sets_sized_up_front_hold_their_estimate_without_growing() {
        let hasher = KeyHasher::with_seed(3);
        let mut located = Fingerprints::<u64>::with_capacity(10_000);
        let mut short = ShortFingerprints::with_capacity(10_000);
        let (located_bytes, short_bytes) = (located.memory_size(), short.memory_size());
        assert!(located_bytes >= 10_000 * 24 && short_bytes >= 10_000 * 8);
        for i in 0..10_000u64 {
            let fingerprint = hasher.fingerprint(&i.to_le_bytes());
            assert_eq!(located.insert(fingerprint, i), None);
            short.insert(fingerprint as u64);
        }
        assert_eq!((located.len(), short.len()), (10_000, 10_000));
        assert_eq!(located.memory_size(), located_bytes, "no growth");
        assert_eq!(short.memory_size(), short_bytes, "no growth");
        assert_eq!(
            located.get(hasher.fingerprint(&7u64.to_le_bytes())),
            Some(7)
        );
        // An estimate beyond what can be allocated leaves an empty set that
        // grows as it fills.
        let mut unbounded = Fingerprints::<u64>::with_capacity(usize::MAX);
        assert_eq!(unbounded.memory_size(), 0);
        assert_eq!(unbounded.insert(1, 1), None);
        assert_eq!(
            ShortFingerprints::with_capacity(usize::MAX).memory_size(),
            0
        );
    }

    #[test]
    fn many_keys_round_trip() {
        let mut set = KeySet::with_payloads();
        for i in 0..200_000u64 {
            // Keys of varied length, some longer than an arena block.
            let key = if i % 50_000 == 7 {
                vec![i as u8; BLOCK_BYTES + 3]
            } else {
                format!("key-{i}-{}", "x".repeat((i % 300) as usize)).into_bytes()
            };
            assert_eq!(set.insert(&key, i), None, "{i}");
        }
        assert_eq!(set.len(), 200_000);
        for i in (0..200_000u64).step_by(7) {
            let key = if i % 50_000 == 7 {
                vec![i as u8; BLOCK_BYTES + 3]
            } else {
                format!("key-{i}-{}", "x".repeat((i % 300) as usize)).into_bytes()
            };
            assert_eq!(set.get(&key), Some(i));
            assert_eq!(set.insert(&key, 0), Some(i));
        }
        assert!(!set.contains(b"key-200000-"));
        let mut plain = KeySet::new();
        assert_eq!(plain.insert(b"a", 5), None);
        assert_eq!(plain.insert(b"a", 6), Some(0));
        plain.shrink_to_fit();
        assert!(plain.contains(b"a"));
    }
}
