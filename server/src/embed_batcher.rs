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
//! therefore never waits (it expects one query).
//!
//! Answered clients do not come back at once: each still has its search to run, its answer to
//! send and its next request to make, on cores the others share, which takes longer than a
//! 2 ms window (16 short-text clients on 2 cores came back over about 10 ms, so passes held 10
//! of them and the rest ran a pass of their own). So when the window ends short of the expected
//! queries and the last extra wait paid off, the worker keeps waiting for the returners, up to
//! half of the last pass's duration after it ended ([`RETURN_WAIT_SHARE`]): a group that
//! comes back is gathered into one pass again, and waiting costs its queries less than the pass
//! they would otherwise wait behind. An extra wait that gathers nobody (the answered clients
//! are gone, as under open-loop traffic) is not tried on the next pass, so a stream that does
//! not return pays it at most every other pass.
//!
//! Image queries are decoded on their callers' threads before they can be queued, and 16
//! JPEGs decoding on two cores took longer than the quarter of a pass that this wait was until
//! 2026-12-08: passes held 13–14 of 16 image clients and the rest waited a whole pass more (p99
//! twice p50). So a caller may
//! [`announce`](Batcher::announce) its query before preparing its input; the worker then waits
//! for announced queries too, up to half of the last pass after it ended
//! ([`PREPARING_WAIT_SHARE`]): a query already in the server costs those waiting with it less
//! than the pass it would otherwise wait behind.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::metrics::METRICS;

/// The longest extra wait for returning clients, as a share of the last pass's duration (see
/// the module's doc): half bounds what a wait that gathers nobody adds to a query's latency,
/// while a group that returns within it is served in one pass instead of two. A quarter (until
/// 2026-12-08) let 16 short-text clients on 2 cores split 12 and 4 (p99 2.1–2.6x p50; half:
/// 1.7–2.2x, passes of 15.8–16, see docs/benchmarks.md).
pub const RETURN_WAIT_SHARE: u32 = 2;

/// The longest extra wait for announced queries still preparing their input (see the module's
/// doc), as a share of the last pass's duration: left behind, such a query waits a whole pass.
pub const PREPARING_WAIT_SHARE: u32 = 2;

/// How one tower's queries are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Longest a query waits for others after it arrived or the last pass ended (the worker
    /// never waits when it has as many queries as it expects); past it, the worker may wait
    /// for the last pass's returning clients up to [`RETURN_WAIT_SHARE`] of that pass. Zero
    /// disables batching: no batcher is started.
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
    /// Announced queries whose callers are still preparing their input.
    preparing: usize,
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
                preparing: 0,
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
        self.queue(input, false)
    }

    /// Tells the worker a query is on its way while its caller prepares the input (decodes an
    /// image), so the next pass can wait for it; [`Announced::embed`] queues it, and dropping
    /// the guard (the input was bad) withdraws it.
    pub fn announce(&self) -> Announced<'_, I> {
        self.shared.queue.lock().preparing += 1;
        Announced {
            batcher: self,
            queued: false,
        }
    }

    /// Queues `input` (withdrawing its announcement in the same step, so the worker never
    /// sees it neither preparing nor queued) and waits for its row.
    fn queue(&self, input: I, announced: bool) -> Reply {
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let mut q = self.shared.queue.lock();
            if announced {
                q.preparing = q.preparing.saturating_sub(1);
            }
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

/// A query announced to a [`Batcher`] whose input is being prepared.
#[must_use = "dropping the guard withdraws the announcement"]
pub struct Announced<'a, I> {
    batcher: &'a Batcher<I>,
    queued: bool,
}

impl<I: Send + 'static> Announced<'_, I> {
    /// Queues the prepared input and waits for its row of the next pass.
    pub fn embed(mut self, input: I) -> Reply {
        self.queued = true;
        self.batcher.queue(input, true)
    }
}

