//! `glimpse embed-text` and `glimpse embed-image`: one JSON array per input.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::model::{DeviceArg, Model};

/// Arguments of `glimpse embed-text`.
#[derive(Debug, Args)]
pub struct EmbedTextArgs {
    /// CLIP model: a Hugging Face repo id or a local directory.
    #[arg(long, default_value = "openai/clip-vit-base-patch32")]
    pub model: String,
    /// Device for the model.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Texts to embed.
    #[arg(required = true)]
    pub texts: Vec<String>,
}

/// Arguments of `glimpse embed-image`.
#[derive(Debug, Args)]
pub struct EmbedImageArgs {
    /// CLIP model: a Hugging Face repo id or a local directory.
    #[arg(long, default_value = "openai/clip-vit-base-patch32")]
    pub model: String,
    /// Device for the model.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Image files to embed.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Prints the text embeddings.
pub fn embed_text(a: EmbedTextArgs) -> Result<()> {
    let model = Model::load(&a.model, a.device)?;
    for t in &a.texts {
        let (v, _) = model
            .embed_text(t)
            .map_err(|e| anyhow::anyhow!("{t:?}: {}", e.message))?;
        println!("{}", serde_json::to_string(&*v)?);
    }
    Ok(())
}

/// Prints the image embeddings.
pub fn embed_image(a: EmbedImageArgs) -> Result<()> {
    let model = Model::load(&a.model, a.device)?;
    for f in &a.files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let v = model
            .embed_image(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {}", f.display(), e.message))?;
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(())
}
