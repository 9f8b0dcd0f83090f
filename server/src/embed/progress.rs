//! Progress reporting: an indicatif bar on a terminal, periodic log lines otherwise (batch jobs,
//! SkyPilot logs), and one line per saved partition in both cases.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Always log lines.
    Log,
    /// Nothing but the per-partition lines.
    Quiet,
}

/// Seconds between two progress log lines.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts items and partitions and reports them.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    log_lines: bool,
    total: u64,
    done: u64,
    failed: u64,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    /// Starts reporting on `total` items to process.
    pub fn new(mode: ProgressMode, total: u64) -> Self {
        let bar = (mode == ProgressMode::Auto && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} images ({per_sec}, eta {eta}) {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        let now = Instant::now();
        Self {
            log_lines: bar.is_none() && mode != ProgressMode::Quiet,
            bar,
            total,
            done: 0,
            failed: 0,
            started: now,
            last_log: now,
        }
    }

    /// Items processed per second so far.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Records `n` more items, `failed` of which could not be embedded.
    pub fn advance(&mut self, n: u64, failed: u64) {
        self.done += n;
        self.failed += failed;
        if let Some(bar) = &self.bar {
            bar.inc(n);
            if self.failed > 0 {
                bar.set_message(format!("{} unreadable", self.failed));
            }
        } else if self.log_lines && self.last_log.elapsed() >= LOG_INTERVAL {
            self.last_log = Instant::now();
            tracing::info!(
                "{}/{} images ({:.1} images/s, {} unreadable)",
                self.done,
                self.total,
                self.rate(),
                self.failed
            );
        }
    }

    /// Reports a committed partition.
    pub fn partition_saved(&self, n: u64, dir: &Path, rows: usize, failures: usize) {
        let line = format!(
            "Saved partition {n} to {} with {rows} rows ({failures} unreadable), {:.1} images/s",
            dir.display(),
            self.rate()
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => tracing::info!("{line}"),
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
