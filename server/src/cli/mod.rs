//! The subcommands of the `glimpse` binary. Each is a plain function over
//! its parsed arguments so tests can call them without a process.

mod client;
mod embed;
mod print_embedding;
mod query;
mod serve;

pub use client::{LoadArgs, SearchArgs, load, search};
pub use embed::{EmbedArgs, SkyLaunchArgs, embed, sky_launch, sky_launch_commands};
pub use print_embedding::{EmbedImageArgs, EmbedTextArgs, embed_image, embed_text};
pub use query::{QueryArgs, query};
pub use serve::{
    DEFAULT_PHOTOS_COLLECTION, ServeArgs, build_state, serve, serve_heap_thresholds,
    shutdown_signal, start_background,
};
