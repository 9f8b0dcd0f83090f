//! Scaled dot-product attention over packed sequences on the CPU: scores, softmax and the
//! weighted sum of values in one pass per sequence and head, straight from the stacked
//! `(tokens, 3·hidden)` projections (q, k, v side by side).
//!
//! Through candle ops the same step was a dozen tensor ops per layer (three head transposes,
//! two batched GEMMs of 50 × 64 matrices, mask, softmax, a transpose back), 10 % of a text
//! query and of an image batch, for about 3 % of their arithmetic. Here every (sequence,
//! head) pair is one task on candle's worker pool:
//! - the head's keys are transposed once (`[dim][len]`, each row padded to whole blocks of 16),
//!   so a query's scores are a sum over dimensions of broadcast query values times key rows:
//!   vectorized across keys, 16 scores kept in registers at a time, each score summed in
//!   dimension order;
//! - the softmax uses [`exp_poly`] and the weighted sum is vectorized across dimensions, each
//!   output summed in key order;
//! - a causal sequence's query `i` sums keys `0..=i` only, where the reference adds a mask of
//!   minus infinity.
//!
//! No sum is reassociated and no fused multiply-add is contracted, so every build (portable,
//! AVX2, AVX-512) gives the same bits, and a sequence's result depends only on its own rows:
//! batched queries and images keep the bits they get alone.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use glimpse_index::simd;

use super::packing::Packing;
use super::rows_kernel::{SyncPtr, exp_poly};

/// How attention sees the packed activations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    /// Heads per token.
    pub heads: usize,
    /// Dimensions per head (`hidden / heads`).
    pub head_dim: usize,
    /// What queries are multiplied by (`head_dim^-0.5`), as the reference scales them.
    pub scale: f32,
    /// Each token sees only itself and the tokens before it (text).
    pub causal: bool,
}

/// Which queries attention answers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Queries<'a> {
    /// Every token: the result is `(tokens, hidden)`, rows that no sequence answers zero.
    All,
    /// One token per sequence, its position within the sequence, the sequences in the
    /// packing's order: the result is `(sequences, hidden)`, row `s` sequence `s`'s. A
    /// tower's last layer needs only its pooled token's row (the class or end-of-text token):
    /// the other rows' scores, softmax and sums would be thrown away.
    One(&'a [usize]),
}

/// `softmax(q·kᵀ·scale (+ causal mask))·v` per sequence of `packing` and head, for the
/// tokens `queries` names; `qkv` is a contiguous f32 `(tokens, 3·hidden)` on the CPU, each row
/// its token's q, k and v. A query's row has the same bits whichever [`Queries`] asked for it,
/// and whether or not its sequence shares rows with others (a shared row is answered once,
/// by the first sequence that has it; see [`Packing::sharing_prefixes`]).
pub(crate) fn attend(
    qkv: &Tensor,
    packing: &Packing,
    shape: AttentionShape,
    queries: Queries<'_>,
) -> Result<Tensor> {
    let level = simd::level();
    qkv.apply_op1_no_bwd(&AttentionOp {
        packing,
        shape,
        queries,
        level,
    })
}

struct AttentionOp<'a> {
    packing: &'a Packing,
    shape: AttentionShape,
    queries: Queries<'a>,
    /// Which build runs (the process's level; the tests try each).
    level: simd::SimdLevel,
}

