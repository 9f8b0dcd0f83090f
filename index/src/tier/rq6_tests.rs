use super::*;
use crate::synthetic::{SyntheticSpec, generate};
use rand::{Rng, SeedableRng};

fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n * dim).map(|_| rng.random::<f32>() - 0.5).collect()
}

/// Packing keeps every code, at every position of a chunk and in a part-filled last chunk.
#[test]
fn codes_survive_packing_and_every_level_scores_alike() {
    for dim in [1, 31, 32, 33, 100, 512] {
        let levels: Vec<u8> = (0..dim).map(|i| ((i * 37 + 11) % 64) as u8).collect();
        let mut packed = vec![0xffu8; row_bytes(dim)];
        pack(&levels, &mut packed);
        for (i, &want) in levels.iter().enumerate() {
            let chunk = &packed[i / CHUNK * CHUNK_BYTES..];
            assert_eq!(unpack_one(chunk, i % CHUNK), want, "{dim} at {i}");
        }
        // Dimensions past `dim` in the last chunk read as 0.
        for i in dim..dim.div_ceil(CHUNK) * CHUNK {
            assert_eq!(unpack_one(&packed[i / CHUNK * CHUNK_BYTES..], i % CHUNK), 0);
        }
        let mut w = rows(1, dim.div_ceil(CHUNK) * CHUNK, dim as u64);
        w[dim..].iter_mut().for_each(|x| *x = 0.0);
        let want: f32 = levels.iter().zip(&w).map(|(&c, a)| a * f32::from(c)).sum();
        for level in SimdLevel::ALL {
            if let Some(k) = crate::simd::Kernels::of(level) {
                let got = k.rq6_dot(&w, &packed);
                assert!(
                    (got - want).abs() < 1e-3,
                    "{dim} {level:?}: {got} vs {want}"
                );
            }
        }
    }
}

/// On data shaped unlike uniform noise (the hard mixture, and rows concentrated on a few
/// coordinates, where unrotated codes would put a row's whole error in those coordinates), no
/// code score is off by more than [`SIGMAS`] of its standard deviation, and the survivors hold
/// the true top k while the rest are ruled out.
#[test]
fn code_scores_stay_within_six_sigma_and_survivors_hold_the_true_top_k() {
    let dim = 64;
    let hard = generate(&SyntheticSpec::hard(4_000, 20, dim, 3));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let spiky: Vec<f32> = (0..4_000 * dim)
        .map(|i| {
            let x: f32 = rng.random::<f32>() - 0.5;
            if i % dim < 3 { 10.0 * x } else { 0.01 * x }
        })
        .collect();
    let n = 4_000;
    for (name, data) in [("hard", &hard.vectors), ("spiky", &spiky)] {
        for metric in [Metric::Cosine, Metric::Dot] {
            let codes = Rq6Codes::build(data, dim, metric).expect("codes");
            let tier = codes.view();
            let mut worst = 0.0f32;
            for qi in 0..20 {
                let mut q = rows(1, dim, 100 + qi);
                if metric == Metric::Cosine {
                    distance::normalize_in_place(&mut q);
                }
                let row = |r: usize| {
                    let mut v = data[r * dim..(r + 1) * dim].to_vec();
                    if metric == Metric::Cosine {
                        distance::normalize_in_place(&mut v);
                    }
                    v
                };
                let mut qr = q.clone();
                tier.rotation.apply(&mut qr);
                let sigma = (qr
                    .iter()
                    .zip(tier.steps.iter())
                    .map(|(a, s)| (a * s) * (a * s))
                    .sum::<f32>()
                    / 12.0)
                    .sqrt();
                for r in 0..n {
                    let c = &tier.codes[r * row_bytes(dim)..(r + 1) * row_bytes(dim)];
                    let approx: f32 = (0..dim)
                        .map(|j| {
                            let code =
                                f32::from(unpack_one(&c[j / CHUNK * CHUNK_BYTES..], j % CHUNK));
                            qr[j] * (tier.mins[j] + code * tier.steps[j])
                        })
                        .sum();
                    worst = worst.max((approx - distance::dot(&q, &row(r))).abs() / sigma);
                }
                let cands: Vec<u32> = (0..n as u32).step_by(2).collect();
                let keep = tier.survivors(&q, &cands, 10, 1.0);
                assert!(
                    keep.len() >= 10 && keep.len() < cands.len() / 4,
                    "{name} {metric}: {}",
                    keep.len()
                );
                let mut truth: Vec<(f32, u32)> = cands
                    .iter()
                    .map(|&c| (distance::dot(&q, &row(c as usize)), c))
                    .collect();
                truth.sort_by(|a, b| b.0.total_cmp(&a.0));
                for (_, r) in &truth[..10] {
                    let pos = cands.iter().position(|c| c == r).expect("a candidate");
                    assert!(
                        keep.contains(&pos),
                        "{name} {metric}: true neighbour {r} pruned"
                    );
                }
            }
            assert!(worst < SIGMAS, "{name} {metric}: an error of {worst} sigma");
        }
    }
    assert!(Rq6Codes::build(&spiky, dim, Metric::L2).is_none());
}

