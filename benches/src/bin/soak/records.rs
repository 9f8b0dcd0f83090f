//! Per-interval records of the load: latencies, counts, failures.

#[allow(unused_imports)]
use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Search = 0,
    Upsert = 1,
    Delete = 2,
    Bulk = 3,
    Compact = 4,
}

pub(crate) const KINDS: [&str; 5] = ["search", "upsert", "delete", "bulk", "compact"];

#[derive(Default, Clone)]
pub(crate) struct Bucket {
    pub(crate) search_us: Vec<u32>,
    pub(crate) done: [u64; 5],
    pub(crate) upsert_points: u64,
    pub(crate) bulk_rows: u64,
    pub(crate) e5xx: u64,
    pub(crate) other_errors: u64,
    pub(crate) bulk_busy: bool,
    pub(crate) compact_busy: bool,
    pub(crate) rss_kib: u64,
    pub(crate) rss_anon_kib: u64,
    pub(crate) rss_peak_kib: u64,
}

pub(crate) struct Recorder {
    pub(crate) t0: Instant,
    pub(crate) interval: Duration,
    pub(crate) buckets: Mutex<Vec<Bucket>>,
    pub(crate) first_errors: Mutex<Vec<String>>,
    /// 5xx outside the timed load (setup, verification).
    pub(crate) other_5xx: AtomicU64,
    /// Deletes of an acknowledged, live id answered 404.
    pub(crate) lost_on_delete: AtomicU64,
    pub(crate) compactions: Mutex<Vec<f64>>,
}

/// How a request ended.
pub(crate) enum Reply {
    Ok(Response),
    /// 4xx: the server refused it and changed nothing.
    Refused(u16, String),
    /// 5xx.
    ServerError(u16, String),
    /// No answer: the outcome is unknown.
    Transport(String),
}

pub(crate) fn classify(r: std::result::Result<Response, HttpError>) -> Reply {
    match r {
        Ok(resp) if (200..300).contains(&resp.status) => Reply::Ok(resp),
        Ok(resp) => {
            let msg = String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)]).into_owned();
            if resp.status >= 500 {
                Reply::ServerError(resp.status, msg)
            } else {
                Reply::Refused(resp.status, msg)
            }
        }
        Err(e) => Reply::Transport(e.to_string()),
    }
}

impl Recorder {
    pub(crate) fn new(t0: Instant, interval: Duration, n: usize) -> Self {
        Recorder {
            t0,
            interval,
            buckets: Mutex::new(vec![Bucket::default(); n]),
            first_errors: Mutex::new(Vec::new()),
            other_5xx: AtomicU64::new(0),
            lost_on_delete: AtomicU64::new(0),
            compactions: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn index(&self, t: Instant, n: usize) -> usize {
        let i = t.saturating_duration_since(self.t0).as_nanos() / self.interval.as_nanos().max(1);
        (i as usize).min(n.saturating_sub(1))
    }

    pub(crate) fn with_bucket(&self, done: Instant, f: impl FnOnce(&mut Bucket)) {
        let mut b = lock(&self.buckets);
        let n = b.len();
        let i = self.index(done, n);
        f(&mut b[i]);
    }

    /// A successful request of `kind` that finished at `done`.
    pub(crate) fn ok(&self, kind: Kind, done: Instant, latency: Duration, units: u64) {
        self.with_bucket(done, |b| {
            b.done[kind as usize] += 1;
            match kind {
                Kind::Search => b
                    .search_us
                    .push(latency.as_micros().min(u128::from(u32::MAX)) as u32),
                Kind::Upsert => b.upsert_points += units,
                Kind::Bulk => b.bulk_rows += units,
                Kind::Delete | Kind::Compact => {}
            }
        });
    }

    /// A failed request (5xx counted apart from the rest).
    pub(crate) fn failed(&self, kind: Kind, done: Instant, reply: &Reply) {
        let (is_5xx, what) = match reply {
            Reply::Ok(r) => (false, format!("unexpected status {}", r.status)),
            Reply::Refused(s, m) => (false, format!("{s}: {m}")),
            Reply::ServerError(s, m) => (true, format!("{s}: {m}")),
            Reply::Transport(e) => (false, format!("transport: {e}")),
        };
        self.with_bucket(done, |b| {
            if is_5xx {
                b.e5xx += 1;
            } else {
                b.other_errors += 1;
            }
        });
        self.note(format!("{} {what}", KINDS[kind as usize]));
    }

    pub(crate) fn note(&self, what: String) {
        let mut e = lock(&self.first_errors);
        if e.len() < 10 {
            e.push(what);
        }
    }

    /// Marks the intervals background work of `kind` overlapped.
    pub(crate) fn busy(&self, kind: Kind, from: Instant, to: Instant) {
        let mut b = lock(&self.buckets);
        let n = b.len();
        for bucket in &mut b[self.index(from, n)..=self.index(to, n)] {
            match kind {
                Kind::Bulk => bucket.bulk_busy = true,
                Kind::Compact => bucket.compact_busy = true,
                _ => {}
            }
        }
    }
}
