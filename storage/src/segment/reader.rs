//! Opens a segment directory and serves reads from its memory maps.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
use glimpse_index::{Metric, Neighbor, exact_search};
use memmap2::Mmap;

use super::format::{
    ArchivedIdTable, ArchivedRowRecord, ArchivedRowTable, BLOBS_FILE, FileSum, IDS_FILE, IdTable,
    META_FILE, META_MAGIC, META_VERSION, ROWS_FILE, RowTable, SegmentMeta, VECTORS_FILE,
    archived_meta_value,
};
use crate::ann;
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{crc32_file, decode_framed};
use crate::manifest::IndexFileRef;
use crate::mmap_f32::{MappedArchive, MappedF32, map_file};
use crate::types::{MetaValue, Point, VerifyPolicy};

/// A read-only, memory-mapped segment.
pub(crate) struct SegmentReader {
    pub id: u64,
    pub dir: PathBuf,
    pub dim: usize,
    pub rows: u32,
    pub meta: SegmentMeta,
    vectors: MappedF32,
    ids: MappedArchive<ArchivedIdTable>,
    rows_map: MappedArchive<ArchivedRowTable>,
    blobs: Option<Mmap>,
    /// The ANN index: from the footer, or attached later by a deferred
    /// build (swapped in while searches run).
    index: ArcSwapOption<IndexSlot>,
    /// A deferred build found the data unfit for an index (searched exactly for good).
    index_refused: AtomicBool,
    /// Files larger than the open-time threshold, verified later.
    unverified: Vec<FileSum>,
    quarantined: AtomicBool,
}

/// An opened index and, for a deferred one, the manifest's record of its file.
pub(crate) struct IndexSlot {
    pub(crate) index: ann::SegmentIndex,
    file: Option<IndexFileRef>,
}

fn read_meta(dir: &Path) -> Result<SegmentMeta> {
    let path = dir.join(META_FILE);
    let bytes = fs::read(&path).at(&path)?;
    let (_, json) = decode_framed(&path, &bytes, META_MAGIC, META_VERSION)?;
    serde_json::from_slice(json)
        .map_err(|e| StorageError::corrupt(&path, 16, format!("bad footer JSON: {e}")))
}

fn verify_file(dir: &Path, f: &FileSum) -> Result<()> {
    let path = dir.join(&f.name);
    let (len, crc) = crc32_file(&path)?;
    if len != f.len {
        return Err(StorageError::corrupt(
            &path,
            len.min(f.len),
            format!("length {len}, footer says {}", f.len),
        ));
    }
    if crc != f.crc32 {
        return Err(StorageError::corrupt(
            &path,
            0,
            format!("crc32 {crc:08x}, footer says {:08x}", f.crc32),
        ));
    }
    Ok(())
}

/// Opens a deferred index file after checking its length and crc32
/// against the manifest (the whole file: it is a few percent of the vectors).
fn open_deferred(
    dir: &Path,
    f: &IndexFileRef,
    dim: usize,
    metric: Metric,
    rows: u32,
) -> Result<ann::SegmentIndex> {
    verify_file(
        dir,
        &FileSum {
            name: ann::INDEX_FILE.to_string(),
            len: f.len,
            crc32: f.crc32,
        },
    )?;
    ann::SegmentIndex::open(&dir.join(ann::INDEX_FILE), &f.kind, dim, metric, rows)
}

