//! The portable `i8` dot products: the reference every SIMD kernel must match
//! exactly, the kernel of [`SimdLevel::Scalar`](crate::simd::SimdLevel::Scalar)
//! and the tail of the SIMD kernels.

/// `out[r] = <q, row r of codes>` in plain `i32` arithmetic: the reference
/// the SIMD kernels must equal exactly.
pub(super) fn dots_i8_scalar(q: &[i8], codes: &[i8], _sums: &[i32], dim: usize, out: &mut [i32]) {
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(dim)) {
        *o = dot_i8_from(q, c, 0);
    }
}

/// `<q[from..], row[from..]>` in `i32`: the scalar reference, and the tail
/// past the last full SIMD step of the kernels.
#[inline]
pub(super) fn dot_i8_from(q: &[i8], row: &[i8], from: usize) -> i32 {
    q[from..]
        .iter()
        .zip(&row[from..])
        .map(|(&x, &y)| x as i32 * y as i32)
        .sum()
}
