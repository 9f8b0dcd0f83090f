//! The quantized text tower (`--device cpu-int8`) against f32 and `cpu-f16`, ViT-B/32 shapes
//! with formula weights built in memory, in one run:
//!
//! * single-query latency p50 / p99 per precision (short and caption-like queries, interleaved
//!   so drift of the machine hits all alike);
//! * drift of the query vectors from f32 (min and mean cosine, max abs difference);
//! * ranking: top-10 overlap with f32's top-10 when the queries search a collection of
//!   f32-embedded texts (exact inner-product search);
//! * the image tower under `cpu-w8a8` (the one device that quantizes it): images per second
//!   at batch 32 against f32, interleaved, the drift of image vectors, and the top-10 overlap
//!   of image queries searching an f32-embedded image collection.
//!
//! Run: `cargo run --release -p glimpse-benches --bin quantized_text_bench [-- --quick]`

use std::time::Instant;

use glimpse_benches::embed_common::synthetic_jpeg;
use glimpse_embedder::testing::{TinyClipSpec, in_memory_encoders};
use glimpse_embedder::{ClipImageEncoder, ClipTextEncoder, DeviceChoice, PreprocessedImage};

const ADJ: [&str; 10] = [
    "red", "small", "old", "bright", "wooden", "snowy", "quiet", "busy", "golden", "broken",
];
const NOUN: [&str; 10] = [
    "cat",
    "lighthouse",
    "bicycle",
    "garden",
    "harbor",
    "kitchen",
    "mountain",
    "market",
    "violin",
    "bridge",
];
const PLACE: [&str; 10] = [
    "at sunset",
    "in the rain",
    "on a table",
    "near the sea",
    "in a forest",
    "at night",
    "in winter",
    "from above",
    "in a museum",
    "on a street",
];

