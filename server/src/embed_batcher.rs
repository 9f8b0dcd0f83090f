//! Dynamic batching of query embeddings: queries that arrive while a forward pass runs, or
//! within a short window of the first one, are embedded together in the next pass.
//!
//! One [`Batcher`] per tower owns a worker thread and a bounded queue. A caller (a request on
//! a blocking thread) pushes its input and waits for its own row of the next pass; a full queue
//! is refused at once ([`BatchError::QueueFull`], answered 503 with `Retry-After`), so memory
//! stays bounded whatever the load. The worker gathers a batch, runs it with one call of the
//! tower, and hands each caller its row. The towers compute every row with the operations it
//! gets alone (see `glimpse_embedder`'s text and vision towers), so batching changes no bits,
//! only how often the weights are read.
//!
//! Gathering: once a query is waiting, the worker waits until as many queries are waiting as it
//! expects (the queries the last pass answered, who tend to come back, plus those that arrived
//! during that pass; at most the largest batch), but no longer than the window after it became
//! free (the end of the last pass, or the query's arrival when it was idle). A lone client
//! therefore never waits (it expects one query), and clients that were split between two
//! passes (half answered, half arrived meanwhile) are gathered into one pass again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::metrics::METRICS;

/// How one tower's queries are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Longest a query waits for others after it arrived (the worker never waits when it has
    /// as many queries as last time). Zero disables batching: no batcher is started.
    pub window: Duration,
    /// Most queries in one forward pass.
    pub max_batch: usize,
    /// Most queries waiting; one more is refused.
    pub queue_bound: usize,
}

/// Why a query got no embedding from the batcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// `queue_bound` queries are already waiting.
    QueueFull {
        /// The bound.
        bound: usize,
    },
    /// The forward pass failed (the tower's message).
    Failed(String),
    /// The worker is gone (it panicked, or the model is being dropped).
    Stopped,
}

/// What a caller gets back.
#[derive(Debug, Clone)]
pub struct Batched {
    /// Its embedding.
    pub embedding: Vec<f32>,
    /// From its arrival to the start of the forward pass that embedded it.
    pub queued: Duration,
}

type Reply = Result<Batched, BatchError>;

struct Job<I> {
    input: I,
    arrived: Instant,
    reply: mpsc::SyncSender<Reply>,
}

struct Queue<I> {
    jobs: VecDeque<Job<I>>,
    closed: bool,
    /// Held by a test: queries queue up but no pass starts.
    held: bool,
}

struct Shared<I> {
    queue: Mutex<Queue<I>>,
    arrived: Condvar,
}

/// A queue and the worker thread that empties it in batches.
pub struct Batcher<I> {
    shared: Arc<Shared<I>>,
    settings: BatchSettings,
    tower: &'static str,
}

impl<I> std::fmt::Debug for Batcher<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("tower", &self.tower)
            .field("settings", &self.settings)
            .finish()
    }
}

impl<I: Send + 'static> Batcher<I> {
    /// Starts the worker. `run` embeds a batch: one row per input, in order, or one error for
    /// the whole batch. `tower` labels the metrics (`text`, `image`).
    pub fn start<F>(tower: &'static str, settings: BatchSettings, run: F) -> std::io::Result<Self>
    where
        F: FnMut(Vec<I>) -> Result<Vec<Vec<f32>>, String> + Send + 'static,
    {
        let settings = BatchSettings {
            max_batch: settings.max_batch.max(1),
            queue_bound: settings.queue_bound.max(1),
            ..settings
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
                held: false,
            }),
            arrived: Condvar::new(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name(format!("glimpse-batch-{tower}"))
            .spawn(move || work(&worker, settings, tower, run))?;
        Ok(Batcher {
            shared,
            settings,
            tower,
        })
    }

    /// Queues `input` and waits for its row of the next pass.
    pub fn embed(&self, input: I) -> Reply {
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let mut q = self.shared.queue.lock();
            if q.closed {
                return Err(BatchError::Stopped);
            }
            if q.jobs.len() >= self.settings.queue_bound {
                METRICS
                    .embed_queue_rejected_total
                    .with_label_values(&[self.tower])
                    .inc();
                return Err(BatchError::QueueFull {
                    bound: self.settings.queue_bound,
                });
            }
            q.jobs.push_back(Job {
                input,
                arrived: Instant::now(),
                reply,
            });
        }
        self.shared.arrived.notify_one();
        answer.recv().unwrap_or(Err(BatchError::Stopped))
    }
}

impl<I> Batcher<I> {
    /// Holds passes back (`true`) or lets them run again: queries queue up meanwhile, so a
    /// test can fill the queue or gather an exact batch.
    pub fn hold(&self, held: bool) {
        self.shared.queue.lock().held = held;
        self.shared.arrived.notify_all();
    }

    /// Queries waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.queue.lock().jobs.len()
    }
}

impl<I> Drop for Batcher<I> {
    /// The worker finishes the queries already queued, then exits.
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.arrived.notify_all();
    }
}

