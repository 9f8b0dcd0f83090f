//! Setup (the initial bulk load) and the final check of every acknowledged write.

#[allow(unused_imports)]
use super::*;

pub(crate) fn expect_ok(
    rec: &Recorder,
    what: &str,
    r: std::result::Result<Response, HttpError>,
) -> Result<serde_json::Value> {
    match classify(r) {
        Reply::Ok(resp) => Ok(serde_json::from_slice(&resp.body)?),
        Reply::ServerError(s, m) => {
            rec.other_5xx.fetch_add(1, Ordering::Relaxed);
            Err(format!("{what}: {s} {m}").into())
        }
        Reply::Refused(s, m) => Err(format!("{what}: {s} {m}").into()),
        Reply::Transport(e) => Err(format!("{what}: {e}").into()),
    }
}

pub(crate) fn describe(url: &str, rec: &Recorder) -> Result<serde_json::Value> {
    let mut c = HttpClient::new(url, Duration::from_secs(60))?;
    expect_ok(rec, "describe", c.get(&coll_path("")))
}

/// Creates the collection, bulk-loads the initial vectors and waits for their index.
pub(crate) fn initial_load(ctx: &Ctx, n: usize) -> Result<()> {
    let mut c = HttpClient::new(&ctx.url, Duration::from_secs(3600))?;
    let body = serde_json::json!({"name": COLLECTION, "dim": ctx.pool.dim, "metric": "cosine"});
    expect_ok(
        &ctx.rec,
        "create collection",
        c.post(
            "/v1/collections",
            "application/json",
            &serde_json::to_vec(&body)?,
        ),
    )?;
    let t = Instant::now();
    let dir = ctx.import.join("initial");
    std::fs::create_dir_all(&dir)?;
    let per_shard = 10_000;
    for (s, start) in (0..n).step_by(per_shard).enumerate() {
        let records: Vec<ShardRecord> = (start..(start + per_shard).min(n))
            .map(|id| ShardRecord {
                id: id as i64,
                image_path: None,
                vector: ctx.pool.vector(id as u64, 0).to_vec(),
                extra: BTreeMap::new(),
            })
            .collect();
        write_partition_atomic(
            &dir,
            &format!("part-{s:05}.parquet"),
            &records,
            ShardWriterOptions::new("soak", ctx.pool.dim),
        )?;
    }
    let wrote = t.elapsed();
    let t = Instant::now();
    let v = expect_ok(
        &ctx.rec,
        "initial bulk load",
        c.post(
            &coll_path("/bulk-load"),
            "application/json",
            br#"{"paths": ["initial"]}"#,
        ),
    )?;
    let loaded = t.elapsed();
    if v.get("rows").and_then(serde_json::Value::as_u64) != Some(n as u64) {
        return Err(format!("initial bulk load answered {v}, expected {n} rows").into());
    }
    std::fs::remove_dir_all(&dir)?;
    let t = Instant::now();
    loop {
        let d = describe(&ctx.url, &ctx.rec)?;
        if d.get("unindexed_rows").and_then(serde_json::Value::as_u64) == Some(0) {
            break;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            return Err(format!("index not built after 30 minutes: {d}").into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "# setup: {n} vectors written as Parquet in {:.1} s, bulk-loaded in {:.1} s, indexed {:.1} s later",
        wrote.as_secs_f64(),
        loaded.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Default)]
pub(crate) struct Verdict {
    pub(crate) live_checked: u64,
    pub(crate) deleted_checked: u64,
    pub(crate) missing: u64,
    pub(crate) wrong_vector: u64,
    pub(crate) resurrected: u64,
    pub(crate) errors: u64,
    pub(crate) first: Vec<String>,
}

/// GETs every id the model knows (or every deleted id and a sample of live
/// ones) and compares with the model.
pub(crate) fn verify(ctx: &Ctx, verify_max: usize, seed: u64) -> Result<(Verdict, usize, usize)> {
    let (mut live, deleted, uncertain) = {
        let m = lock(&ctx.model);
        let mut live = Vec::new();
        let mut deleted = Vec::new();
        let mut uncertain = 0usize;
        for (id, e) in m.entries.iter().enumerate() {
            match e.state {
                State::Live => live.push((id as u64, e.version)),
                State::Deleted => deleted.push(id as u64),
                State::Uncertain => uncertain += 1,
                State::Absent => {}
            }
        }
        (live, deleted, uncertain)
    };
    let live_total = live.len();
    if live.len() + deleted.len() > verify_max {
        let keep = verify_max
            .saturating_sub(deleted.len())
            .max(MIN_LIVE_SAMPLE)
            .min(live.len());
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x76_6572);
        for i in 0..keep {
            let j = rng.random_range(i..live.len());
            live.swap(i, j);
        }
        live.truncate(keep);
    }
    let mut work: Vec<(u64, Option<u32>)> = live.iter().map(|&(id, v)| (id, Some(v))).collect();
    work.extend(deleted.iter().map(|&id| (id, None)));
    let threads = 4;
    let chunk = work.len().div_ceil(threads).max(1);
    let results: Vec<Result<Verdict>> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || -> Result<Verdict> {
                    let mut c = HttpClient::new(&ctx.url, Duration::from_secs(60))?;
                    let mut v = Verdict::default();
                    for &(id, version) in part {
                        let r = c.get(&coll_path(&format!("/points/{id}")));
                        let problem = |v: &mut Verdict, what: String| {
                            if v.first.len() < 5 {
                                v.first.push(format!("id {id}: {what}"));
                            }
                        };
                        match (classify(r), version) {
                            (Reply::Ok(resp), Some(ver)) => {
                                v.live_checked += 1;
                                let got: serde_json::Value = serde_json::from_slice(&resp.body)?;
                                let want = ctx.pool.vector(id, ver);
                                let same = got
                                    .get("vector")
                                    .and_then(serde_json::Value::as_array)
                                    .is_some_and(|a| {
                                        a.len() == want.len()
                                            && a.iter().zip(want).all(|(g, w)| {
                                                g.as_f64()
                                                    .is_some_and(|g| (g as f32 - w).abs() <= 1e-6)
                                            })
                                    });
                                if !same {
                                    v.wrong_vector += 1;
                                    problem(&mut v, format!("not the vector of version {ver}"));
                                }
                            }
                            (Reply::Refused(404, _), Some(_)) => {
                                v.live_checked += 1;
                                v.missing += 1;
                                problem(&mut v, "acknowledged write missing (404)".into());
                            }
                            (Reply::Refused(404, _), None) => v.deleted_checked += 1,
                            (Reply::Ok(_), None) => {
                                v.deleted_checked += 1;
                                v.resurrected += 1;
                                problem(&mut v, "deleted but still found".into());
                            }
                            (other, _) => {
                                v.errors += 1;
                                if let Reply::ServerError(..) = other {
                                    ctx.rec.other_5xx.fetch_add(1, Ordering::Relaxed);
                                }
                                let what = match other {
                                    Reply::Refused(s, m) | Reply::ServerError(s, m) => {
                                        format!("{s} {m}")
                                    }
                                    Reply::Transport(e) => e,
                                    Reply::Ok(_) => String::new(),
                                };
                                problem(&mut v, what);
                            }
                        }
                    }
                    Ok(v)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a verify thread panicked".into()))
            })
            .collect()
    });
    let mut total = Verdict::default();
    for r in results {
        let v = r?;
        total.live_checked += v.live_checked;
        total.deleted_checked += v.deleted_checked;
        total.missing += v.missing;
        total.wrong_vector += v.wrong_vector;
        total.resurrected += v.resurrected;
        total.errors += v.errors;
        total.first.extend(v.first);
    }
    Ok((total, live_total, uncertain))
}
