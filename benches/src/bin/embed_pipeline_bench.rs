//! `glimpse embed` pipeline benchmark: images/s end to end on CPU for ViT-B/32 shapes
//! (formula weights built in memory, no download), and where the time goes.
//!
//! Measured in one run over the same JPEG folder (640x480, like typical photos):
//! * decode + preprocess alone (the rayon stage), images/s;
//! * the model alone on preprocessed batches, images/s;
//! * baseline: the same work done serially per batch (decode a batch, then run the model);
//! * the real pipeline (`embed_with_encoder`: decode pool and model overlapped through a
//!   bounded channel, partitions written atomically), images/s, and its ratio to the baseline.
//!
//! Run: `cargo run --release -p glimpse-benches --bin embed_pipeline_bench [-- --quick]`

use std::path::Path;
use std::time::Instant;

use glimpse_embedder::testing::{TinyClipSpec, in_memory_encoders};
use glimpse_embedder::{ClipImageEncoder, DeviceChoice, PreprocessedImage};
use glimpse_server::embed::{
    EmbedOptions, ImageInput, ImageSource, InputSpec, ProgressMode, embed_with_encoder,
};
use rayon::prelude::*;

/// A deterministic 640x480 photo-like JPEG.
fn synthetic_jpeg(seed: u32) -> Vec<u8> {
    let (w, h) = (640u32, 480u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let fx = x as f32 / w as f32;
        let fy = y as f32 / h as f32;
        let s = seed as f32 * 0.37;
        image::Rgb([
            (127.5 + 127.5 * (fx * 9.0 + s).sin()) as u8,
            (127.5 + 127.5 * (fy * 7.0 - s).cos()) as u8,
            ((x * 3 + y * 5 + seed * 11) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    enc.encode_image(&img).expect("encoding an in-memory image");
    out
}

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
    let n: usize = if quick { 64 } else { 256 };
    let batch = 64;
    let threads = rayon::current_num_threads();
    println!(
        "# glimpse embed pipeline benchmark (ViT-B/32 shapes, formula weights, CPU, {threads} threads, {n} images 640x480 JPEG, batch {batch})"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).expect("images dir");
    for i in 0..n {
        std::fs::write(images.join(format!("{i:05}.jpg")), synthetic_jpeg(i as u32))
            .expect("writing an image");
    }
    let (_, encoder) =
        in_memory_encoders(&TinyClipSpec::vit_b32(), DeviceChoice::Cpu).expect("ViT-B/32 encoders");
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

    // The pipeline, writing partitions of 128 ids.
    let out = dir.path().join("out");
    let mut opts = EmbedOptions::new(InputSpec::Local(ImageInput::Folder(images.clone())), &out);
    opts.batch_size = batch;
    opts.partition_size = 128;
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
