//! Both towers of one checkpoint plus an LRU cache of recent query embeddings.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;

use crate::device::DeviceChoice;
use crate::error::{EmbedderError, Result};
use crate::image_encoder::ClipImageEncoder;
use crate::model_dir::ModelDir;
use crate::text_encoder::ClipTextEncoder;

/// Default number of cached query embeddings.
pub const DEFAULT_TEXT_CACHE: usize = 4096;

/// Counters of the query cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that ran the text tower.
    pub misses: u64,
    /// Entries held now.
    pub len: usize,
    /// Maximum entries.
    pub capacity: usize,
}

/// A CLIP model ready to embed queries and images. `Send + Sync`.
pub struct ClipEmbedder {
    model_id: String,
    text: ClipTextEncoder,
    image: ClipImageEncoder,
    cache: Mutex<LruCache<String, Arc<[f32]>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for ClipEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipEmbedder")
            .field("model_id", &self.model_id)
            .field("dim", &self.dim())
            .finish()
    }
}

impl ClipEmbedder {
    /// Loads both towers; `cache_capacity` 0 is treated as 1.
    pub fn load(dir: &ModelDir, device: DeviceChoice, cache_capacity: usize) -> Result<Self> {
        let text = ClipTextEncoder::load(dir, device)?;
        let image = ClipImageEncoder::load(dir, device)?;
        if text.dim() != image.dim() {
            return Err(EmbedderError::Config {
                path: dir.config_path().to_path_buf(),
                message: "text and image projections differ in width".into(),
            });
        }
        let capacity = NonZeroUsize::new(cache_capacity).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            model_id: dir.id().to_string(),
            text,
            image,
            cache: Mutex::new(LruCache::new(capacity)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The model's name (hub id or directory).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.text.dim()
    }

    /// The text side.
    pub fn text(&self) -> &ClipTextEncoder {
        &self.text
    }

    /// The image side.
    pub fn image(&self) -> &ClipImageEncoder {
        &self.image
    }

    /// Embedding of one query, from the cache when seen recently; `.1` tells whether it was
    /// a hit. The lock is not held while the model runs, so concurrent misses proceed in
    /// parallel (two misses of the same text may both compute it; the result is identical).
    pub fn embed_text_cached(&self, text: &str) -> Result<(Arc<[f32]>, bool)> {
        if let Some(v) = self.cache.lock().get(text) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((Arc::clone(v), true));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut rows = self.text.embed(&[text])?;
        let v: Arc<[f32]> = rows
            .pop()
            .ok_or_else(|| EmbedderError::InvalidInput("empty embedding batch".into()))?
            .into();
        self.cache.lock().put(text.to_string(), Arc::clone(&v));
        Ok((v, false))
    }

    /// The cached embedding of `text`, if any, counted as a hit or a miss: the first half of
    /// [`embed_text_cached`](Self::embed_text_cached), for callers that run the miss elsewhere
    /// (the server's batcher) and then [`remember_text`](Self::remember_text) it.
    pub fn cached_text(&self, text: &str) -> Option<Arc<[f32]>> {
        let hit = self.cache.lock().get(text).map(Arc::clone);
        match hit {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        hit
    }

    /// Stores the embedding of `text` in the cache.
    pub fn remember_text(&self, text: &str, embedding: Arc<[f32]>) {
        self.cache.lock().put(text.to_string(), embedding);
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        let cache = self.cache.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            len: cache.len(),
            capacity: cache.cap().get(),
        }
    }
}
