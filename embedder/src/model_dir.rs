//! Locating a CLIP checkpoint: a local directory or a Hugging Face hub repository.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::error::{EmbedderError, Result, io_err};

/// Hub repository used when the user names no model.
pub const DEFAULT_MODEL: &str = "openai/clip-vit-base-patch32";

/// Weight files of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    /// One or more safetensors files (sharded checkpoints list every shard).
    Safetensors(Vec<PathBuf>),
    /// A PyTorch pickle (`pytorch_model.bin`).
    Pickle(PathBuf),
}

/// Where the tokenizer vocabulary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerFiles {
    /// Hugging Face `tokenizer.json`.
    TokenizerJson(PathBuf),
    /// `vocab.json` + `merges.txt`.
    VocabMerges {
        /// `vocab.json`.
        vocab: PathBuf,
        /// `merges.txt`.
        merges: PathBuf,
    },
    /// None shipped: the built-in OpenAI vocabulary (`bpe_simple_vocab_16e6`).
    Builtin,
}

/// A resolved checkpoint: every file the encoders need, checked to exist.
#[derive(Debug, Clone)]
pub struct ModelDir {
    id: String,
    root: PathBuf,
    config: PathBuf,
    preprocessor: Option<PathBuf>,
    weights: WeightFiles,
    tokenizer: TokenizerFiles,
}

impl ModelDir {
    /// Inspects a local directory in Hugging Face layout.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let id = dir.display().to_string();
        Self::from_dir_with_id(dir, id)
    }

    fn from_dir_with_id(dir: &Path, id: String) -> Result<Self> {
        let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let missing = |what: &str| EmbedderError::MissingFile {
            dir: dir.to_path_buf(),
            what: what.to_string(),
        };
        let config = file("config.json").ok_or_else(|| missing("config.json"))?;
        let weights = if let Some(p) = file("model.safetensors") {
            WeightFiles::Safetensors(vec![p])
        } else if let Some(index) = file("model.safetensors.index.json") {
            WeightFiles::Safetensors(shards_of(dir, &index)?)
        } else if let Some(p) = file("pytorch_model.bin") {
            WeightFiles::Pickle(p)
        } else {
            return Err(missing(
                "weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)",
            ));
        };
        let tokenizer = if let Some(p) = file("tokenizer.json") {
            TokenizerFiles::TokenizerJson(p)
        } else if let (Some(vocab), Some(merges)) = (file("vocab.json"), file("merges.txt")) {
            TokenizerFiles::VocabMerges { vocab, merges }
        } else {
            TokenizerFiles::Builtin
        };
        Ok(Self {
            id,
            root: dir.to_path_buf(),
            config,
            preprocessor: file("preprocessor_config.json"),
            weights,
            tokenizer,
        })
    }

    /// The name the model was asked for (hub id or directory).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Directory holding the files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.json`.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// `preprocessor_config.json`, if shipped.
    pub fn preprocessor_path(&self) -> Option<&Path> {
        self.preprocessor.as_deref()
    }

    /// The weight files.
    pub fn weights(&self) -> &WeightFiles {
        &self.weights
    }

    /// The tokenizer source.
    pub fn tokenizer(&self) -> &TokenizerFiles {
        &self.tokenizer
    }

    /// A lazy view of the weights; tensors are read when a tower asks for them, so a
    /// text-only encoder never materialises the vision weights.
    pub(crate) fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        match &self.weights {
            WeightFiles::Safetensors(files) => {
                // SAFETY: the files are memory-mapped read-only; like every mmap reader we
                // rely on nobody truncating a checkpoint while it is being served.
                let vb = unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device) };
                vb.map_err(|e| self.weights_error(e))
            }
            WeightFiles::Pickle(path) => {
                VarBuilder::from_pth(path, dtype, device).map_err(|e| self.weights_error(e))
            }
        }
    }

    fn weights_error(&self, e: candle_core::Error) -> EmbedderError {
        EmbedderError::Config {
            path: self.root.clone(),
            message: format!("cannot open weights: {e}"),
        }
    }
}

fn shards_of(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let bytes = std::fs::read(index).map_err(io_err(index))?;
    let bad = |message: String| EmbedderError::Config {
        path: index.to_path_buf(),
        message,
    };
    let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no weight_map object".into()))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(bad("weight_map lists no files".into()));
    }
    files
        .into_iter()
        .map(|f| {
            let p = dir.join(&f);
            if p.is_file() {
                Ok(p)
            } else {
                Err(EmbedderError::MissingFile {
                    dir: dir.to_path_buf(),
                    what: format!("shard {f} listed in model.safetensors.index.json"),
                })
            }
        })
        .collect()
}

/// Finds a model: `spec` is a local directory, or a hub repository id (`owner/name`) that is
/// taken from the local hub cache or downloaded (token from `HF_TOKEN` or `~/.env`).
pub fn resolve_model(spec: &str) -> Result<ModelDir> {
    resolve_with(spec, &hf_hub::Cache::from_env(), hub_offline())
}

fn resolve_with(spec: &str, cache: &hf_hub::Cache, offline: bool) -> Result<ModelDir> {
    let spec = spec.trim();
    let spec = if spec.is_empty() { DEFAULT_MODEL } else { spec };
    let path = Path::new(spec);
    if path.is_dir() {
        return ModelDir::from_dir(path);
    }
    if path.exists() {
        return Err(EmbedderError::Resolve {
            spec: spec.into(),
            message: "is a file, expected a model directory or a hub repository id".into(),
        });
    }
    if !looks_like_repo_id(spec) {
        return Err(EmbedderError::Resolve {
            spec: spec.into(),
            message: "no such directory, and not a hub repository id (owner/name)".into(),
        });
    }
    if let Some(dir) = cached_snapshot(cache, spec) {
        return ModelDir::from_dir_with_id(&dir, spec.to_string());
    }
    if offline {
        return Err(offline_error(spec));
    }
    download(spec)
}

