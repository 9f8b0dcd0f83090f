//! End-to-end behaviour of the IVF-PQ index on synthetic CLIP-like data.
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use glimpse_index::synthetic::{SyntheticData, SyntheticSpec, generate};
use glimpse_index::{
    Cancel, IndexError, IndexParams, IvfPqIndex, IvfPqView, Metric, Neighbor, PqBits, SearchParams,
    exact_search,
};

const DIM: usize = 64;

fn data() -> &'static SyntheticData {
    static D: OnceLock<SyntheticData> = OnceLock::new();
    D.get_or_init(|| generate(&SyntheticSpec::clip_like(20_000, 200, DIM, 42)))
}

fn cosine_index() -> &'static IvfPqIndex {
    static I: OnceLock<IvfPqIndex> = OnceLock::new();
    I.get_or_init(|| {
        IvfPqIndex::build(
            &data().vectors,
            DIM,
            Metric::Cosine,
            &IndexParams::default(),
            Cancel::NEVER,
        )
        .unwrap()
    })
}

fn recall(got: &[Neighbor], want: &[Neighbor]) -> f64 {
    let hits = got
        .iter()
        .filter(|g| want.iter().any(|w| w.row == g.row))
        .count();
    hits as f64 / want.len().max(1) as f64
}

fn mean_recall(index: &IvfPqIndex, vectors: &[f32], metric: Metric, p: &SearchParams) -> f64 {
    let d = data();
    let mut total = 0.0;
    for qi in 0..d.n_queries() {
        let q = d.query(qi);
        let got = index.search(q, vectors, p, None);
        let want = exact_search(vectors, DIM, metric, q, p.k, None);
        total += recall(&got, &want);
    }
    total / d.n_queries() as f64
}

#[test]
fn recall_at_10_with_default_params() {
    let r = mean_recall(
        cosine_index(),
        &data().vectors,
        Metric::Cosine,
        &SearchParams::default(),
    );
    assert!(r >= 0.95, "recall@10 = {r}");
}

#[test]
fn scores_are_exact() {
    let d = data();
    let index = cosine_index();
    let q = d.query(3);
    let got = index.search(q, &d.vectors, &SearchParams::default(), None);
    assert_eq!(got.len(), 10);
    for n in &got {
        let v = &d.vectors[n.row as usize * DIM..(n.row as usize + 1) * DIM];
        let exact = Metric::Cosine.score(q, v);
        assert!((n.score - exact).abs() < 1e-5, "{} vs {exact}", n.score);
    }
    for w in got.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
}

#[test]
fn cosine_reranks_unnormalised_vectors() {
    // Scale every row by a different factor: cosine results must not move.
    let d = data();
    let scaled: Vec<f32> = d
        .vectors
        .chunks(DIM)
        .enumerate()
        .flat_map(|(i, v)| {
            let s = 0.5 + (i % 7) as f32;
            v.iter().map(move |x| x * s)
        })
        .collect();
    let index = IvfPqIndex::build(
        &scaled,
        DIM,
        Metric::Cosine,
        &IndexParams::default(),
        Cancel::NEVER,
    )
    .unwrap();
    let r = mean_recall(&index, &scaled, Metric::Cosine, &SearchParams::default());
    assert!(r >= 0.95, "recall@10 on unnormalised input = {r}");
}

#[test]
fn l2_and_dot_and_eight_bit() {
    let d = generate(&SyntheticSpec::clip_like(6000, 100, DIM, 5));
    for (metric, bits) in [
        (Metric::L2, PqBits::Four),
        (Metric::Dot, PqBits::Four),
        (Metric::Cosine, PqBits::Eight),
    ] {
        let params = IndexParams {
            bits,
            pq_train_sample: Some(4000),
            ..IndexParams::default()
        };
        let index = IvfPqIndex::build(&d.vectors, DIM, metric, &params, Cancel::NEVER).unwrap();
        assert_eq!(index.bits(), bits);
        let p = SearchParams::default();
        let mut r = 0.0;
        for qi in 0..d.n_queries() {
            let q = d.query(qi);
            let got = index.search(q, &d.vectors, &p, None);
            let want = exact_search(&d.vectors, DIM, metric, q, p.k, None);
            r += recall(&got, &want);
        }
        r /= d.n_queries() as f64;
        assert!(r >= 0.9, "{metric} {bits:?}: recall@10 = {r}");
    }
}

