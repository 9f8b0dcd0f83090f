//! Writing one partition folder atomically, and checking an existing one on resume.
//!
//! A partition is the folder `embeddings_{S}_{E}.parquet_part_{n}` holding `data.parquet` (the
//! rows) and `errors.jsonl` (the items that could not be embedded). Both are written into a
//! hidden temporary folder, fsynced, and the folder is renamed into place and its parent
//! fsynced: a partition is either whole or absent, whatever the moment of a crash. Hidden
//! folders are ignored by [`crate::ingest::discover_shards`], so loaders never see a partial one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::embed::error::{EmbedError, Result, io_err};
use crate::embed::plan::{DATA_FILE, ERRORS_FILE, PartitionPlan};
use crate::ingest::{EmbeddingShardWriter, ShardRecord, ShardWriterOptions};

/// Footer key of the embedding model (written by the ingest writer).
pub const META_MODEL: &str = "glimpse.model";
/// Footer key of the dimension (written by the ingest writer).
pub const META_DIM: &str = "glimpse.dim";
/// Footer key of the L2-normalisation flag (written by the ingest writer).
pub const META_NORMALIZED: &str = "glimpse.normalized";
/// Footer key of the partition size of the run that wrote the file.
pub const META_PARTITION_SIZE: &str = "glimpse.embed.partition_size";
/// Footer key of the run's id range, `start..end`.
pub const META_RANGE: &str = "glimpse.embed.range";
/// Footer key of the partition number.
pub const META_PARTITION: &str = "glimpse.embed.partition";

/// One item that could not be embedded, as a line of `errors.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedItem {
    /// Its id (ids are never renumbered; this one has no row).
    pub id: u64,
    /// Its path as the input names it, if any.
    pub path: Option<String>,
    /// Why it failed.
    pub reason: String,
}

/// What a partition's files must say to belong to the current run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunIdentity {
    /// Model id.
    pub model: String,
    /// Embedding width.
    pub dim: usize,
    /// The plan (range and partition size).
    pub plan: PartitionPlan,
}