impl CustomOp1 for AttentionOp<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (tokens, width) = l.shape().dims2()?;
        let AttentionShape {
            heads, head_dim, ..
        } = self.shape;
        let hidden = heads * head_dim;
        if width != 3 * hidden {
            candle_core::bail!("attention: {heads} heads of {head_dim} for rows of {width}");
        }
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("attention: the projections are not f32");
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("attention: the projections are not contiguous");
        };
        let qkv = &data[start..end];
        let packing = self.packing;
        if packing.tokens() > tokens {
            candle_core::bail!("attention: a sequence runs past the {tokens} tokens");
        }
        // Per sequence: the query positions it answers and, for a picked query, its output
        // row (the others are written to their own rows).
        let answers: Vec<(std::ops::Range<usize>, Option<usize>)> = match self.queries {
            Queries::All => packing
                .sequences()
                .map(|(rows, first_new)| (first_new..rows.len(), None))
                .collect(),
            Queries::One(picks) => {
                if picks.len() != packing.len() {
                    candle_core::bail!(
                        "attention: {} picked queries for {} sequences",
                        picks.len(),
                        packing.len()
                    );
                }
                let mut answers = Vec::with_capacity(picks.len());
                for (s, (&pick, (rows, _))) in picks.iter().zip(packing.sequences()).enumerate() {
                    if pick >= rows.len() {
                        let len = rows.len();
                        candle_core::bail!("attention: query {pick} of a {len}-token sequence");
                    }
                    answers.push((pick..pick + 1, Some(s)));
                }
                answers
            }
        };
        let rows = match self.queries {
            Queries::All => tokens,
            Queries::One(_) => packing.len(),
        };
        let mut out = vec![0f32; rows * hidden];
        let base = SyncPtr(out.as_mut_ptr());
        let level = self.level;
        candle_core::utils::barrier_pool().execute_chunked(packing.len() * heads, |range| {
            let mut scratch = Scratch::default();
            for task in range {
                let (rows, _) = packing.sequence(task / heads);
                let (queries, picked) = answers[task / heads].clone();
                if queries.is_empty() {
                    // A sequence whose every row an earlier one answers.
                    continue;
                }
                let job = HeadJob {
                    qkv,
                    hidden,
                    rows,
                    queries,
                    picked,
                    offset: (task % heads) * head_dim,
                    shape: self.shape,
                    out: base,
                };
                // SAFETY: the job's output rows lie within `out` (a sequence's rows are below
                // the packing's tokens, checked above, and a picked sequence writes its own
                // row), each (sequence, head) task is handed out once and writes only its
                // head's columns of the rows it answers, which no other sequence answers
                // (the packing's contract), and `out` outlives the pool call.
                unsafe { run_head(level, &job, &mut scratch) };
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, hidden))))
    }
}

/// One sequence's one head.
struct HeadJob<'a> {
    /// The stacked projections, rows of `3·hidden`.
    qkv: &'a [f32],
    hidden: usize,
    /// The row of each token of the sequence.
    rows: &'a [u32],
    /// The query positions (within the sequence) to answer.
    queries: std::ops::Range<usize>,
    /// The output row of a picked query (one per sequence); without it each query's output
    /// goes to its own row.
    picked: Option<usize>,
    /// First column of the head (in q, k, v and the output alike).
    offset: usize,
    shape: AttentionShape,
    /// The output's row 0, column 0.
    out: SyncPtr,
}

/// Scores (keys) or outputs (dimensions) computed together, in one vector register of
/// AVX-512 (two of AVX2).
const BLOCK: usize = 16;

/// A worker's buffers, reused across its tasks.
#[derive(Default)]
struct Scratch {
    /// The head's keys, `[dim][len rounded up to BLOCK]`.
    keys_t: Vec<f32>,
    /// One query's scores, then its weights.
    scores: Vec<f32>,
    /// One query's output.
    sums: Vec<f32>,
}