impl<I> Drop for Announced<'_, I> {
    fn drop(&mut self) {
        if !self.queued {
            let mut q = self.batcher.shared.queue.lock();
            q.preparing = q.preparing.saturating_sub(1);
            drop(q);
            // The worker may be waiting for this query.
            self.batcher.shared.arrived.notify_all();
        }
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

    /// Announced queries still preparing their input.
    #[cfg(test)]
    fn preparing(&self) -> usize {
        self.shared.queue.lock().preparing
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
    let pass_seconds = METRICS.embed_pass_seconds.with_label_values(&[tower]);
    let embeds = METRICS.embeds_total.with_label_values(&[tower]);
    // Queries the next pass should hold: those the last pass answered plus those that arrived
    // during it.
    let mut expect = 1;
    let mut free_since = Instant::now();
    let mut last_pass = Duration::ZERO;
    // Whether to wait for returners past the window: until an extra wait gathers nobody.
    let mut wait_for_returners = true;
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
            // Returners are waited for only while they can still be on their way: a query that
            // arrived after that bound finds an idle worker and gets the window alone.
            let returners_by = free_since + last_pass / RETURN_WAIT_SHARE;
            let want = expect.clamp(1, settings.max_batch);
            let wait_until = |q: &mut parking_lot::MutexGuard<'_, Queue<I>>, until: Instant| {
                while q.jobs.len() < want && !q.closed {
                    if shared.arrived.wait_until(q, until).timed_out() {
                        break;
                    }
                }
            };
            wait_until(&mut q, deadline);
            if q.jobs.len() < want && !q.closed && returners_by > deadline {
                if wait_for_returners {
                    let before = q.jobs.len();
                    wait_until(&mut q, returners_by);
                    wait_for_returners = q.jobs.len() > before;
                } else {
                    // Skipped this time: tried again on the next pass.
                    wait_for_returners = true;
                }
            }
            // Queries already in the server, preparing their input, are worth a longer wait:
            // left behind, each waits a whole pass.
            let prepared_by = deadline.max(free_since + last_pass / PREPARING_WAIT_SHARE);
            while q.preparing > 0 && q.jobs.len() < settings.max_batch && !q.closed {
                if shared.arrived.wait_until(&mut q, prepared_by).timed_out() {
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
        last_pass = free_since.saturating_duration_since(started);
        pass_seconds.observe(last_pass.as_secs_f64());
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

    /// Closed-loop clients that come back at different times (0 to 7 ms after their answer,
    /// longer than the 1 ms window) are gathered into full passes again by the wait for
    /// returners: with the window alone they split into two groups that alternate.
    #[test]
    fn returning_clients_are_gathered_into_one_pass() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::new(
            Batcher::start(
                "test",
                settings(1, 8, 64),
                doubling(Duration::from_millis(80), sizes.clone()),
            )
            .unwrap(),
        );
        let rounds = 8;
        let handles: Vec<_> = (0..8u32)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        assert_eq!(b.embed(i).unwrap().embedding, vec![i as f32 * 2.0]);
                        std::thread::sleep(Duration::from_millis(u64::from(i)));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let sizes = sizes.lock();
        assert_eq!(sizes.iter().sum::<usize>(), 64);
        // The first pass holds the clients that had arrived when the idle worker woke, the
        // second gathers the rest with them coming back, and from then on every pass holds
        // all eight but the last (the first group's last round).
        assert!(sizes.len() <= rounds + 1, "split passes: {sizes:?}");
        let steady = &sizes[1..sizes.len() - 1];
        assert!(steady.iter().all(|&n| n == 8), "{sizes:?}");
    }

    /// An extra wait that gathers nobody (the answered callers are gone) is skipped on the
    /// next pass: a stream that does not come back pays it at most every other pass.
    #[test]
    fn a_fruitless_wait_for_returners_is_not_repeated() {
        let passes: Arc<Mutex<Vec<(Instant, Instant, usize)>>> = Arc::new(Mutex::new(Vec::new()));
        let log = passes.clone();
        let b = Arc::new(
            Batcher::start("test", settings(1, 8, 64), move |xs: Vec<u32>| {
                let start = Instant::now();
                std::thread::sleep(Duration::from_millis(200));
                log.lock().push((start, Instant::now(), xs.len()));
                Ok(xs.iter().map(|&x| vec![x as f32]).collect())
            })
            .unwrap(),
        );
        let spawn = |i: u32| {
            let b = b.clone();
            std::thread::spawn(move || b.embed(i).unwrap())
        };
        // Pass 1 holds four; one more arrives during it, so pass 2 expects five and waits for
        // four returners who never come.
        b.hold(true);
        let first: Vec<_> = (0..4).map(spawn).collect();
        while b.waiting() < 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
        b.hold(false);
        std::thread::sleep(Duration::from_millis(50));
        let second = spawn(4);
        // Pass 3: one more arrives during pass 2; the wait is not tried again.
        while passes.lock().is_empty() || b.waiting() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        let third = spawn(5);
        for h in first {
            h.join().unwrap();
        }
        second.join().unwrap();
        third.join().unwrap();
        let passes = passes.lock();
        let sizes: Vec<usize> = passes.iter().map(|p| p.2).collect();
        assert_eq!(sizes, vec![4, 1, 1]);
        // Pass 2 started about half of pass 1 (100 ms) after it ended, pass 3 about the 1 ms
        // window after pass 2.
        let gap = |i: usize| passes[i].0.saturating_duration_since(passes[i - 1].1);
        assert!(gap(1) >= Duration::from_millis(80), "{:?}", gap(1));
        assert!(gap(2) < Duration::from_millis(30), "{:?}", gap(2));
    }

    /// A doubling batcher (1 ms window) whose first pass, of one query and `pass_ms`, has run:
    /// it sets the pass length that the waits are measured against.
    fn after_one_pass(pass_ms: u64) -> (Batcher<u32>, Arc<Mutex<Vec<usize>>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::start(
            "test",
            settings(1, 8, 64),
            doubling(Duration::from_millis(pass_ms), sizes.clone()),
        )
        .unwrap();
        assert_eq!(b.embed(0).unwrap().embedding, vec![0.0]);
        (b, sizes)
    }

    /// Queries announced while their callers decode (longer than the window and the wait for
    /// returners) make the pass of the query that was already queued: without the
    /// announcement it would run alone and they would follow in a pass of their own.
    #[test]
    fn announced_queries_join_the_pass_they_were_announced_for() {
        let (b, sizes) = after_one_pass(200);
        std::thread::scope(|s| {
            let preparing: Vec<_> = (1..=3u32)
                .map(|i| {
                    let announced = b.announce();
                    s.spawn(move || {
                        std::thread::sleep(Duration::from_millis(40));
                        announced.embed(i).unwrap()
                    })
                })
                .collect();
            let ready = s.spawn(|| b.embed(9).unwrap());
            assert_eq!(ready.join().unwrap().embedding, vec![18.0]);
            for (i, h) in (1..=3u32).zip(preparing) {
                assert_eq!(h.join().unwrap().embedding, vec![i as f32 * 2.0]);
            }
        });
        assert_eq!(*sizes.lock(), vec![1, 4]);
        assert_eq!(b.preparing(), 0);
    }

    /// A withdrawn announcement (the input could not be prepared) ends the wait at once.
    #[test]
    fn a_withdrawn_announcement_does_not_hold_the_pass() {
        let (b, sizes) = after_one_pass(400);
        let got = std::thread::scope(|s| {
            let announced = b.announce();
            let ready = s.spawn(|| b.embed(5).unwrap());
            std::thread::sleep(Duration::from_millis(20));
            drop(announced);
            ready.join().unwrap()
        });
        assert_eq!(got.embedding, vec![10.0]);
        // The wait for the announced query could have lasted 200 ms (half the last pass).
        assert!(got.queued < Duration::from_millis(150), "{:?}", got.queued);
        assert_eq!(*sizes.lock(), vec![1, 1]);
        assert_eq!(b.preparing(), 0);
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
