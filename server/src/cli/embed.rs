//! `glimpse embed` (batch image embeddings to partitioned Parquet) and `glimpse sky-launch`
//! (one SkyPilot managed job per id slice).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args, ValueEnum};

use crate::embed::{
    DEFAULT_BATCH_SIZE, DEFAULT_PARTITION_SIZE, EmbedOptions, ImageInput, InputSpec, ProgressMode,
    split_range,
};
use crate::model::DeviceArg;

/// How progress is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// A bar on a terminal, log lines otherwise.
    Auto,
    /// Log lines every 10 s.
    Log,
    /// Only one line per saved partition.
    Quiet,
}

/// Arguments of `glimpse embed`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["images", "image_parquet", "hf_dataset", "image_list"])))]
pub struct EmbedArgs {
    /// CLIP model: a Hugging Face repo id or a local directory.
    #[arg(long, default_value = glimpse_embedder::DEFAULT_MODEL)]
    pub model: String,
    /// Output folder of the partitions `embeddings_{S}_{E}.parquet_part_{n}/`.
    #[arg(long)]
    pub out: PathBuf,
    /// A folder of images, walked recursively (jpg, jpeg, png, webp, gif, bmp).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// A Parquet file or folder of them in the Hugging Face image layout (`image.bytes`).
    #[arg(long)]
    pub image_parquet: Option<PathBuf>,
    /// A Hugging Face hub dataset id (e.g. ILSVRC/imagenet-1k), downloaded and cached.
    #[arg(long)]
    pub hf_dataset: Option<String>,
    /// Split of --hf-dataset.
    #[arg(long, default_value = "train", requires = "hf_dataset")]
    pub hf_split: String,
    /// Revision (branch, tag, commit) of --hf-dataset.
    #[arg(long, default_value = "main", requires = "hf_dataset")]
    pub hf_revision: String,
    /// A text file of image paths, one a line (blank lines skipped).
    #[arg(long)]
    pub image_list: Option<PathBuf>,
    /// First id to embed.
    #[arg(long, env = "START_IDX", default_value_t = 0)]
    pub start: u64,
    /// One past the last id to embed (default: the input length).
    #[arg(long, env = "END_IDX")]
    pub end: Option<u64>,
    /// Ids per output partition.
    #[arg(long, default_value_t = DEFAULT_PARTITION_SIZE)]
    pub partition_size: u64,
    /// Images per forward pass.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Device for the model.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Decode threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also save every image as JPEG under DIR/{id/100000:04}/{id}.jpg; `image_path` then
    /// holds that path relative to DIR.
    #[arg(long)]
    pub save_images: Option<PathBuf>,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Sleep this many milliseconds after each saved partition (crash tests, demos).
    #[arg(long, hide = true)]
    pub pause_after_partition_ms: Option<u64>,
}

impl EmbedArgs {
    /// The pipeline options these arguments describe.
    pub fn options(&self) -> Result<EmbedOptions> {
        let input = if let Some(d) = &self.images {
            InputSpec::Local(ImageInput::Folder(d.clone()))
        } else if let Some(p) = &self.image_parquet {
            InputSpec::Local(ImageInput::Parquet(vec![p.clone()]))
        } else if let Some(l) = &self.image_list {
            InputSpec::Local(ImageInput::List(l.clone()))
        } else if let Some(id) = &self.hf_dataset {
            InputSpec::Hub {
                id: id.clone(),
                split: self.hf_split.clone(),
                revision: self.hf_revision.clone(),
            }
        } else {
            bail!("one of --images, --image-parquet, --hf-dataset, --image-list is required");
        };
        let mut o = EmbedOptions::new(input, self.out.clone());
        o.start = self.start;
        o.end = self.end;
        o.partition_size = self.partition_size;
        o.batch_size = self.batch_size;
        o.threads = self.threads;
        o.save_images = self.save_images.clone();
        o.progress = match self.progress {
            ProgressArg::Auto => ProgressMode::Auto,
            ProgressArg::Log => ProgressMode::Log,
            ProgressArg::Quiet => ProgressMode::Quiet,
        };
        o.pause_after_partition = self.pause_after_partition_ms.map(Duration::from_millis);
        Ok(o)
    }
}

/// Runs `glimpse embed`.
pub fn embed(a: EmbedArgs) -> Result<()> {
    let opts = a.options()?;
    let s = crate::embed::embed(&a.model, a.device.into(), &opts)?;
    tracing::info!(
        "done: {} partitions ({} already complete, {} written), {} rows, {} unreadable images",
        s.partitions_total,
        s.partitions_skipped,
        s.partitions_written,
        s.rows_written,
        s.failures
    );
    Ok(())
}

/// Arguments of `glimpse sky-launch`.
#[derive(Debug, Args)]
pub struct SkyLaunchArgs {
    /// First id of the whole range.
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// One past the last id of the whole range.
    #[arg(long)]
    pub end: u64,
    /// Number of managed jobs (slices of near-equal length).
    #[arg(long)]
    pub jobs: u64,
    /// SkyPilot task file run by every job.
    #[arg(long, default_value = "examples/skypilot/compute_vectors.yaml")]
    pub task: PathBuf,
    /// Job name prefix; job i is named `{prefix}-{i}`.
    #[arg(long, default_value = "glimpse-embed")]
    pub name: String,
    /// Launch the jobs (otherwise only print the commands).
    #[arg(long)]
    pub run: bool,
}

/// The `sky jobs launch` argument vectors of a launch, one per slice.
pub fn sky_launch_commands(a: &SkyLaunchArgs) -> Result<Vec<Vec<String>>> {
    let slices = split_range(a.start, a.end, a.jobs)?;
    Ok(slices
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                "sky".into(),
                "jobs".into(),
                "launch".into(),
                "--name".into(),
                format!("{}-{i}", a.name),
                "--env".into(),
                format!("START_IDX={}", r.start),
                "--env".into(),
                format!("END_IDX={}", r.end),
                "--yes".into(),
                "--detach-run".into(),
                a.task.display().to_string(),
            ]
        })
        .collect())
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Prints (or with `--run`, runs one after the other) one `sky jobs launch` per slice.
pub fn sky_launch(a: SkyLaunchArgs) -> Result<()> {
    let commands = sky_launch_commands(&a)?;
    if !a.run {
        for c in &commands {
            println!(
                "{}",
                c.iter()
                    .map(|s| shell_quote(s))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        return Ok(());
    }
    if !a.task.is_file() {
        bail!("task file {} not found", a.task.display());
    }
    let mut failed = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        tracing::info!("launching job {i}: {}", c.join(" "));
        let status = Command::new(&c[0])
            .args(&c[1..])
            .status()
            .with_context(|| "running `sky` (is SkyPilot installed and on PATH?)")?;
        if !status.success() {
            tracing::error!("job {i} failed to launch ({status})");
            failed.push(i);
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} launches failed (jobs {:?}); rerun those slices, completed partitions are skipped",
            failed.len(),
            commands.len(),
            failed
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn launch_commands_cover_the_range() {
        let a = SkyLaunchArgs {
            start: 0,
            end: 1_000_000,
            jobs: 100,
            task: PathBuf::from("t.yaml"),
            name: "e".into(),
            run: false,
        };
        let c = sky_launch_commands(&a).unwrap();
        assert_eq!(c.len(), 100);
        assert!(
            c[0].contains(&"START_IDX=0".to_string())
                && c[0].contains(&"END_IDX=10000".to_string())
        );
        assert!(c[99].contains(&"END_IDX=1000000".to_string()));
        assert_eq!(shell_quote("a b"), "'a b'");
    }
}
