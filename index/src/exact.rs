//! Brute-force exact k-nearest-neighbour search: the baseline every
//! approximate path is measured against, and the search used for small
//! data (memtables, tiny segments).

use std::collections::BinaryHeap;

use crate::metric::{Metric, Neighbor};

pub use crate::exact_batch::{ShiftedQueries, exact_search_batch, exact_search_batch_shifted};

/// Heap entry ordered so that the *worst* kept neighbour is on top.
struct Worst {
    metric: Metric,
    n: Neighbor,
}

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Best-first ordering, ties broken by row so results are deterministic;
        // the max-heap then keeps the worst on top.
        self.metric
            .cmp_best_first(self.n.score, other.n.score)
            .then(self.n.row.cmp(&other.n.row))
    }
}

/// Exact top-`k` of `query` against the row-major `vectors` (`dim` floats a
/// row), best first. Rows for which `filter` returns `false` are skipped.
///
/// Ties are broken by the lower row number so results are deterministic.
pub fn exact_search(
    vectors: &[f32],
    dim: usize,
    metric: Metric,
    query: &[f32],
    k: usize,
    filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
) -> Vec<Neighbor> {
    if k == 0 || dim == 0 {
        return Vec::new();
    }
    debug_assert_eq!(query.len(), dim);
    let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
    for (row, v) in vectors.chunks_exact(dim).enumerate() {
        let row = row as u32;
        if let Some(f) = filter
            && !f(row)
        {
            continue;
        }
        let score = metric.score(query, v);
        let cand = Worst {
            metric,
            n: Neighbor { row, score },
        };
        if heap.len() < k {
            heap.push(cand);
        } else if let Some(top) = heap.peek()
            && cand < *top
        {
            heap.pop();
            heap.push(cand);
        }
    }
    let mut out: Vec<Neighbor> = heap.into_iter().map(|w| w.n).collect();
    out.sort_by(|a, b| {
        metric
            .cmp_best_first(a.score, b.score)
            .then(a.row.cmp(&b.row))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nearest_and_respects_filter() {
        let dim = 4;
        let data: Vec<f32> = (0..100).flat_map(|i| [i as f32, 0.0, 0.0, 1.0]).collect();
        let q = [10.2, 0.0, 0.0, 1.0];
        let r = exact_search(&data, dim, Metric::L2, &q, 3, None);
        assert_eq!(r.iter().map(|n| n.row).collect::<Vec<_>>(), vec![10, 11, 9]);
        let even = |row: u32| row.is_multiple_of(2);
        let r = exact_search(&data, dim, Metric::L2, &q, 3, Some(&even));
        assert_eq!(r.iter().map(|n| n.row).collect::<Vec<_>>(), vec![10, 12, 8]);
        let r = exact_search(&data, dim, Metric::Dot, &q, 2, None);
        assert_eq!(r[0].row, 99);
    }
}