#[test]
fn serialised_view_gives_identical_results() {
    let d = data();
    let index = cosine_index();
    let bytes = index.to_bytes();
    assert_eq!(bytes.len() % 64, 0);
    let view = IvfPqView::from_bytes(&bytes).unwrap();
    assert_eq!(view.len(), index.len());
    let p = SearchParams {
        k: 15,
        nprobe: Some(7),
        refine: Some(4),
        rescore: true,
        tier_margin: 1.0,
    };
    for qi in 0..50 {
        let q = d.query(qi);
        let a = index.search(q, &d.vectors, &p, None);
        assert_eq!(a, view.search(q, &d.vectors, &p, None));
        assert_eq!(a, index.view().search(q, &d.vectors, &p, None));
    }
    // Misaligned bytes: still valid, sections copied instead of borrowed.
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    let v2 = IvfPqView::from_bytes(&shifted[1..]).unwrap();
    assert!(!v2.is_zero_copy());
    let q = d.query(0);
    assert_eq!(
        v2.search(q, &d.vectors, &p, None),
        index.search(q, &d.vectors, &p, None)
    );
    // Round trip through an owned index.
    assert_eq!(&view.to_index(), index);
    // A coarse table built once and reused per query gives the same answers; one of the
    // wrong shape (another index) is rebuilt rather than trusted.
    let table = view.coarse_table();
    let other = IvfPqView::from_bytes(&small_other_index().to_bytes())
        .unwrap()
        .coarse_table();
    assert_ne!(table, other);
    for t in [&table, &other] {
        let reused = IvfPqView::from_bytes_with(&bytes, t).unwrap();
        for qi in 0..20 {
            let q = d.query(qi);
            assert_eq!(
                reused.search(q, &d.vectors, &p, None),
                index.search(q, &d.vectors, &p, None)
            );
        }
    }
}

/// An index with a different number of lists than [`cosine_index`].
fn small_other_index() -> IvfPqIndex {
    let d = data();
    let params = IndexParams {
        nlist: Some(3),
        ..IndexParams::default()
    };
    IvfPqIndex::build(
        &d.vectors[..2_000 * DIM],
        DIM,
        Metric::Cosine,
        &params,
        Cancel::NEVER,
    )
    .unwrap()
}

#[test]
fn corrupt_or_truncated_bytes_are_errors() {
    let small = generate(&SyntheticSpec::clip_like(600, 1, 16, 1));
    let index = IvfPqIndex::build(
        &small.vectors,
        16,
        Metric::Cosine,
        &IndexParams::default(),
        Cancel::NEVER,
    )
    .unwrap();
    let bytes = index.to_bytes();
    assert!(IvfPqView::from_bytes(&bytes).is_ok());
    for cut in [0, 10, 191, 192, 300, bytes.len() / 2, bytes.len() - 1] {
        assert!(IvfPqView::from_bytes(&bytes[..cut]).is_err(), "cut {cut}");
    }
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    assert!(matches!(
        IvfPqView::from_bytes(&bad),
        Err(IndexError::Corrupt(_))
    ));
    let mut bad = bytes.clone();
    bad[8] = 9;
    assert!(matches!(
        IvfPqView::from_bytes(&bad),
        Err(IndexError::UnsupportedVersion(9))
    ));
    // Flip every header byte in turn and a sample of body bytes: must never
    // panic; header damage must be detected.
    for i in 0..192 {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        let r = IvfPqView::from_bytes(&b);
        if (16..168).contains(&i) && !(44..48).contains(&i) {
            // Every used header field except the high bytes of the entry
            // count (which then mismatches sizes anyway) is validated.
            assert!(r.is_err(), "header byte {i} flip undetected");
        }
    }
    let q = small.query(0);
    for i in (192..bytes.len()).step_by(37) {
        let mut b = bytes.clone();
        b[i] = b[i].wrapping_add(0x81);
        if let Ok(v) = IvfPqView::from_bytes(&b) {
            // Corrupt payloads (codes, centroids) may still load; searching
            // them must not panic.
            let _ = v.search(q, &small.vectors, &SearchParams::default(), None);
        }
    }
}

#[test]
fn filter_excludes_rows_and_still_returns_k() {
    let d = data();
    let index = cosine_index();
    let q = d.query(5);
    let p = SearchParams::default();
    // Every third row allowed.
    let third = |r: u32| r.is_multiple_of(3);
    let got = index.search(q, &d.vectors, &p, Some(&third));
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|n| n.row % 3 == 0));
    let want = exact_search(&d.vectors, DIM, Metric::Cosine, q, 10, Some(&third));
    assert!(recall(&got, &want) >= 0.8);
    // Very selective filter: 12 rows allowed in all, scattered over lists.
    let allowed: Vec<u32> = (0..12).map(|i| i * 1601 + 17).collect();
    let sel = |r: u32| allowed.contains(&r);
    let got = index.search(q, &d.vectors, &p, Some(&sel));
    assert_eq!(got.len(), 10);
    let want = exact_search(&d.vectors, DIM, Metric::Cosine, q, 10, Some(&sel));
    // With 12 allowed rows every list gets probed: the result is exact
    // (scores equal up to float rounding of the stored norm).
    assert_eq!(
        got.iter().map(|n| n.row).collect::<Vec<_>>(),
        want.iter().map(|n| n.row).collect::<Vec<_>>()
    );
    for (g, w) in got.iter().zip(&want) {
        assert!((g.score - w.score).abs() < 1e-5);
    }
    // Fewer allowed rows than k: all of them.
    let three = |r: u32| r < 3;
    let got = index.search(q, &d.vectors, &p, Some(&three));
    let mut rows: Vec<u32> = got.iter().map(|n| n.row).collect();
    rows.sort();
    assert_eq!(rows, vec![0, 1, 2]);
}

