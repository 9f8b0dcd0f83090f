//! Which ids a run covers and how they are cut into partitions, and the names those
//! partitions get on disk (the layout the original pipeline's loader reads).

use std::ops::Range;

use crate::embed::error::{EmbedError, Result};

/// File name of a partition's embeddings inside its folder.
pub const DATA_FILE: &str = "data.parquet";
/// File name of a partition's per-image failures inside its folder.
pub const ERRORS_FILE: &str = "errors.jsonl";

/// The slice `start..end` of the input, cut into partitions of `partition_size` ids.
///
/// Partition `n` covers ids `start + n * size .. min(start + (n + 1) * size, end)`; only the
/// last one may be shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPlan {
    start: u64,
    end: u64,
    size: u64,
}

impl PartitionPlan {
    /// Validates `start..end` (end defaults to `input_len`) against an input of `input_len`
    /// items.
    pub fn new(start: u64, end: Option<u64>, input_len: u64, size: u64) -> Result<Self> {
        if size == 0 {
            return Err(EmbedError::InvalidArgs(
                "--partition-size must be at least 1".into(),
            ));
        }
        let end = end.unwrap_or(input_len);
        if end > input_len {
            return Err(EmbedError::InvalidArgs(format!(
                "--end {end} is past the end of the input, which has {input_len} items (ids 0..{input_len})"
            )));
        }
        if start >= end {
            return Err(EmbedError::InvalidArgs(if input_len == 0 {
                "the input has no items".to_string()
            } else {
                format!(
                    "empty range: --start {start} must be below --end {end} (input has {input_len} items)"
                )
            }));
        }
        Ok(Self { start, end, size })
    }

    /// First id of the slice.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the last id of the slice.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Ids per partition.
    pub fn partition_size(&self) -> u64 {
        self.size
    }

    /// Number of ids in the slice.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Always false: an empty plan is rejected by [`PartitionPlan::new`].
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u64 {
        self.len().div_ceil(self.size)
    }

    /// The ids of partition `n`.
    pub fn range(&self, n: u64) -> Range<u64> {
        let lo = self.start + n * self.size;
        lo..(lo + self.size).min(self.end)
    }

    /// The folder name of partition `n`: `embeddings_{start}_{end}.parquet_part_{n}`.
    pub fn dir_name(&self, n: u64) -> String {
        format!("{}{n}", self.dir_prefix())
    }

    /// `embeddings_{start}_{end}.parquet_part_`: the common prefix of this plan's folders.
    pub fn dir_prefix(&self) -> String {
        format!("embeddings_{}_{}.parquet_part_", self.start, self.end)
    }
}

/// Splits `start..end` into `jobs` contiguous slices whose lengths differ by at most one
/// (the first `len % jobs` slices get the extra id). Slices are never empty.
pub fn split_range(start: u64, end: u64, jobs: u64) -> Result<Vec<Range<u64>>> {
    if start >= end {
        return Err(EmbedError::InvalidArgs(format!(
            "empty range: --start {start} must be below --end {end}"
        )));
    }
    let len = end - start;
    if jobs == 0 || jobs > len {
        return Err(EmbedError::InvalidArgs(format!(
            "--jobs must be between 1 and the number of ids ({len}), got {jobs}"
        )));
    }
    let (base, extra) = (len / jobs, len % jobs);
    let mut lo = start;
    Ok((0..jobs)
        .map(|j| {
            let hi = lo + base + u64::from(j < extra);
            let r = lo..hi;
            lo = hi;
            r
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_the_range_exactly() {
        let p = PartitionPlan::new(5, Some(27), 30, 10).unwrap();
        assert_eq!(p.partitions(), 3);
        assert_eq!(p.range(0), 5..15);
        assert_eq!(p.range(2), 25..27);
        assert_eq!(p.dir_name(1), "embeddings_5_27.parquet_part_1");
        let all: Vec<u64> = (0..p.partitions()).flat_map(|n| p.range(n)).collect();
        assert_eq!(all, (5..27).collect::<Vec<_>>());
    }

    #[test]
    fn bad_ranges_are_explained() {
        assert!(
            PartitionPlan::new(0, Some(31), 30, 10)
                .unwrap_err()
                .to_string()
                .contains("past the end")
        );
        assert!(
            PartitionPlan::new(9, Some(9), 30, 10)
                .unwrap_err()
                .to_string()
                .contains("empty range")
        );
        assert!(PartitionPlan::new(0, None, 30, 0).is_err());
        assert!(
            PartitionPlan::new(0, None, 0, 10)
                .unwrap_err()
                .to_string()
                .contains("no items")
        );
        assert_eq!(PartitionPlan::new(3, None, 30, 10).unwrap().end(), 30);
    }

    #[test]
    fn slices_are_contiguous_and_balanced() {
        let s = split_range(0, 1_000_003, 100).unwrap();
        assert_eq!(s.len(), 100);
        assert_eq!(s[0], 0..10_001);
        assert_eq!(s[99].end, 1_000_003);
        assert!(s.windows(2).all(|w| w[0].end == w[1].start));
        assert!(split_range(0, 5, 6).is_err());
        assert!(split_range(5, 5, 1).is_err());
    }
}