/// [`head`] in the widest build this CPU runs (the same bits in each).
///
/// # Safety
/// `job.out` covers the job's rows of `hidden` floats, and no other thread writes its head's
/// columns there.
unsafe fn run_head(level: simd::SimdLevel, job: &HeadJob<'_>, scratch: &mut Scratch) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd::level` grants Avx512 only with AVX-512F and BW besides AVX2 and FMA;
        // the rest is forwarded from the caller.
        simd::SimdLevel::Avx512 => unsafe { head_avx512(job, scratch) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd::level` grants Avx2 only with AVX2 and FMA.
        simd::SimdLevel::Avx2 => unsafe { head_avx2(job, scratch) },
        // SAFETY: forwarded from the caller.
        _ => unsafe { head(job, scratch) },
    }
}

/// [`head`] compiled for AVX-512.
///
/// # Safety
/// AVX-512F, AVX2 and FMA; as [`run_head`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn head_avx512(job: &HeadJob<'_>, scratch: &mut Scratch) {
    // SAFETY: forwarded from the caller.
    unsafe { head(job, scratch) }
}

/// [`head`] compiled for AVX2.
///
/// # Safety
/// AVX2 and FMA; as [`run_head`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_avx2(job: &HeadJob<'_>, scratch: &mut Scratch) {
    // SAFETY: forwarded from the caller.
    unsafe { head(job, scratch) }
}

/// Attention of one head of one sequence, written to the head's columns of its rows.
///
/// # Safety
/// As [`run_head`].
#[inline(always)]
unsafe fn head(job: &HeadJob<'_>, scratch: &mut Scratch) {
    let (len, dim, hidden) = (job.rows.len(), job.shape.head_dim, job.hidden);
    // Token t's columns of this head in q (part 0), k (1) or v (2).
    let row = |t: usize, part: usize| {
        let at = job.rows[t] as usize * 3 * hidden + part * hidden + job.offset;
        at..at + dim
    };
    // A causal query sees the keys up to itself only.
    let needed = if job.shape.causal {
        job.queries.end.min(len)
    } else {
        len
    };
    // Keys transposed, each dimension's row padded with zeros to whole blocks, so a block of
    // scores is one fixed-width loop whose sums stay in registers.
    let stride = len.div_ceil(BLOCK) * BLOCK;
    scratch.keys_t.clear();
    scratch.keys_t.resize(dim * stride, 0.0);
    for j in 0..needed {
        for (d, &kv) in job.qkv[row(j, 1)].iter().enumerate() {
            scratch.keys_t[d * stride + j] = kv;
        }
    }
    scratch.scores.resize(stride, 0.0);
    scratch.sums.resize(dim, 0.0);
    for i in job.queries.clone() {
        let seen = if job.shape.causal { i + 1 } else { len };
        let q = &job.qkv[row(i, 0)];
        // Each score starts at 0 and adds `(q_d · scale) · k_d` for d in order, as a scalar
        // loop would: a block only keeps BLOCK of them in registers instead of storing and
        // reloading every score once per dimension (which a query of 18 keys spent most of
        // its time on).
        for j0 in (0..seen).step_by(BLOCK) {
            let mut acc = [0f32; BLOCK];
            for (d, &qv) in q.iter().enumerate() {
                let qd = qv * job.shape.scale;
                let keys = &scratch.keys_t[d * stride + j0..d * stride + j0 + BLOCK];
                for (s, &kv) in acc.iter_mut().zip(keys) {
                    *s += qd * kv;
                }
            }
            let end = seen.min(j0 + BLOCK);
            scratch.scores[j0..end].copy_from_slice(&acc[..end - j0]);
        }
        let scores = &mut scratch.scores[..seen];
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        for s in scores.iter_mut() {
            *s = exp_poly(*s - max);
        }
        let total: f32 = scores.iter().sum();
        for s in scores.iter_mut() {
            *s /= total;
        }
        // Each output starts at 0 and adds `weight_j · v_j` for j in order; a block of
        // outputs stays in registers across the keys.
        let sums = &mut scratch.sums[..dim];
        for (d0, out) in (0..dim).step_by(BLOCK).zip(sums.chunks_mut(BLOCK)) {
            let mut acc = [0f32; BLOCK];
            let width = out.len();
            for (j, &weight) in scores.iter().enumerate() {
                let v = &job.qkv[row(j, 2)][d0..d0 + width];
                // A whole block as a fixed-size array, so the sums stay in a register
                // rather than going through memory on every key.
                if let Some(v) = v.first_chunk::<BLOCK>() {
                    for (o, &vv) in acc.iter_mut().zip(v) {
                        *o += weight * vv;
                    }
                } else {
                    for (o, &vv) in acc.iter_mut().zip(v) {
                        *o += weight * vv;
                    }
                }
            }
            out.copy_from_slice(&acc[..width]);
        }
        let out_row = job.picked.unwrap_or(job.rows[i] as usize);
        // SAFETY: the output row's head columns are this task's (caller's contract).
        let dst = unsafe {
            std::slice::from_raw_parts_mut(job.out.at(out_row * hidden + job.offset), dim)
        };
        dst.copy_from_slice(sums);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::super::packing::Run;
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503);
                ((h >> 9) % 2001) as f32 / 500.0 - 2.0
            })
            .collect()
    }

    /// The levels this CPU runs.
    fn levels() -> Vec<simd::SimdLevel> {
        #[allow(unused_mut)]
        let mut levels = vec![simd::SimdLevel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                levels.push(simd::SimdLevel::Avx2);
                if has!("avx512f") && has!("avx512bw") {
                    levels.push(simd::SimdLevel::Avx512);
                }
            }
        }
        levels
    }

    fn run(qkv: &Tensor, runs: &[Run], shape: AttentionShape, level: simd::SimdLevel) -> Vec<f32> {
        run_queries(qkv, runs, shape, Queries::All, level)
    }

    fn run_queries(
        qkv: &Tensor,
        runs: &[Run],
        shape: AttentionShape,
        queries: Queries<'_>,
        level: simd::SimdLevel,
    ) -> Vec<f32> {
        let packing = Packing::from_runs(runs);
        let op = AttentionOp {
            packing: &packing,
            shape,
            queries,
            level,
        };
        let out = qkv.apply_op1_no_bwd(&op).expect("attention");
        out.flatten_all().and_then(|t| t.to_vec1()).expect("values")
    }

    /// Softmax attention in f64 with the mask written out, for one sequence's one head:
    /// `part(p, t, d)` is dimension `d` of the head in q (p = 0), k (1) or v (2) of token `t`.
    fn reference(
        part: impl Fn(usize, usize, usize) -> f64,
        len: usize,
        shape: AttentionShape,
        i: usize,
    ) -> Vec<f64> {
        let dim = shape.head_dim;
        let scores: Vec<f64> = (0..len)
            .map(|j| {
                if shape.causal && j > i {
                    return f64::NEG_INFINITY;
                }
                (0..dim)
                    .map(|d| part(0, i, d) * f64::from(shape.scale) * part(1, j, d))
                    .sum()
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        (0..dim)
            .map(|d| (0..len).map(|j| weights[j] / total * part(2, j, d)).sum())
            .collect()
    }

    /// Every build agrees with the f64 reference, gives the same bits as the others, and a
    /// sequence's result does not depend on the sequences packed beside it.
    /// Every output of `got` (the attention of `runs` over `data`, run by `level`) is the f64
    /// reference's to 1e-5.
    fn assert_matches_reference(
        got: &[f32],
        data: &[f32],
        runs: &[Run],
        shape: AttentionShape,
        level: simd::SimdLevel,
    ) {
        let (heads, dim) = (shape.heads, shape.head_dim);
        let hidden = heads * dim;
        for run in runs {
            for s in 0..run.count {
                let start = run.start + s * run.len;
                for h in 0..heads {
                    let part = |p: usize, t: usize, d: usize| {
                        let at = (start + t) * 3 * hidden + p * hidden + h * dim + d;
                        f64::from(data[at])
                    };
                    for i in 0..run.len {
                        let want = reference(part, run.len, shape, i);
                        let at = (start + i) * hidden + h * dim;
                        for (d, w) in want.iter().enumerate() {
                            let g = f64::from(got[at + d]);
                            assert!(
                                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                                "{level:?} causal {} sequence at {start} head {h} query {i} \
                                 dim {d}: {g} vs {w}",
                                shape.causal
                            );
                        }
                    }
                }
            }
        }
    }

    /// Runs `runs` in every build this CPU has: each matches the f64 reference, passes
    /// `extra` (given the level and its output), and gives the other builds' bits.
    fn every_build_matches_the_reference(
        qkv: &Tensor,
        data: &[f32],
        runs: &[Run],
        shape: AttentionShape,
        extra: impl Fn(simd::SimdLevel, &[f32]),
    ) {
        let outputs: Vec<Vec<u32>> = levels()
            .into_iter()
            .map(|level| {
                let got = run(qkv, runs, shape, level);
                assert_matches_reference(&got, data, runs, shape, level);
                extra(level, &got);
                got.iter().map(|x| x.to_bits()).collect()
            })
            .collect();
        for other in &outputs[1..] {
            assert_eq!(
                other, &outputs[0],
                "builds differ (causal {})",
                shape.causal
            );
        }
    }

    /// Sequences longer than a block of scores (16 keys: 37 and 20 tokens) and heads wider than
    /// a block of outputs, the last one partial (24 = 16 + 8): every build matches the
    /// reference and gives the other builds' bits.
    #[test]
    fn long_sequences_and_wide_heads_match_the_reference() {
        let (heads, dim) = (2, 24);
        let runs = [
            Run {
                start: 0,
                count: 1,
                len: 37,
            },
            Run {
                start: 37,
                count: 2,
                len: 20,
            },
        ];
        let tokens = 77;
        let data = values(tokens * 3 * heads * dim, 5);
        let qkv = Tensor::from_slice(&data, (tokens, 3 * heads * dim), &Device::Cpu).unwrap();
        for causal in [false, true] {
            let shape = AttentionShape {
                heads,
                head_dim: dim,
                scale: 0.2,
                causal,
            };
            every_build_matches_the_reference(&qkv, &data, &runs, shape, |_, _| {});
        }
    }

    #[test]
    fn attention_matches_reference_in_every_build_and_batch() {
        let (heads, dim) = (3, 8);
        let hidden = heads * dim;
        let runs = [
            Run {
                start: 0,
                count: 2,
                len: 5,
            },
            Run {
                start: 10,
                count: 1,
                len: 7,
            },
            Run {
                start: 17,
                count: 3,
                len: 1,
            },
        ];
        let tokens = 20;
        let device = Device::Cpu;
        let data = values(tokens * 3 * hidden, 1);
        let qkv = Tensor::from_slice(&data, (tokens, 3 * hidden), &device).unwrap();
        for causal in [false, true] {
            let shape = AttentionShape {
                heads,
                head_dim: dim,
                scale: 0.35,
                causal,
            };
            every_build_matches_the_reference(&qkv, &data, &runs, shape, |level, got| {
                // The 7-token sequence alone gets the same bits.
                let alone = run(&qkv, &runs[1..2], shape, level);
                assert_eq!(
                    alone[10 * hidden..17 * hidden],
                    got[10 * hidden..17 * hidden]
                );
                // One picked query per sequence gets its row's bits: the sequences
                // start at rows 0, 5, 10, 17, 18, 19.
                let picks = [4, 0, 6, 0, 0, 0];
                let firsts = [0, 5, 10, 17, 18, 19];
                let one = run_queries(&qkv, &runs, shape, Queries::One(&picks), level);
                assert_eq!(one.len(), picks.len() * hidden);
                for (s, (&pick, &first)) in picks.iter().zip(&firsts).enumerate() {
                    let row = (first + pick) * hidden;
                    assert_eq!(
                        one[s * hidden..(s + 1) * hidden],
                        got[row..row + hidden],
                        "{level:?} causal {causal} sequence {s}"
                    );
                }
            });
        }
    }

    /// Sequences sharing the rows of their common prefixes (and one sequence twice) get, at
    /// every row and for a picked query, the bits each gets laid out alone on its own rows.
    #[test]
    fn shared_prefix_rows_have_the_bits_of_each_sequence_alone() {
        let (heads, dim) = (2, 20);
        let hidden = heads * dim;
        let long: Vec<u32> = (0..23).collect();
        let mut branch = long[..19].to_vec();
        branch.extend([90, 91]);
        let texts: [&[u32]; 6] = [&long, &[0, 5, 6], &branch, &[0, 5, 6], &[0], &[4, 4, 4]];
        let shared = Packing::sharing_prefixes(&texts);
        let packing = &shared.packing;
        let tokens = packing.tokens();
        assert!(tokens < texts.iter().map(|t| t.len()).sum::<usize>());
        let data = values(tokens * 3 * hidden, 11);
        let qkv = Tensor::from_slice(&data, (tokens, 3 * hidden), &Device::Cpu).unwrap();
        let shape = AttentionShape {
            heads,
            head_dim: dim,
            scale: 0.3,
            causal: true,
        };
        let picks: Vec<usize> = (0..packing.len())
            .map(|s| packing.sequence(s).0.len() - 1)
            .collect();
        for level in levels() {
            let attended = |queries| {
                let op = AttentionOp {
                    packing,
                    shape,
                    queries,
                    level,
                };
                let out = qkv.apply_op1_no_bwd(&op).unwrap();
                out.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            };
            let all = attended(Queries::All);
            let picked = attended(Queries::One(&picks));
            for (s, (rows, _)) in packing.sequences().enumerate() {
                // The sequence alone: its rows' projections copied back to back.
                let own: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| data[r as usize * 3 * hidden..][..3 * hidden].to_vec())
                    .collect();
                let own_qkv =
                    Tensor::from_slice(&own, (rows.len(), 3 * hidden), &Device::Cpu).unwrap();
                let alone_runs = [Run {
                    start: 0,
                    count: 1,
                    len: rows.len(),
                }];
                let alone = run(&own_qkv, &alone_runs, shape, level);
                for (i, &r) in rows.iter().enumerate() {
                    let r = r as usize;
                    assert_eq!(
                        all[r * hidden..(r + 1) * hidden],
                        alone[i * hidden..(i + 1) * hidden],
                        "{level:?} sequence {s} position {i}"
                    );
                }
                let last = (rows.len() - 1) * hidden;
                assert_eq!(
                    picked[s * hidden..(s + 1) * hidden],
                    alone[last..last + hidden],
                    "{level:?} sequence {s} picked"
                );
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let device = Device::Cpu;
        let qkv = Tensor::zeros((4, 18), candle_core::DType::F32, &device).unwrap();
        let shape = AttentionShape {
            heads: 2,
            head_dim: 3,
            scale: 1.0,
            causal: false,
        };
        let runs = [Run {
            start: 0,
            count: 1,
            len: 4,
        }];
        let all = Queries::All;
        let runs = Packing::from_runs(&runs);
        let past = Packing::from_runs(&[Run {
            start: 2,
            count: 1,
            len: 4,
        }]);
        assert!(attend(&qkv, &runs, shape, all).is_ok());
        assert!(attend(&qkv, &runs, shape, Queries::One(&[3])).is_ok());
        assert!(attend(&qkv, &past, shape, all).is_err());
        let wrong = AttentionShape { heads: 4, ..shape };
        assert!(attend(&qkv, &runs, wrong, all).is_err());
        let narrow = Tensor::zeros((4, 12), candle_core::DType::F32, &device).unwrap();
        assert!(attend(&narrow, &runs, shape, all).is_err());
        // A picked query past its sequence, or a pick count other than the sequences'.
        assert!(attend(&qkv, &runs, shape, Queries::One(&[4])).is_err());
        assert!(attend(&qkv, &runs, shape, Queries::One(&[0, 1])).is_err());
    }
}