fn caption(i: usize) -> String {
    format!(
        "a photo of a {} {} {}",
        ADJ[i % 10],
        NOUN[(i / 10) % 10],
        PLACE[(i / 100) % 10]
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn top10(docs: &[Vec<f32>], q: &[f32]) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (dot(d, q), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.iter().take(10).map(|s| s.1).collect()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters = if quick { 20 } else { 100 };
    let (n_docs, n_queries) = if quick { (300, 40) } else { (1000, 200) };
    let spec = TinyClipSpec::vit_b32();
    let encoders: Vec<(&str, ClipTextEncoder)> = [
        ("cpu (f32)", DeviceChoice::Cpu),
        ("cpu-f16", DeviceChoice::CpuF16),
        ("cpu-int8", DeviceChoice::CpuInt8),
        ("cpu-w8a8", DeviceChoice::CpuInt8Dynamic),
    ]
    .into_iter()
    .map(|(name, d)| {
        let (text, _) = in_memory_encoders(&spec, d).expect("building ViT-B/32");
        (name, text)
    })
    .collect();
    println!(
        "# quantized text tower (ViT-B/32 shapes, formula weights, {} CPU threads)",
        rayon::current_num_threads()
    );

    println!("\n## single-query latency, {iters} queries each, interleaved");
    println!("| precision | short p50 ms | p99 | caption-like p50 ms | p99 |");
    println!("|---|---|---|---|---|");
    let short: Vec<String> = (0..iters).map(|i| format!("cat {}", i * 37)).collect();
    let long: Vec<String> = (0..iters).map(|i| caption(i * 7 + 3)).collect();
    for _ in 0..3 {
        for (_, e) in &encoders {
            e.embed(&["warm up"]).expect("embedding");
        }
    }
    let mut lat: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); encoders.len()];
    for i in 0..iters {
        for (k, (_, e)) in encoders.iter().enumerate() {
            let t = Instant::now();
            e.embed(&[short[i].as_str()]).expect("embedding");
            lat[k].0.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            e.embed(&[long[i].as_str()]).expect("embedding");
            lat[k].1.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut p50s = Vec::new();
    for ((name, _), (s, l)) in encoders.iter().zip(lat.iter_mut()) {
        s.sort_by(f64::total_cmp);
        l.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            percentile(s, 0.5),
            percentile(s, 0.99),
            percentile(l, 0.5),
            percentile(l, 0.99)
        );
        p50s.push((percentile(s, 0.5), percentile(l, 0.5)));
    }
    for (k, (name, _)) in encoders.iter().enumerate().skip(1) {
        println!(
            "{name} / f32 p50: short {:.2}x, caption-like {:.2}x",
            p50s[k].0 / p50s[0].0,
            p50s[k].1 / p50s[0].1
        );
    }
    let tokens = |t: &str| encoders[0].1.tokenize(t).len();
    println!(
        "tokens: short {}-{}, caption-like {}-{}",
        short.iter().map(|t| tokens(t)).min().unwrap_or(0),
        short.iter().map(|t| tokens(t)).max().unwrap_or(0),
        long.iter().map(|t| tokens(t)).min().unwrap_or(0),
        long.iter().map(|t| tokens(t)).max().unwrap_or(0)
    );

    // Batched passes: the server packs concurrent queries into one pass, which is bound by
    // arithmetic rather than by the weights' bytes.
    let passes = if quick { 6 } else { 30 };
    println!("\n## passes of 16 distinct queries, {passes} each, interleaved");
    println!(
        "| precision | short pass p50 ms (per query) | caption-like pass p50 ms (per query) |"
    );
    println!("|---|---|---|");
    let mut pass_ms: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); encoders.len()];
    for i in 0..passes {
        let shorts: Vec<String> = (0..16).map(|j| format!("cat {}", i * 16 + j)).collect();
        let captions: Vec<String> = (0..16).map(|j| caption(i * 16 + j)).collect();
        let shorts: Vec<&str> = shorts.iter().map(String::as_str).collect();
        let captions: Vec<&str> = captions.iter().map(String::as_str).collect();
        for (k, (_, e)) in encoders.iter().enumerate() {
            let t = Instant::now();
            e.embed(&shorts).expect("embedding");
            pass_ms[k].0.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            e.embed(&captions).expect("embedding");
            pass_ms[k].1.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut pass_p50 = Vec::new();
    for ((name, _), (s, l)) in encoders.iter().zip(pass_ms.iter_mut()) {
        s.sort_by(f64::total_cmp);
        l.sort_by(f64::total_cmp);
        let (ps, pl) = (percentile(s, 0.5), percentile(l, 0.5));
        println!(
            "| {name} | {ps:.2} ({:.2}) | {pl:.2} ({:.2}) |",
            ps / 16.0,
            pl / 16.0
        );
        pass_p50.push((ps, pl));
    }
    for (k, (name, _)) in encoders.iter().enumerate().skip(1) {
        println!(
            "{name} / f32 pass p50: short {:.2}x, caption-like {:.2}x",
            pass_p50[k].0 / pass_p50[0].0,
            pass_p50[k].1 / pass_p50[0].1
        );
    }

    println!("\n## drift and ranking: {n_queries} queries against {n_docs} f32-embedded captions");
    let docs_text: Vec<String> = (0..n_docs).map(|i| caption(i * 3 + 1)).collect();
    let refs: Vec<&str> = docs_text.iter().map(String::as_str).collect();
    let t = Instant::now();
    let docs = encoders[0].1.embed(&refs).expect("embedding");
    println!("collection embedded in {:.1} s", t.elapsed().as_secs_f64());
    let queries: Vec<String> = (0..n_queries)
        .map(|i| {
            format!(
                "{} {}",
                caption(i * 11 + 5),
                ["", "photo", "picture", "image"][i % 4]
            )
        })
        .collect();
    let qrefs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let vectors: Vec<Vec<Vec<f32>>> = encoders
        .iter()
        .map(|(_, e)| e.embed(&qrefs).expect("embedding"))
        .collect();
    println!(
        "| precision | min cosine to f32 | mean cosine | max abs diff | top-10 overlap with f32 (mean) | min |"
    );
    println!("|---|---|---|---|---|---|");
    let base_top: Vec<Vec<usize>> = vectors[0].iter().map(|q| top10(&docs, q)).collect();
    for (k, (name, _)) in encoders.iter().enumerate().skip(1) {
        let (mut min_cos, mut sum_cos, mut max_abs) = (1.0f32, 0.0f64, 0.0f32);
        let (mut sum_overlap, mut min_overlap) = (0usize, 10usize);
        for (qi, q) in vectors[k].iter().enumerate() {
            let f = &vectors[0][qi];
            let cos = dot(q, f);
            min_cos = min_cos.min(cos);
            sum_cos += f64::from(cos);
            for (a, b) in q.iter().zip(f) {
                max_abs = max_abs.max((a - b).abs());
            }
            let top = top10(&docs, q);
            let overlap = top.iter().filter(|i| base_top[qi].contains(i)).count();
            sum_overlap += overlap;
            min_overlap = min_overlap.min(overlap);
        }
        println!(
            "| {name} | {min_cos:.6} | {:.6} | {max_abs:.2e} | {:.2} / 10 | {min_overlap} |",
            sum_cos / n_queries as f64,
            sum_overlap as f64 / n_queries as f64
        );
    }
    // How crowded the collection is: f32's top-1 and 10th scores, mean over queries.
    let (mut s1, mut s10) = (0.0f64, 0.0f64);
    for (q, top) in vectors[0].iter().zip(&base_top) {
        s1 += f64::from(dot(&docs[top[0]], q));
        s10 += f64::from(dot(&docs[top[9]], q));
    }
    println!(
        "f32 scores, mean over queries: top-1 {:.4}, 10th {:.4}",
        s1 / n_queries as f64,
        s10 / n_queries as f64
    );
    images(&spec, quick);
}

/// The image tower in f32 and `cpu-w8a8`: throughput at batch 32, drift, and ranking.
fn images(spec: &TinyClipSpec, quick: bool) {
    let (n_docs, n_queries, rounds) = if quick { (64, 16, 2) } else { (320, 96, 6) };
    let towers: Vec<(&str, ClipImageEncoder)> = [
        ("cpu (f32)", DeviceChoice::Cpu),
        ("cpu-w8a8", DeviceChoice::CpuInt8Dynamic),
    ]
    .into_iter()
    .map(|(name, d)| {
        (
            name,
            in_memory_encoders(spec, d).expect("building ViT-B/32").1,
        )
    })
    .collect();
    let prep = |seed: u32| -> PreprocessedImage {
        towers[0]
            .1
            .preprocess(&synthetic_jpeg(seed))
            .expect("preprocessing")
    };
    let batch: Vec<PreprocessedImage> = (0..32).map(|i| prep(10_000 + i)).collect();
    println!("\n## image tower, batches of 32 preprocessed images, {rounds} each, interleaved");
    println!("| precision | ms per batch (p50) | images/s |");
    println!("|---|---|---|");
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); towers.len()];
    for (_, t) in &towers {
        t.embed(&batch[..2]).expect("embedding");
    }
    for _ in 0..rounds {
        for (k, (_, t)) in towers.iter().enumerate() {
            let at = Instant::now();
            t.embed(&batch).expect("embedding");
            times[k].push(at.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut p50 = Vec::new();
    for ((name, _), ms) in towers.iter().zip(times.iter_mut()) {
        ms.sort_by(f64::total_cmp);
        let m = percentile(ms, 0.5);
        println!("| {name} | {m:.1} | {:.1} |", 32e3 / m);
        p50.push(m);
    }
    println!("cpu-w8a8 / f32 images/s: {:.2}x", p50[0] / p50[1]);

    println!(
        "\n## image drift and ranking: {n_queries} image queries against {n_docs} f32-embedded images"
    );
    let embed_all = |t: &ClipImageEncoder, seeds: std::ops::Range<u32>| -> Vec<Vec<f32>> {
        let seeds: Vec<u32> = seeds.collect();
        seeds
            .chunks(32)
            .flat_map(|c| {
                let imgs: Vec<PreprocessedImage> = c.iter().map(|&s| prep(s)).collect();
                t.embed(&imgs).expect("embedding")
            })
            .collect()
    };
    let docs = embed_all(&towers[0].1, 0..n_docs);
    let exact = embed_all(&towers[0].1, 5_000..5_000 + n_queries);
    let quant = embed_all(&towers[1].1, 5_000..5_000 + n_queries);
    let (mut min_cos, mut sum_cos, mut max_abs) = (1.0f32, 0.0f64, 0.0f32);
    let (mut sum_overlap, mut min_overlap) = (0usize, 10usize);
    let (mut s1, mut s10) = (0.0f64, 0.0f64);
    for (q, f) in quant.iter().zip(&exact) {
        let cos = dot(q, f);
        min_cos = min_cos.min(cos);
        sum_cos += f64::from(cos);
        for (a, b) in q.iter().zip(f) {
            max_abs = max_abs.max((a - b).abs());
        }
        let want = top10(&docs, f);
        let got = top10(&docs, q);
        let overlap = got.iter().filter(|i| want.contains(i)).count();
        sum_overlap += overlap;
        min_overlap = min_overlap.min(overlap);
        s1 += f64::from(dot(&docs[want[0]], f));
        s10 += f64::from(dot(&docs[want[9]], f));
    }
    let nq = n_queries as f64;
    println!(
        "| precision | min cosine to f32 | mean cosine | max abs diff | top-10 overlap with f32 (mean) | min |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| cpu-w8a8 | {min_cos:.6} | {:.6} | {max_abs:.2e} | {:.2} / 10 | {min_overlap} |",
        sum_cos / nq,
        sum_overlap as f64 / nq
    );
    println!(
        "f32 image scores, mean over queries: top-1 {:.4}, 10th {:.4}",
        s1 / nq,
        s10 / nq
    );
}