impl SegmentReader {
    /// Opens `dir`, checking the footer, every file's length, the crc of
    /// files up to the policy's size, and the structure of the archives.
    /// `deferred` is the manifest's record of an index built after the
    /// segment; if that file is missing or damaged the segment opens without
    /// it (an index is derived data) and the background thread rebuilds it.
    pub(crate) fn open(
        dir: &Path,
        expect_id: u64,
        dim: usize,
        metric: Metric,
        policy: VerifyPolicy,
        deferred: Option<&IndexFileRef>,
    ) -> Result<Self> {
        let meta = read_meta(dir)?;
        let meta_path = dir.join(META_FILE);
        if meta.segment_id != expect_id || meta.dim != dim || meta.metric != metric.as_str() {
            return Err(StorageError::corrupt(
                &meta_path,
                16,
                format!(
                    "footer describes segment {} (dim {}, {}), expected {expect_id} (dim {dim}, {metric})",
                    meta.segment_id, meta.dim, meta.metric
                ),
            ));
        }
        let rows = u32::try_from(meta.rows)
            .map_err(|_| StorageError::corrupt(&meta_path, 16, "row count out of range"))?;
        let mut unverified = Vec::new();
        for f in &meta.files {
            if ![
                VECTORS_FILE,
                IDS_FILE,
                ROWS_FILE,
                BLOBS_FILE,
                ann::INDEX_FILE,
            ]
            .contains(&f.name.as_str())
            {
                return Err(StorageError::corrupt(
                    &meta_path,
                    16,
                    format!("unknown file {:?} in footer", f.name),
                ));
            }
            let path = dir.join(&f.name);
            let len = fs::metadata(&path).at(&path)?.len();
            if len != f.len {
                return Err(StorageError::corrupt(
                    &path,
                    len.min(f.len),
                    format!("length {len}, footer says {}", f.len),
                ));
            }
            if f.len <= policy.max_bytes_at_open || f.name == IDS_FILE || f.name == ROWS_FILE {
                verify_file(dir, f)?;
            } else {
                unverified.push(f.clone());
            }
        }
        let has = |name: &str| meta.files.iter().any(|f| f.name == name);
        if !has(VECTORS_FILE) || !has(IDS_FILE) || !has(ROWS_FILE) {
            return Err(StorageError::corrupt(
                &meta_path,
                16,
                "footer lacks a required file",
            ));
        }
        let vectors = MappedF32::open(&dir.join(VECTORS_FILE), rows as usize * dim)?;
        let ids_path = dir.join(IDS_FILE);
        let ids = MappedArchive::<ArchivedIdTable>::open(&ids_path, "id table")?;
        let table = ids.get();
        if table.ids.len() != rows as usize
            || table.sorted.len() as u64 != meta.distinct_ids
            || table.sorted.iter().any(|r| r.to_native() >= rows)
        {
            return Err(StorageError::corrupt(
                &ids_path,
                0,
                "id table does not match the footer",
            ));
        }
        let rows_path = dir.join(ROWS_FILE);
        let rows_map = MappedArchive::<ArchivedRowTable>::open(&rows_path, "row table")?;
        let rt = rows_map.get();
        if rt.rows.len() != rows as usize {
            return Err(StorageError::corrupt(
                &rows_path,
                0,
                "row table does not match the footer",
            ));
        }
        let blobs = if has(BLOBS_FILE) {
            map_file(&dir.join(BLOBS_FILE))?
        } else {
            None
        };
        let blob_len = blobs.as_ref().map_or(0, |b| b.len() as u64);
        if rt.rows.iter().any(|r| {
            r.blob.as_ref().is_some_and(|b| {
                b.offset
                    .to_native()
                    .checked_add(b.len.to_native())
                    .is_none_or(|e| e > blob_len)
            })
        }) {
            return Err(StorageError::corrupt(
                &rows_path,
                0,
                "blob reference past the end of blobs.bin",
            ));
        }
        let index = match (&meta.index, deferred) {
            (Some(kind), _) => Some(IndexSlot {
                index: ann::SegmentIndex::open(
                    &dir.join(ann::INDEX_FILE),
                    kind,
                    dim,
                    metric,
                    rows,
                )?,
                file: None,
            }),
            (None, Some(f)) => match open_deferred(dir, f, dim, metric, rows) {
                Ok(index) => Some(IndexSlot {
                    index,
                    file: Some(f.clone()),
                }),
                Err(e) => {
                    tracing::warn!(segment = expect_id, error = %e, "deferred index unusable; searching exactly until it is rebuilt");
                    None
                }
            },
            (None, None) => None,
        };
        if index.as_ref().is_some_and(|s| s.index.has_compact_tier()) {
            vectors.advise_row_reads();
        }
        Ok(Self {
            id: expect_id,
            dir: dir.to_path_buf(),
            dim,
            rows,
            meta,
            vectors,
            ids,
            rows_map,
            blobs,
            index: ArcSwapOption::new(index.map(Arc::new)),
            index_refused: AtomicBool::new(false),
            unverified,
            quarantined: AtomicBool::new(false),
        })
    }

    fn id_table(&self) -> &ArchivedIdTable {
        self.ids.get()
    }

    fn row_table(&self) -> &ArchivedRowTable {
        self.rows_map.get()
    }

    /// Id of `row`.
    pub(crate) fn id_at(&self, row: u32) -> &str {
        self.id_table().ids[row as usize].as_str()
    }

