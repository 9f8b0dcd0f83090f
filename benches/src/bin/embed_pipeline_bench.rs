//! `glimpse embed` pipeline benchmark: images/s end to end for ViT-B/32 shapes (formula
//! weights built in memory, no download) on the CPU or, with `--device cuda` on a
//! `--features cuda` build, the GPU; and where the time goes.
//!
//! Measured in one run over the same JPEG folder (640x480, like typical photos):
//! * decode + preprocess alone (the rayon stage), images/s;
//! * the model alone on preprocessed batches, images/s;
//! * baseline: the same work done serially per batch (decode a batch, then run the model);
//! * the real pipeline (`embed_with_encoder`: decode pool and model overlapped through a
//!   bounded channel, partitions written atomically), images/s, and its ratio to the baseline.
//!
//! Run: `cargo run --release -p glimpse-benches --bin embed_pipeline_bench [-- --quick]
//! [--device cuda] [--images 4096] [--batch 256]`

use std::path::Path;
use std::time::Instant;

use glimpse_benches::embed_common::{device_flag, flag_usize, synthetic_jpeg};
use glimpse_embedder::testing::{TinyClipSpec, in_memory_encoders};
use glimpse_embedder::{ClipImageEncoder, PreprocessedImage};
use glimpse_server::embed::{
    EmbedOptions, ImageInput, ImageSource, InputSpec, ProgressMode, embed_with_encoder,
};
use rayon::prelude::*;

fn prepare_all(
    encoder: &ClipImageEncoder,
    files: &[(std::path::PathBuf, String)],
) -> Vec<PreprocessedImage> {
    files
        .par_iter()
        .map(|(p, _)| {
            let bytes = std::fs::read(p).expect("reading a benchmark image");
            encoder.preprocess(&bytes).expect("benchmark images decode")
        })
        .collect()
}

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs.max(1e-9)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = flag_usize("--images", if quick { 64 } else { 256 });
    let batch = flag_usize("--batch", 64).max(1);
    let (device, device_name) = device_flag();
    let threads = rayon::current_num_threads();
    println!(
        "# glimpse embed pipeline benchmark (ViT-B/32 shapes, formula weights, device {device_name}, {threads} CPU threads, {n} images 640x480 JPEG, batch {batch})"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).expect("images dir");
    (0..n).into_par_iter().for_each(|i| {
        std::fs::write(images.join(format!("{i:06}.jpg")), synthetic_jpeg(i as u32))
            .expect("writing an image");
    });
    let (_, encoder) =
        in_memory_encoders(&TinyClipSpec::vit_b32(), device).expect("ViT-B/32 encoders");
    let source = ImageSource::open(&ImageInput::Folder(images.clone())).expect("listing images");
    let files = glimpse_server::embed::source::list_folder(&images).expect("listing images");
    assert_eq!(source.len() as usize, n);

    // Warm-up (first forward pass allocates).
    let warm = prepare_all(&encoder, &files[..batch.min(n)]);
    encoder
        .embed(&warm[..8.min(warm.len())])
        .expect("warm-up forward");

    // Stage 1: decode + preprocess alone.
    let t = Instant::now();
    let prepared = prepare_all(&encoder, &files);
    let decode_s = t.elapsed().as_secs_f64();

    // Stage 2: the model alone.
    let t = Instant::now();
    for chunk in prepared.chunks(batch) {
        encoder.embed(chunk).expect("forward");
    }
    let model_s = t.elapsed().as_secs_f64();
    drop(prepared);

    // Baseline: serial per batch, decode then model, no overlap.
    let t = Instant::now();
    for chunk in files.chunks(batch) {
        let pre = prepare_all(&encoder, chunk);
        encoder.embed(&pre).expect("forward");
    }
    let serial_s = t.elapsed().as_secs_f64();

    // The pipeline, writing partitions of two batches (at least 128 ids).
    let out = dir.path().join("out");
    let mut opts = EmbedOptions::new(InputSpec::Local(ImageInput::Folder(images.clone())), &out);
    opts.batch_size = batch;
    opts.partition_size = (batch as u64 * 2).max(128);
    opts.progress = ProgressMode::Quiet;
    let t = Instant::now();
    let summary =
        embed_with_encoder(&encoder, "bench/vit-b32", &source, &opts).expect("pipeline run");
    let pipeline_s = t.elapsed().as_secs_f64();
    assert_eq!(summary.rows_written as usize, n);
    check_written(&out);

    println!();
    println!("| stage | seconds | images/s | share of serial |");
    println!("|---|---:|---:|---:|");
    println!(
        "| decode + preprocess (rayon, {threads} threads) | {decode_s:.2} | {:.1} | {:.0}% |",
        rate(n, decode_s),
        100.0 * decode_s / (decode_s + model_s)
    );
    println!(
        "| model forward (batch {batch}) | {model_s:.2} | {:.1} | {:.0}% |",
        rate(n, model_s),
        100.0 * model_s / (decode_s + model_s)
    );
    println!(
        "| baseline: serial decode then model per batch | {serial_s:.2} | {:.1} | |",
        rate(n, serial_s)
    );
    println!(
        "| pipeline (`embed_with_encoder`, overlapped, Parquet writes) | {pipeline_s:.2} | {:.1} | |",
        rate(n, pipeline_s)
    );
    println!();
    println!(
        "pipeline / serial baseline throughput: {:.2}x",
        serial_s / pipeline_s
    );
    println!(
        "pipeline / model-only bound: {:.2} (1.00 = decoding fully hidden)",
        model_s / pipeline_s
    );
}

fn check_written(out: &Path) {
    let parts = std::fs::read_dir(out).expect("output dir").count();
    assert!(parts > 0, "the pipeline wrote no partition");
}
