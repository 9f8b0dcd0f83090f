//! Streams rows into a new segment directory.
//!
//! Vectors and blobs go to their files as rows arrive (a bulk load of
//! millions of rows never holds the vectors in memory); ids and row records
//! are kept in memory until `finish` archives them. Everything is written
//! under `tmp-seg-<id>/`, fsynced, and renamed to `seg-<id>/` at the end;
//! a writer dropped before `finish` removes its temp directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use glimpse_index::{Cancel, Metric};

use super::format::{
    BLOBS_FILE, BlobRef, FileSum, IDS_FILE, IdTable, META_FILE, META_MAGIC, META_VERSION,
    ROWS_FILE, RowRecord, RowTable, SegmentMeta, VECTORS_FILE,
};
use super::{dir_name, tmp_dir_name};
use crate::ann;
use crate::chunk_writer::ChunkWriter;
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{encode_framed, fsync_dir, write_file_synced};
use crate::mmap_f32::{MappedF32, f32_bytes};

/// A file being appended, with its running crc32.
struct SummedFile {
    path: PathBuf,
    /// Whole 2 MiB writes, so the page cache can hold the file as huge folios.
    out: ChunkWriter<File>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl SummedFile {
    fn create(path: PathBuf) -> Result<Self> {
        let f = File::create(&path).at(&path)?;
        Ok(Self {
            path,
            out: ChunkWriter::new(f),
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).at(&self.path)?;
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn finish(self, name: &str) -> Result<FileSum> {
        let f = self.out.finish().at(&self.path)?;
        f.sync_all().at(&self.path)?;
        Ok(FileSum {
            name: name.to_string(),
            len: self.len,
            crc32: self.crc.finalize(),
        })
    }
}

/// A finished segment, complete and fsynced in its temp directory until [`publish`] renames it
/// to its final name (not yet committed to the manifest either way).
///
/// [`publish`]: FinishedSegment::publish
pub(crate) struct FinishedSegment {
    /// Where the segment is now: the temp directory, then its final one.
    pub dir: PathBuf,
    /// The final directory, `seg-<id>` beside the temp one.
    dest: PathBuf,
    published: bool,
    /// Rows superseded by a later row with the same id in this segment.
    pub dead_rows: Vec<u32>,
}

impl FinishedSegment {
    /// Renames the segment to its final directory. Callers hold the maintenance lock of an open
    /// collection, so a collection dropped meanwhile (whose name a new one may already use)
    /// never receives it. An existing directory of that name is never replaced: it belongs to
    /// someone else.
    pub(crate) fn publish(&mut self) -> Result<()> {
        if self.published {
            return Ok(());
        }
        if self.dest.exists() {
            return Err(StorageError::InvalidArgument(format!(
                "segment directory {} exists already",
                self.dest.display()
            )));
        }
        fs::rename(&self.dir, &self.dest).at(&self.dest)?;
        if let Some(parent) = self.dest.parent() {
            fsync_dir(parent)?;
        }
        self.dir = self.dest.clone();
        self.published = true;
        Ok(())
    }
}

impl Drop for FinishedSegment {
    fn drop(&mut self) {
        // Never published: nothing refers to the temp directory.
        if !self.published
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(path = %self.dir.display(), error = %e, "could not remove an unpublished segment");
        }
    }
}

/// Builds one segment.
pub(crate) struct SegmentWriter {
    parent: PathBuf,
    tmp: PathBuf,
    id: u64,
    dim: usize,
    metric: Metric,
    vectors: Option<SummedFile>,
    blobs: Option<SummedFile>,
    ids: Vec<String>,
    rows: Vec<RowRecord>,
    finished: bool,
}

impl SegmentWriter {
    /// Starts segment `id` under the collection directory `parent`.
    pub(crate) fn create(parent: &Path, id: u64, dim: usize, metric: Metric) -> Result<Self> {
        let tmp = parent.join(tmp_dir_name(id));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).at(&tmp)?;
        }
        fs::create_dir(&tmp).at(&tmp)?;
        let vectors = SummedFile::create(tmp.join(VECTORS_FILE))?;
        let blobs = SummedFile::create(tmp.join(BLOBS_FILE))?;
        Ok(Self {
            parent: parent.to_path_buf(),
            tmp,
            id,
            dim,
            metric,
            vectors: Some(vectors),
            blobs: Some(blobs),
            ids: Vec::new(),
            rows: Vec::new(),
            finished: false,
        })
    }

    /// Rows pushed so far.
    pub(crate) fn rows(&self) -> usize {
        self.ids.len()
    }

    /// Appends one row (already validated by the caller).
    pub(crate) fn push(
        &mut self,
        id: &str,
        vector: &[f32],
        image_path: Option<String>,
        image: Option<&[u8]>,
        metadata: Vec<super::MetaEntry>,
    ) -> Result<u32> {
        if self.ids.len() >= u32::MAX as usize - 1 {
            return Err(StorageError::InvalidArgument(
                "a segment holds at most 2^32-2 rows".into(),
            ));
        }
        debug_assert_eq!(vector.len(), self.dim);
        let (Some(vf), Some(bf)) = (self.vectors.as_mut(), self.blobs.as_mut()) else {
            return Err(StorageError::InvalidArgument(
                "segment writer already finished".into(),
            ));
        };
        vf.write(f32_bytes(vector))?;
        let blob = match image {
            Some(bytes) => {
                let offset = bf.len;
                bf.write(bytes)?;
                Some(BlobRef {
                    offset,
                    len: bytes.len() as u64,
                })
            }
            None => None,
        };
        let row = self.ids.len() as u32;
        self.ids.push(id.to_string());
        self.rows.push(RowRecord {
            image_path,
            blob,
            metadata,
        });
        Ok(row)
    }

