//! What the in-memory index and the serialised view both know about
//! themselves, kept in one struct so that neither repeats the other.

use crate::metric::Metric;
use crate::params::PqBits;

/// The shape of an IVF-PQ index: held once by [`IvfPqIndex`](crate::IvfPqIndex)
/// and [`IvfPqView`](crate::IvfPqView), copied into the search's `Core`, and
/// written to (and read from) the header of the byte format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct IndexShape {
    /// Vector dimension.
    pub dim: usize,
    /// Metric the index was built for.
    pub metric: Metric,
    /// Number of inverted lists.
    pub nlist: usize,
    /// Number of PQ sub-quantizers.
    pub m: usize,
    /// Code width.
    pub bits: PqBits,
    /// Number of indexed rows.
    pub len: usize,
}

/// The public accessors of the `shape: IndexShape` field, written once for
/// both [`IvfPqIndex`](crate::IvfPqIndex) and [`IvfPqView`](crate::IvfPqView)
/// (inherent methods, so callers need no trait in scope).
macro_rules! shape_accessors {
    () => {
        /// Vector dimension.
        pub fn dim(&self) -> usize {
            self.shape.dim
        }
        /// Metric the index was built for.
        pub fn metric(&self) -> $crate::metric::Metric {
            self.shape.metric
        }
        /// Number of inverted lists.
        pub fn nlist(&self) -> usize {
            self.shape.nlist
        }
        /// Number of PQ sub-quantizers.
        pub fn m(&self) -> usize {
            self.shape.m
        }
        /// Code width.
        pub fn bits(&self) -> $crate::params::PqBits {
            self.shape.bits
        }
        /// Number of indexed rows.
        pub fn len(&self) -> usize {
            self.shape.len
        }
        /// Whether no rows are indexed.
        pub fn is_empty(&self) -> bool {
            self.shape.len == 0
        }
    };
}
pub(crate) use shape_accessors;
