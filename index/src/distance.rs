//! Exact pairwise distances on `f32` slices, through simsimd's runtime
//! dispatched kernels, with a scalar fallback for the (never expected)
//! case where simsimd rejects the input.

use simsimd::SpatialSimilarity;

/// Inner product of two equal-length vectors.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match <f32 as SpatialSimilarity>::dot(a, b) {
        Some(d) => d as f32,
        None => a.iter().zip(b).map(|(x, y)| x * y).sum(),
    }
}

/// Squared Euclidean distance of two equal-length vectors.
#[inline]
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match <f32 as SpatialSimilarity>::l2sq(a, b) {
        Some(d) => d as f32,
        None => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
    }
}

/// Cosine similarity (not distance) of two equal-length vectors; 0 when
/// either vector has zero norm.
#[inline]
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let na = norm(a);
    let nb = norm(b);
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot(a, b) / (na * nb)
}

/// Euclidean norm of a vector.
#[inline]
pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Scales `a` in place to unit length; leaves a zero vector unchanged.
pub fn normalize_in_place(a: &mut [f32]) {
    let n = norm(a);
    if n > 0.0 {
        let inv = 1.0 / n;
        a.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scalar_definitions() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let d: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let l: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((dot(&a, &b) - d).abs() < 1e-4);
        assert!((l2sq(&a, &b) - l).abs() < 1e-4);
        let c = d / (norm(&a) * norm(&b));
        assert!((cosine_similarity(&a, &b) - c).abs() < 1e-5);
        assert_eq!(cosine_similarity(&a, &[0.0; 37]), 0.0);
    }
}