    /// Writes ids, rows, index and footer and fsyncs everything, still in the
    /// temp directory ([`FinishedSegment::publish`] renames it). The index (for at least `index_min_rows`
    /// rows) is trained on the segment, or built with the quantizers of
    /// `template` when one is given; training stops with
    /// [`StorageError::Interrupted`] once `cancel` is set, and the temp
    /// directory goes with the dropped writer.
    pub(crate) fn finish(
        mut self,
        index_min_rows: usize,
        template: Option<&ann::SegmentIndex>,
        compact_tier: crate::types::CompactRerank,
        cancel: Cancel<'_>,
    ) -> Result<FinishedSegment> {
        let (Some(vf), Some(bf)) = (self.vectors.take(), self.blobs.take()) else {
            return Err(StorageError::InvalidArgument(
                "segment writer already finished".into(),
            ));
        };
        let rows = self.ids.len() as u32;
        let mut files = vec![vf.finish(VECTORS_FILE)?];
        let blob_sum = bf.finish(BLOBS_FILE)?;
        if blob_sum.len > 0 {
            files.push(blob_sum);
        } else {
            let p = self.tmp.join(BLOBS_FILE);
            fs::remove_file(&p).at(&p)?;
        }

        // Rows sorted by (id, row); for duplicate ids the last row wins.
        let mut order: Vec<u32> = (0..rows).collect();
        order.sort_unstable_by(|&a, &b| {
            self.ids[a as usize]
                .cmp(&self.ids[b as usize])
                .then(a.cmp(&b))
        });
        let mut sorted = Vec::with_capacity(order.len());
        let mut dead_rows = Vec::new();
        for (i, &row) in order.iter().enumerate() {
            let next_same = order
                .get(i + 1)
                .is_some_and(|&n| self.ids[n as usize] == self.ids[row as usize]);
            if next_same {
                dead_rows.push(row);
            } else {
                sorted.push(row);
            }
        }
        let distinct = sorted.len() as u64;
        let ids = IdTable {
            ids: std::mem::take(&mut self.ids),
            sorted,
        };
        files.push(self.write_archive(IDS_FILE, &ids)?);
        drop(ids);
        let table = RowTable {
            rows: std::mem::take(&mut self.rows),
        };
        files.push(self.write_archive(ROWS_FILE, &table)?);
        drop(table);

        let mut index_kind = None;
        if rows as usize >= index_min_rows && rows > 0 {
            let vpath = self.tmp.join(VECTORS_FILE);
            let vectors = MappedF32::open(&vpath, rows as usize * self.dim)?;
            let ipath = self.tmp.join(ann::INDEX_FILE);
            let built = match template {
                Some(t) => Some(ann::build_like(
                    &ipath,
                    t,
                    vectors.as_slice(),
                    compact_tier,
                    cancel,
                )?),
                None => ann::build(
                    &ipath,
                    vectors.as_slice(),
                    self.dim,
                    self.metric,
                    compact_tier,
                    cancel,
                )?,
            };
            if let Some((kind, bytes)) = built {
                write_file_synced(&ipath, &bytes)?;
                files.push(FileSum {
                    name: ann::INDEX_FILE.to_string(),
                    len: bytes.len() as u64,
                    crc32: crc32fast::hash(&bytes),
                });
                index_kind = Some(kind);
            }
        }

        let meta = SegmentMeta {
            segment_id: self.id,
            dim: self.dim,
            metric: self.metric.as_str().to_string(),
            rows: rows as u64,
            distinct_ids: distinct,
            index: index_kind,
            files,
        };
        let json =
            serde_json::to_vec(&meta).map_err(|e| StorageError::InvalidArgument(e.to_string()))?;
        write_file_synced(
            &self.tmp.join(META_FILE),
            &encode_framed(META_MAGIC, META_VERSION, &json),
        )?;
        fsync_dir(&self.tmp)?;
        self.finished = true;
        Ok(FinishedSegment {
            dir: self.tmp.clone(),
            dest: self.parent.join(dir_name(self.id)),
            published: false,
            dead_rows,
        })
    }

    fn write_archive<T>(&self, name: &str, value: &T) -> Result<FileSum>
    where
        T: for<'a> rkyv::Serialize<
                rkyv::api::high::HighSerializer<
                    rkyv::util::AlignedVec,
                    rkyv::ser::allocator::ArenaHandle<'a>,
                    rkyv::rancor::Error,
                >,
            >,
    {
        let path = self.tmp.join(name);
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(value)
            .map_err(|e| StorageError::InvalidArgument(format!("archiving {name}: {e}")))?;
        write_file_synced(&path, &bytes)?;
        Ok(FileSum {
            name: name.to_string(),
            len: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
        })
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.vectors.take();
            self.blobs.take();
            if let Err(e) = fs::remove_dir_all(&self.tmp) {
                tracing::warn!(path = %self.tmp.display(), error = %e, "could not remove unfinished segment");
            }
        }
    }
}