/// Searches through the rotated tier return what the full `f32` re-rank returns (rows and
/// scores) on the hard mixture, from far fewer raw rows than the re-rank reads without a tier,
/// and fewer than the 8-bit tier's worst-case bound leaves at CLIP's widths (384 is not a
/// power of two: two overlapping Hadamard blocks).
#[test]
fn the_rotated_tier_gives_the_f32_top_k_from_fewer_raw_rows_than_sq8() {
    use crate::tier::{CompactCodes, CompactKind};
    use crate::{Cancel, IndexParams, IvfPqIndex, IvfPqView, SearchParams, SearchStats};
    for (metric, dim) in [
        (Metric::Cosine, 512),
        (Metric::Dot, 512),
        (Metric::Cosine, 384),
        (Metric::Cosine, 768),
    ] {
        let data = generate(&SyntheticSpec::hard(6_000, 60, dim, 9));
        let params = IndexParams::default();
        let ix =
            IvfPqIndex::build(&data.vectors, dim, metric, &params, Cancel::NEVER).expect("build");
        let tier = |kind| CompactCodes::build(kind, &data.vectors, dim, metric).expect("codes");
        let (rq, sq) = (tier(CompactKind::Rotated6), tier(CompactKind::Sq8));
        let (with_rq, with_sq, without) = (
            ix.to_bytes_with(None, Some(&rq)),
            ix.to_bytes_with(None, Some(&sq)),
            ix.to_bytes(),
        );
        let rq_row_order = ix.to_bytes_with_tier_by_row(None, Some(&rq));
        let views = [&with_rq, &with_sq, &without, &rq_row_order]
            .map(|b| IvfPqView::from_bytes(b).expect("view"));
        assert_eq!(views[0].compact_kind(), Some(CompactKind::Rotated6));
        assert_eq!(views[1].compact_kind(), Some(CompactKind::Sq8));
        assert_eq!(views[2].compact_kind(), None);
        assert!(with_rq.len() < with_sq.len());
        let mut stats = [SearchStats::default(); 4];
        for (nprobe, refine) in [(4, 24), (16, 40), (64, 100)] {
            let params = SearchParams {
                k: 10,
                nprobe: Some(nprobe),
                refine: Some(refine),
                rescore: true,
                tier_margin: 1.0,
            };
            for i in 0..data.n_queries() {
                let q = data.query(i);
                let got: Vec<_> = views
                    .iter()
                    .zip(stats.iter_mut())
                    .map(|(v, s)| v.search_with_stats(q, &data.vectors, &params, None, s))
                    .collect();
                for g in &got[..] {
                    assert_eq!(
                        g, &got[2],
                        "{metric} nprobe {nprobe} refine {refine} query {i}"
                    );
                }
            }
        }
        let [rq_s, sq_s, plain, by_row] = stats;
        assert_eq!(rq_s.compact_scored, plain.reranked);
        assert_eq!(
            (by_row.compact_scored, by_row.reranked),
            (rq_s.compact_scored, rq_s.reranked)
        );
        assert!(
            rq_s.reranked * 4 < plain.reranked && rq_s.reranked < sq_s.reranked,
            "{metric} {dim}: raw rows re-ranked: rotated tier {}, 8-bit tier {}, none {}",
            rq_s.reranked,
            sq_s.reranked,
            plain.reranked
        );
    }
}