impl RunIdentity {
    fn footer(&self, n: u64) -> [(&'static str, String); 3] {
        [
            (META_PARTITION_SIZE, self.plan.partition_size().to_string()),
            (
                META_RANGE,
                format!("{}..{}", self.plan.start(), self.plan.end()),
            ),
            (META_PARTITION, n.to_string()),
        ]
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes partition `n` of `run` into `out` atomically, replacing an existing (invalid) one.
/// `records` and `failures` must together cover the partition's ids exactly.
pub fn write_partition(
    out: &Path,
    run: &RunIdentity,
    n: u64,
    records: &[ShardRecord],
    failures: &[FailedItem],
    options: ShardWriterOptions,
) -> Result<PathBuf> {
    let final_dir = out.join(run.plan.dir_name(n));
    let tmp_dir = out.join(format!(
        ".{}.tmp-{}",
        run.plan.dir_name(n),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir(&tmp_dir).map_err(io_err(&tmp_dir))?;
    let result = (|| -> Result<()> {
        let data = tmp_dir.join(DATA_FILE);
        let file = File::create_new(&data).map_err(io_err(&data))?;
        let mut writer = EmbeddingShardWriter::new(BufWriter::new(file), &data, options)?;
        for (k, v) in run.footer(n) {
            writer.append_metadata(k, &v);
        }
        writer.write(records)?;
        let file = writer.finish()?.into_inner().map_err(|e| EmbedError::Io {
            path: data.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&data))?;

        let errors = tmp_dir.join(ERRORS_FILE);
        let mut w = BufWriter::new(File::create_new(&errors).map_err(io_err(&errors))?);
        for f in failures {
            let line = serde_json::to_string(f).map_err(|e| EmbedError::Internal(e.to_string()))?;
            writeln!(w, "{line}").map_err(io_err(&errors))?;
        }
        let file = w.into_inner().map_err(|e| EmbedError::Io {
            path: errors.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&errors))?;
        fsync_dir(&tmp_dir)?;
        if final_dir.exists() {
            // Only a partition found invalid is ever replaced; a crash after this removal
            // leaves it absent, which a rerun redoes.
            std::fs::remove_dir_all(&final_dir).map_err(io_err(&final_dir))?;
        }
        std::fs::rename(&tmp_dir, &final_dir).map_err(io_err(&final_dir))?;
        fsync_dir(out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp_dir);
    }
    result.map(|()| final_dir)
}

/// Removes hidden temporary folders of `plan` left by an interrupted run.
pub fn remove_stale_temp_dirs(out: &Path, plan: &PartitionPlan) -> Result<usize> {
    let prefix = format!(".{}", plan.dir_prefix());
    let mut removed = 0;
    for entry in std::fs::read_dir(out).map_err(io_err(out))? {
        let entry = entry.map_err(io_err(out))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix) && name.contains(".tmp-") {
            let p = entry.path();
            std::fs::remove_dir_all(&p).map_err(io_err(&p))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The state of a partition folder found on resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionState {
    /// Absent: to be written.
    Missing,
    /// Whole and belonging to this run: skipped.
    Complete {
        /// Rows in `data.parquet`.
        rows: u64,
        /// Lines in `errors.jsonl`.
        failures: u64,
    },
    /// Present but unreadable or incomplete: to be rewritten.
    Invalid(String),
}

/// Inspects partition `n`. A partition of another model or partitioning is an error (never
/// overwritten); a damaged or incomplete one is [`PartitionState::Invalid`].
pub fn check_partition(out: &Path, run: &RunIdentity, n: u64) -> Result<PartitionState> {
    let dir = out.join(run.plan.dir_name(n));
    if !dir.exists() {
        return Ok(PartitionState::Missing);
    }
    let data = dir.join(DATA_FILE);
    let kv = match guarded(&data, || read_footer(&data)) {
        Ok(kv) => kv,
        Err(reason) => return Ok(PartitionState::Invalid(reason)),
    };
    let mismatch = |reason: String| EmbedError::ResumeMismatch {
        path: data.clone(),
        reason,
    };
    let expect = |key: &str, want: &str, what: &str| match kv.get(key) {
        Some(v) if v == want => Ok(()),
        Some(v) => Err(mismatch(format!(
            "it was written with {what} {v}, this run uses {want}"
        ))),
        None => Err(mismatch(format!(
            "it has no `{key}` entry (not written by `glimpse embed`)"
        ))),
    };
    expect(META_MODEL, &run.model, "model")?;
    expect(META_DIM, &run.dim.to_string(), "dimension")?;
    for (k, v) in run.footer(n) {
        let what = match k {
            META_PARTITION_SIZE => "partition size",
            META_RANGE => "range",
            _ => "partition number",
        };
        expect(k, &v, what)?;
    }
    let ids = match guarded(&data, || read_ids(&data)) {
        Ok(ids) => ids,
        Err(reason) => return Ok(PartitionState::Invalid(reason)),
    };
    let failed = match read_failures(&dir.join(ERRORS_FILE)) {
        Ok(f) => f,
        Err(reason) => return Ok(PartitionState::Invalid(reason)),
    };
    // Rows and failures must be exactly the partition's ids, each once.
    let range = run.plan.range(n);
    let mut all: Vec<u64> = ids
        .iter()
        .copied()
        .chain(failed.iter().map(|f| f.id))
        .collect();
    all.sort_unstable();
    if !all.iter().copied().eq(range.clone()) {
        return Ok(PartitionState::Invalid(format!(
            "{}: rows and errors.jsonl do not cover ids {}..{} exactly ({} rows, {} failures)",
            dir.display(),
            range.start,
            range.end,
            ids.len(),
            failed.len()
        )));
    }
    Ok(PartitionState::Complete {
        rows: ids.len() as u64,
        failures: failed.len() as u64,
    })
}

/// Runs a Parquet read, turning a panic of the decoder (it still asserts on some corrupt
/// files) into an error: a damaged partition must be redone, not crash the run.
fn guarded<T>(
    path: &Path,
    f: impl FnOnce() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(format!("{}: the Parquet decoder panicked", path.display())))
}

fn read_footer(data: &Path) -> std::result::Result<BTreeMap<String, String>, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", data.display());
    let file = File::open(data).map_err(|e| err(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(&e))?;
    Ok(builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter_map(|e| e.value.clone().map(|v| (e.key.clone(), v)))
                .collect()
        })
        .unwrap_or_default())
}

fn read_ids(data: &Path) -> std::result::Result<Vec<u64>, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", data.display());
    let file = File::open(data).map_err(|e| err(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(&e))?;
    let id_index = builder
        .schema()
        .index_of("id")
        .map_err(|_| err(&"no `id` column"))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [id_index]);
    let reader = builder.with_projection(mask).build().map_err(|e| err(&e))?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| err(&e))?;
        let col = batch
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| err(&"`id` is not int64"))?;
        if col.null_count() > 0 {
            return Err(err(&"`id` has nulls"));
        }
        ids.extend(col.values().iter().map(|&v| v as u64));
    }
    Ok(ids)
}

/// Reads an `errors.jsonl`; `Err` holds why it is unusable.
pub fn read_failures(path: &Path) -> std::result::Result<Vec<FailedItem>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}