fn looks_like_repo_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

fn offline_error(spec: &str) -> EmbedderError {
    EmbedderError::Resolve {
        spec: spec.into(),
        message: "not in the local hub cache and HF_HUB_OFFLINE is set. Either download it \
                  once with network access (unset HF_HUB_OFFLINE), or download the repository \
                  files (config.json, model.safetensors, tokenizer.json, \
                  preprocessor_config.json) into a directory and pass it with --model DIR"
            .into(),
    }
}

/// A cached snapshot that already has config and weights.
fn cached_snapshot(cache: &hf_hub::Cache, spec: &str) -> Option<PathBuf> {
    let cache = cache.model(spec.to_string());
    let config = cache.get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    ModelDir::from_dir(&dir).ok().map(|_| dir)
}

/// `HF_TOKEN` from the environment, else a `HF_TOKEN=` line of `~/.env`: the
/// token for the Hugging Face hub, for models here and for datasets in the
/// server's `glimpse embed --hf-dataset`.
pub fn hub_token() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    let home = std::env::var_os("HOME")?;
    let text = std::fs::read_to_string(Path::new(&home).join(".env")).ok()?;
    token_from_dotenv(&text)
}

fn token_from_dotenv(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let value = line.strip_prefix("HF_TOKEN=")?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// A hub repository whose downloads are logged with their size and time.
struct LoggedRepo<'a> {
    repo: &'a hf_hub::api::sync::ApiRepo,
    spec: &'a str,
}

impl LoggedRepo<'_> {
    fn get(&self, file: &str) -> std::result::Result<PathBuf, hf_hub::api::sync::ApiError> {
        let started = std::time::Instant::now();
        tracing::info!(
            model = self.spec,
            file,
            "fetching from the Hugging Face hub (or its cache)"
        );
        let got = self.repo.get(file);
        if let Ok(path) = &got {
            let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
            tracing::info!(
                model = self.spec,
                file,
                bytes,
                seconds = started.elapsed().as_secs_f64(),
                "fetched"
            );
        }
        got
    }
}

fn download(spec: &str) -> Result<ModelDir> {
    let fail = |message: String| EmbedderError::Resolve {
        spec: spec.into(),
        message,
    };
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_progress(false);
    if let Some(token) = hub_token() {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .build()
        .map_err(|e| fail(format!("hub client: {e}")))?;
    let hub = api.model(spec.to_string());
    // Progress in the log, file by file (the weights are ~600 MB): a server that loads its
    // model in the background says what it is waiting for.
    let repo = LoggedRepo { repo: &hub, spec };
    let config = repo.get("config.json").map_err(|e| {
        fail(format!(
            "download of config.json failed ({e}); check the repository id and network, set \
             HF_TOKEN for gated repositories, or pass a local directory with --model DIR"
        ))
    })?;
    let got_weights = repo.get("model.safetensors").is_ok()
        || sharded(&hub)
        || repo.get("pytorch_model.bin").is_ok();
    if !got_weights {
        return Err(fail(
            "repository has no model.safetensors or pytorch_model.bin".into(),
        ));
    }
    // Optional files: absence is normal (the built-in vocabulary and OpenAI defaults apply).
    let _ = repo.get("preprocessor_config.json");
    if repo.get("tokenizer.json").is_err() {
        let _ = repo.get("vocab.json").and_then(|_| repo.get("merges.txt"));
    }
    let dir = config
        .parent()
        .ok_or_else(|| fail("hub cache path has no parent".into()))?;
    ModelDir::from_dir_with_id(dir, spec.to_string())
}

fn sharded(repo: &hf_hub::api::sync::ApiRepo) -> bool {
    let Ok(index) = repo.get("model.safetensors.index.json") else {
        return false;
    };
    let Ok(bytes) = std::fs::read(&index) else {
        return false;
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
        return false;
    };
    let mut files: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    files.sort_unstable();
    files.dedup();
    files.iter().all(|f| repo.get(f).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_id_shape() {
        assert!(looks_like_repo_id("openai/clip-vit-base-patch32"));
        assert!(!looks_like_repo_id("no-slash"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("/abs/path"));
    }

    #[test]
    fn dotenv_token() {
        let text = "FOO=1\nexport HF_TOKEN=\"hf_abc\"\n";
        assert_eq!(token_from_dotenv(text).as_deref(), Some("hf_abc"));
        assert_eq!(token_from_dotenv("HF_TOKEN=\n"), None);
        assert_eq!(
            token_from_dotenv("A=1\nexport HF_TOKEN='hf_x'\n").as_deref(),
            Some("hf_x")
        );
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelDir::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = ModelDir::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn offline_without_cache_explains_how_to_provide_the_model() {
        let home = tempfile::tempdir().unwrap();
        let cache = hf_hub::Cache::new(home.path().to_path_buf());
        let err = resolve_with("openai/clip-vit-base-patch32", &cache, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HF_HUB_OFFLINE") && err.contains("--model DIR"),
            "{err}"
        );
    }

    #[test]
    fn file_spec_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.bin");
        std::fs::write(&f, b"x").unwrap();
        let err = resolve_model(f.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("is a file"), "{err}");
    }
}
