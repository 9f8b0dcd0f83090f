//! Fetching a Hugging Face hub dataset's Parquet files for one split (cached by hf-hub in the
//! usual `~/.cache/huggingface/hub`, so a rerun or a second slice on the same machine does not
//! download again).

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};

use glimpse_embedder::hub_token;

use crate::embed::error::{EmbedError, Result};
use crate::ingest::natural_cmp;

/// Whether a repository file is a Parquet file of `split`: `data/train-00000-of-00257.parquet`
/// (the `datasets` push layout) or `default/train/0000.parquet` (the parquet-converter layout).
pub fn is_split_file(repo_path: &str, split: &str) -> bool {
    if !repo_path.ends_with(".parquet") {
        return false;
    }
    let mut parts: Vec<&str> = repo_path.split('/').collect();
    let Some(name) = parts.pop() else {
        return false;
    };
    parts.contains(&split)
        || name.strip_prefix(split).is_some_and(|rest| {
            rest.starts_with('-') || rest.starts_with('.') || rest.starts_with('_')
        })
}

/// Downloads (or finds in the cache) the Parquet files of `split` of dataset `id`, in natural
/// order of their repository paths. Needs network access unless every file is cached and
/// `HF_HUB_OFFLINE` is unset; failures say so.
pub fn fetch_split(id: &str, split: &str, revision: &str) -> Result<Vec<PathBuf>> {
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    });
    fetch_split_with(id, split, revision, offline)
}

fn fetch_split_with(id: &str, split: &str, revision: &str, offline: bool) -> Result<Vec<PathBuf>> {
    let fail = |reason: String| EmbedError::Hub {
        dataset: id.to_owned(),
        reason,
    };
    if offline {
        return Err(fail(
            "HF_HUB_OFFLINE is set; download the Parquet files once with network access and pass \
             them with --image-parquet DIR"
                .into(),
        ));
    }
    let mut builder = ApiBuilder::from_env().with_progress(false);
    if let Some(token) = hub_token() {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .build()
        .map_err(|e| fail(format!("hub client: {e}")))?;
    let repo = api.repo(Repo::with_revision(
        id.to_owned(),
        RepoType::Dataset,
        revision.to_owned(),
    ));
    let info = repo.info().map_err(|e| {
        fail(format!(
            "listing the repository failed ({e}); check the id, the network, and HF_TOKEN for gated \
             datasets (accept the terms on the dataset page first), or pass local files with --image-parquet"
        ))
    })?;
    let mut files: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|f| is_split_file(f, split))
        .collect();
    files.sort_by(|a, b| natural_cmp(a, b));
    if files.is_empty() {
        return Err(fail(format!(
            "no Parquet files for split `{split}` at revision `{revision}`"
        )));
    }
    tracing::info!(
        dataset = id,
        split,
        files = files.len(),
        "fetching dataset Parquet files"
    );
    files
        .iter()
        .map(|f| {
            repo.get(f)
                .map_err(|e| fail(format!("download of {f} failed: {e}")))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_files_in_both_hub_layouts() {
        assert!(is_split_file("data/train-00000-of-00257.parquet", "train"));
        assert!(is_split_file(
            "default/validation/0000.parquet",
            "validation"
        ));
        assert!(!is_split_file(
            "data/validation-00000-of-00014.parquet",
            "train"
        ));
        assert!(!is_split_file("data/train-00000-of-00257.arrow", "train"));
        assert!(!is_split_file("data/trainer-0.parquet", "train"));
    }

    #[test]
    fn offline_is_a_clear_error_without_network() {
        let err = fetch_split_with("ILSVRC/imagenet-1k", "train", "main", true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ILSVRC/imagenet-1k") && err.contains("--image-parquet"),
            "{err}"
        );
    }
}
