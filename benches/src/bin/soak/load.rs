//! The load: searches, upserts, deletes, bulk loads and compactions until the deadline.

#[allow(unused_imports)]
use super::*;

pub(crate) struct Ctx {
    pub(crate) url: String,
    pub(crate) deadline: Instant,
    pub(crate) pool: Pool,
    pub(crate) model: Mutex<Model>,
    pub(crate) rec: Recorder,
    pub(crate) import: PathBuf,
    pub(crate) search_bodies: Vec<Vec<u8>>,
    pub(crate) target_live: usize,
}

pub(crate) fn coll_path(rest: &str) -> String {
    format!("/v1/collections/{COLLECTION}{rest}")
}

/// Sleeps until `t` or the deadline, whichever is first; false once the
/// deadline has passed.
pub(crate) fn sleep_until(t: Instant, deadline: Instant) -> bool {
    let now = Instant::now();
    let until = t.min(deadline);
    if until > now {
        std::thread::sleep(until - now);
    }
    Instant::now() < deadline
}

/// Paces a loop at `rate` per second (0 = no pacing), without catching up
/// after a slow request.
pub(crate) struct Pacer {
    pub(crate) period: Option<Duration>,
    pub(crate) next: Instant,
}

impl Pacer {
    pub(crate) fn new(rate: f64, start: Instant) -> Self {
        Pacer {
            period: (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
            next: start,
        }
    }

    pub(crate) fn wait(&mut self, deadline: Instant) -> bool {
        let Some(p) = self.period else {
            return Instant::now() < deadline;
        };
        self.next += p;
        let now = Instant::now();
        if self.next < now {
            self.next = now;
        }
        sleep_until(self.next, deadline)
    }
}

pub(crate) fn search_loop(ctx: &Ctx, worker: usize, qps: f64) -> Result<()> {
    let mut client = HttpClient::new(&ctx.url, Duration::from_secs(60))?;
    let path = coll_path("/search");
    let n = ctx.search_bodies.len();
    let mut i = worker * 7919 % n;
    let mut pace = Pacer::new(qps, Instant::now());
    while Instant::now() < ctx.deadline {
        let t = Instant::now();
        let r = classify(client.post(&path, "application/json", &ctx.search_bodies[i % n]));
        let done = Instant::now();
        i += 1;
        match r {
            Reply::Ok(_) => ctx.rec.ok(Kind::Search, done, done - t, 1),
            other => ctx.rec.failed(Kind::Search, done, &other),
        }
        if !pace.wait(ctx.deadline) {
            break;
        }
    }
    Ok(())
}

pub(crate) fn upsert_loop(
    ctx: &Ctx,
    batch: usize,
    rate: f64,
    new_fraction: f64,
    seed: u64,
) -> Result<()> {
    let mut client = HttpClient::new(&ctx.url, Duration::from_secs(120))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x75_7073);
    let path = coll_path("/points");
    let mut pace = Pacer::new(rate, Instant::now());
    while Instant::now() < ctx.deadline {
        let ids: Vec<(u64, u32)> = {
            let mut m = lock(&ctx.model);
            (0..batch)
                .filter_map(|_| {
                    if rng.random::<f64>() < new_fraction {
                        Some(m.reserve_new())
                    } else {
                        m.reserve_existing(&mut rng)
                    }
                })
                .collect()
        };
        if !ids.is_empty() {
            let mut body = String::with_capacity(ids.len() * ctx.pool.dim * 12 + 64);
            body.push_str("{\"points\":[");
            for (k, &(id, version)) in ids.iter().enumerate() {
                if k > 0 {
                    body.push(',');
                }
                let _ = write!(body, "{{\"id\":{id},\"vector\":");
                push_vector(&mut body, ctx.pool.vector(id, version));
                let _ = write!(body, ",\"metadata\":{{\"v\":{version}}}}}");
            }
            body.push_str("]}");
            let t = Instant::now();
            let r = classify(client.post(&path, "application/json", body.as_bytes()));
            let done = Instant::now();
            match r {
                Reply::Ok(_) => {
                    lock(&ctx.model).upserted(&ids);
                    ctx.rec.ok(Kind::Upsert, done, done - t, ids.len() as u64);
                }
                Reply::Refused(..) => {
                    lock(&ctx.model).release(&ids);
                    ctx.rec.failed(Kind::Upsert, done, &r);
                }
                _ => {
                    lock(&ctx.model).uncertain(&ids);
                    ctx.rec.failed(Kind::Upsert, done, &r);
                }
            }
        }
        if !pace.wait(ctx.deadline) {
            break;
        }
    }
    Ok(())
}

