//! The Glimpse vector index: k-means, IVF, product quantization, SIMD ADC
//! scan and exact re-ranking.
//!
//! Everything here is a pure function over slices. The crate knows nothing
//! of files or HTTP; callers (the storage engine) hand in row-major `f32`
//! vectors (often straight from an mmap) and get row numbers back.
//!
//! Row numbers (`u32`) are positions in the slice of vectors that the index
//! was built from; the caller maps them back to its own ids.
//!
//! # IVF-PQ
//! [`IvfPqIndex::build`] trains a coarse k-means quantizer (`nlist` lists)
//! and a product quantizer on the residuals (vector minus its list
//! centroid), then stores every vector as its row number plus `m` 4-bit or
//! 8-bit codes in its list. A search ranks the lists by centroid distance,
//! scans the `nprobe` best with per-query distance tables (4-bit: a SIMD
//! "fast scan" of 32 codes per shuffle), keeps the best `k * refine`
//! candidates in a bounded heap and re-ranks them exactly against the raw
//! vectors, so returned scores are exact. [`IvfPqIndex::to_bytes`] /
//! [`IvfPqView::from_bytes`] give a single aligned buffer searchable in place.

#[cfg(any(test, feature = "testing"))]
pub mod byte_edits;
pub mod calibrate;
mod calibration;
mod cancel;
mod coarse;
pub mod distance;
mod error;
pub mod exact;
mod exact_batch;
pub mod fastscan;
mod ivf;
pub mod kmeans;
mod layout;
pub mod metric;
mod params;
pub mod pq;
mod search;
mod shape;
pub mod simd;
#[cfg(any(test, feature = "testing"))]
pub mod synthetic;
mod tier;

pub use calibrate::{CalibrationOptions, RecallGrid, calibrate, calibration_rows, measure_recall};
pub use calibration::{
    CALIBRATION_TARGETS, Calibration, CalibrationPoint, DEFAULT_RECALL_TARGET,
    MAX_CALIBRATED_REFINE,
};
pub use cancel::Cancel;
pub use error::IndexError;
pub use exact::{ShiftedQueries, exact_search, exact_search_batch, exact_search_batch_shifted};
pub use ivf::IvfPqIndex;
pub use layout::{CoarseTable, IvfPqView, MAGIC, VERSION};
pub use metric::{Metric, Neighbor};
pub use params::{
    DEFAULT_REFINE, IndexParams, PqBits, ResolvedParams, SearchParams, default_nlist,
    default_nprobe, default_refine,
};
pub use search::{COMPACT_MIN_PER_RESULT, SearchStats};
pub use simd::{Kernels, SimdLevel};
pub use tier::{CompactCodes, CompactKind, ROTATED6_MIN_DIM, Rq6Codes, Sq8Codes};