    /// Row of the last version of `id` in this segment, by binary search
    /// over the sorted id table (nothing is loaded into a hash map).
    pub(crate) fn find_row(&self, id: &str) -> Option<u32> {
        let t = self.id_table();
        let i = t
            .sorted
            .binary_search_by(|r| t.ids[r.to_native() as usize].as_str().cmp(id))
            .ok()?;
        Some(t.sorted[i].to_native())
    }

    /// `(id, row)` in id order, one entry per distinct id.
    pub(crate) fn sorted_ids(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        let t = self.id_table();
        t.sorted.iter().map(move |r| {
            let r = r.to_native();
            (t.ids[r as usize].as_str(), r)
        })
    }

    pub(crate) fn record(&self, row: u32) -> &ArchivedRowRecord {
        &self.row_table().rows[row as usize]
    }

    pub(crate) fn vector(&self, row: u32) -> &[f32] {
        self.vectors.row(row as usize, self.dim).unwrap_or(&[])
    }

    /// All vectors, row-major.
    pub(crate) fn vectors(&self) -> &[f32] {
        self.vectors.as_slice()
    }

    pub(crate) fn image_bytes(&self, row: u32) -> Option<&[u8]> {
        let b = self.record(row).blob.as_ref()?;
        let start = b.offset.to_native() as usize;
        let end = start + b.len.to_native() as usize;
        self.blobs.as_ref().and_then(|m| m.get(start..end))
    }

    pub(crate) fn image_path(&self, row: u32) -> Option<String> {
        self.record(row)
            .image_path
            .as_ref()
            .map(|s| s.as_str().to_string())
    }

    pub(crate) fn metadata(&self, row: u32) -> BTreeMap<String, MetaValue> {
        self.record(row)
            .metadata
            .iter()
            .map(|e| (e.key.as_str().to_string(), archived_meta_value(&e.value)))
            .collect()
    }

    pub(crate) fn metadata_entries(&self, row: u32) -> Vec<super::MetaEntry> {
        self.record(row)
            .metadata
            .iter()
            .map(|e| super::MetaEntry {
                key: e.key.as_str().to_string(),
                value: archived_meta_value(&e.value),
            })
            .collect()
    }

    pub(crate) fn point(&self, row: u32) -> Point {
        Point {
            id: self.id_at(row).to_string(),
            vector: self.vector(row).to_vec(),
            image_path: self.image_path(row),
            image_bytes: self.image_bytes(row).map(<[u8]>::to_vec),
            metadata: self.metadata(row),
        }
    }

    pub(crate) fn has_index(&self) -> bool {
        self.index.load().is_some()
    }

    /// What a search with `knobs` would use on this segment's index, the recall table's point
    /// behind it (none for an exact scan) and whether the index has a table; `None` without an
    /// index (the segment is scanned exactly).
    pub(crate) fn recall_plan(
        &self,
        knobs: &ann::AnnKnobs,
    ) -> Option<(ann::Chosen, Option<glimpse_index::CalibrationPoint>, bool)> {
        let slot = self.index.load_full()?;
        let table = slot.index.calibration();
        let (chosen, point) = slot
            .index
            .choose_with_point(knobs, table.map_or(10, |c| c.k as usize));
        Some((chosen, point, table.is_some()))
    }

    /// Whether the segment's index can rank on a compact tier.
    pub(crate) fn has_compact_tier(&self) -> bool {
        self.index
            .load()
            .as_ref()
            .is_some_and(|slot| slot.index.has_compact_tier())
    }

    /// Whether a deferred index build should run for this segment.
    pub(crate) fn awaits_index(&self, index_min_rows: usize) -> bool {
        self.rows as usize >= index_min_rows.max(1)
            && !self.has_index()
            && !self.index_refused.load(Ordering::Acquire)
            && !self.is_quarantined()
    }

    /// Records that the data cannot be indexed (too little to train on).
    pub(crate) fn refuse_index(&self) {
        self.index_refused.store(true, Ordering::Release);
    }

    /// Serves `index` (whose file `file` describes) from now on.
    pub(crate) fn attach_index(&self, index: ann::SegmentIndex, file: IndexFileRef) {
        // With a compact tier the raw rows are read a few at a time and need not stay in
        // memory: map them for that (see `MappedF32::advise_row_reads`).
        if index.has_compact_tier() {
            self.vectors.advise_row_reads();
        }
        self.index.store(Some(Arc::new(IndexSlot {
            index,
            file: Some(file),
        })));
    }