pub(crate) fn delete_loop(ctx: &Ctx, rate: f64, seed: u64) -> Result<()> {
    let mut client = HttpClient::new(&ctx.url, Duration::from_secs(120))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x64_656c);
    let mut pace = Pacer::new(rate, Instant::now());
    while Instant::now() < ctx.deadline {
        let pick = {
            let mut m = lock(&ctx.model);
            if m.live_len() > ctx.target_live {
                m.reserve_existing(&mut rng)
            } else {
                None
            }
        };
        let Some((id, _)) = pick else {
            if !sleep_until(Instant::now() + Duration::from_millis(20), ctx.deadline) {
                break;
            }
            continue;
        };
        let connects = client.connects;
        let t = Instant::now();
        let r = classify(client.delete(&coll_path(&format!("/points/{id}"))));
        let done = Instant::now();
        match r {
            Reply::Ok(_) => {
                lock(&ctx.model).deleted(id);
                ctx.rec.ok(Kind::Delete, done, done - t, 1);
            }
            Reply::Refused(404, _) if client.connects == connects => {
                // An acknowledged, live id the server does not know.
                ctx.rec.lost_on_delete.fetch_add(1, Ordering::Relaxed);
                ctx.rec
                    .note(format!("delete {id}: 404 for an acknowledged live id"));
                lock(&ctx.model).uncertain(&[(id, 0)]);
            }
            Reply::Refused(404, _) => {
                // Retried on a fresh connection: the first try may have deleted it.
                lock(&ctx.model).uncertain(&[(id, 0)]);
            }
            Reply::Refused(..) => {
                lock(&ctx.model).release(&[(id, 0)]);
                ctx.rec.failed(Kind::Delete, done, &r);
            }
            _ => {
                lock(&ctx.model).uncertain(&[(id, 0)]);
                ctx.rec.failed(Kind::Delete, done, &r);
            }
        }
        if !pace.wait(ctx.deadline) {
            break;
        }
    }
    Ok(())
}

pub(crate) fn bulk_loop(ctx: &Ctx, every: Duration, rows: usize, seed: u64) -> Result<()> {
    if every.is_zero() || rows == 0 {
        return Ok(());
    }
    let mut client = HttpClient::new(&ctx.url, Duration::from_secs(1200))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x62_756c);
    let path = coll_path("/bulk-load");
    let mut k = 0u32;
    loop {
        let at = ctx.rec.t0 + every / 2 + every * k;
        k += 1;
        if at >= ctx.deadline || !sleep_until(at, ctx.deadline) {
            break;
        }
        let ids: Vec<(u64, u32)> = {
            let mut m = lock(&ctx.model);
            (0..rows)
                .filter_map(|i| {
                    if i % 2 == 0 {
                        Some(m.reserve_new())
                    } else {
                        m.reserve_existing(&mut rng)
                    }
                })
                .collect()
        };
        let records: Vec<ShardRecord> = ids
            .iter()
            .map(|&(id, version)| ShardRecord {
                id: id as i64,
                image_path: None,
                vector: ctx.pool.vector(id, version).to_vec(),
                extra: BTreeMap::new(),
            })
            .collect();
        let name = format!("bulk-{k:04}.parquet");
        let file = match write_partition_atomic(
            &ctx.import,
            &name,
            &records,
            ShardWriterOptions::new("soak", ctx.pool.dim),
        ) {
            Ok(f) => f,
            Err(e) => {
                lock(&ctx.model).release(&ids);
                return Err(format!("writing {name}: {e}").into());
            }
        };
        drop(records);
        let body = serde_json::to_vec(&serde_json::json!({ "paths": [name] }))?;
        let t = Instant::now();
        let r = classify(client.post(&path, "application/json", &body));
        let done = Instant::now();
        ctx.rec.busy(Kind::Bulk, t, done);
        match &r {
            Reply::Ok(resp) => {
                let answered = serde_json::from_slice::<serde_json::Value>(&resp.body)
                    .ok()
                    .and_then(|v| v.get("rows").and_then(serde_json::Value::as_u64));
                if answered != Some(ids.len() as u64) {
                    ctx.rec.note(format!(
                        "bulk {name}: answered rows {answered:?}, sent {}",
                        ids.len()
                    ));
                }
                lock(&ctx.model).upserted(&ids);
                ctx.rec.ok(Kind::Bulk, done, done - t, ids.len() as u64);
            }
            Reply::Refused(..) => {
                lock(&ctx.model).release(&ids);
                ctx.rec.failed(Kind::Bulk, done, &r);
            }
            _ => {
                lock(&ctx.model).uncertain(&ids);
                ctx.rec.failed(Kind::Bulk, done, &r);
            }
        }
        let _ = std::fs::remove_file(&file);
    }
    Ok(())
}

pub(crate) fn compact_loop(ctx: &Ctx, every: Duration) -> Result<()> {
    if every.is_zero() {
        return Ok(());
    }
    let mut client = HttpClient::new(&ctx.url, Duration::from_secs(1800))?;
    let path = coll_path("/compact");
    let mut k = 1u32;
    loop {
        let at = ctx.rec.t0 + every * k;
        k += 1;
        if at >= ctx.deadline || !sleep_until(at, ctx.deadline) {
            break;
        }
        let t = Instant::now();
        let r = classify(client.post(&path, "application/json", b"{}"));
        let done = Instant::now();
        ctx.rec.busy(Kind::Compact, t, done);
        match r {
            Reply::Ok(_) => {
                ctx.rec.ok(Kind::Compact, done, done - t, 1);
                lock(&ctx.rec.compactions).push((done - t).as_secs_f64());
            }
            other => ctx.rec.failed(Kind::Compact, done, &other),
        }
    }
    Ok(())
}
