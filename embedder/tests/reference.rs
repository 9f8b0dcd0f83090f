//! Agreement with the Python reference (transformers CLIPModel + CLIPImageProcessor, OpenAI's
//! tokenizer). Fixtures come from `fixtures/make_fixtures.py`; models are written by
//! `glimpse_embedder::testing` from the same weight formula. Nothing is downloaded.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use glimpse_embedder::testing::{TinyClipSpec, tensor_values, write_tiny_clip};
use glimpse_embedder::{
    ClipEmbedder, ClipImageEncoder, ClipTextEncoder, ClipTokenizer, DeviceChoice, ModelDir,
    PreprocessedImage,
};
use serde_json::Value;

const TOL: f32 = 1e-4;

/// Half-precision weights on the GPU keep about three significant digits (measured on an
/// H200: at most 9.3e-4 on both tiny models).
const F16_TOL: f32 = 2e-3;

/// `GLIMPSE_EMBEDDER_FIXTURES` lets a test binary built elsewhere (the GPU machine) find them.
fn fixtures() -> PathBuf {
    match std::env::var_os("GLIMPSE_EMBEDDER_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// The device the towers run on (`GLIMPSE_TEST_DEVICE`: `cpu` by default, `cuda-f32` or
/// `cuda` on a build with the `cuda` feature) and the agreement bound it is held to.
fn device_under_test() -> (DeviceChoice, f32) {
    let name = std::env::var("GLIMPSE_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device: DeviceChoice = name.parse().unwrap();
    let tol = if matches!(device, DeviceChoice::Cuda | DeviceChoice::CpuF16) {
        F16_TOL
    } else {
        TOL
    };
    (device, tol)
}

fn load_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn tiny_model(spec: &TinyClipSpec) -> (tempfile::TempDir, ModelDir) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_clip(dir.path(), spec).unwrap();
    let model = ModelDir::from_dir(dir.path()).unwrap();
    (dir, model)
}

#[test]
fn tokenizer_matches_openai_on_all_captions() {
    let cases = load_json("tokenizer_ids.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 300, "fixture too small: {}", cases.len());
    let tok = ClipTokenizer::builtin().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.tokenize(text, 77);
        if got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} captions differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn check_model(fixture: &str, spec: &TinyClipSpec) {
    let fx = load_json(fixture);
    // Generator agreement first: a mismatch here explains any embedding mismatch below.
    let probe = &fx["weight_probe"];
    let shape: Vec<usize> = probe["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let values = tensor_values(probe["name"].as_str().unwrap(), &shape);
    assert_eq!(
        &values[..4],
        floats(&probe["first"]).as_slice(),
        "weight formula differs"
    );

    let (device, tol) = device_under_test();
    let (_dir, model) = tiny_model(spec);
    let text = ClipTextEncoder::load(&model, device).unwrap();
    assert_eq!(text.dim(), spec.projection_dim);
    let mut worst_text = 0.0f32;
    let cases = fx["texts"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // One batch of mixed lengths: also proves padding inside a batch changes nothing.
    let got = text.embed(&texts).unwrap();
    for (case, emb) in cases.iter().zip(&got) {
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(text.tokenize(case["text"].as_str().unwrap()), ids);
        let d = max_abs_diff(emb, &floats(&case["embedding"]));
        worst_text = worst_text.max(d);
        assert!(
            d <= tol,
            "{fixture} text {:?}: max abs diff {d} on {device:?}",
            case["text"]
        );
        let norm: f32 = emb.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    eprintln!("{fixture} on {device:?}: text max abs diff {worst_text:e}");
    // Singly embedded equals batched (to rounding: GEMM blocking may differ by batch size).
    let single = text.embed(&[texts[1]]).unwrap();
    assert!(max_abs_diff(&single[0], &got[1]) < tol / 100.0);

    let image = ClipImageEncoder::load(&model, device).unwrap();
    let cases = fx["images"].as_array().unwrap();
    let mut pre: Vec<PreprocessedImage> = Vec::new();
    let mut failures = Vec::new();
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let bytes = std::fs::read(fixtures().join("images").join(file)).unwrap();
        let p = image.preprocess(&bytes).unwrap();
        // JPEG included: it is decoded by libjpeg-turbo's code, as PIL does.
        if let Some(px) = case.get("pixels") {
            let want = floats(px);
            let d = max_abs_diff(&p.pixels, &want);
            if d > TOL {
                let n = p
                    .pixels
                    .iter()
                    .zip(&want)
                    .filter(|(a, b)| (*a - *b).abs() > TOL)
                    .count();
                failures.push(format!("image {file}: pixel max abs diff {d} ({n} values)"));
            }
        }
        pre.push(p);
    }
    let got = image.embed(&pre).unwrap();
    let mut worst_image = 0.0f32;
    for (case, emb) in cases.iter().zip(&got) {
        let d = max_abs_diff(emb, &floats(&case["embedding"]));
        worst_image = worst_image.max(d);
        if d > tol {
            failures.push(format!(
                "image {}: embedding max abs diff {d}",
                case["file"]
            ));
        }
    }
    eprintln!("{fixture} on {device:?}: image max abs diff {worst_image:e}");
    assert!(failures.is_empty(), "{fixture}:\n{}", failures.join("\n"));
}

#[test]
fn small_tiny_clip_matches_transformers() {
    check_model("tiny_small.json", &TinyClipSpec::small());
}

#[test]
fn alternate_tiny_clip_matches_transformers() {
    check_model("tiny_alternate.json", &TinyClipSpec::alternate());
}

#[test]
fn embedder_caches_queries_and_isolates_bad_images() {
    let (_dir, model) = tiny_model(&TinyClipSpec::small());
    let emb = ClipEmbedder::load(&model, DeviceChoice::Auto, 2).unwrap();
    assert_eq!(emb.model_id(), model.id());
    let (a, hit) = emb.embed_text_cached("a photo of a cat").unwrap();
    assert!(!hit);
    let (b, hit) = emb.embed_text_cached("a photo of a cat").unwrap();
    assert!(hit);
    assert_eq!(a, b);
    emb.embed_text_cached("x").unwrap();
    emb.embed_text_cached("y").unwrap(); // evicts the cat (capacity 2)
    let (_, hit) = emb.embed_text_cached("a photo of a cat").unwrap();
    assert!(!hit);
    let stats = emb.cache_stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.len, stats.capacity),
        (1, 4, 2, 2)
    );

    // Corrupt items fail alone; the rest of the batch goes through.
    let good = std::fs::read(fixtures().join("images/rgba.png")).unwrap();
    let truncated = &good[..good.len() / 3];
    let inputs: Vec<&[u8]> = vec![&good, b"not an image", truncated, &[]];
    let results: Vec<_> = inputs.iter().map(|b| emb.image().preprocess(b)).collect();
    assert!(results[0].is_ok());
    assert!(results[1..].iter().all(Result::is_err));
    let ok: Vec<PreprocessedImage> = results.into_iter().filter_map(Result::ok).collect();
    assert_eq!(emb.image().embed(&ok).unwrap().len(), 1);
}

/// `cpu-f16` (text weights rounded to f16, query-sized products reading them as f16) stays
/// within the half-precision bound of transformers, really runs rounded weights, and gives
/// about the same numbers whether a text runs alone or padded to 77.
#[test]
fn cpu_f16_text_weights_stay_close_to_reference() {
    let fx = load_json("tiny_small.json");
    let (_dir, model) = tiny_model(&TinyClipSpec::small());
    let half = ClipTextEncoder::load(&model, DeviceChoice::CpuF16).unwrap();
    let exact = ClipTextEncoder::load(&model, DeviceChoice::Cpu).unwrap();
    let cases = fx["texts"].as_array().unwrap();
    let mut worst = 0.0f32;
    let mut worst_vs_f32 = 0.0f32;
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let got = half.embed(&[text]).unwrap().remove(0);
        worst = worst.max(max_abs_diff(&got, &floats(&case["embedding"])));
        worst_vs_f32 = worst_vs_f32.max(max_abs_diff(&got, &exact.embed(&[text]).unwrap()[0]));
        let ids = half.tokenize(text);
        let padded = half.embed_token_ids(&[ids], Some(77)).unwrap();
        assert!(
            max_abs_diff(&got, &padded[0]) < 1e-5,
            "{text:?}: alone vs padded"
        );
    }
    eprintln!("cpu-f16 text: max abs diff {worst:e} vs transformers, {worst_vs_f32:e} vs cpu");
    assert!(worst <= F16_TOL, "max abs diff {worst}");
    assert!(
        worst_vs_f32 > 1e-6,
        "cpu-f16 gave the f32 numbers: weights not rounded"
    );
}

/// The worst drift of `device`'s text vectors from the f32 tower over both fixtures' texts:
/// max abs difference from f32, from transformers, and the least cosine to f32.
fn text_drift(device: DeviceChoice) -> (f32, f32, f32) {
    let mut worst_abs = 0.0f32;
    let mut worst_ref = 0.0f32;
    let mut worst_cos = 1.0f32;
    for (fixture, spec) in [
        ("tiny_small.json", TinyClipSpec::small()),
        ("tiny_alternate.json", TinyClipSpec::alternate()),
    ] {
        let fx = load_json(fixture);
        let (_dir, model) = tiny_model(&spec);
        let quantized = ClipTextEncoder::load(&model, device).unwrap();
        let exact = ClipTextEncoder::load(&model, DeviceChoice::Cpu).unwrap();
        for case in fx["texts"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let got = quantized.embed(&[text]).unwrap().remove(0);
            let want = exact.embed(&[text]).unwrap().remove(0);
            worst_abs = worst_abs.max(max_abs_diff(&got, &want));
            worst_ref = worst_ref.max(max_abs_diff(&got, &floats(&case["embedding"])));
            let cos: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
            worst_cos = worst_cos.min(cos);
        }
    }
    eprintln!(
        "{device:?} text: max abs diff {worst_abs:e} vs cpu, {worst_ref:e} vs transformers, \
         min cosine {worst_cos}"
    );
    (worst_abs, worst_ref, worst_cos)
}

/// `cpu-int8` (text weights quantized per output channel) stays close to the f32 tower: its
/// drift is printed (docs/benchmarks.md records it) and bounded.
#[test]
fn cpu_int8_text_weights_stay_close_to_f32() {
    let (worst_abs, _, worst_cos) = text_drift(DeviceChoice::CpuInt8);
    assert!(
        worst_abs > 1e-6,
        "cpu-int8 gave the f32 numbers: weights not quantized"
    );
    assert!(
        worst_abs < 0.02 && worst_cos > 0.9995,
        "{worst_abs} {worst_cos}"
    );
}

/// `cpu-w8a8` (weights and each call's activations in int8, integer sums) stays close to the
/// f32 tower, and moves further from it than `cpu-int8`, whose weights it shares: the
/// activations really are quantized.
#[test]
fn cpu_w8a8_text_stays_close_to_f32() {
    let (weights_only, _, _) = text_drift(DeviceChoice::CpuInt8);
    let (worst_abs, _, worst_cos) = text_drift(DeviceChoice::CpuInt8Dynamic);
    assert!(
        worst_abs > weights_only,
        "cpu-w8a8 drifts {worst_abs}, no more than cpu-int8's {weights_only}"
    );
    assert!(
        worst_abs < 0.03 && worst_cos > 0.999,
        "{worst_abs} {worst_cos}"
    );
}

#[test]
fn padded_to_77_equals_real_length() {
    let (device, tol) = device_under_test();
    let (_dir, model) = tiny_model(&TinyClipSpec::alternate());
    let text = ClipTextEncoder::load(&model, device).unwrap();
    let ids = text.tokenize("a short query");
    let real = text
        .embed_token_ids(std::slice::from_ref(&ids), None)
        .unwrap();
    let padded = text.embed_token_ids(&[ids], Some(77)).unwrap();
    assert!(max_abs_diff(&real[0], &padded[0]) < tol / 10.0);
}

#[test]
fn tokenizer_json_source_gives_same_ids() {
    // Export the built-in vocabulary as a HF tokenizer.json and load it back through the
    // tokenizer.json path of ModelDir.
    let dir = tempfile::tempdir().unwrap();
    write_tiny_clip(dir.path(), &TinyClipSpec::small()).unwrap();
    glimpse_embedder::tokenizer::write_tokenizer_json(&dir.path().join("tokenizer.json")).unwrap();
    let model = ModelDir::from_dir(dir.path()).unwrap();
    assert!(matches!(
        model.tokenizer(),
        glimpse_embedder::TokenizerFiles::TokenizerJson(_)
    ));
    let from_json = ClipTokenizer::from_files(model.tokenizer()).unwrap();
    let builtin = ClipTokenizer::builtin().unwrap();
    for text in ["a photo of a cat", "naïve café 東京 🐱", "x y z 123 !!!"] {
        assert_eq!(from_json.tokenize(text, 77), builtin.tokenize(text, 77));
    }
}

#[test]
fn rayon_parallel_preprocessing_is_deterministic() {
    use rayon::prelude::*;
    let (_dir, model) = tiny_model(&TinyClipSpec::small());
    let image = ClipImageEncoder::load(&model, DeviceChoice::Cpu).unwrap();
    let files: Vec<Vec<u8>> = ["rgba.png", "wide.png", "tall_444.jpg", "palette.png"]
        .iter()
        .map(|f| std::fs::read(fixtures().join("images").join(f)).unwrap())
        .collect();
    let seq: Vec<_> = files.iter().map(|b| image.preprocess(b).unwrap()).collect();
    let par: Vec<_> = files
        .par_iter()
        .map(|b| image.preprocess(b).unwrap())
        .collect();
    assert_eq!(seq, par);
}

/// Texts embedded together (different lengths, dozens of tokens in all, two over 32 tokens
/// alone, repeated texts, texts that begin alike and so share rows on the CPU) get the very
/// bits each gets alone: the server's batcher relies on it.
/// Padding to the longest would change them (softmax sums and products over the padded keys);
/// a GEMM that blocks its sums by the row count would too.
#[test]
fn batched_texts_have_the_bits_they_have_alone() {
    let long = "a photo of a cat sitting on a red chair next to a window ".repeat(3);
    let longer = "two dogs running on a beach at dawn ".repeat(6);
    let texts = [
        "a cat",
        "a watercolor painting of a lighthouse on a rocky coast at sunset",
        "",
        long.as_str(),
        "a dog",
        "naïve café 東京 🐱",
        "a cat",
        longer.as_str(),
        "two",
        "a photo of a cat",
    ];
    for spec in [TinyClipSpec::small(), TinyClipSpec::alternate()] {
        let (_dir, model) = tiny_model(&spec);
        for device in [
            DeviceChoice::Cpu,
            DeviceChoice::CpuF16,
            DeviceChoice::CpuInt8,
            DeviceChoice::CpuInt8Dynamic,
        ] {
            let enc = ClipTextEncoder::load(&model, device).unwrap();
            let lens: Vec<usize> = texts.iter().map(|t| enc.tokenize(t).len()).collect();
            assert!(
                lens.iter().sum::<usize>() > 32 && lens.iter().filter(|&&l| l > 32).count() >= 2
            );
            let together = enc.embed(&texts).unwrap();
            // And in another order and grouping.
            let reversed: Vec<&str> = texts.iter().rev().copied().collect();
            let mut back = enc.embed(&reversed).unwrap();
            back.reverse();
            for (i, text) in texts.iter().enumerate() {
                let alone = enc.embed(&[text]).unwrap().remove(0);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
                assert_eq!(
                    bits(&together[i]),
                    bits(&alone),
                    "{device:?} {text:?} ({} tokens) in a batch of {}",
                    lens[i],
                    texts.len()
                );
                assert_eq!(bits(&back[i]), bits(&alone), "{device:?} {text:?} reversed");
            }
        }
    }
}

/// Images embedded together get the bits each gets alone.
#[test]
fn batched_images_have_the_bits_they_have_alone() {
    for spec in [TinyClipSpec::small(), TinyClipSpec::alternate()] {
        let (_dir, model) = tiny_model(&spec);
        let image = ClipImageEncoder::load(&model, DeviceChoice::Cpu).unwrap();
        let imgs: Vec<PreprocessedImage> = ["rgba.png", "wide.png", "tall_444.jpg", "palette.png"]
            .iter()
            .map(|f| {
                let bytes = std::fs::read(fixtures().join("images").join(f)).unwrap();
                image.preprocess(&bytes).unwrap()
            })
            .collect();
        let together = image.embed(&imgs).unwrap();
        for (i, img) in imgs.iter().enumerate() {
            let alone = image.embed(std::slice::from_ref(img)).unwrap().remove(0);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            assert_eq!(bits(&together[i]), bits(&alone), "image {i}");
        }
    }
}