/// A section is refused when its size, preamble, mins or steps are wrong, and a file whose
/// flags name a rotated section without a compact one, or the wrong kind, is corrupt.
#[test]
fn the_section_is_checked() {
    let data = rows(50, 40, 2);
    let codes = Rq6Codes::build(&data, 40, Metric::Cosine).expect("codes");
    let reversed = codes.to_bytes_in_order((0..50).rev());
    let rb = row_bytes(40);
    let at = |i: usize| head_bytes(40) + rb * i;
    assert_eq!(&reversed[at(0)..at(1)], &codes.codes[49 * rb..50 * rb]);
    assert!(codes.to_bytes_in_order((0..49).chain([48])).is_empty());
    assert!(codes.to_bytes_in_order(0..51).is_empty());
    let bytes = codes.to_bytes_in_order(0..50);
    let parsed = Rq6Ref::parse(&bytes, 40, 50, true).expect("parse");
    assert_eq!(parsed.rotation, codes.rotation);
    assert_eq!(
        (&parsed.mins[..], &parsed.steps[..]),
        (&codes.mins[..], &codes.steps[..])
    );
    assert!(Rq6Ref::parse(&bytes, 40, 49, true).is_err());
    assert!(Rq6Ref::parse(&bytes[..bytes.len() - 1], 40, 50, true).is_err());
    for (at, value) in [
        (0, 0u32),                      // magic
        (4, 7),                         // rounds
        (8, 8),                         // bits
        (12, 41),                       // dimension
        (PREAMBLE + 4 * 40, 0),         // a step of 0
        (PREAMBLE, f32::NAN.to_bits()), // a NaN min
    ] {
        let mut bad = bytes.clone();
        bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
        assert!(Rq6Ref::parse(&bad, 40, 50, true).is_err(), "edit at {at}");
    }
    // The kind flag (bit 4 of the header's flags) must come with a compact section of that
    // kind: set alone, or flipped on an 8-bit section, the file is refused.
    use crate::layout::{FLAG_COMPACT, FLAG_COMPACT_ROTATED6};
    use crate::{Cancel, IndexParams, IvfPqIndex, IvfPqView};
    let more = rows(2000, 40, 5);
    let ix = IvfPqIndex::build(
        &more,
        40,
        Metric::Cosine,
        &IndexParams::default(),
        Cancel::NEVER,
    )
    .expect("build");
    let sq = crate::CompactCodes::build(crate::CompactKind::Sq8, &more, 40, Metric::Cosine);
    let flags = |b: &[u8]| u32::from_le_bytes([b[36], b[37], b[38], b[39]]);
    let set_flags = |b: &mut Vec<u8>, f: u32| b[36..40].copy_from_slice(&f.to_le_bytes());
    let mut plain = ix.to_bytes();
    let f = flags(&plain);
    set_flags(&mut plain, f | FLAG_COMPACT_ROTATED6);
    assert!(IvfPqView::from_bytes(&plain).is_err());
    let mut with_sq8 = ix.to_bytes_with(None, sq.as_ref());
    let f = flags(&with_sq8);
    assert_eq!(f & (FLAG_COMPACT | FLAG_COMPACT_ROTATED6), FLAG_COMPACT);
    assert!(IvfPqView::from_bytes(&with_sq8).is_ok());
    set_flags(&mut with_sq8, f | FLAG_COMPACT_ROTATED6);
    assert!(IvfPqView::from_bytes(&with_sq8).is_err());
    // Keys beyond the codes are kept; a NaN query rules nothing out.
    let tier = codes.view();
    let q = rows(1, 40, 4);
    let mut cands: Vec<u32> = (0..50).collect();
    cands.extend([500, 501]);
    let keep = tier.survivors(&q, &cands, 5, 1.0);
    assert!(keep.contains(&50) && keep.contains(&51));
    assert_eq!(
        tier.survivors(&[f32::NAN; 40], &cands, 5, 1.0).len(),
        cands.len()
    );
    assert_eq!(tier.survivors(&q, &cands, 0, 1.0).len(), cands.len());
}

/// With `rescore` off a search ranks on the codes alone: it reads no raw row (it gets none
/// here), returns code scores close to the exact ones, and mostly the rows the exact re-rank
/// returns. Both kinds, cosine and dot.
#[test]
fn ranking_on_the_codes_alone_reads_no_raw_row() {
    use crate::tier::{CompactCodes, CompactKind};
    use crate::{Cancel, IndexParams, IvfPqIndex, IvfPqView, SearchParams, SearchStats};
    let dim = 256;
    let data = generate(&SyntheticSpec::clip_like(3_000, 50, dim, 3));
    for metric in [Metric::Cosine, Metric::Dot] {
        let ix = IvfPqIndex::build(
            &data.vectors,
            dim,
            metric,
            &IndexParams::default(),
            Cancel::NEVER,
        )
        .expect("build");
        for kind in [CompactKind::Rotated6, CompactKind::Sq8] {
            let codes = CompactCodes::build(kind, &data.vectors, dim, metric).expect("codes");
            let bytes = ix.to_bytes_with(None, Some(&codes));
            let view = IvfPqView::from_bytes(&bytes).expect("view");
            let params = |rescore| SearchParams {
                k: 10,
                nprobe: Some(16),
                refine: Some(10),
                rescore,
                tier_margin: 1.0,
            };
            let (mut stats, mut shared, mut worst) = (SearchStats::default(), 0, 0f32);
            for i in 0..data.n_queries() {
                let q = data.query(i);
                let exact = view.search(q, &data.vectors, &params(true), None);
                let codes_only = view.search_with_stats(q, &[], &params(false), None, &mut stats);
                assert_eq!(codes_only.len(), 10, "{metric} {kind:?}");
                for n in &codes_only {
                    let v = &data.vectors[n.row as usize * dim..(n.row as usize + 1) * dim];
                    let dot: f32 = q.iter().zip(v).map(|(a, b)| a * b).sum();
                    let want = match metric {
                        Metric::Cosine => {
                            let norm = |x: &[f32]| x.iter().map(|a| a * a).sum::<f32>().sqrt();
                            dot / (norm(q) * norm(v))
                        }
                        _ => dot,
                    };
                    worst = worst.max((n.score - want).abs());
                }
                shared += codes_only
                    .iter()
                    .filter(|n| exact.iter().any(|e| e.row == n.row))
                    .count();
            }
            assert_eq!(stats.reranked, 0, "{metric} {kind:?}");
            assert_eq!(stats.compact_scored, (100 * data.n_queries()) as u64);
            assert!(
                worst < 0.02,
                "{metric} {kind:?}: a code score off by {worst}"
            );
            assert!(
                shared * 10 >= 9 * 10 * data.n_queries(),
                "{metric} {kind:?}: {shared} of {} rows shared with the exact re-rank",
                10 * data.n_queries()
            );
        }
    }
}
