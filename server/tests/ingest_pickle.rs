//! The pickle decoder against real CPython/numpy pickles of a 512-d vector, protocols 2 to 5,
//! and their numpy-1.x spelling; plus exhaustive truncation and mutation of a real pickle.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use glimpse_server::ingest::pickle::{PickleError, PickledImage, decode_pipeline_output};

fn pickle(name: &str) -> Vec<u8> {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ingest/pickles")
        .join(name);
    std::fs::read(p).unwrap()
}

fn expected() -> Vec<f32> {
    // The generator wrote np.arange(512, dtype=float32) / float32(7): one IEEE f32 division each.
    (0..512).map(|i| i as f32 / 7.0).collect()
}

#[test]
fn real_pickles_of_every_protocol_decode() {
    for proto in 2..=5 {
        let out = decode_pipeline_output(&pickle(&format!("p{proto}_d512.pkl"))).unwrap();
        assert_eq!(
            out.image,
            PickledImage::Str("/data/images/big.jpg".into()),
            "protocol {proto}"
        );
        assert_eq!(out.embedding, expected(), "protocol {proto}");
    }
}

/// Replaces `from` with `to` once, fixing a protocol-4+ frame length for the size change.
fn respell(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    let mut out = [&bytes[..at], to, &bytes[at + from.len()..]].concat();
    if out[2] == 0x95 {
        let len = u64::from_le_bytes(out[3..11].try_into().unwrap());
        let fixed = len as i64 + to.len() as i64 - from.len() as i64;
        out[3..11].copy_from_slice(&(fixed as u64).to_le_bytes());
    }
    out
}

#[test]
fn numpy_1x_module_names_are_accepted() {
    let p2 = respell(
        &pickle("p2_d512.pkl"),
        b"cnumpy._core.multiarray\n",
        b"cnumpy.core.multiarray\n",
    );
    let p4 = respell(
        &pickle("p4_d512.pkl"),
        b"\x8c\x16numpy._core.multiarray",
        b"\x8c\x15numpy.core.multiarray",
    );
    let p5 = respell(
        &pickle("p5_d512.pkl"),
        b"\x8c\x13numpy._core.numeric",
        b"\x8c\x12numpy.core.numeric",
    );
    for (name, bytes) in [("p2", p2), ("p4", p4), ("p5", p5)] {
        let out = decode_pipeline_output(&bytes).unwrap();
        assert_eq!(out.embedding, expected(), "{name}");
    }
    // Anything else in that position is refused.
    let evil = respell(
        &pickle("p4_d512.pkl"),
        b"\x8c\x16numpy._core.multiarray\x94\x8c\x0c_reconstruct",
        b"\x8c\x02os\x94\x8c\x06system",
    );
    assert!(matches!(
        decode_pipeline_output(&evil),
        Err(PickleError::ForbiddenGlobal { .. })
    ));
}

#[test]
fn every_prefix_of_a_real_pickle_is_an_error() {
    for proto in [2, 5] {
        let p = pickle(&format!("p{proto}_d512.pkl"));
        for cut in 0..p.len() {
            assert!(
                decode_pipeline_output(&p[..cut]).is_err(),
                "p{proto} cut {cut}"
            );
        }
    }
}

#[test]
fn every_single_byte_mutation_is_handled() {
    let p = pickle("p4_d512.pkl");
    let mut accepted = 0;
    for at in 0..p.len() {
        for value in [0x00, 0x7f, 0x80, 0xff, p[at] ^ 0x01] {
            let mut m = p.clone();
            m[at] = value;
            if let Ok(out) = decode_pipeline_output(&m) {
                accepted += 1;
                assert_eq!(out.embedding.len(), 512);
            }
        }
    }
    // Mutations inside the raw float data (2048 of the bytes) still decode, to other values.
    assert!(accepted > 2048 * 3, "only {accepted} mutations decoded");
}
