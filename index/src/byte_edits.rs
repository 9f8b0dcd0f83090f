//! Mutations of byte strings for the fuzz properties of every decoder of untrusted input
//! (index buffers here; WAL, manifest and segments in storage; Parquet and pickles in the
//! server): flip, set, insert, delete, truncate, and boundary integers written over length and
//! offset fields. One definition so every decoder is fuzzed the same way. Behind the
//! `testing` feature, as the other fixtures.

use proptest::collection::vec;
use proptest::prelude::*;

/// One edit of a byte string; positions are taken modulo the length.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Flip one bit of the byte at a position.
    Flip(usize, u8),
    /// Overwrite the byte at a position.
    Set(usize, u8),
    /// Insert bytes at a position.
    Insert(usize, Vec<u8>),
    /// Delete up to `n` bytes from a position.
    Delete(usize, usize),
    /// Cut the string at a position.
    Truncate(usize),
    /// A boundary integer, little endian, `width` bytes: how length and offset fields go wrong.
    Int(usize, u64, usize),
}

/// Integers at the boundaries where length and offset checks go wrong.
pub const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x3f,
    0x40,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    i64::MAX as u64,
    u64::MAX,
];

/// One random edit.
pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<usize>(), vec(any::<u8>(), 1..16)).prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Delete(at, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (
            any::<usize>(),
            proptest::sample::select(INTERESTING),
            proptest::sample::select(&[1usize, 2, 4, 8][..])
        )
            .prop_map(|(at, v, w)| Edit::Int(at, v, w)),
    ]
}

/// A few edits, as most properties apply them.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    vec(edit(), 1..6)
}

/// Applies `edits` in order.
pub fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for edit in edits {
        let len = bytes.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match edit {
            Edit::Flip(i, bit) if len > 0 => bytes[at(*i)] ^= 1 << bit,
            Edit::Set(i, b) if len > 0 => bytes[at(*i)] = *b,
            Edit::Insert(i, b) => {
                let i = i % (len + 1);
                bytes.splice(i..i, b.iter().copied());
            }
            Edit::Delete(i, n) if len > 0 => {
                let i = at(*i);
                bytes.drain(i..(i + n).min(len));
            }
            Edit::Truncate(i) => bytes.truncate(i % (len + 1)),
            Edit::Int(i, v, w) if len > 0 => {
                let i = at(*i);
                let end = (i + w).min(len);
                bytes[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
            }
            _ => {}
        }
    }
}
