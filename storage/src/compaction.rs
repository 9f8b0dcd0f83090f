//! Size-tiered compaction policy: which segments to merge.
//!
//! Because flushes and bulk commits tombstone every older row of an id they
//! write, each id has at most one live row across segments, so any subset
//! of segments can be merged without looking at their ages.

use crate::types::CompactionOptions;

/// What the policy needs to know about a segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SegmentShape {
    pub id: u64,
    pub rows: u64,
    pub live: u64,
}

/// Picks segments to merge, or `None`.
pub(crate) fn pick(segments: &[SegmentShape], o: &CompactionOptions) -> Option<Vec<u64>> {
    // A segment mostly made of dead rows is rewritten on its own.
    if let Some(s) = segments
        .iter()
        .find(|s| s.rows > 0 && (s.rows - s.live) as f64 / s.rows as f64 > o.max_deleted_fraction)
    {
        return Some(vec![s.id]);
    }
    let mut by_size: Vec<&SegmentShape> = segments.iter().collect();
    by_size.sort_by_key(|s| (s.live, s.id));
    let min_merge = o.min_merge.max(2);
    for i in 0..by_size.len() {
        let base = by_size[i].live.max(1) as f64;
        let tier: Vec<u64> = by_size[i..]
            .iter()
            .take_while(|s| (s.live.max(1) as f64) <= base * o.tier_ratio)
            .take(o.max_merge.max(min_merge))
            .map(|s| s.id)
            .collect();
        if tier.len() >= min_merge {
            return Some(tier);
        }
    }
    None
}

/// Every segment, when merging would change anything.
pub(crate) fn pick_all(segments: &[SegmentShape]) -> Option<Vec<u64>> {
    let dirty = segments.iter().any(|s| s.live < s.rows);
    if segments.len() > 1 || dirty {
        Some(segments.iter().map(|s| s.id).collect())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: u64, rows: u64, live: u64) -> SegmentShape {
        SegmentShape { id, rows, live }
    }

    #[test]
    fn tiers_and_deletes() {
        let o = CompactionOptions::default();
        assert_eq!(
            pick(&[s(1, 100, 100), s(2, 100, 100), s(3, 100, 100)], &o),
            None
        );
        let four = [
            s(1, 100, 100),
            s(2, 120, 120),
            s(3, 90, 90),
            s(4, 110, 110),
            s(5, 100_000, 100_000),
        ];
        let mut p = pick(&four, &o).unwrap_or_default();
        p.sort();
        assert_eq!(p, vec![1, 2, 3, 4]);
        assert_eq!(pick(&[s(7, 100, 50)], &o), Some(vec![7]));
        assert_eq!(pick_all(&[s(1, 10, 10)]), None);
        assert_eq!(pick_all(&[s(1, 10, 9)]), Some(vec![1]));
    }
}
