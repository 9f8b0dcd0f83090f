//! The run: plan the partitions, skip the complete ones, and stream the rest through
//! read + decode + preprocess (a rayon pool, on a producer thread) and the model + writer (the
//! calling thread), connected by a bounded channel so decoding overlaps the forward passes and
//! memory stays bounded.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use glimpse_embedder::{ClipImageEncoder, DeviceChoice, resolve_model};
use rayon::prelude::*;

use crate::embed::error::{EmbedError, Result, io_err};
use crate::embed::hub::fetch_split;
use crate::embed::partition::{
    FailedItem, PartitionState, RunIdentity, check_partition, remove_stale_temp_dirs,
    write_partition,
};
use crate::embed::plan::PartitionPlan;
use crate::embed::prepare::{ImageSaver, PreparedItem, prepare};
use crate::embed::progress::{Progress, ProgressMode};
use crate::embed::source::{ImageInput, ImageSource};
use crate::ingest::{ShardRecord, ShardWriterOptions};

/// Default ids per partition.
pub const DEFAULT_PARTITION_SIZE: u64 = 1000;
/// Default images per model batch.
pub const DEFAULT_BATCH_SIZE: usize = 64;
/// Prepared batches buffered between the decode stage and the model.
const PREFETCH_BATCHES: usize = 3;

/// Where the images come from, as the user named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    /// A local input.
    Local(ImageInput),
    /// A Hugging Face hub dataset, split and revision.
    Hub {
        /// Dataset id, e.g. `ILSVRC/imagenet-1k`.
        id: String,
        /// Split, e.g. `train`.
        split: String,
        /// Revision (branch, tag or commit).
        revision: String,
    },
}

/// Everything a run needs besides the model.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// The input.
    pub input: InputSpec,
    /// Output folder of the partitions.
    pub out: PathBuf,
    /// First id.
    pub start: u64,
    /// One past the last id; the input length when `None`.
    pub end: Option<u64>,
    /// Ids per partition.
    pub partition_size: u64,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Decode threads; all cores when `None`.
    pub threads: Option<usize>,
    /// Save each image as JPEG here and record that path.
    pub save_images: Option<PathBuf>,
    /// Progress display.
    pub progress: ProgressMode,
    /// Pause after each committed partition (crash tests and demos only).
    pub pause_after_partition: Option<Duration>,
}

