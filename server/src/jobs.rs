//! Background jobs (`?async=true` bulk loads, `--photos` folder passes) and their progress.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

/// Live progress of one bulk load, updated by the loader as it reads.
#[derive(Debug, Default)]
pub struct JobProgress {
    /// Rows read and staged so far.
    pub rows_done: AtomicU64,
    /// Rows in all shards of the job (known after the shards are opened).
    pub rows_total: AtomicU64,
    /// Shards fully read.
    pub shards_done: AtomicU64,
    /// Shards in the job.
    pub shards_total: AtomicU64,
}

/// Where a job stands.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Reading shards or committing.
    Running,
    /// Committed; the result is the bulk-load answer.
    Done,
    /// Failed; nothing was committed.
    Failed,
}

/// One job as reported by `GET /v1/jobs/{id}`.
#[derive(Debug)]
pub struct Job {
    /// Job id (UUID v4).
    pub id: String,
    /// What the job does: `bulk_load` or `photo_sync`.
    pub kind: &'static str,
    /// Target collection.
    pub collection: String,
    /// Progress counters.
    pub progress: Arc<JobProgress>,
    started: Instant,
    started_unix: u64,
    outcome: Mutex<(JobState, Option<serde_json::Value>)>,
}

/// Finished jobs kept for `GET /v1/jobs`; older ones are forgotten.
pub const MAX_FINISHED_JOBS: usize = 256;

impl Job {
    /// Whether the job has ended (done or failed).
    pub fn is_finished(&self) -> bool {
        self.outcome.lock().0 != JobState::Running
    }

    /// Marks the job finished with its result or error body.
    pub fn finish(&self, state: JobState, body: serde_json::Value) {
        *self.outcome.lock() = (state, Some(body));
    }

    /// JSON view of the job.
    pub fn to_json(&self) -> serde_json::Value {
        let (state, body) = self.outcome.lock().clone();
        let p = &self.progress;
        let mut v = serde_json::json!({
            "id": self.id,
            "kind": self.kind,
            "collection": self.collection,
            "state": state,
            "started_unix": self.started_unix,
            "elapsed_seconds": self.started.elapsed().as_secs_f64(),
            "rows_done": p.rows_done.load(Ordering::Relaxed),
            "rows_total": p.rows_total.load(Ordering::Relaxed),
            "shards_done": p.shards_done.load(Ordering::Relaxed),
            "shards_total": p.shards_total.load(Ordering::Relaxed),
        });
        match (state, body) {
            (JobState::Done, Some(b)) => v["result"] = b,
            (JobState::Failed, Some(b)) => v["error"] = b,
            _ => {}
        }
        v
    }
}

/// All jobs since the server started (kept in memory; they are a view of
/// work in flight, the data itself is in the store).
#[derive(Debug, Default)]
pub struct JobRegistry {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl JobRegistry {
    /// Registers a new running job of `kind` on `collection`. Beyond [`MAX_FINISHED_JOBS`]
    /// finished jobs, the oldest finished one is forgotten (running jobs never are).
    pub fn start(&self, kind: &'static str, collection: &str) -> Arc<Job> {
        let id = uuid::Uuid::new_v4().to_string();
        let job = Arc::new(Job {
            id: id.clone(),
            kind,
            collection: collection.to_string(),
            progress: Arc::new(JobProgress::default()),
            started: Instant::now(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            outcome: Mutex::new((JobState::Running, None)),
        });
        let mut jobs = self.jobs.lock();
        let finished = jobs.values().filter(|j| j.is_finished()).count();
        if finished >= MAX_FINISHED_JOBS
            && let Some(oldest) = jobs
                .values()
                .filter(|j| j.is_finished())
                .min_by_key(|j| j.started)
                .map(|j| j.id.clone())
        {
            jobs.remove(&oldest);
        }
        jobs.insert(id, job.clone());
        job
    }

    /// Every known job, newest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        let mut all: Vec<Arc<Job>> = self.jobs.lock().values().cloned().collect();
        all.sort_by_key(|j| std::cmp::Reverse(j.started));
        all
    }

    /// Looks a job up by id.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().get(id).cloned()
    }
}