#[test]
fn deterministic_given_seed_and_add_extends() {
    let small = generate(&SyntheticSpec::clip_like(3000, 20, 32, 9));
    let p = IndexParams {
        seed: 77,
        ..IndexParams::default()
    };
    let a = IvfPqIndex::build(&small.vectors, 32, Metric::L2, &p, Cancel::NEVER).unwrap();
    let b = IvfPqIndex::build(&small.vectors, 32, Metric::L2, &p, Cancel::NEVER).unwrap();
    assert_eq!(a.to_bytes(), b.to_bytes());
    let c = IvfPqIndex::build(
        &small.vectors,
        32,
        Metric::L2,
        &IndexParams {
            seed: 78,
            ..p.clone()
        },
        Cancel::NEVER,
    )
    .unwrap();
    assert_ne!(a.to_bytes(), c.to_bytes());

    // Train on everything, add in two halves: same lists as one add.
    let mut inc = IvfPqIndex::train(&small.vectors, 32, Metric::L2, &p, Cancel::NEVER).unwrap();
    inc.add(&small.vectors[..1500 * 32], 0, Cancel::NEVER)
        .unwrap();
    inc.add(&small.vectors[1500 * 32..], 1500, Cancel::NEVER)
        .unwrap();
    assert_eq!(inc.len(), 3000);
    assert_eq!(inc.to_bytes(), a.to_bytes());
    // Extending a loaded index works too.
    let bytes = a.to_bytes();
    let mut loaded = IvfPqView::from_bytes(&bytes).unwrap().to_index();
    loaded
        .add(&small.vectors[..32], 3000, Cancel::NEVER)
        .unwrap();
    assert_eq!(loaded.len(), 3001);
    let mut both = small.vectors.clone();
    both.extend_from_slice(&small.vectors[..32]);
    let r = loaded.search(&small.vectors[..32], &both, &SearchParams::default(), None);
    assert!(r.iter().take(2).any(|n| n.row == 3000));
}

#[test]
fn bad_input_is_an_error() {
    let v = vec![0.5f32; 100];
    assert!(matches!(
        IvfPqIndex::build(&v, 3, Metric::L2, &IndexParams::default(), Cancel::NEVER),
        Err(IndexError::BadVectors(_))
    ));
    assert!(IvfPqIndex::build(&v, 0, Metric::L2, &IndexParams::default(), Cancel::NEVER).is_err());
    assert!(IvfPqIndex::build(&[], 4, Metric::L2, &IndexParams::default(), Cancel::NEVER).is_err());
    let mut nan = vec![0.5f32; 100];
    nan[7] = f32::NAN;
    assert!(
        IvfPqIndex::build(&nan, 4, Metric::L2, &IndexParams::default(), Cancel::NEVER).is_err()
    );
    let p = IndexParams {
        m: Some(8),
        ..IndexParams::default()
    };
    assert!(matches!(
        IvfPqIndex::build(&v, 4, Metric::L2, &p, Cancel::NEVER),
        Err(IndexError::InvalidParams(_))
    ));
    // Tiny data works (fewer points than default lists).
    let tiny =
        IvfPqIndex::build(&v, 4, Metric::L2, &IndexParams::default(), Cancel::NEVER).unwrap();
    assert_eq!(
        tiny.search(&[0.5; 4], &v, &SearchParams::default(), None)
            .len(),
        10
    );
    // Absurd k: every row once, no allocation blow-up.
    let huge = SearchParams {
        k: usize::MAX / 2,
        nprobe: None,
        refine: Some(usize::MAX),
        rescore: true,
        tier_margin: 1.0,
    };
    assert_eq!(tiny.search(&[0.5; 4], &v, &huge, None).len(), 25);
    // Wrong query length: nothing, no panic.
    assert!(
        tiny.search(&[0.5; 3], &v, &SearchParams::default(), None)
            .is_empty()
    );
}

