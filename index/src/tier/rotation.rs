//! A random orthogonal rotation in `O(d log d)`: rounds of random sign flips and normalised
//! Walsh–Hadamard transforms (the structured rotation of RaBitQ and of fast Johnson–
//! Lindenstrauss transforms).
//!
//! Why the rotated tier needs it: a row's rounding errors on 6-bit codes only behave as
//! independent draws (which is what makes their effect on a score concentrate, see `rq6`) when
//! no coordinate carries a large share of the row's structure. A random rotation spreads every
//! row over all coordinates and, being orthogonal, changes no inner product: `<Rq, Rx> = <q, x>`.
//!
//! A dimension that is not a power of two is covered by two overlapping blocks of the largest
//! power of two `P ≤ d` (the first `P` coordinates, then the last `P`), each round flipping
//! signs before each block, so every output coordinate depends on every input after two rounds.

/// Rounds of (signs, transform of the first block, signs, transform of the last block).
pub(crate) const ROUNDS: usize = 2;

/// The rotation of one tier: its dimension and `2 · ROUNDS` sign vectors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rotation {
    dim: usize,
    /// `2 · ROUNDS · dim` signs, one bit each (least significant first), 1 flipping the
    /// coordinate: kept packed, as stored, so reading a section copies bytes and nothing else.
    flips: Vec<u8>,
}

impl Rotation {
    /// A rotation of `dim` coordinates drawn from `seed`.
    pub(crate) fn random(dim: usize, seed: u64) -> Rotation {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut flips = vec![0u8; Self::stored_len(dim)];
        for i in 0..2 * ROUNDS * dim {
            flips[i / 8] |= u8::from(rng.random::<bool>()) << (i % 8);
        }
        Rotation { dim, flips }
    }

    /// Bytes of the stored signs (one bit each, least significant first).
    pub(crate) fn stored_len(dim: usize) -> usize {
        (2 * ROUNDS * dim).div_ceil(8)
    }

    /// The signs as stored (see [`stored_len`](Self::stored_len)).
    pub(crate) fn to_bytes(&self) -> &[u8] {
        &self.flips
    }

    /// The rotation whose signs `bytes` stores; `None` when it is not exactly
    /// [`stored_len`](Self::stored_len) long.
    pub(crate) fn from_bytes(dim: usize, bytes: &[u8]) -> Option<Rotation> {
        (bytes.len() == Self::stored_len(dim)).then(|| Rotation {
            dim,
            flips: bytes.to_vec(),
        })
    }

    /// Rotates `x` (exactly `dim` values) in place.
    pub(crate) fn apply(&self, x: &mut [f32]) {
        debug_assert_eq!(x.len(), self.dim);
        let d = self.dim.min(x.len());
        if d == 0 {
            return;
        }
        let block = 1usize << d.ilog2();
        for i in 0..2 * ROUNDS {
            let first = i * self.dim;
            for (j, v) in x.iter_mut().enumerate() {
                let bit = first + j;
                if self.flips[bit / 8] >> (bit % 8) & 1 == 1 {
                    *v = -*v;
                }
            }
            let part = if i % 2 == 0 {
                &mut x[..block]
            } else {
                &mut x[d - block..d]
            };
            hadamard(part);
        }
    }
}

/// The normalised Walsh–Hadamard transform of `x` (length a power of two), in place.
fn hadamard(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for pair in x.chunks_exact_mut(2 * h) {
            let (a, b) = pair.split_at_mut(h);
            for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                let (s, t) = (*u + *v, *u - *v);
                *u = s;
                *v = t;
            }
        }
        h *= 2;
    }
    let scale = 1.0 / (n as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= scale);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance;
    use rand::{Rng, SeedableRng};

    /// Orthogonal for powers of two and for other dimensions: inner products and norms are
    /// kept, and the signs survive their bytes.
    #[test]
    fn the_rotation_keeps_inner_products_and_round_trips_its_signs() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for dim in [1, 2, 3, 40, 64, 100, 512, 768] {
            let r = Rotation::random(dim, 11);
            assert_eq!(Rotation::from_bytes(dim, r.to_bytes()), Some(r.clone()));
            assert!(Rotation::from_bytes(dim, &r.to_bytes()[1..]).is_none());
            let x: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
            let y: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
            let (mut rx, mut ry) = (x.clone(), y.clone());
            r.apply(&mut rx);
            r.apply(&mut ry);
            let tol = 1e-4 * dim as f32;
            assert!(
                (distance::dot(&x, &y) - distance::dot(&rx, &ry)).abs() < tol,
                "{dim}"
            );
            assert!(
                (distance::norm(&x) - distance::norm(&rx)).abs() < 1e-4,
                "{dim}"
            );
        }
    }

    /// A row concentrated on one coordinate comes out spread over all of them.
    #[test]
    fn a_spike_is_spread_over_every_coordinate() {
        for dim in [64, 100, 512, 768] {
            let mut x = vec![0.0f32; dim];
            x[3] = 1.0;
            Rotation::random(dim, 5).apply(&mut x);
            let largest = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(largest < 0.5, "{dim}: {largest}");
            assert!(
                x.iter().filter(|v| v.abs() > 1e-6).count() > dim / 2,
                "{dim}"
            );
        }
    }
}
