//! The CLIP model as the server uses it: one loaded embedder, text queries
//! through its LRU cache, images decoded and preprocessed per request, and (when serving)
//! one batcher per tower, so that concurrent queries share forward passes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use glimpse_embedder::{
    ClipEmbedder, DEFAULT_TEXT_CACHE, DeviceChoice, PreprocessedImage, resolve_model,
};

use crate::embed_batcher::{BatchError, BatchSettings, Batcher};
use crate::error::{ApiError, EMBED_QUEUE_FULL};
use crate::metrics::METRICS;

/// Most text queries in one forward pass.
pub const MAX_TEXT_BATCH: usize = 32;
/// Most image queries in one forward pass (a ViT-B/32 pass costs ~0.1 s per image on 2 cores,
/// so a larger batch would only lengthen the wait of its first query).
pub const MAX_IMAGE_BATCH: usize = 16;

/// How a served model embeds queries (`glimpse serve`'s `--batch-window-ms`, `--batch-queue`,
/// `--query-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingOptions {
    /// How long a query may wait for others to share its forward pass; zero: every query runs
    /// its own pass on its request's thread, as without batching.
    pub batch_window: Duration,
    /// Most queries waiting per tower; more are answered 503 with `Retry-After`.
    pub batch_queue: usize,
    /// Text query embeddings kept in the LRU cache; zero turns the cache off.
    pub query_cache: usize,
}

impl ServingOptions {
    /// `glimpse serve`'s defaults.
    pub const SERVE_DEFAULT: ServingOptions = ServingOptions {
        batch_window: Duration::from_millis(2),
        batch_queue: 256,
        query_cache: DEFAULT_TEXT_CACHE,
    };

    /// No batching (one-shot commands and tests that call the model directly).
    pub const UNBATCHED: ServingOptions = ServingOptions {
        batch_window: Duration::ZERO,
        batch_queue: 256,
        query_cache: DEFAULT_TEXT_CACHE,
    };
}

impl Default for ServingOptions {
    fn default() -> Self {
        Self::SERVE_DEFAULT
    }
}

/// A text query's embedding and where it came from.
#[derive(Debug, Clone)]
pub struct TextEmbedding {
    /// The L2-normalised embedding.
    pub vector: Arc<[f32]>,
    /// Answered from the query cache (no forward pass, no queue).
    pub cache_hit: bool,
    /// Time spent waiting for a forward pass (zero without batching).
    pub queue: Duration,
}

/// An image query's embedding and its wait.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    /// The L2-normalised embedding.
    pub vector: Vec<f32>,
    /// Time spent waiting for a forward pass (zero without batching).
    pub queue: Duration,
}

/// `--device` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// CUDA when built with it and a GPU is present, else CPU.
    Auto,
    /// Always the CPU, f32 weights (the reference's numbers).
    Cpu,
    /// The CPU with the text tower's weights rounded to f16: text queries about 1.2x
    /// faster (half the memory traffic) for ~4e-4 drift from the reference.
    CpuF16,
    /// The CPU with the text tower's weights quantized to int8 (one scale per output
    /// channel, f32 sums): a quarter of the weight traffic per text query, for a larger drift
    /// than `cpu-f16` (see docs/benchmarks.md).
    CpuInt8,
    /// Both towers with int8 weights (one scale per output channel) and each layer's
    /// activations quantized to int8 per token at every call, summed in exact integers: on
    /// CPUs with AVX-512 VNNI about half the f32 time for queries, batched passes and image
    /// batches (less on AVX2), for the drift of two roundings (see docs/benchmarks.md).
    CpuW8a8,
    /// CUDA GPU 0 in half precision (error without the `cuda` build feature or a GPU).
    Cuda,
    /// CUDA GPU 0 in f32: slower, as close to the reference as the CPU.
    CudaF32,
}

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::CpuF16 => DeviceChoice::CpuF16,
            DeviceArg::CpuInt8 => DeviceChoice::CpuInt8,
            DeviceArg::CpuW8a8 => DeviceChoice::CpuInt8Dynamic,
            DeviceArg::Cuda => DeviceChoice::Cuda,
            DeviceArg::CudaF32 => DeviceChoice::CudaF32,
        }
    }
}

/// A loaded CLIP model.
pub struct Model {
    inner: Arc<ClipEmbedder>,
    options: ServingOptions,
    text_batcher: Option<Batcher<String>>,
    image_batcher: Option<Batcher<PreprocessedImage>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("id", &self.id()).finish()
    }
}

impl Model {
    /// Resolves (local dir or hub id) and loads both towers, without batching.
    pub fn load(spec: &str, device: DeviceArg) -> anyhow::Result<Model> {
        Self::load_with(spec, device, ServingOptions::UNBATCHED)
    }