/// An index trained on one half of the data and given only the other half
/// (no training: `empty_like` + `add`) keeps the recall of an index trained
/// on that half itself, and reports exact scores.
#[test]
fn trained_quantizers_index_new_rows_without_training() {
    let d = data();
    let half = d.vectors.len() / 2;
    let (old, new) = d.vectors.split_at(half);
    let params = IndexParams::default();
    let template = IvfPqIndex::build(old, DIM, Metric::Cosine, &params, Cancel::NEVER).unwrap();
    let bytes = template.to_bytes();
    let view = IvfPqView::from_bytes(&bytes).unwrap();
    let mut reused = view.empty_like();
    assert!(reused.is_empty());
    assert_eq!(reused.nlist(), template.nlist());
    reused.add(new, 0, Cancel::NEVER).unwrap();
    assert_eq!(reused.len(), new.len() / DIM);
    let own = IvfPqIndex::build(new, DIM, Metric::Cosine, &params, Cancel::NEVER).unwrap();
    let p = SearchParams::default();
    let mean = |index: &IvfPqIndex| {
        let mut total = 0.0;
        for qi in 0..d.n_queries() {
            let q = d.query(qi);
            let got = index.search(q, new, &p, None);
            let want = exact_search(new, DIM, Metric::Cosine, q, p.k, None);
            for (g, w) in got.iter().zip(&want) {
                if g.row == w.row {
                    assert!((g.score - w.score).abs() < 1e-5);
                }
            }
            total += recall(&got, &want);
        }
        total / d.n_queries() as f64
    };
    let (r_reused, r_own) = (mean(&reused), mean(&own));
    assert!(
        r_reused >= 0.93 && r_reused >= r_own - 0.03,
        "reused quantizers: recall {r_reused}, own training: {r_own}"
    );
}

/// A set `Cancel` flag stops training and adding with `Cancelled`; a clear
/// one changes nothing (same index as the plain build).
#[test]
fn cancel_flag_stops_builds_and_a_clear_one_changes_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let d = data();
    let p = IndexParams::default();
    let flag = AtomicBool::new(true);
    let r = IvfPqIndex::build(&d.vectors, DIM, Metric::Cosine, &p, Cancel::on(&flag));
    assert!(matches!(r, Err(IndexError::Cancelled)), "{r:?}");
    let r = IvfPqIndex::train(&d.vectors, DIM, Metric::Cosine, &p, Cancel::on(&flag));
    assert!(matches!(r, Err(IndexError::Cancelled)), "{r:?}");

    // Adding stops before its first batch and leaves the trained index empty and consistent.
    let mut empty = IvfPqIndex::train(&d.vectors, DIM, Metric::Cosine, &p, Cancel::NEVER).unwrap();
    let r = empty.add(&d.vectors, 0, Cancel::on(&flag));
    assert!(matches!(r, Err(IndexError::Cancelled)), "{r:?}");
    assert_eq!(empty.len(), 0);
    assert_eq!(empty.list_sizes().iter().sum::<usize>(), 0);

    flag.store(false, Ordering::Relaxed);
    let built = IvfPqIndex::build(&d.vectors, DIM, Metric::Cosine, &p, Cancel::on(&flag)).unwrap();
    assert_eq!(&built, cosine_index());
}

/// `search_with_stats` counts what the search did: `nprobe` lists (enough
/// candidates there), their codes, `k * refine` re-ranked candidates; and it
/// returns the same neighbours as `search`. Stats add up over calls.
#[test]
fn search_stats_count_lists_codes_and_candidates() {
    use glimpse_index::SearchStats;
    let d = data();
    let bytes = cosine_index().to_bytes();
    let view = IvfPqView::from_bytes(&bytes).unwrap();
    let p = SearchParams {
        k: 10,
        nprobe: Some(4),
        refine: Some(5),
        rescore: true,
        tier_margin: 1.0,
    };
    let mut stats = SearchStats::default();
    let got = view.search_with_stats(d.query(0), &d.vectors, &p, None, &mut stats);
    assert_eq!(got, view.search(d.query(0), &d.vectors, &p, None));
    assert_eq!(stats.lists_scanned, 4);
    assert_eq!(stats.reranked, 50);
    let sizes = cosine_index().list_sizes();
    let largest4: usize = {
        let mut s = sizes.clone();
        s.sort_unstable_by(|a, b| b.cmp(a));
        s[..4].iter().sum()
    };
    assert!(stats.codes_scanned >= 50 && stats.codes_scanned as usize <= largest4);
    let once = stats;
    view.search_with_stats(d.query(1), &d.vectors, &p, None, &mut stats);
    assert_eq!(stats.lists_scanned, 8);
    assert_eq!(stats.reranked, 100);
    assert!(stats.scan >= once.scan && stats.rerank >= once.rerank);
}