impl EmbedOptions {
    /// Options with the defaults for `input` and `out`.
    pub fn new(input: InputSpec, out: impl Into<PathBuf>) -> Self {
        Self {
            input,
            out: out.into(),
            start: 0,
            end: None,
            partition_size: DEFAULT_PARTITION_SIZE,
            batch_size: DEFAULT_BATCH_SIZE,
            threads: None,
            save_images: None,
            progress: ProgressMode::Auto,
            pause_after_partition: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmbedSummary {
    /// Partitions of the plan.
    pub partitions_total: u64,
    /// Partitions found complete and skipped.
    pub partitions_skipped: u64,
    /// Partitions written by this run.
    pub partitions_written: u64,
    /// Rows written by this run.
    pub rows_written: u64,
    /// Items this run could not embed (recorded in `errors.jsonl`).
    pub failures: u64,
}

/// Loads the model and runs [`embed_with_encoder`].
pub fn embed(model: &str, device: DeviceChoice, opts: &EmbedOptions) -> Result<EmbedSummary> {
    let source = open_input(&opts.input)?;
    let dir = resolve_model(model)?;
    let encoder = ClipImageEncoder::load(&dir, device)?;
    embed_with_encoder(&encoder, dir.id(), &source, opts)
}

/// Opens the input (downloading hub datasets first).
pub fn open_input(input: &InputSpec) -> Result<ImageSource> {
    match input {
        InputSpec::Local(i) => ImageSource::open(i),
        InputSpec::Hub {
            id,
            split,
            revision,
        } => ImageSource::open(&ImageInput::Parquet(fetch_split(id, split, revision)?)),
    }
}

/// One chunk of prepared items, all of one partition.
struct PreparedBatch {
    partition: u64,
    items: Vec<PreparedItem>,
    last_of_partition: bool,
}

/// Embeds the planned range of `source` with `encoder` into `opts.out`, resuming: complete
/// partitions (same model and partitioning, rows + failures covering their ids exactly) are
/// skipped; missing or damaged ones are (re)written.
pub fn embed_with_encoder(
    encoder: &ClipImageEncoder,
    model_id: &str,
    source: &ImageSource,
    opts: &EmbedOptions,
) -> Result<EmbedSummary> {
    if opts.batch_size == 0 {
        return Err(EmbedError::InvalidArgs(
            "--batch-size must be at least 1".into(),
        ));
    }
    let plan = PartitionPlan::new(opts.start, opts.end, source.len(), opts.partition_size)?;
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let stale = remove_stale_temp_dirs(&opts.out, &plan)?;
    if stale > 0 {
        tracing::info!(stale, "removed temporary folders of an interrupted run");
    }
    let run = RunIdentity {
        model: model_id.to_owned(),
        dim: encoder.dim(),
        plan,
    };
    let mut summary = EmbedSummary {
        partitions_total: plan.partitions(),
        ..Default::default()
    };
    let mut todo = Vec::new();
    for n in 0..plan.partitions() {
        match check_partition(&opts.out, &run, n)? {
            PartitionState::Complete { .. } => summary.partitions_skipped += 1,
            PartitionState::Missing => todo.push(n),
            PartitionState::Invalid(why) => {
                tracing::warn!("partition {n} will be redone: {why}");
                todo.push(n);
            }
        }
    }
    tracing::info!(
        model = model_id,
        range = %format!("{}..{}", plan.start(), plan.end()),
        partitions = plan.partitions(),
        complete = summary.partitions_skipped,
        to_do = todo.len(),
        "embedding"
    );
    if todo.is_empty() {
        return Ok(summary);
    }
    let saver = opts
        .save_images
        .as_deref()
        .map(ImageSaver::new)
        .transpose()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .thread_name(|i| format!("glimpse-decode-{i}"))
        .build()
        .map_err(|e| EmbedError::Internal(format!("decode thread pool: {e}")))?;
    let total_items: u64 = todo
        .iter()
        .map(|&n| plan.range(n).end - plan.range(n).start)
        .sum();
    let mut progress = Progress::new(opts.progress, total_items);

    let mut writer_options = ShardWriterOptions::new(model_id, encoder.dim());
    writer_options.normalized = true;
    writer_options.extra_columns = source.extra_columns().to_vec();

    let (tx, rx) = sync_channel::<PreparedBatch>(PREFETCH_BATCHES);
    let produced = std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            produce(
                source,
                &plan,
                &todo,
                opts.batch_size,
                encoder,
                saver.as_ref(),
                &pool,
                tx,
            )
        });
        let consumed = consume(
            encoder,
            &run,
            opts,
            saver.as_ref(),
            rx,
            writer_options,
            &mut progress,
            &mut summary,
        );
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(EmbedError::Internal("decode thread panicked".into())));
        // The consumer's error comes first: the producer only fails as a consequence of it
        // hanging up, or reports its own error which the consumer never saw.
        consumed.and(produced)
    });
    progress.finish();
    produced?;
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn produce(
    source: &ImageSource,
    plan: &PartitionPlan,
    todo: &[u64],
    batch_size: usize,
    encoder: &ClipImageEncoder,
    saver: Option<&ImageSaver>,
    pool: &rayon::ThreadPool,
    tx: SyncSender<PreparedBatch>,
) -> Result<()> {
    let preprocessor = encoder.preprocessor();
    for &n in todo {
        let mut items = source.items(plan.range(n))?.peekable();
        loop {
            let mut chunk = Vec::with_capacity(batch_size);
            while chunk.len() < batch_size {
                match items.next() {
                    Some(item) => chunk.push(item?),
                    None => break,
                }
            }
            let last_of_partition = items.peek().is_none();
            let prepared = pool.install(|| {
                chunk
                    .into_par_iter()
                    .map(|item| prepare(item, preprocessor, saver))
                    .collect::<Result<Vec<_>>>()
            })?;
            let batch = PreparedBatch {
                partition: n,
                items: prepared,
                last_of_partition,
            };
            if tx.send(batch).is_err() {
                // The model side stopped (and reports why); nothing more to do here.
                return Ok(());
            }
            if last_of_partition {
                break;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn consume(
    encoder: &ClipImageEncoder,
    run: &RunIdentity,
    opts: &EmbedOptions,
    saver: Option<&ImageSaver>,
    rx: Receiver<PreparedBatch>,
    options: ShardWriterOptions,
    progress: &mut Progress,
    summary: &mut EmbedSummary,
) -> Result<()> {
    let mut records: Vec<ShardRecord> = Vec::new();
    let mut failures: Vec<FailedItem> = Vec::new();
    let mut model_time = Duration::ZERO;
    let started = Instant::now();
    for batch in rx {
        let mut images = Vec::with_capacity(batch.items.len());
        let mut meta = Vec::with_capacity(batch.items.len());
        let mut failed = 0u64;
        let count = batch.items.len() as u64;
        for item in batch.items {
            match item.image {
                Ok(img) => {
                    images.push(img);
                    meta.push((item.id, item.image_path, item.extra));
                }
                Err(reason) => {
                    tracing::warn!(
                        id = item.id,
                        path = item.image_path.as_deref().unwrap_or(""),
                        "unreadable image: {reason}"
                    );
                    failed += 1;
                    failures.push(FailedItem {
                        id: item.id,
                        path: item.image_path,
                        reason,
                    });
                }
            }
        }
        if !images.is_empty() {
            let t = Instant::now();
            let vectors = encoder.embed(&images)?;
            model_time += t.elapsed();
            for ((id, image_path, extra), vector) in meta.into_iter().zip(vectors) {
                records.push(ShardRecord {
                    id: i64::try_from(id)
                        .map_err(|_| EmbedError::Internal(format!("id {id} overflows int64")))?,
                    image_path,
                    vector,
                    extra,
                });
            }
        }
        progress.advance(count, failed);
        if batch.last_of_partition {
            commit(
                run,
                opts,
                saver,
                batch.partition,
                &mut records,
                &mut failures,
                options.clone(),
                progress,
                summary,
            )?;
            if let Some(pause) = opts.pause_after_partition {
                std::thread::sleep(pause);
            }
        }
    }
    tracing::debug!(
        model_secs = model_time.as_secs_f64(),
        total_secs = started.elapsed().as_secs_f64(),
        "model time"
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn commit(
    run: &RunIdentity,
    opts: &EmbedOptions,
    saver: Option<&ImageSaver>,
    n: u64,
    records: &mut Vec<ShardRecord>,
    failures: &mut Vec<FailedItem>,
    options: ShardWriterOptions,
    progress: &Progress,
    summary: &mut EmbedSummary,
) -> Result<()> {
    let range = run.plan.range(n);
    if let Some(saver) = saver {
        saver.sync_folders(range.start, range.end)?;
    }
    let dir = write_partition(&opts.out, run, n, records, failures, options)?;
    progress.partition_saved(n, &dir, records.len(), failures.len());
    summary.partitions_written += 1;
    summary.rows_written += records.len() as u64;
    summary.failures += failures.len() as u64;
    records.clear();
    failures.clear();
    Ok(())
}
