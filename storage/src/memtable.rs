//! The in-memory table of recent writes: searchable at once, flushed to an
//! immutable segment when large.

use std::collections::{BTreeMap, HashMap};

use glimpse_index::{Metric, Neighbor, exact_search};

use crate::filter::Filter;
use crate::types::{MetaValue, Point};

/// One stored row of the memtable (its vector lives in `Memtable::vectors`).
pub(crate) struct MemRow {
    pub id: String,
    pub image_path: Option<String>,
    pub image_bytes: Option<Vec<u8>>,
    pub metadata: BTreeMap<String, MetaValue>,
}

/// The newest operation on an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemEntry {
    /// Row `row` holds the newest version.
    Put { row: u32 },
    /// The id was deleted.
    Deleted,
}

/// Rows appended in write order; `entries` points at the newest version
/// of each id, older rows are marked dead.
pub(crate) struct Memtable {
    dim: usize,
    entries: HashMap<String, MemEntry>,
    vectors: Vec<f32>,
    rows: Vec<MemRow>,
    live: Vec<bool>,
    bytes: usize,
    /// Highest WAL sequence number applied (0 if none).
    pub max_seq: u64,
}

impl Memtable {
    pub(crate) fn new(dim: usize) -> Self {
        Self {
            dim,
            entries: HashMap::new(),
            vectors: Vec::new(),
            rows: Vec::new(),
            live: Vec::new(),
            bytes: 0,
            max_seq: 0,
        }
    }

    /// Whether no operation was applied.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Rows stored (live or not).
    pub(crate) fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Distinct ids touched (puts and deletes).
    pub(crate) fn ids_touched(&self) -> usize {
        self.entries.len()
    }

    /// Approximate bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn upsert(&mut self, seq: u64, p: Point) {
        let row = self.rows.len() as u32;
        self.bytes += p.vector.len() * 4
            + p.id.len() * 2
            + p.image_path.as_ref().map_or(0, |s| s.len())
            + p.image_bytes.as_ref().map_or(0, |b| b.len())
            + p.metadata
                .iter()
                .map(|(k, v)| k.len() + meta_size(v) + 32)
                .sum::<usize>()
            + 96;
        self.vectors.extend_from_slice(&p.vector);
        if let Some(MemEntry::Put { row: old }) =
            self.entries.insert(p.id.clone(), MemEntry::Put { row })
        {
            self.live[old as usize] = false;
        }
        self.rows.push(MemRow {
            id: p.id,
            image_path: p.image_path,
            image_bytes: p.image_bytes,
            metadata: p.metadata,
        });
        self.live.push(true);
        self.max_seq = self.max_seq.max(seq);
    }

    pub(crate) fn delete(&mut self, seq: u64, id: &str) {
        self.bytes += id.len() * 2 + 48;
        if let Some(MemEntry::Put { row: old }) =
            self.entries.insert(id.to_string(), MemEntry::Deleted)
        {
            self.live[old as usize] = false;
        }
        self.max_seq = self.max_seq.max(seq);
    }

    /// Records that `seq` was applied even if it changed nothing.
    pub(crate) fn note_seq(&mut self, seq: u64) {
        self.max_seq = self.max_seq.max(seq);
    }

    pub(crate) fn entry(&self, id: &str) -> Option<MemEntry> {
        self.entries.get(id).copied()
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    pub(crate) fn vector(&self, row: u32) -> &[f32] {
        let r = row as usize;
        &self.vectors[r * self.dim..(r + 1) * self.dim]
    }

    pub(crate) fn row(&self, row: u32) -> &MemRow {
        &self.rows[row as usize]
    }

    pub(crate) fn point(&self, row: u32) -> Point {
        let r = self.row(row);
        Point {
            id: r.id.clone(),
            vector: self.vector(row).to_vec(),
            image_path: r.image_path.clone(),
            image_bytes: r.image_bytes.clone(),
            metadata: r.metadata.clone(),
        }
    }

    /// Live rows in write order (what a flush writes).
    pub(crate) fn live_rows(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.rows.len() as u32).filter(|&r| self.live[r as usize])
    }

    pub(crate) fn live_count(&self) -> usize {
        self.live.iter().filter(|&&l| l).count()
    }

    /// Every id touched with its newest state here: `true` when it holds a live version,
    /// `false` when deleted.
    pub(crate) fn id_states(&self) -> impl Iterator<Item = (&str, bool)> {
        self.entries
            .iter()
            .map(|(id, e)| (id.as_str(), matches!(e, MemEntry::Put { .. })))
    }

    /// Every id touched (a flush tombstones them in older segments).
    pub(crate) fn touched_ids(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Exact top-`k` among live rows not hidden by `shadowed` and matching `filter`.
    pub(crate) fn search(
        &self,
        metric: Metric,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
        shadowed: &(dyn Fn(&str) -> bool + Sync),
    ) -> Vec<Neighbor> {
        let pred = |row: u32| {
            let r = row as usize;
            self.live[r]
                && !shadowed(&self.rows[r].id)
                && filter.is_none_or(|f| f.eval(&self.rows[r].metadata))
        };
        exact_search(&self.vectors, self.dim, metric, query, k, Some(&pred))
    }
}

fn meta_size(v: &MetaValue) -> usize {
    match v {
        MetaValue::Str(s) => s.len(),
        _ => 8,
    }
}
