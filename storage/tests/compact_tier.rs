//! The compact re-rank tier end to end on real files: its reads, ranking on its codes alone
//! (`rescore`), and the margin it prunes with.
#![allow(clippy::unwrap_used)]

mod common;

use common::{only_segment_dir, point, prompt_opts, vec_for, wait_indexed};
use glimpse_storage::{
    CompactRerank, Metric, Rescore, SearchRequest, Store, StoreOptions, TierMargin,
};

/// With `compact_rerank`, a cosine index carries the compact tier: searches score their
/// candidates on its codes and read far fewer raw rows, with exactly the results (ids and
/// scores) of a store without it. Narrow rows get one byte per dimension, wide ones (from
/// `ROTATED6_MIN_DIM`) rotated 6-bit codes, 24 bytes per 32 dimensions: the index file grows by
/// that per row.
#[test]
fn the_compact_rerank_tier_changes_reads_not_results() {
    const ROWS: u64 = 4000;
    let run = |compact: bool, dim: usize| {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            compact_rerank: if compact {
                CompactRerank::On
            } else {
                CompactRerank::Off
            },
            ..prompt_opts()
        };
        let store = Store::open(dir.path(), opts).unwrap();
        let c = store.create_collection("ix", dim, Metric::Cosine).unwrap();
        let mut w = c.bulk_writer().unwrap();
        for i in 0..ROWS {
            w.push(point(&format!("v{i}"), i, dim)).unwrap();
        }
        w.commit().unwrap();
        wait_indexed(&c);
        // Both settings by hand: the recall tables of the two stores differ (with the tier,
        // deeper re-ranks are cheaper), and so would the parameters they choose.
        let req = SearchRequest {
            k: 10,
            nprobe: Some(32),
            refine: Some(40),
            ..SearchRequest::default()
        };
        let (mut out, mut scored, mut reranked) = (Vec::new(), 0, 0);
        for i in 0..50u64 {
            let (hits, t) = c
                .search_with_stats(&vec_for(&format!("q{i}"), i + 7, dim), &req)
                .unwrap();
            scored += t.compact_scored;
            reranked += t.reranked;
            out.push(
                hits.into_iter()
                    .map(|h| (h.id, h.score))
                    .collect::<Vec<_>>(),
            );
        }
        let index_bytes = std::fs::read_dir(only_segment_dir(dir.path()))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().contains("ivfpq"))
            .map(|e| e.metadata().unwrap().len())
            .sum::<u64>();
        (out, scored, reranked, index_bytes)
    };
    for (dim, row_bytes) in [(16, 16), (256, 192), (384, 288)] {
        let (with, scored_with, reranked_with, bytes_with) = run(true, dim);
        let (without, scored_without, reranked_without, bytes_without) = run(false, dim);
        assert_eq!(with, without, "{dim}");
        assert_eq!(scored_without, 0);
        assert_eq!(scored_with, reranked_without);
        assert!(
            reranked_with * 2 < reranked_without,
            "{dim}: {reranked_with} raw rows with the tier, {reranked_without} without"
        );
        assert!(bytes_without > 0);
        assert_eq!((bytes_with - bytes_without) / ROWS, row_bytes, "{dim}");
    }
}

/// With a compact tier, the build measures each recall-table point's recall when ranking on
/// the codes alone. `Rescore::Auto` then reads no raw row in a segment whose table found that
/// enough for the target (and reports its codes-only recall), `Rescore::Always` re-ranks on
/// the raw rows as before, and `Rescore::Never` ranks on the codes whatever the table says.
/// Codes-only scores are estimates of the exact ones.
#[test]
fn rescore_auto_skips_raw_rows_where_the_table_says_the_codes_suffice() {
    let dim = 384;
    let data = glimpse_index::synthetic::generate(
        &glimpse_index::synthetic::SyntheticSpec::clip_like(6000, 40, dim, 11),
    );
    let (_dir, _store, c) = load_indexed(&data, CompactRerank::On);
    // The lowest target whose table point the codes alone reach.
    let target = [0.5f32, 0.7, 0.8, 0.85, 0.9, 0.95]
        .into_iter()
        .find(|&t| {
            c.recall_report(Some(t), Rescore::Auto)
                .segments
                .iter()
                .all(|s| s.codes_only)
        })
        .expect("the codes alone reach some target on clustered data");
    let report = c.recall_report(Some(target), Rescore::Auto);
    assert!(
        report.expected_recall.unwrap() >= f64::from(target),
        "{report:?}"
    );
    let always = c.recall_report(Some(target), Rescore::Always);
    assert!(always.segments.iter().all(|s| !s.codes_only), "{always:?}");
    // Ranked on codes at a point never measured (above the first that fell short): no
    // promise, no recalls reported.
    let never = c.recall_report(Some(0.995), Rescore::Never);
    assert_eq!(never.expected_recall, None, "{never:?}");
    for s in &never.segments {
        assert!(s.codes_only && s.recall_in.is_none(), "{never:?}");
    }
    let search = |rescore: Rescore, i: usize| {
        let req = SearchRequest {
            k: 10,
            recall_target: Some(target),
            rescore,
            ..SearchRequest::default()
        };
        c.search_with_stats(data.query(i), &req).unwrap()
    };
    let (mut agree, mut total) = (0, 0);
    for i in 0..data.n_queries() {
        let (auto, t_auto) = search(Rescore::Auto, i);
        let (never, t_never) = search(Rescore::Never, i);
        let (exact, t_exact) = search(Rescore::Always, i);
        assert_eq!(
            (t_auto.reranked, t_never.reranked),
            (0, 0),
            "no raw row read"
        );
        assert!(t_auto.compact_scored > 0 && t_exact.reranked > 0);
        let promised = f64::from(t_auto.expected_recall.unwrap());
        assert!((promised - report.expected_recall.unwrap()).abs() < 1e-3);
        let ids = |h: &[glimpse_storage::Hit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&auto), ids(&never), "same point, same ranking");
        let q = data.query(i);
        let qn = q.iter().map(|x| x * x).sum::<f32>().sqrt();
        for h in &auto {
            let row: usize = h.id[1..].parse().unwrap();
            let v = &data.vectors[row * dim..(row + 1) * dim];
            let vn = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let cos = q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>() / (qn * vn);
            assert!((h.score - cos).abs() < 0.02, "{} vs {cos}", h.score);
        }
        agree += ids(&auto)
            .iter()
            .filter(|id| ids(&exact).contains(id))
            .count();
        total += exact.len();
    }
    assert!(
        agree as f32 >= 0.8 * total as f32,
        "codes-only results share {agree} of {total} with the exact re-rank"
    );
}

