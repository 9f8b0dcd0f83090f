//! The `glimpse` command line: serve, load, search, query, embed, sky-launch.

use anyhow::Result;
use clap::{Parser, Subcommand};
use glimpse_server::cli;

/// Semantic image search in one binary.
#[derive(Debug, Parser)]
#[command(name = "glimpse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API and search page over a data directory.
    Serve(cli::ServeArgs),
    /// Upload Parquet shards (files or folders) to a server's bulk-load route.
    Load(cli::LoadArgs),
    /// Text search against a running server.
    Search(cli::SearchArgs),
    /// Offline batch queries straight on a data directory (Parquet in, Parquet out).
    Query(cli::QueryArgs),
    /// Print the CLIP text embedding of each text as a JSON array.
    EmbedText(cli::EmbedTextArgs),
    /// Print the CLIP image embedding of each file as a JSON array.
    EmbedImage(cli::EmbedImageArgs),
    /// Embed images (folder, list, Parquet, hub dataset) into partitioned Parquet, resumably.
    Embed(cli::EmbedArgs),
    /// Print or run one `sky jobs launch` per slice of an id range.
    SkyLaunch(cli::SkyLaunchArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => {
            // Only here: the batch commands (embed) churn through large tensors and are better
            // off with glibc's defaults, which rise to `REUSE` after the first large frees.
            glimpse_storage::set_heap_thresholds(cli::serve_heap_thresholds(&a));
            cli::serve(a)
        }
        Command::Load(a) => cli::load(a),
        Command::Search(a) => cli::search(a),
        Command::Query(a) => cli::query(a),
        Command::EmbedText(a) => cli::embed_text(a),
        Command::EmbedImage(a) => cli::embed_image(a),
        Command::Embed(a) => cli::embed(a),
        Command::SkyLaunch(a) => cli::sky_launch(a),
    }
}
