//! Leader/follower group commit.
//!
//! Writers enqueue their operation; the first writer to find no leader
//! becomes the leader, takes every queued operation, logs them with one
//! `write` and one fsync, applies them, and hands each writer its result.
//! Writers that arrive while a leader is busy wait and are served by the
//! next leader, so N concurrent writers share one fsync.

use std::collections::HashMap;

use parking_lot::{Condvar, Mutex};

struct State<Op, R> {
    pending: Vec<(u64, Op)>,
    done: HashMap<u64, R>,
    busy: bool,
    next_ticket: u64,
}

/// The queue; `Op` is what a writer submits, `R` what it gets back.
pub(crate) struct GroupCommit<Op, R> {
    state: Mutex<State<Op, R>>,
    cv: Condvar,
}

/// Exclusive access to the write path (no leader runs while it is held).
pub(crate) struct Exclusive<'a, Op, R> {
    q: &'a GroupCommit<Op, R>,
}

impl<Op, R> Drop for Exclusive<'_, Op, R> {
    fn drop(&mut self) {
        let mut st = self.q.state.lock();
        st.busy = false;
        drop(st);
        self.q.cv.notify_all();
    }
}

impl<Op, R> GroupCommit<Op, R> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                pending: Vec::new(),
                done: HashMap::new(),
                busy: false,
                next_ticket: 0,
            }),
            cv: Condvar::new(),
        }
    }

    /// Submits `op` and blocks until some leader (possibly this thread,
    /// running `commit` on the whole group) has processed it.
    pub(crate) fn submit(&self, op: Op, commit: impl Fn(Vec<Op>) -> Vec<R>) -> R {
        let mut st = self.state.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.pending.push((ticket, op));
        loop {
            if let Some(r) = st.done.remove(&ticket) {
                return r;
            }
            if !st.busy {
                st.busy = true;
                let group = std::mem::take(&mut st.pending);
                drop(st);
                let guard = Exclusive { q: self };
                let (tickets, ops): (Vec<u64>, Vec<Op>) = group.into_iter().unzip();
                let results = commit(ops);
                st = self.state.lock();
                for (t, r) in tickets.into_iter().zip(results) {
                    st.done.insert(t, r);
                }
                // Release leadership while still holding the lock, then wake everyone.
                st.busy = false;
                std::mem::forget(guard);
                self.cv.notify_all();
                continue;
            }
            self.cv.wait(&mut st);
        }
    }

    /// Waits until no leader runs and keeps writers out until the guard drops.
    pub(crate) fn exclusive(&self) -> Exclusive<'_, Op, R> {
        let mut st = self.state.lock();
        while st.busy {
            self.cv.wait(&mut st);
        }
        st.busy = true;
        Exclusive { q: self }
    }
}