    /// Resolves and loads both towers and, unless `options.batch_window` is zero, starts one
    /// query batcher per tower.
    pub fn load_with(
        spec: &str,
        device: DeviceArg,
        options: ServingOptions,
    ) -> anyhow::Result<Model> {
        let dir = resolve_model(spec).with_context(|| format!("resolving model {spec:?}"))?;
        let inner = ClipEmbedder::load(&dir, device.into(), options.query_cache.max(1))
            .with_context(|| format!("loading model {spec:?}"))?;
        tracing::info!(
            model = inner.model_id(),
            dim = inner.dim(),
            batch_window_ms = options.batch_window.as_secs_f64() * 1e3,
            "CLIP model loaded"
        );
        Self::serving(Arc::new(inner), options).context("starting the query batchers")
    }

    /// Wraps a loaded embedder, starting the batchers `options` asks for.
    fn serving(inner: Arc<ClipEmbedder>, options: ServingOptions) -> std::io::Result<Model> {
        let (mut text_batcher, mut image_batcher) = (None, None);
        if !options.batch_window.is_zero() {
            let settings = |max_batch| BatchSettings {
                window: options.batch_window,
                max_batch,
                queue_bound: options.batch_queue,
            };
            let emb = inner.clone();
            text_batcher = Some(Batcher::start(
                "text",
                settings(MAX_TEXT_BATCH),
                move |texts: Vec<String>| {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    emb.text().embed(&refs).map_err(|e| e.to_string())
                },
            )?);
            let emb = inner.clone();
            image_batcher = Some(Batcher::start(
                "image",
                settings(MAX_IMAGE_BATCH),
                move |images: Vec<PreprocessedImage>| {
                    emb.image().embed(&images).map_err(|e| e.to_string())
                },
            )?);
        }
        Ok(Model {
            inner,
            options,
            text_batcher,
            image_batcher,
        })
    }

    /// How queries are embedded.
    pub fn options(&self) -> ServingOptions {
        self.options
    }

    /// Tests only: holds both batchers' passes back (`true`) or releases them, so queries
    /// queue up meanwhile.
    #[doc(hidden)]
    pub fn hold_batchers(&self, held: bool) {
        if let Some(b) = &self.text_batcher {
            b.hold(held);
        }
        if let Some(b) = &self.image_batcher {
            b.hold(held);
        }
    }

    /// Tests only: text and image queries waiting for a pass.
    #[doc(hidden)]
    pub fn queued_queries(&self) -> (usize, usize) {
        (
            self.text_batcher.as_ref().map_or(0, Batcher::waiting),
            self.image_batcher.as_ref().map_or(0, Batcher::waiting),
        )
    }

