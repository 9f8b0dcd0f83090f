//! The background thread: periodic WAL syncs, flushes, and the deferral
//! of compaction and index builds while bulk loads are running.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Inner, LiveSegment};
use crate::error::StorageError;
use crate::types::Durability;

impl Inner {
    /// A bulk writer opened.
    pub(crate) fn bulk_started(&self) {
        self.bulk_open.fetch_add(1, Ordering::AcqRel);
    }

    /// A bulk writer committed or was dropped.
    pub(crate) fn bulk_ended(&self) {
        *self.bulk_last.lock() = Some(Instant::now());
        self.bulk_open.fetch_sub(1, Ordering::AcqRel);
        self.wake_background();
    }

    /// How much longer deferred work must wait for bulk loading to calm
    /// down (zero when it may start now).
    pub(super) fn bulk_quiet_left(&self) -> Duration {
        if self.bulk_open.load(Ordering::Acquire) > 0 {
            return self.opts.bulk_quiet.max(Duration::from_millis(1));
        }
        match *self.bulk_last.lock() {
            Some(t) => self.opts.bulk_quiet.saturating_sub(t.elapsed()),
            None => Duration::ZERO,
        }
    }

    /// How much longer deferred work (compaction, deferred index builds)
    /// must wait: until bulk loading has been quiet for `bulk_quiet`, but
    /// no more than `bulk_quiet_max` (index builds) or
    /// `bulk_compaction_quiet_max` (compaction) after the work was first held
    /// back, so that a steady stream of loads cannot leave data unindexed or
    /// unmerged for long. The shorter of the two, zero when nothing is due.
    pub(super) fn deferred_wait(&self) -> Duration {
        let quiet_left = self.bulk_quiet_left();
        let index = Self::held_wait(
            &self.deferred_since,
            quiet_left,
            self.index_pending(),
            self.opts.bulk_quiet_max,
        );
        let merge = Self::held_wait(
            &self.compaction_since,
            quiet_left,
            self.compaction_pick(false).is_some(),
            self.opts.bulk_compaction_quiet_max,
        );
        match (index, merge) {
            (Some(a), Some(b)) => a.min(b),
            (Some(w), None) | (None, Some(w)) => w,
            (None, None) => Duration::ZERO,
        }
    }

    /// Wait left for one kind of deferred work, `None` when it is not `due`:
    /// the quiet time left, at most `bound` after it was first held back
    /// (`since`).
    pub(super) fn held_wait(
        since: &Mutex<Option<Instant>>,
        quiet_left: Duration,
        due: bool,
        bound: Duration,
    ) -> Option<Duration> {
        let mut since = since.lock();
        if !due {
            *since = None;
            return None;
        }
        if quiet_left.is_zero() {
            *since = None;
            return Some(Duration::ZERO);
        }
        let held = since.get_or_insert_with(Instant::now).elapsed();
        Some(quiet_left.min(bound.saturating_sub(held)))
    }

    /// Whether a due compaction may run now (loading quiet, or held back
    /// for `bulk_compaction_quiet_max`).
    pub(super) fn compaction_may_run(&self) -> bool {
        Self::held_wait(
            &self.compaction_since,
            self.bulk_quiet_left(),
            self.compaction_pick(false).is_some(),
            self.opts.bulk_compaction_quiet_max,
        )
        .is_some_and(|w| w.is_zero())
    }

    pub(crate) fn wake_background(&self) {
        let mut s = self.signal.lock();
        s.work = true;
        drop(s);
        self.signal_cv.notify_all();
    }

    /// One round of background work.
    pub(super) fn background_round(&self) {
        if let Durability::Periodic(every) = self.opts.durability
            && self.last_sync.lock().elapsed() >= every
            && let Err(e) = self.sync_wal()
        {
            tracing::error!(collection = %self.name, error = %e, "periodic WAL sync failed");
        }
        let has_frozen = !self.version.load().frozen.is_empty();
        if has_frozen {
            let mut man = self.maint.lock();
            if let Err(e) = self.flush_frozen(&mut man) {
                tracing::error!(collection = %self.name, error = %e, "flush failed; will retry");
                return;
            }
        }
        // Merging and indexing wait until bulk loading is quiet (within a
        // bound): they would compete with it for the cores, and merging first
        // indexes the shards of a load once. A segment that can borrow trained
        // quantizers is indexed at once: one assignment pass, no k-means.
        if !self.deferred_wait().is_zero() {
            if let Some(seg) = self.borrowable_pending() {
                self.report_build(self.build_index_of(&seg).map_err(|e| (seg, e)));
            }
            return;
        }
        // Index builds run at the shorter bound, outside the maintenance lock; a compaction
        // would stall every bulk commit while it merges and trains, so it waits longer.
        if self.opts.compaction.enabled && self.compaction_may_run() {
            *self.compaction_since.lock() = None;
            let mut man = self.maint.lock();
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            match self.maybe_compact(&mut man, false) {
                Err(StorageError::Interrupted(_)) => {
                    tracing::info!(collection = %self.name, "compaction interrupted by shutdown; it runs again after the next open");
                    return;
                }
                Err(e) => tracing::error!(collection = %self.name, error = %e, "compaction failed"),
                Ok(_) => {}
            }
        }
        *self.deferred_since.lock() = None;
        self.report_build(self.build_deferred_index());
    }