/// The worker: gather, run, answer, until closed and empty.
fn work<I, F>(shared: &Shared<I>, settings: BatchSettings, tower: &'static str, mut run: F)
where
    F: FnMut(Vec<I>) -> Result<Vec<Vec<f32>>, String>,
{
    let batch_size = METRICS.embed_batch_size.with_label_values(&[tower]);
    let queue_wait = METRICS.embed_queue_wait_seconds.with_label_values(&[tower]);
    let embeds = METRICS.embeds_total.with_label_values(&[tower]);
    // Queries the next pass should hold: those the last pass answered plus those that arrived
    // during it.
    let mut expect = 1;
    let mut free_since = Instant::now();
    loop {
        let jobs: Vec<Job<I>> = {
            let mut q = shared.queue.lock();
            while (q.jobs.is_empty() || q.held) && !q.closed {
                shared.arrived.wait(&mut q);
            }
            let Some(oldest) = q.jobs.front() else {
                return; // closed and drained
            };
            let deadline = oldest.arrived.max(free_since) + settings.window;
            let want = expect.clamp(1, settings.max_batch);
            while q.jobs.len() < want && !q.closed {
                if shared.arrived.wait_until(&mut q, deadline).timed_out() {
                    break;
                }
            }
            let n = q.jobs.len().min(settings.max_batch);
            q.jobs.drain(..n).collect()
        };
        let started = Instant::now();
        let n = jobs.len();
        batch_size.observe(n as f64);
        let mut inputs = Vec::with_capacity(n);
        let mut waiting = Vec::with_capacity(n);
        for job in jobs {
            let queued = started.saturating_duration_since(job.arrived);
            queue_wait.observe(queued.as_secs_f64());
            inputs.push(job.input);
            waiting.push((job.reply, queued));
        }
        // A panicking tower fails its batch, not the server: later queries still get a pass.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(inputs)))
            .unwrap_or_else(|_| Err(format!("the {tower} tower panicked")));
        // Counted before the answers go out, so a caller that comes straight back is not
        // counted twice.
        free_since = Instant::now();
        expect = n + shared.queue.lock().jobs.len();
        match result {
            Ok(rows) if rows.len() == n => {
                embeds.inc_by(n as u64);
                for ((reply, queued), embedding) in waiting.into_iter().zip(rows) {
                    // A caller that went away (its request was cancelled) is no error.
                    let _ = reply.send(Ok(Batched { embedding, queued }));
                }
            }
            Ok(rows) => {
                let msg = format!("the {tower} tower returned {} rows for {n}", rows.len());
                for (reply, _) in waiting {
                    let _ = reply.send(Err(BatchError::Failed(msg.clone())));
                }
            }
            Err(msg) => {
                for (reply, _) in waiting {
                    let _ = reply.send(Err(BatchError::Failed(msg.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn settings(window_ms: u64, max_batch: usize, queue_bound: usize) -> BatchSettings {
        BatchSettings {
            window: Duration::from_millis(window_ms),
            max_batch,
            queue_bound,
        }
    }

    /// A tower that doubles its input after `delay`, recording batch sizes.
    fn doubling(
        delay: Duration,
        sizes: Arc<Mutex<Vec<usize>>>,
    ) -> impl FnMut(Vec<u32>) -> Result<Vec<Vec<f32>>, String> + Send + 'static {
        move |xs: Vec<u32>| {
            sizes.lock().push(xs.len());
            std::thread::sleep(delay);
            Ok(xs.iter().map(|&x| vec![x as f32 * 2.0]).collect())
        }
    }

    #[test]
    fn concurrent_callers_share_passes_and_get_their_own_rows() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::new(
            Batcher::start(
                "test",
                settings(50, 8, 64),
                doubling(Duration::from_millis(20), sizes.clone()),
            )
            .unwrap(),
        );
        let handles: Vec<_> = (0..24u32)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || (i, b.embed(i).unwrap()))
            })
            .collect();
        for h in handles {
            let (i, got) = h.join().unwrap();
            assert_eq!(got.embedding, vec![i as f32 * 2.0]);
        }
        let sizes = sizes.lock();
        assert_eq!(sizes.iter().sum::<usize>(), 24);
        assert!(sizes.len() < 24, "no batching happened: {sizes:?}");
        assert!(sizes.iter().all(|&n| n <= 8), "{sizes:?}");
    }

    #[test]
    fn a_lone_caller_does_not_wait_for_the_window() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::start(
            "test",
            settings(2_000, 8, 8),
            doubling(Duration::ZERO, sizes),
        )
        .unwrap();
        let t = Instant::now();
        for i in 0..3 {
            assert_eq!(b.embed(i).unwrap().embedding, vec![i as f32 * 2.0]);
        }
        assert!(
            t.elapsed() < Duration::from_millis(1_500),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let entered = Arc::new(AtomicUsize::new(0));
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let seen = entered.clone();
        let b = Arc::new(
            Batcher::start("test", settings(0, 1, 2), move |xs: Vec<u32>| {
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = gate.lock().recv();
                Ok(xs.iter().map(|&x| vec![x as f32]).collect())
            })
            .unwrap(),
        );
        // One query in the pass (blocked), two waiting: the queue is full.
        let first = {
            let b = b.clone();
            std::thread::spawn(move || b.embed(0))
        };
        while entered.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let waiting: Vec<_> = (1..=2)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || b.embed(i))
            })
            .collect();
        while b.shared.queue.lock().jobs.len() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(b.embed(3).unwrap_err(), BatchError::QueueFull { bound: 2 });
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        assert_eq!(first.join().unwrap().unwrap().embedding, vec![0.0]);
        for h in waiting {
            assert!(h.join().unwrap().is_ok());
        }
    }

    #[test]
    fn a_failing_or_panicking_pass_fails_its_callers_only() {
        let b = Batcher::start("test", settings(0, 4, 4), |xs: Vec<u32>| {
            if xs.contains(&7) {
                panic!("boom");
            }
            if xs.contains(&8) {
                return Err("bad input".to_string());
            }
            Ok(xs.iter().map(|&x| vec![x as f32]).collect())
        })
        .unwrap();
        assert!(matches!(b.embed(7), Err(BatchError::Failed(m)) if m.contains("panicked")));
        assert_eq!(
            b.embed(8).unwrap_err(),
            BatchError::Failed("bad input".into())
        );
        assert_eq!(b.embed(1).unwrap().embedding, vec![1.0]);
    }
}
