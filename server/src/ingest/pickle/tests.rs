//! Unit tests of the pickle reader: hand-assembled opcode streams.

#![allow(clippy::unwrap_used)]
use super::*;

/// Emits the opcodes CPython's protocol-4 pickler writes for `(path, np.array(v, '<f4'))`
/// with numpy >= 2 (module `numpy._core.multiarray`).
fn proto4(path: &str, order: &str, kind: &str, data: &[u8], n: u8) -> Vec<u8> {
    let mut p = vec![0x80, 4];
    let su = |p: &mut Vec<u8>, s: &str| {
        p.push(0x8c);
        p.push(s.len() as u8);
        p.extend_from_slice(s.as_bytes());
        p.push(0x94);
    };
    su(&mut p, path);
    su(&mut p, "numpy._core.multiarray");
    su(&mut p, "_reconstruct");
    p.extend_from_slice(&[0x93, 0x94]);
    su(&mut p, "numpy");
    su(&mut p, "ndarray");
    p.extend_from_slice(&[
        0x93, 0x94, b'K', 0, 0x85, 0x94, b'C', 1, b'b', 0x94, 0x87, 0x94,
    ]);
    p.extend_from_slice(&[b'R', 0x94, b'(', b'K', 1, b'K', n, 0x85, 0x94]);
    p.extend_from_slice(&[b'h', 4]);
    su(&mut p, "dtype");
    p.extend_from_slice(&[0x93, 0x94]);
    su(&mut p, kind);
    p.extend_from_slice(&[0x89, 0x88, 0x87, 0x94, b'R', 0x94, b'(', b'K', 3]);
    su(&mut p, order);
    p.extend_from_slice(&[b'N', b'N', b'N', b'J', 0xff, 0xff, 0xff, 0xff]);
    p.extend_from_slice(&[
        b'J', 0xff, 0xff, 0xff, 0xff, b'K', 0, b't', 0x94, b'b', 0x89,
    ]);
    p.push(b'C');
    p.push(data.len() as u8);
    p.extend_from_slice(data);
    p.extend_from_slice(&[0x94, b't', 0x94, b'b', 0x86, 0x94, b'.']);
    p
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn decodes_hand_made_protocol4_f4() {
    let p = proto4(
        "/img/a.jpg",
        "<",
        "f4",
        &f32_bytes(&[0.0, 1.0, 2.0, 3.0]),
        4,
    );
    let out = decode_pipeline_output(&p).unwrap();
    assert_eq!(out.image, PickledImage::Str("/img/a.jpg".into()));
    assert_eq!(out.embedding, vec![0.0, 1.0, 2.0, 3.0]);
}

#[test]
fn converts_f2_and_f8() {
    let h: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect();
    let out = decode_pipeline_output(&proto4("p", "<", "f2", &h, 2)).unwrap();
    assert_eq!(out.embedding, vec![1.5, -2.0]);
    let d: Vec<u8> = [0.25f64, 8.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let out = decode_pipeline_output(&proto4("p", "<", "f8", &d, 2)).unwrap();
    assert_eq!(out.embedding, vec![0.25, 8.0]);
}

#[test]
fn rejects_big_endian_and_other_dtypes() {
    let p = proto4("p", ">", "f4", &[0, 0, 0, 0], 1);
    assert!(matches!(
        decode_pipeline_output(&p),
        Err(PickleError::BigEndian(_))
    ));
    let p = proto4("p", "<", "i4", &[0, 0, 0, 0], 1);
    assert!(matches!(
        decode_pipeline_output(&p),
        Err(PickleError::UnsupportedDtype(_))
    ));
}

#[test]
fn rejects_data_length_mismatch() {
    let p = proto4("p", "<", "f4", &f32_bytes(&[1.0, 2.0]), 3);
    assert_eq!(
        decode_pipeline_output(&p),
        Err(PickleError::DataLength {
            expected: 12,
            found: 8
        })
    );
}

#[test]
fn rejects_os_system_global() {
    // The classic exploit: cos\nsystem\n(S'echo pwned'\ntR.
    let p = b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.";
    assert_eq!(
        decode_pipeline_output(p),
        Err(PickleError::ForbiddenGlobal {
            module: "os".into(),
            name: "system".into()
        })
    );
    // Same through STACK_GLOBAL (protocol 4).
    let p = b"\x80\x04\x8c\x05posix\x8c\x06system\x93.";
    assert!(matches!(
        decode_pipeline_output(p),
        Err(PickleError::ForbiddenGlobal { .. })
    ));
    let p = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
    assert!(matches!(
        decode_pipeline_output(p),
        Err(PickleError::ForbiddenGlobal { .. })
    ));
}

#[test]
fn rejects_unknown_opcodes_and_protocols() {
    // Protocol 0 text pickle of an int.
    assert!(matches!(
        decode_pipeline_output(b"I42\n."),
        Err(PickleError::UnknownOpcode {
            opcode: b'I',
            offset: 0
        })
    ));
    assert_eq!(
        decode_pipeline_output(b"\x80\x01N."),
        Err(PickleError::UnsupportedProtocol(1))
    );
    // EMPTY_DICT is outside the subset.
    assert!(matches!(
        decode_pipeline_output(b"\x80\x04}."),
        Err(PickleError::UnknownOpcode { opcode: b'}', .. })
    ));
    assert_eq!(
        decode_pipeline_output(b"\x80\x05\x97."),
        Err(PickleError::OutOfBand)
    );
}

#[test]
fn rejects_wrong_top_level_shapes() {
    assert!(matches!(
        decode_pipeline_output(b"\x80\x04N."),
        Err(PickleError::UnexpectedValue(_))
    ));
    assert!(matches!(
        decode_pipeline_output(b"\x80\x04NN\x86."),
        Err(PickleError::UnexpectedValue(_))
    ));
    // REDUCE on a non-callable.
    assert!(matches!(
        decode_pipeline_output(b"\x80\x04N)R."),
        Err(PickleError::Malformed { .. })
    ));
    // Values left over at STOP.
    assert!(matches!(
        decode_pipeline_output(b"\x80\x04NN."),
        Err(PickleError::Malformed { .. })
    ));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let p = proto4("/x.jpg", "<", "f4", &f32_bytes(&[1.0, 2.0, 3.0]), 3);
    for cut in 0..p.len() {
        assert!(decode_pipeline_output(&p[..cut]).is_err(), "cut at {cut}");
    }
    assert!(decode_pipeline_output(&p).is_ok());
}

#[test]
fn huge_lengths_and_bad_memo_are_errors() {
    assert!(matches!(
        decode_pipeline_output(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff"),
        Err(PickleError::Truncated { .. })
    ));
    assert!(matches!(
        decode_pipeline_output(b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\x7f"),
        Err(PickleError::Truncated { .. })
    ));
    assert!(matches!(
        decode_pipeline_output(b"\x80\x04h\x07."),
        Err(PickleError::Malformed { .. })
    ));
}

#[test]
fn memo_doubling_bomb_is_cheap_and_deep_nesting_is_refused() {
    // t = (None,); repeat t = (t, t) via BINGET: 2^30 leaves if values were copied.
    let mut p = vec![0x80, 4, b'N', 0x85, 0x94];
    for i in 0u8..30 {
        p.extend_from_slice(&[b'h', i, 0x86, 0x94]);
    }
    p.push(b'.');
    assert!(matches!(
        decode_pipeline_output(&p),
        Err(PickleError::UnexpectedValue(_))
    ));
    // A million nested 1-tuples must not overflow the stack when dropped.
    let mut p = vec![0x80, 4, b'N'];
    p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    p.push(b'.');
    assert!(matches!(
        decode_pipeline_output(&p),
        Err(PickleError::Malformed { .. })
    ));
}

#[test]
fn random_garbage_never_panics() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let base = proto4("/x.jpg", "<", "f4", &f32_bytes(&[1.0, 2.0]), 2);
    for _ in 0..5000 {
        let mut p = base.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state as usize) % p.len();
            p[at] = (state >> 32) as u8;
        }
        let _ = decode_pipeline_output(&p);
    }
}

/// `numpy.dtype(<spelled>)` built from a memoized `str`, then `reps` fetches of that dtype from
/// the memo, a MARK every `per_mark` fetches so no single stack grows past its limit.
fn dtype_memo_attack(spelled_len: usize, reps: usize, per_mark: usize) -> Vec<u8> {
    let mut p = vec![0x80, 4];
    let su = |p: &mut Vec<u8>, s: &str| {
        p.push(0x8c);
        p.push(s.len() as u8);
        p.extend_from_slice(s.as_bytes());
    };
    su(&mut p, "numpy");
    su(&mut p, "dtype");
    p.push(0x93);
    // A long dtype spelling: BINUNICODE8 of `spelled_len` bytes.
    p.push(0x8d);
    p.extend_from_slice(&(spelled_len as u64).to_le_bytes());
    p.extend(std::iter::repeat_n(b'f', spelled_len));
    p.extend_from_slice(&[0x85, b'R', b'q', 0]);
    for i in 0..reps {
        if i % per_mark == 0 {
            p.push(b'(');
        }
        p.extend_from_slice(&[b'h', 0]);
    }
    p.push(b'.');
    p
}

#[test]
fn a_memoized_huge_dtype_is_refused_before_it_is_copied() {
    // 1 MiB spelling fetched 8,000 times: before the fix every fetch copied the megabyte.
    let p = dtype_memo_attack(1 << 20, 8_000, 4_000);
    assert!(p.len() < (1 << 20) + 20_000);
    match decode_pipeline_output(&p) {
        Err(PickleError::UnsupportedDtype(why)) => assert!(why.contains("1048576"), "{why}"),
        other => panic!("expected an unsupported dtype, got {other:?}"),
    }
}

#[test]
fn values_held_under_marks_count_against_one_limit() {
    // A short, valid dtype fetched 3 * MAX_ENTRIES times, a MARK every 1,000 fetches: each
    // stack stays small, but together they pass the limit.
    let p = dtype_memo_attack(2, 3 * MAX_ENTRIES, 1_000);
    match decode_pipeline_output(&p) {
        Err(PickleError::Malformed { reason, .. }) => {
            assert!(reason.contains("too many values"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn repeated_latin1_encodes_of_one_string_hit_the_allocation_budget() {
    // `_codecs.encode(s, 'latin1')` on one memoized 256 KiB string, 64 times: 16 MiB of new
    // bytes from a 256 KiB input unless the total is bounded.
    let mut p = vec![0x80, 4];
    let su = |p: &mut Vec<u8>, s: &str| {
        p.push(0x8c);
        p.push(s.len() as u8);
        p.extend_from_slice(s.as_bytes());
    };
    su(&mut p, "_codecs");
    su(&mut p, "encode");
    p.extend_from_slice(&[0x93, b'q', 0]);
    let n = 256 << 10;
    p.push(0x8d);
    p.extend_from_slice(&(n as u64).to_le_bytes());
    p.extend(std::iter::repeat_n(b'a', n));
    p.extend_from_slice(&[b'q', 1]);
    su(&mut p, "latin1");
    p.extend_from_slice(&[b'q', 2]);
    p.push(b'(');
    for _ in 0..64 {
        p.extend_from_slice(&[b'h', 0, b'h', 1, b'h', 2, 0x86, b'R']);
    }
    p.extend_from_slice(b"t.");
    match decode_pipeline_output(&p) {
        Err(PickleError::Malformed { reason, .. }) => {
            assert!(reason.contains("small multiple of the input"), "{reason}")
        }
        other => panic!("expected the budget to refuse, got {other:?}"),
    }
}

// Fuzzing on stable Rust: valid pickles mutated byte-wise, and streams assembled from the
// opcodes the decoder accepts, must decode or fail, never panic, and what decodes stays within
// a small multiple of its input. Inputs that once broke something live in
// `tests/fuzz-corpus/pickle/` and are replayed by `corpus_replays`.

use glimpse_index::byte_edits::{apply, edit};
use proptest::collection::vec;
use proptest::prelude::*;

/// Valid pipeline pickles to mutate: f4, f2 and f8 arrays, a path and an empty one.
fn seeds() -> Vec<Vec<u8>> {
    let h: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect();
    let d: Vec<u8> = [0.25f64, 8.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    vec![
        proto4(
            "/img/a.jpg",
            "<",
            "f4",
            &f32_bytes(&[0.0, 1.0, 2.0, 3.0]),
            4,
        ),
        proto4("p", "<", "f2", &h, 2),
        proto4("", "<", "f8", &d, 2),
    ]
}

/// An error, or an output that holds at most a small multiple of the input.
fn check(input: &[u8]) {
    if let Ok(out) = decode_pipeline_output(input) {
        let image = match &out.image {
            PickledImage::Str(s) => s.len(),
            PickledImage::Bytes(b) => b.len(),
            PickledImage::None => 0,
        };
        let held = image + 4 * out.embedding.len();
        assert!(
            held <= 4 * input.len() + 64,
            "{held} bytes decoded from {}",
            input.len()
        );
    }
}

/// Opcode sequences the decoder accepts, each with well-formed arguments; strung together at
/// random they reach the stack machine's checks rather than the byte reader's.
const TOKENS: &[&[u8]] = &[
    b"N",
    b"\x88",
    b"\x89",
    b"K\x00",
    b"K\x03",
    b"M\xff\xff",
    b"J\xff\xff\xff\xff",
    b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80",
    b"G\x7f\xf8\x00\x00\x00\x00\x00\x00",
    b"\x8c\x02f4",
    b"\x8c\x03<f4",
    b"\x8c\x01<",
    b"\x8c\x01C",
    b"\x8c\x06latin1",
    b"\x8c\x05numpy",
    b"\x8c\x05dtype",
    b"\x8c\x07ndarray",
    b"\x8c\x16numpy._core.multiarray",
    b"\x8c\x0c_reconstruct",
    b"\x8c\x07_codecs\x8c\x06encode\x93",
    b"\x8c\x05numpy\x8c\x05dtype\x93",
    b"\x8c\x05numpy\x8c\x07ndarray\x93",
    b"\x8c\x16numpy._core.multiarray\x8c\x0c_reconstruct\x93",
    b"\x8c\x13numpy._core.numeric\x8c\x0b_frombuffer\x93",
    b"cnumpy\ndtype\n",
    b"X\x04\x00\x00\x00\xc3\xbfab",
    b"C\x04\x00\x00\x80?",
    b"C\x08\x00\x00\x80?\x00\x00\x00@",
    b"B\x02\x00\x00\x00\x00<",
    b"\x8e\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80?",
    b"\x95\x02\x00\x00\x00\x00\x00\x00\x00",
    b"(",
    b"t",
    b")",
    b"\x85",
    b"\x86",
    b"\x87",
    b"\x94",
    b"q\x00",
    b"q\x01",
    b"r\x02\x00\x00\x00",
    b"h\x00",
    b"h\x01",
    b"j\x02\x00\x00\x00",
    b"\x93",
    b"R",
    b"b",
    b".",
];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_pipeline_pickles_decode_or_fail(
        seed in 0usize..3,
        edits in vec(edit(), 1..8),
    ) {
        let mut p = seeds()[seed].clone();
        apply(&mut p, &edits);
        check(&p);
    }

    #[test]
    fn opcode_soup_decodes_or_fails(
        proto in 2u8..6,
        tokens in vec(proptest::sample::select(TOKENS), 0..48),
    ) {
        let mut p = vec![0x80, proto];
        for t in tokens {
            p.extend_from_slice(t);
        }
        p.push(b'.');
        check(&p);
    }

    #[test]
    fn arbitrary_bytes_after_a_protocol_header_decode_or_fail(
        tail in vec(any::<u8>(), 0..256),
    ) {
        let mut p = vec![0x80, 4];
        p.extend_from_slice(&tail);
        check(&p);
    }
}

#[test]
fn corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz-corpus/pickle");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        check(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 2, "corpus {} has {n} files", dir.display());
}
