//! Snapshot reads: `get`, `ids`, `search` over the memtables and
//! segments of one `Version`, and the statistics views.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Collection;
use crate::error::{Result, StorageError};
use crate::filter::Filter;
use crate::memtable::{MemEntry, Memtable};
use crate::segment::SegmentReader;
use crate::types::{
    CollectionStats, Hit, MAX_K, Point, RecallReport, Rescore, SearchRequest, SearchTimings,
    SegmentRecall, report_f32,
};

/// A live row found by a listing walk.
enum LiveRow<'a> {
    Mem(&'a Memtable, u32),
    Seg(&'a SegmentReader, u32),
}

/// Where a search candidate came from.
#[derive(Clone, Copy)]
enum Source {
    Mem(usize),
    Seg(usize),
}

impl Collection {
    /// The newest version of `id` (exact stored vector, image bytes included).
    pub fn get(&self, id: &str) -> Option<Point> {
        self.inner.check_open().ok()?;
        let active = self.inner.active.read();
        let v = self.inner.version.load();
        for m in std::iter::once(&*active).chain(v.frozen.iter().map(|m| &**m)) {
            match m.entry(id) {
                Some(MemEntry::Put { row }) => return Some(m.point(row)),
                Some(MemEntry::Deleted) => return None,
                None => {}
            }
        }
        drop(active);
        v.segments
            .iter()
            .find_map(|s| s.live_row(id).map(|row| s.reader.point(row)))
    }

    /// Every live id, sorted. Memtables are consulted newest first so that a delete or
    /// re-insert there hides the older state in segments; O(points) time and memory, meant
    /// for reconciliation jobs, not for the query path.
    pub fn ids(&self) -> Vec<String> {
        if self.inner.check_open().is_err() {
            return Vec::new();
        }
        // One consistent view: the active memtable's lock is held while the version is read,
        // as in `get`, so a flush cannot move rows between the two halves of the walk.
        let active = self.inner.active.read();
        let v = self.inner.version.load();
        let mut decided: HashMap<&str, bool> = HashMap::new();
        for m in std::iter::once(&*active).chain(v.frozen.iter().map(|m| &**m)) {
            for (id, live) in m.id_states() {
                decided.entry(id).or_insert(live);
            }
        }
        let mut out: Vec<String> = decided
            .iter()
            .filter(|(_, live)| **live)
            .map(|(id, _)| id.to_string())
            .collect();
        for s in &v.segments {
            if s.reader.is_quarantined() {
                continue;
            }
            for (id, row) in s.reader.sorted_ids() {
                if !s.tombstones.contains(row) && !decided.contains_key(id) {
                    out.push(id.to_string());
                }
            }
        }
        drop(active);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Live points matching `filter`, skipping the first `offset` matches and returning at most
    /// `limit`, for listing pages (ChromaDB's `get` without ids). The order is stable while
    /// nothing is written: segments in the version's order, each by row, then the memtables
    /// oldest first. O(rows walked); the active memtable stays read-locked meanwhile, as in
    /// [`ids`](Self::ids), so the walk sees one consistent state.
    pub fn scan(&self, filter: Option<&Filter>, offset: usize, limit: usize) -> Vec<Point> {
        self.walk_live(filter, offset, limit, |row| match row {
            LiveRow::Mem(m, r) => m.point(r),
            LiveRow::Seg(s, r) => s.point(r),
        })
    }

    /// The ids [`scan`](Self::scan) would return, without copying vectors or metadata (a
    /// delete by filter).
    pub fn scan_ids(&self, filter: Option<&Filter>, offset: usize, limit: usize) -> Vec<String> {
        self.walk_live(filter, offset, limit, |row| match row {
            LiveRow::Mem(m, r) => m.row(r).id.clone(),
            LiveRow::Seg(s, r) => s.id_at(r).to_string(),
        })
    }

    fn walk_live<T>(
        &self,
        filter: Option<&Filter>,
        offset: usize,
        limit: usize,
        mut take: impl FnMut(LiveRow<'_>) -> T,
    ) -> Vec<T> {
        let mut out = Vec::new();
        if limit == 0 || self.inner.check_open().is_err() {
            return out;
        }
        let mut skip = offset;
        // Counts a match against the offset; true when it is to be returned.
        let mut keep = || {
            if skip > 0 {
                skip -= 1;
                false
            } else {
                true
            }
        };
        let active = self.inner.active.read();
        let v = self.inner.version.load_full();
        // Newest first, as in `search`.
        let mems: Vec<&Memtable> = std::iter::once(&*active)
            .chain(v.frozen.iter().map(|m| &**m))
            .collect();
        let any_mem = mems.iter().any(|m| !m.is_empty());
        for seg in &v.segments {
            if seg.reader.is_quarantined() || seg.live_rows() == 0 {
                continue;
            }
            let reader = &*seg.reader;
            for row in 0..reader.rows {
                if seg.tombstones.contains(row)
                    || (any_mem && mems.iter().any(|m| m.contains(reader.id_at(row))))
                    || filter.is_some_and(|f| !f.eval(reader.record(row)))
                    || !keep()
                {
                    continue;
                }
                out.push(take(LiveRow::Seg(reader, row)));
                if out.len() == limit {
                    return out;
                }
            }
        }
        for (i, m) in mems.iter().enumerate().rev() {
            let newer = &mems[..i];
            for row in m.live_rows() {
                let r = m.row(row);
                if newer.iter().any(|n| n.contains(&r.id))
                    || filter.is_some_and(|f| !f.eval(&r.metadata))
                    || !keep()
                {
                    continue;
                }
                out.push(take(LiveRow::Mem(m, row)));
                if out.len() == limit {
                    return out;
                }
            }
        }
        out
    }

    /// The inline image bytes of `id`, if it exists and has some.
    pub fn image_bytes(&self, id: &str) -> Option<Vec<u8>> {
        self.get(id).and_then(|p| p.image_bytes)
    }

    /// Top-`k` points by the collection metric, best first, across the
    /// memtables and every segment, newest version of each id only.
    pub fn search(&self, query: &[f32], req: &SearchRequest) -> Result<Vec<Hit>> {
        self.search_with_stats(query, req).map(|(hits, _)| hits)
    }

    /// [`search`](Self::search), also saying where the time went.
    pub fn search_with_stats(
        &self,
        query: &[f32],
        req: &SearchRequest,
    ) -> Result<(Vec<Hit>, SearchTimings)> {
        let mut timings = SearchTimings::default();
        let inner = &*self.inner;
        inner.check_open()?;
        if query.len() != inner.dim {
            return Err(StorageError::InvalidArgument(format!(
                "query has {} values, the collection has dimension {}",
                query.len(),
                inner.dim
            )));
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(StorageError::InvalidArgument(
                "query contains a non-finite value".into(),
            ));
        }
        super::write::check_norm(query)
            .map_err(|why| StorageError::InvalidArgument(format!("query: {why}")))?;
        if req.k == 0 || req.k > MAX_K {
            return Err(StorageError::InvalidArgument(format!(
                "k must be 1..={MAX_K}, got {}",
                req.k
            )));
        }
        if let Some(t) = req.recall_target
            && !(t.is_finite() && t > 0.0 && t <= 1.0)
        {
            return Err(StorageError::InvalidArgument(format!(
                "recall_target must be in (0, 1], got {t}"
            )));
        }
        let k = req.k;
        let filter = req.filter.as_ref();
        let knobs = crate::ann::AnnKnobs {
            recall_target: req.recall_target,
            nprobe: req.nprobe,
            refine: req.refine,
            rescore: req.rescore,
            tier_margin: inner.opts.tier_margin,
        };
        let active = inner.active.read();
        let v = inner.version.load_full();
        let mems: Vec<&Memtable> = std::iter::once(&*active)
            .chain(v.frozen.iter().map(|m| &**m))
            .collect();
        let mut cands: Vec<(f32, Source, u32)> = Vec::new();
        for (i, m) in mems.iter().enumerate() {
            if m.is_empty() {
                continue;
            }
            let newer = &mems[..i];
            let shadowed = |id: &str| newer.iter().any(|n| n.contains(id));
            let started = Instant::now();
            for n in m.search(inner.metric, query, k, filter, &shadowed) {
                cands.push((n.score, Source::Mem(i), n.row));
            }
            timings.exact_scan += started.elapsed();
            timings.exact_rows += m.rows() as u64;
        }
        let any_mem = mems.iter().any(|m| !m.is_empty());
        for (si, seg) in v.segments.iter().enumerate() {
            // A segment whose rows were all replaced (say by re-loading the same shard) waits
            // for compaction to drop it; there is nothing to find in it meanwhile.
            if seg.reader.is_quarantined() || seg.live_rows() == 0 {
                continue;
            }
            let reader = &*seg.reader;
            let tomb = &*seg.tombstones;
            let pred = |row: u32| {
                !tomb.contains(row)
                    && (!any_mem || {
                        let id = reader.id_at(row);
                        !mems.iter().any(|m| m.contains(id))
                    })
                    && filter.is_none_or(|f| f.eval(reader.record(row)))
            };
            for n in reader.search(inner.metric, query, k, &knobs, &pred, &mut timings) {
                cands.push((n.score, Source::Seg(si), n.row));
            }
        }
        let metric = inner.metric;
        cands.sort_by(|a, b| metric.cmp_best_first(a.0, b.0));
        cands.truncate(k);
        let hits = cands
            .into_iter()
            .map(|(score, src, row)| match src {
                Source::Mem(i) => {
                    let r = mems[i].row(row);
                    Hit {
                        id: r.id.clone(),
                        score,
                        image_path: r.image_path.clone(),
                        metadata: r.metadata.clone(),
                    }
                }
                Source::Seg(si) => {
                    let r = &v.segments[si].reader;
                    Hit {
                        id: r.id_at(row).to_string(),
                        score,
                        image_path: r.image_path(row),
                        metadata: r.metadata(row),
                    }
                }
            })
            .collect();
        Ok((hits, timings))
    }

    /// Detailed statistics (walks segment directories for byte counts).
    pub fn stats(&self) -> CollectionStats {
        let inner = &*self.inner;
        let memtable_rows = inner.active.read().rows();
        let v = inner.version.load_full();
        let (wal_bytes, last_seq) = {
            let w = inner.wal.lock();
            (w.total_bytes(), w.next_seq().saturating_sub(1))
        };
        CollectionStats {
            points: self.len(),
            segments: v.segments.len(),
            indexed_segments: v.segments.iter().filter(|s| s.reader.has_index()).count(),
            unindexed_rows: self.unindexed_rows(),
            segment_bytes: v.segments.iter().map(|s| s.reader.disk_bytes()).sum(),
            segment_rows: v.segments.iter().map(|s| s.reader.rows as u64).sum(),
            deleted_rows: v.segments.iter().map(|s| s.tombstones.count() as u64).sum(),
            wal_bytes,
            memtable_rows,
            frozen_memtables: v.frozen.len(),
            checkpoint_seq: inner.checkpoint.load(Ordering::Acquire),
            last_seq,
            quarantined_segments: v
                .segments
                .iter()
                .filter(|s| s.reader.is_quarantined())
                .count(),
        }
    }

    /// What searches aiming at recall@k `target` (the default when `None`) use in each segment
    /// and the recall each segment's table promises: the collection description's view of
    /// search quality.
    pub fn recall_report(&self, target: Option<f32>, rescore: Rescore) -> RecallReport {
        let target = target.unwrap_or(glimpse_index::DEFAULT_RECALL_TARGET);
        let knobs = crate::ann::AnnKnobs {
            recall_target: Some(target),
            rescore,
            tier_margin: self.inner.opts.tier_margin,
            ..Default::default()
        };
        let v = self.inner.version.load_full();
        let mut expected: Option<f32> = None;
        let mut uncalibrated = 0;
        let segments = v
            .segments
            .iter()
            .map(|s| {
                let rows = s.reader.rows as u64;
                match s.reader.recall_plan(&knobs) {
                    None => SegmentRecall {
                        segment: s.reader.id,
                        rows,
                        indexed: false,
                        calibrated: false,
                        nprobe: None,
                        refine: None,
                        recall_in: None,
                        recall_shifted: None,
                        reached: None,
                        codes_only: false,
                        tier_margin: None,
                    },
                    Some((chosen, point, has_table)) => {
                        let codes = !chosen.rescore && s.reader.has_compact_tier();
                        match chosen.expected_recall {
                            Some(r) => expected = Some(expected.map_or(r, |e| e.min(r))),
                            None => uncalibrated += 1,
                        }
                        SegmentRecall {
                            segment: s.reader.id,
                            rows,
                            indexed: true,
                            calibrated: has_table,
                            nprobe: chosen.nprobe,
                            refine: chosen.refine,
                            // Ranked on codes: the codes-only recalls, none where unmeasured.
                            recall_in: point.filter(|p| !codes || p.codes_measured()).map(|p| {
                                report_f32(if codes {
                                    p.codes_recall_in
                                } else {
                                    p.recall_in
                                })
                            }),
                            recall_shifted: point.filter(|p| !codes || p.codes_measured()).map(
                                |p| {
                                    report_f32(if codes {
                                        p.codes_recall_shifted
                                    } else {
                                        p.recall_shifted
                                    })
                                },
                            ),
                            reached: point.map(|p| if codes { p.codes_reached } else { p.reached }),
                            codes_only: codes,
                            tier_margin: (s.reader.has_compact_tier() && !codes)
                                .then(|| report_f32(chosen.tier_margin)),
                        }
                    }
                }
            })
            .collect();
        RecallReport {
            target: report_f32(target),
            expected_recall: if uncalibrated > 0 {
                None
            } else {
                Some(report_f32(expected.unwrap_or(1.0)))
            },
            uncalibrated_segments: uncalibrated,
            segments,
        }
    }

    /// Rows of segments waiting for a deferred index build (searched exactly
    /// meanwhile); cheap, unlike [`stats`](Self::stats), which walks the
    /// segment directories.
    pub fn unindexed_rows(&self) -> u64 {
        let min = self.inner.opts.index_min_rows;
        self.inner
            .version
            .load()
            .segments
            .iter()
            .filter(|s| s.awaits_index(min))
            .map(|s| s.reader.rows as u64)
            .sum()
    }
}
