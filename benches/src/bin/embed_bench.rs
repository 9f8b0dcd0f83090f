//! CLIP embedding benchmark: full ViT-B/32 shapes with formula-generated weights built in
//! memory (no download), on the CPU or (`--device cuda|cuda-f32`, a `--features cuda` build)
//! the GPU.
//!
//! * text query latency p50/p99 at 5, 15 and 77 tokens, real length vs padded to 77 (the
//!   baseline: what a fixed-shape implementation pays);
//! * image throughput at batch 1/8/32 (and the sizes given by `--batches 1,64,256`), split
//!   into decode+preprocess and model time.
//!
//! Run: `cargo run --release -p glimpse-benches --bin embed_bench [-- --quick]
//! [--device cuda] [--batches 1,8,32,128,256] [--text-only | --image-only]`

use std::time::{Duration, Instant};

use glimpse_benches::embed_common::{device_flag, flag_value, synthetic_jpeg};
use glimpse_embedder::PreprocessedImage;
use glimpse_embedder::testing::{TinyClipSpec, in_memory_encoders};
use rayon::prelude::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn time_n(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters = if quick { 20 } else { 200 };
    let threads = rayon::current_num_threads();
    let (device, device_name) = device_flag();
    let batches: Vec<usize> = match flag_value("--batches") {
        Some(list) => list
            .split(',')
            .map(|b| {
                b.trim()
                    .parse()
                    .expect("--batches takes numbers like 1,8,32")
            })
            .collect(),
        None => vec![1, 8, 32],
    };
    println!(
        "# CLIP embedding benchmark (ViT-B/32 shapes, formula weights, device {device_name}, {threads} CPU threads)"
    );

    let t = Instant::now();
    let (text, image) = in_memory_encoders(&TinyClipSpec::vit_b32(), device)
        .expect("building the in-memory ViT-B/32");
    println!("model build: {:.1} s", t.elapsed().as_secs_f64());

    if !std::env::args().any(|a| a == "--image-only") {
        text_latency(&text, iters);
    }
    if std::env::args().any(|a| a == "--text-only") {
        return;
    }
    image_throughput(&image, &batches, quick);
}

/// Single text queries at three lengths, real length against padded to 77.
fn text_latency(text: &glimpse_embedder::ClipTextEncoder, iters: usize) {
    println!("\n## text query latency (batch 1)");
    println!(
        "| tokens | real length p50 | p99 | padded to 77 p50 | p99 | padded / real (p50) | with tokenization p50 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let long = "a photo of a cat sitting on a red chair next to a window ".repeat(10);
    for query in [
        "a photo of",
        "a watercolor painting of a lighthouse on a rocky coast at sunset",
        long.as_str(),
    ] {
        let ids = text.tokenize(query);
        let n = ids.len();
        let seqs = vec![ids];
        for _ in 0..5 {
            text.embed_token_ids(&seqs, None).expect("embed");
        }
        let real = time_n(iters, || {
            text.embed_token_ids(&seqs, None).expect("embed");
        });
        let padded = time_n(iters, || {
            text.embed_token_ids(&seqs, Some(77)).expect("embed");
        });
        let full = time_n(iters, || {
            text.embed(&[query]).expect("embed");
        });
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}x | {:.2} ms |",
            ms(percentile(&real, 0.5)),
            ms(percentile(&real, 0.99)),
            ms(percentile(&padded, 0.5)),
            ms(percentile(&padded, 0.99)),
            percentile(&padded, 0.5).as_secs_f64() / percentile(&real, 0.5).as_secs_f64(),
            ms(percentile(&full, 0.5)),
        );
    }
}

/// Image throughput at each batch size, decode+preprocess and model split.
fn image_throughput(image: &glimpse_embedder::ClipImageEncoder, batches: &[usize], quick: bool) {
    let threads = rayon::current_num_threads();
    println!("\n## image embedding throughput (640x480 JPEG q85)");
    let max_batch = batches.iter().copied().max().unwrap_or(32).max(1);
    let jpegs: Vec<Vec<u8>> = (0..32).map(synthetic_jpeg).collect();
    let pre_iters = if quick { 1 } else { 3 };
    // Decode + preprocess: single thread per image, and all images over the rayon pool.
    let single = time_n(pre_iters * 8, || {
        image.preprocess(&jpegs[0]).expect("preprocess");
    });
    let per_image_single = percentile(&single, 0.5);
    let t = Instant::now();
    for _ in 0..pre_iters {
        let v: Vec<PreprocessedImage> = jpegs
            .par_iter()
            .map(|b| image.preprocess(b).expect("preprocess"))
            .collect();
        assert_eq!(v.len(), 32);
    }
    let par_per_image = t.elapsed() / (pre_iters as u32 * 32);
    println!(
        "decode+preprocess: {:.2} ms/image on 1 thread, {:.2} ms/image amortised on {threads} threads",
        ms(per_image_single),
        ms(par_per_image)
    );
    // Batches larger than 32 repeat the 32 distinct images (the model cost is the same).
    let distinct: Vec<PreprocessedImage> = jpegs
        .par_iter()
        .map(|b| image.preprocess(b).expect("preprocess"))
        .collect();
    let pre: Vec<PreprocessedImage> = (0..max_batch)
        .map(|i| distinct[i % distinct.len()].clone())
        .collect();
    println!(
        "| batch | model ms/batch | of which upload ms | model images/s | decode+preprocess share | end-to-end images/s |"
    );
    println!("|---|---|---|---|---|---|");
    let mut base = None;
    for &batch in batches {
        let imgs = &pre[..batch];
        image.embed(imgs).expect("warm-up");
        let reps = if quick { 3 } else { (256 / batch).max(5) };
        let times = time_n(reps, || {
            image.embed(imgs).expect("embed");
        });
        // Staging alone (host copy, f16 rounding on a half-precision GPU, copy to the device),
        // in chunks of at most 64 as `embed` does.
        let uploads = time_n(reps, || {
            for chunk in imgs.chunks(64) {
                std::hint::black_box(image.upload(chunk).expect("upload"));
            }
        });
        let model = percentile(&times, 0.5);
        let model_per_image = model.as_secs_f64() / batch as f64;
        let total_per_image = model_per_image + par_per_image.as_secs_f64();
        let ips = 1.0 / total_per_image;
        base.get_or_insert(ips);
        println!(
            "| {batch} | {:.1} | {:.1} | {:.1} | {:.0}% | {:.1} ({:.2}x batch 1) |",
            ms(model),
            ms(percentile(&uploads, 0.5)),
            1.0 / model_per_image,
            100.0 * par_per_image.as_secs_f64() / total_per_image,
            ips,
            ips / base.unwrap_or(ips),
        );
    }
}