    /// The index now served, if any (kept alive by the caller even if the
    /// segment is compacted away meanwhile).
    pub(crate) fn index_slot(&self) -> Option<Arc<IndexSlot>> {
        self.index.load_full()
    }

    /// The deferred index file, for the manifest.
    pub(crate) fn deferred_index(&self) -> Option<IndexFileRef> {
        self.index.load().as_ref().and_then(|s| s.file.clone())
    }

    /// Top-`k` rows passing `filter`: through the ANN index when the
    /// segment has one, else exactly.
    pub(crate) fn search(
        &self,
        metric: Metric,
        query: &[f32],
        k: usize,
        knobs: &ann::AnnKnobs,
        filter: &(dyn Fn(u32) -> bool + Sync),
        timings: &mut crate::types::SearchTimings,
    ) -> Vec<Neighbor> {
        let index = self.index.load();
        // `recall_target` 1 scans exactly, as a segment without an index is.
        let indexed = (*index)
            .as_ref()
            .map(|slot| (slot, slot.index.choose(knobs, k)))
            .filter(|(_, chosen)| !ann::SegmentIndex::is_exact(chosen));
        match indexed {
            Some((slot, chosen)) => {
                let mut stats = glimpse_index::SearchStats::default();
                let out = slot
                    .index
                    .search(query, self.vectors(), k, &chosen, filter, &mut stats);
                timings.note_segment_recall(chosen.expected_recall);
                timings.ann_scan += stats.scan;
                timings.rerank += stats.rerank;
                timings.reranked += stats.reranked;
                timings.compact_scored += stats.compact_scored;
                timings.indexed_segments += 1;
                out
            }
            None => {
                let started = std::time::Instant::now();
                let out = exact_search(self.vectors(), self.dim, metric, query, k, Some(filter));
                timings.exact_scan += started.elapsed();
                timings.exact_rows += self.rows as u64;
                out
            }
        }
    }

    /// Bytes of all files in the directory.
    pub(crate) fn disk_bytes(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Whether large files still await their checksum verification.
    pub(crate) fn needs_verification(&self) -> bool {
        !self.unverified.is_empty()
    }

    /// crc-checks the files not checked at open (or all with `all`).
    pub(crate) fn verify(&self, all: bool) -> Result<()> {
        let files: &[FileSum] = if all {
            &self.meta.files
        } else {
            &self.unverified
        };
        for f in files {
            if let Err(e) = verify_file(&self.dir, f) {
                self.quarantined.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether a failed verification took this segment out of service.
    pub(crate) fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Acquire)
    }
}

/// What [`dump_segment`] reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentDump {
    /// The footer.
    pub meta: SegmentMeta,
    /// Tombstone generation files present.
    pub tombstone_files: Vec<String>,
    /// The first rows (id, image path, metadata), for eyeballing.
    pub sample: Vec<(String, Option<String>, BTreeMap<String, MetaValue>)>,
    /// Whether every file matched its checksum.
    pub checksums_ok: bool,
}

/// Opens the segment directory `dir` read-only, verifies every file and
/// lists its footer and first `sample_rows` rows.
pub fn dump_segment(dir: &Path, sample_rows: usize) -> Result<SegmentDump> {
    let meta = read_meta(dir)?;
    let metric = Metric::parse(&meta.metric)
        .ok_or_else(|| StorageError::corrupt(dir.join(META_FILE), 16, "unknown metric"))?;
    let checksums_ok = meta.files.iter().all(|f| verify_file(dir, f).is_ok());
    let reader = SegmentReader::open(
        dir,
        meta.segment_id,
        meta.dim,
        metric,
        VerifyPolicy::default(),
        None,
    )?;
    let mut tombstone_files: Vec<String> = fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("del-"))
        .collect();
    tombstone_files.sort();
    let sample = (0..reader.rows.min(sample_rows as u32))
        .map(|r| {
            (
                reader.id_at(r).to_string(),
                reader.image_path(r),
                reader.metadata(r),
            )
        })
        .collect();
    Ok(SegmentDump {
        meta,
        tombstone_files,
        sample,
        checksums_ok,
    })
}

// Keep the unarchived types referenced so their archived twins stay in sync.
#[allow(dead_code)]
fn _types(_: IdTable, _: RowTable) {}
