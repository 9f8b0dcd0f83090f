//! x86-64 `i8` dot-product kernels: AVX2 (`maddubs`) and AVX-512 VNNI
//! (`vpdpbusd`). Handed out by [`super::kernel_for`] only for a level the CPU
//! supports (see [`crate::simd::Kernels`]).

use std::arch::x86_64::*;

/// Horizontal sum of eight `i32` lanes.
#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// Four rows at a time, 32 dimensions per step. `maddubs` multiplies
/// unsigned by signed bytes, so the query enters as `|q|` and its signs
/// move onto the row (`sign_epi8`); with both sides in `-127..=127` a pair
/// sum is at most 2 * 127 * 127 = 32 258, so the `i16` saturation of
/// `maddubs` never triggers and the result is exact. Four instructions per
/// 32 bytes, against six with sign extension to `i16`.
///
/// `_sums` is unused (the signature is the table's, shared with the VNNI
/// kernel, which needs it).
///
/// # Safety
/// The CPU must support AVX2; `q` holds `dim` codes (checked by
/// [`Kernels::dots_i8`](crate::simd::Kernels::dots_i8)). For exact results
/// codes must be in `-127..=127` (as `quantize` makes them).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dots_i8_avx2(
    q: &[i8],
    codes: &[i8],
    _sums: &[i32],
    dim: usize,
    out: &mut [i32],
) {
    let rows = out.len().min(codes.len() / dim.max(1));
    let full = dim / 32 * 32;
    let qs: Vec<__m256i> = (0..full)
        .step_by(32)
        // SAFETY: i + 32 <= full <= q.len() (q has dim entries).
        .map(|i| unsafe { _mm256_loadu_si256(q.as_ptr().add(i).cast()) })
        .collect();
    let qa: Vec<__m256i> = qs.iter().map(|&v| _mm256_abs_epi8(v)).collect();
    let ones = _mm256_set1_epi16(1);
    let tail = |row: &[i8]| super::scalar::dot_i8_from(q, row, full);
    let step = |acc: __m256i, j: usize, c: __m256i| -> __m256i {
        let p16 = _mm256_maddubs_epi16(qa[j], _mm256_sign_epi8(c, qs[j]));
        _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ones))
    };
    let mut r = 0;
    while r + 4 <= rows {
        let base = codes[r * dim..(r + 4) * dim].as_ptr();
        let mut acc = [_mm256_setzero_si256(); 4];
        for j in 0..qs.len() {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: row r + k < rows and 32 * j + 32 <= full <= dim.
                let c = unsafe { _mm256_loadu_si256(base.add(k * dim + 32 * j).cast()) };
                *a = step(*a, j, c);
            }
        }
        for (k, a) in acc.iter().enumerate() {
            out[r + k] = hsum(*a) + tail(&codes[(r + k) * dim..(r + k + 1) * dim]);
        }
        r += 4;
    }
    while r < rows {
        let row = &codes[r * dim..(r + 1) * dim];
        let mut acc = _mm256_setzero_si256();
        for j in 0..qs.len() {
            // SAFETY: 32 * j + 32 <= full <= dim = row.len().
            let c = unsafe { _mm256_loadu_si256(row.as_ptr().add(32 * j).cast()) };
            acc = step(acc, j, c);
        }
        out[r] = hsum(acc) + tail(row);
        r += 1;
    }
}

/// AVX-512 VNNI: `vpdpbusd` multiplies 64 unsigned by 64 signed bytes and
/// adds groups of four into `i32` lanes in one instruction, without
/// saturation. The query enters shifted to unsigned (`q + 128`), so each
/// row's sum is `<q, c> + 128 * sum(c)`; `sums` holds `sum(c)` per row. The
/// last partial chunk is loaded with a byte mask (zeros add nothing).
/// Without one sum per output row it hands over to the AVX2 kernel, which
/// needs none.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI; `q` holds `dim` codes
/// (checked by [`Kernels::dots_i8`](crate::simd::Kernels::dots_i8)).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dots_i8_vnni512(
    q: &[i8],
    codes: &[i8],
    sums: &[i32],
    dim: usize,
    out: &mut [i32],
) {
    if sums.len() != out.len() {
        // SAFETY: AVX-512 F implies AVX2; the caller's guarantees are forwarded.
        return unsafe { dots_i8_avx2(q, codes, sums, dim, out) };
    }
    let rows = out.len().min(codes.len() / dim.max(1)).min(sums.len());
    let chunks = dim.div_ceil(64);
    let mask_of = |j: usize| -> __mmask64 {
        let left = dim - 64 * j;
        if left >= 64 {
            u64::MAX
        } else {
            (1u64 << left) - 1
        }
    };
    let flip = _mm512_set1_epi8(-128);
    let qu: Vec<__m512i> = (0..chunks)
        .map(|j| {
            // SAFETY: the masked load reads only the `dim - 64 j` bytes left in q.
            let v = unsafe { _mm512_maskz_loadu_epi8(mask_of(j), q.as_ptr().add(64 * j)) };
            // q + 128 as unsigned. Lanes past `dim` meet zero codes, so they add nothing.
            _mm512_xor_si512(v, flip)
        })
        .collect();
    let load = |row: usize, j: usize| -> __m512i {
        // SAFETY: row < rows, so [row * dim + 64 j, row * dim + dim) is inside codes;
        // the mask stops the load at the end of the row.
        unsafe { _mm512_maskz_loadu_epi8(mask_of(j), codes.as_ptr().add(row * dim + 64 * j)) }
    };
    let mut r = 0;
    while r + 4 <= rows {
        let mut acc = [_mm512_setzero_si512(); 4];
        for (j, &qv) in qu.iter().enumerate() {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_dpbusd_epi32(*a, qv, load(r + k, j));
            }
        }
        for (k, a) in acc.iter().enumerate() {
            out[r + k] = _mm512_reduce_add_epi32(*a) - 128 * sums[r + k];
        }
        r += 4;
    }
    while r < rows {
        let mut acc = _mm512_setzero_si512();
        for (j, &qv) in qu.iter().enumerate() {
            acc = _mm512_dpbusd_epi32(acc, qv, load(r, j));
        }
        out[r] = _mm512_reduce_add_epi32(acc) - 128 * sums[r];
        r += 1;
    }
}