    /// The model's id (hub id or directory).
    pub fn id(&self) -> &str {
        self.inner.model_id()
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// The underlying embedder (for batch image embedding).
    pub fn embedder(&self) -> &ClipEmbedder {
        &self.inner
    }

    /// Embeds a text query through the cache (and the batcher); the flag says whether it was
    /// a hit.
    pub fn embed_text(&self, text: &str) -> Result<(Arc<[f32]>, bool), ApiError> {
        let e = self.embed_text_timed(text)?;
        Ok((e.vector, e.cache_hit))
    }

    /// [`embed_text`](Self::embed_text), with the time it waited for its forward pass. A cache
    /// hit skips the batcher; a miss shares the next pass with the queries waiting with it.
    pub fn embed_text_timed(&self, text: &str) -> Result<TextEmbedding, ApiError> {
        let cache = self.options.query_cache > 0;
        if cache && let Some(vector) = self.inner.cached_text(text) {
            return Ok(TextEmbedding {
                vector,
                cache_hit: true,
                queue: Duration::ZERO,
            });
        }
        let (vector, queue) = match &self.text_batcher {
            Some(b) => {
                let got = b
                    .embed(text.to_string())
                    .map_err(|e| batch_error("text", e))?;
                (got.embedding, got.queued)
            }
            None => {
                let mut rows = self
                    .inner
                    .text()
                    .embed(&[text])
                    .map_err(|e| ApiError::internal(format!("embedding text: {e}")))?;
                METRICS.embeds_total.with_label_values(&["text"]).inc();
                let v = rows
                    .pop()
                    .ok_or_else(|| ApiError::internal("the text tower returned no embedding"))?;
                (v, Duration::ZERO)
            }
        };
        let vector: Arc<[f32]> = vector.into();
        if cache {
            self.inner.remember_text(text, vector.clone());
        }
        Ok(TextEmbedding {
            vector,
            cache_hit: false,
            queue,
        })
    }

    /// Decodes, preprocesses and embeds one encoded image.
    pub fn embed_image(&self, bytes: &[u8]) -> Result<Vec<f32>, ApiError> {
        Ok(self.embed_image_timed(bytes)?.vector)
    }

    /// [`embed_image`](Self::embed_image), with the time it waited for its forward pass.
    /// Decoding and preprocessing run on the caller's thread (in parallel across requests);
    /// only the forward pass is batched, and the batcher knows the query is coming while it
    /// decodes (see `embed_batcher`).
    pub fn embed_image_timed(&self, bytes: &[u8]) -> Result<ImageEmbedding, ApiError> {
        let announced = self.image_batcher.as_ref().map(Batcher::announce);
        let img = self
            .inner
            .image()
            .preprocess(bytes)
            .map_err(|e| ApiError::invalid("invalid_image", format!("image: {e}")))?;
        if let Some(a) = announced {
            let got = a.embed(img).map_err(|e| batch_error("image", e))?;
            return Ok(ImageEmbedding {
                vector: got.embedding,
                queue: got.queued,
            });
        }
        let mut out = self
            .inner
            .image()
            .embed(std::slice::from_ref(&img))
            .map_err(|e| ApiError::internal(format!("embedding image: {e}")))?;
        METRICS.embeds_total.with_label_values(&["image"]).inc();
        let vector = out
            .pop()
            .ok_or_else(|| ApiError::internal("the image tower returned no embedding"))?;
        Ok(ImageEmbedding {
            vector,
            queue: Duration::ZERO,
        })
    }
}

/// The answer to a query the batcher could not embed.
fn batch_error(tower: &str, e: BatchError) -> ApiError {
    match e {
        BatchError::QueueFull { bound } => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            EMBED_QUEUE_FULL,
            format!(
                "{bound} {tower} queries are already waiting for the model; retry shortly \
                 (or raise --batch-queue)"
            ),
        ),
        BatchError::Failed(msg) => ApiError::internal(format!("embedding {tower}: {msg}")),
        BatchError::Stopped => ApiError::internal(format!("the {tower} query batcher stopped")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use glimpse_embedder::testing::{TinyClipSpec, write_tiny_clip};

    use super::*;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Waits until `n` text and `m` image queries are queued.
    fn wait_queued(model: &Model, want: (usize, usize)) {
        let t = std::time::Instant::now();
        while model.queued_queries() != want {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "queued {:?}",
                model.queued_queries()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Concurrent queries of different lengths, gathered into shared passes (one forced, the
    /// rest as they come), each get the bits the unbatched model gives them.
    #[test]
    fn batched_queries_get_the_bits_they_get_alone() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_clip(dir.path(), &TinyClipSpec::alternate()).unwrap();
        let spec = dir.path().to_str().unwrap();
        let alone = Model::load(spec, DeviceArg::Cpu).unwrap();
        assert!(alone.text_batcher.is_none() && alone.image_batcher.is_none());
        let options = ServingOptions {
            batch_window: Duration::from_millis(20),
            batch_queue: 256,
            query_cache: 0,
        };
        let batched = Arc::new(Model::load_with(spec, DeviceArg::Cpu, options).unwrap());
        let texts: Vec<String> = (0..24)
            .map(|i| format!("query {i} {}", "word ".repeat(i * 3 % 40)))
            .collect();
        let images: Vec<Vec<u8>> = ["rgba.png", "wide.png", "tall_444.jpg", "palette.png"]
            .iter()
            .map(|f| {
                let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                std::fs::read(root.join("../embedder/tests/fixtures/images").join(f)).unwrap()
            })
            .collect();
        let sizes = METRICS.embed_batch_size.with_label_values(&["text"]);
        let image_sizes = METRICS.embed_batch_size.with_label_values(&["image"]);
        for held in [true, false] {
            let (count0, sum0) = (sizes.get_sample_count(), sizes.get_sample_sum());
            let image_count0 = image_sizes.get_sample_count();
            if held {
                batched.hold_batchers(true);
            }
            let text_threads: Vec<_> = texts
                .iter()
                .cloned()
                .map(|t| {
                    let m = batched.clone();
                    std::thread::spawn(move || (m.embed_text_timed(&t).unwrap(), t))
                })
                .collect();
            let image_threads: Vec<_> = images
                .iter()
                .cloned()
                .map(|b| {
                    let m = batched.clone();
                    std::thread::spawn(move || (m.embed_image_timed(&b).unwrap(), b))
                })
                .collect();
            if held {
                wait_queued(&batched, (texts.len(), images.len()));
                batched.hold_batchers(false);
            }
            for h in text_threads {
                let (got, t) = h.join().unwrap();
                assert!(!got.cache_hit);
                let (want, _) = alone.embed_text(&t).unwrap();
                assert_eq!(bits(&got.vector), bits(&want), "{t:?} (held {held})");
            }
            for h in image_threads {
                let (got, b) = h.join().unwrap();
                let want = alone.embed_image(&b).unwrap();
                assert_eq!(bits(&got.vector), bits(&want), "image (held {held})");
            }
            assert_eq!(sizes.get_sample_sum() - sum0, texts.len() as f64);
            if held {
                // One pass for all 24 texts, one for the four images.
                assert_eq!(sizes.get_sample_count() - count0, 1);
                assert_eq!(image_sizes.get_sample_count() - image_count0, 1);
            }
        }
    }
}
