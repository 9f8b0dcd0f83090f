//! Fuzzing on stable Rust: [`IvfPqView::from_bytes`] over mutated index buffers, and search,
//! copy-out and `add` over whatever it accepts. An error or a value, never a panic; what a view
//! copies out of its input stays within a small multiple of it. Inputs that once broke something
//! live in `tests/fuzz-corpus/index/` and are replayed by [`corpus_replays`].

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::byte_edits::{apply, edit};
use crate::params::IndexParams;
use crate::{Cancel, synthetic};

const DIM: usize = 8;
const ROWS: usize = 256;

/// The vectors every fuzzed index was built over.
fn data() -> &'static [f32] {
    static D: OnceLock<Vec<f32>> = OnceLock::new();
    D.get_or_init(|| {
        synthetic::generate(&synthetic::SyntheticSpec::clip_like(ROWS, 1, DIM, 7)).vectors
    })
}

/// Valid buffers to start from: a 4-bit cosine index (with the norms, calibration and 8-bit
/// compact sections), an 8-bit l2 index and a 4-bit dot index with the rotated 6-bit tier.
fn seeds() -> &'static [Vec<u8>] {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        [
            (Metric::Cosine, PqBits::Four, 4, crate::CompactKind::Sq8),
            (Metric::L2, PqBits::Eight, 2, crate::CompactKind::Sq8),
            (Metric::Dot, PqBits::Four, 4, crate::CompactKind::Rotated6),
        ]
        .into_iter()
        .map(|(metric, bits, m, kind)| {
            let params = IndexParams {
                nlist: Some(4),
                m: Some(m),
                bits,
                ..IndexParams::default()
            };
            let ix = IvfPqIndex::build(data(), DIM, metric, &params, Cancel::NEVER).unwrap();
            let opts = crate::CalibrationOptions::default();
            let rows = crate::calibration_rows(ROWS, &opts);
            let table = crate::calibrate(&ix.view(), data(), &rows, &opts, Cancel::NEVER).unwrap();
            let compact = crate::CompactCodes::build(kind, data(), DIM, metric);
            ix.to_bytes_with(table.as_ref(), compact.as_ref())
        })
        .collect()
    })
}

/// Bytes a view holds that it does not borrow from its input.
fn owned_bytes(view: &IvfPqView<'_>) -> usize {
    // The variant is the point: a `&[T]` would not say whether it was copied.
    #[allow(clippy::ptr_arg)]
    fn owned<T: Clone>(c: &Cow<'_, [T]>) -> usize {
        match c {
            Cow::Owned(v) => std::mem::size_of_val(v.as_slice()),
            Cow::Borrowed(_) => 0,
        }
    }
    let coarse = match &view.coarse {
        Cow::Owned(t) => t.codes.len() + 4 * (t.scales.len() + t.norms.len() + t.sums.len()),
        Cow::Borrowed(_) => 0,
    };
    let lists = match &view.lists {
        ViewLists::Flat {
            list_offsets,
            code_offsets,
            ids,
            inv_norms,
            ..
        } => owned(list_offsets) + owned(code_offsets) + owned(ids) + owned(inv_norms),
        ViewLists::Index(_) => 0,
    };
    owned(&view.centroids) + owned(&view.codebooks) + coarse + lists
}

/// Parses `bytes` (at an odd address when `misalign`, so sections are copied, not borrowed)
/// and, when accepted, searches, copies out and extends the view: none of it may panic.
fn exercise(bytes: &[u8], misalign: bool, k: usize, nprobe: Option<usize>) {
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    if misalign {
        buf.push(0);
    }
    buf.extend_from_slice(bytes);
    let input = &buf[usize::from(misalign)..];
    let _ = IvfPqView::read_calibration(input);
    let Ok(view) = IvfPqView::from_bytes(input) else {
        return;
    };
    // Copies (misaligned sections, the coarse table) stay within a small multiple of the input.
    assert!(
        owned_bytes(&view) <= 2 * input.len(),
        "{} bytes owned for {} of input",
        owned_bytes(&view),
        input.len()
    );
    let dim = view.dim();
    // The raw vectors: the real ones when the shape still fits, else zeros of the view's shape.
    let zeros;
    let vectors: &[f32] = if dim == DIM {
        data()
    } else {
        zeros = vec![0.0f32; dim * ROWS.min(view.len())];
        &zeros
    };
    let query: Vec<f32> = vectors
        .get(..dim)
        .map_or_else(|| vec![0.5; dim], <[f32]>::to_vec);
    let params = SearchParams {
        k,
        nprobe,
        refine: Some(2),
        rescore: true,
        tier_margin: 1.0,
    };
    let hits = view.search(&query, vectors, &params, None);
    assert!(hits.len() <= k);
    let even = |row: u32| row.is_multiple_of(2);
    let hits = view.search(&query, vectors, &params, Some(&even));
    assert!(hits.iter().all(|n| n.row.is_multiple_of(2)));
    // A re-rank deep enough to score the candidates on the compact tier, where there is one.
    let deep = SearchParams {
        refine: Some(crate::COMPACT_MIN_PER_RESULT),
        ..params
    };
    assert!(view.search(&query, vectors, &deep, None).len() <= k);
    // Whatever was accepted serialises back into a buffer that is accepted again.
    let copy = view.to_index();
    assert!(IvfPqView::from_bytes(&copy.to_bytes()).is_ok());
    // The storage engine indexes new segments with a loaded index's quantizers.
    let mut fresh = view.empty_like();
    let _ = fresh.add(&query, 0, Cancel::NEVER);
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated_index_buffers_never_panic(
        seed in 0usize..3,
        edits in vec(edit(), 1..6),
        misalign in any::<bool>(),
        k in 1usize..12,
        nprobe in proptest::option::of(1usize..6),
    ) {
        let mut bytes = seeds()[seed].clone();
        apply(&mut bytes, &edits);
        exercise(&bytes, misalign, k, nprobe);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        seed in 0usize..3,
        tail in vec(any::<u8>(), 0..512),
    ) {
        // A valid header keeps the parser going past the magic into the section checks.
        let mut bytes = seeds()[seed][..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&tail);
        exercise(&bytes, false, 5, None);
    }
}

#[test]
fn seeds_parse_and_search() {
    for s in seeds() {
        let view = IvfPqView::from_bytes(s).unwrap();
        assert_eq!(view.len(), ROWS);
        let hits = view.search(&data()[..DIM], data(), &SearchParams::default(), None);
        assert!(!hits.is_empty());
    }
}

#[test]
fn corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz-corpus/index");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for misalign in [false, true] {
            exercise(&bytes, misalign, 10, None);
            exercise(&bytes, misalign, 3, Some(1));
        }
        n += 1;
    }
    assert!(n >= 2, "corpus {} has {n} files", dir.display());
}