/// A segment indexed with the compact tier measures the share of the tier's margin its own
/// queries need, reports it, and prunes with it: fresh queries get what the same index without
/// a tier (every candidate re-ranked on its raw row) returns, reading a small share of the
/// candidates' raw rows.
#[test]
fn the_tier_prunes_with_its_measured_margin_and_keeps_the_f32_results() {
    let dim = 384;
    let data = glimpse_index::synthetic::generate(&glimpse_index::synthetic::SyntheticSpec::hard(
        6000, 40, dim, 12,
    ));
    let (d1, s1, tiered) = load_indexed(&data, CompactRerank::On);
    let (_d2, _s2, plain) = load_indexed(&data, CompactRerank::Off);
    let report = tiered.recall_report(None, Rescore::Always);
    for s in &report.segments {
        let share = s.tier_margin.expect("a tier's margin");
        assert!(share > 0.0 && share < 0.7, "{report:?}");
    }
    let plain_report = plain.recall_report(None, Rescore::Always);
    assert!(
        plain_report
            .segments
            .iter()
            .all(|s| s.tier_margin.is_none())
    );
    // Parameters by hand, deep enough that the tier prunes (64 candidates per result).
    let req = SearchRequest {
        k: 10,
        nprobe: Some(16),
        refine: Some(64),
        ..SearchRequest::default()
    };
    let ids = |h: &[glimpse_storage::Hit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
    let (mut differ, mut read, mut scored) = (0, 0, 0);
    for i in 0..data.n_queries() {
        let (a, ta) = tiered.search_with_stats(data.query(i), &req).unwrap();
        let (b, _) = plain.search_with_stats(data.query(i), &req).unwrap();
        differ += usize::from(ids(&a) != ids(&b));
        read += ta.reranked;
        scored += ta.compact_scored;
    }
    assert!(
        differ <= 1,
        "{differ} of {} queries differ",
        data.n_queries()
    );
    assert!(
        scored > 0 && read * 10 < scored,
        "{read} raw rows for {scored} candidates"
    );
    // The same files opened with `TierMargin::Full` prune with the whole bound: the same top k,
    // more raw rows read, and the description says so.
    drop((tiered, s1));
    let full = Store::open(
        d1.path(),
        StoreOptions {
            tier_margin: TierMargin::Full,
            ..prompt_opts()
        },
    )
    .unwrap();
    let c = full.collection("ix").unwrap();
    wait_indexed(&c);
    let report = c.recall_report(None, Rescore::Always);
    assert!(
        report.segments.iter().all(|s| s.tier_margin == Some(1.0)),
        "{report:?}"
    );
    let mut full_read = 0;
    for i in 0..data.n_queries() {
        let (a, ta) = c.search_with_stats(data.query(i), &req).unwrap();
        let (b, _) = plain.search_with_stats(data.query(i), &req).unwrap();
        assert_eq!(ids(&a), ids(&b));
        full_read += ta.reranked;
    }
    assert!(
        2 * full_read > 3 * read,
        "{full_read} raw rows at the full margin, {read} measured"
    );
}

/// A store (with `compact_rerank`) holding `data`'s rows bulk-loaded as cosine collection "ix"
/// (ids `v{row}`), once its deferred index is built.
fn load_indexed(
    data: &glimpse_index::synthetic::SyntheticData,
    compact_rerank: CompactRerank,
) -> (
    tempfile::TempDir,
    Store,
    std::sync::Arc<glimpse_storage::Collection>,
) {
    let dim = data.dim;
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        compact_rerank,
        ..prompt_opts()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    let c = store.create_collection("ix", dim, Metric::Cosine).unwrap();
    let mut w = c.bulk_writer().unwrap();
    for i in 0..data.n() {
        let mut p = point(&format!("v{i}"), i as u64, dim);
        p.vector = data.vectors[i * dim..(i + 1) * dim].to_vec();
        w.push(p).unwrap();
    }
    w.commit().unwrap();
    wait_indexed(&c);
    (dir, store, c)
}