    /// Logs the outcome of a deferred build; after a build, asks for
    /// another round.
    pub(super) fn report_build(
        &self,
        r: std::result::Result<bool, (Arc<LiveSegment>, StorageError)>,
    ) {
        match r {
            // One build per round, so flushes and WAL syncs are not held up by a queue of them.
            Ok(true) => self.wake_background(),
            Ok(false) => {}
            Err((segment, e)) => {
                // Not retried in a loop (each try costs seconds of CPU on every core): the
                // segment stays searchable exactly, and the build runs again after a restart.
                segment.reader.refuse_index();
                tracing::error!(collection = %self.name, segment = segment.reader.id, error = %e,
                    "deferred index build failed; the segment is searched exactly until the next restart");
            }
        }
    }

    pub(super) fn background_verify(&self) {
        if !self.opts.verify.background {
            return;
        }
        let v = self.version.load_full();
        for s in &v.segments {
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            if s.reader.needs_verification()
                && let Err(e) = s.reader.verify(false)
            {
                tracing::error!(collection = %self.name, error = %e, "segment failed verification; it is no longer served");
            }
        }
    }
}

pub(super) fn background_loop(inner: Arc<Inner>) {
    inner.background_verify();
    let tick = match inner.opts.durability {
        Durability::Periodic(d) => d.clamp(Duration::from_millis(1), Duration::from_secs(1)),
        Durability::EveryCommit => Duration::from_secs(1),
    };
    loop {
        // Deferred work waiting for bulk loads to calm down wakes up as soon as they have.
        let deferred = inner.deferred_wait();
        let wait = if deferred.is_zero() {
            tick
        } else {
            tick.min(deferred + Duration::from_millis(1))
        };
        {
            let mut s = inner.signal.lock();
            if !s.work && !s.shutdown {
                inner.signal_cv.wait_for(&mut s, wait);
            }
            if s.shutdown {
                return;
            }
            s.work = false;
        }
        inner.background_round();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, Instant};

    use parking_lot::Mutex;

    use super::Inner;

    const BOUND: Duration = Duration::from_secs(10);

    #[test]
    fn work_that_is_not_due_never_waits_and_forgets_when_it_was_held() {
        let since = Mutex::new(Some(Instant::now()));
        assert_eq!(
            Inner::held_wait(&since, Duration::from_secs(1), false, BOUND),
            None
        );
        assert!(since.lock().is_none());
    }

    #[test]
    fn due_work_runs_at_once_when_loading_is_quiet() {
        let since = Mutex::new(Some(Instant::now()));
        assert_eq!(
            Inner::held_wait(&since, Duration::ZERO, true, BOUND),
            Some(Duration::ZERO)
        );
        assert!(since.lock().is_none(), "a run resets the hold");
    }

    #[test]
    fn due_work_waits_for_quiet_and_records_since_when() {
        let since = Mutex::new(None);
        let w = Inner::held_wait(&since, Duration::from_secs(1), true, BOUND).unwrap();
        assert!(w > Duration::from_millis(900) && w <= Duration::from_secs(1));
        assert!(since.lock().is_some(), "the first hold is remembered");
    }

    #[test]
    fn the_bound_caps_the_wait_under_steady_loading() {
        // Held back for longer than the bound already: no more waiting, however busy.
        let since = Mutex::new(Some(Instant::now() - BOUND - Duration::from_secs(1)));
        assert_eq!(
            Inner::held_wait(&since, Duration::from_secs(5), true, BOUND),
            Some(Duration::ZERO)
        );
        // Held back for 8 s of a 10 s bound: at most 2 s more, even if quiet is 5 s away.
        let since = Mutex::new(Some(Instant::now() - Duration::from_secs(8)));
        let w = Inner::held_wait(&since, Duration::from_secs(5), true, BOUND).unwrap();
        assert!(w <= Duration::from_secs(2) && w > Duration::from_millis(1900));
    }
}
