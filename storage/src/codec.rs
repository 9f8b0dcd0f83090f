//! Little-endian binary encoding of WAL payloads (points and id lists).
//!
//! Point layout: `id_len u16 | id | dim u32 | dim × f32 | path_flag u8 [| len u32 | path]
//! | blob_flag u8 [| len u32 | bytes] | meta_count u32 | meta_count × (key_len u16 | key | tag u8 | value)`,
//! value by tag: 0 bool (u8), 1 int (i64), 2 float (f64), 3 string (len u32 | bytes).

use std::collections::BTreeMap;

use crate::types::{MetaValue, Point};

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    put_u16(out, s.len() as u16);
    out.extend_from_slice(s.as_bytes());
}
fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

/// Appends the encoding of `p` (already validated: id ≤ 256 bytes, keys ≤ 256 bytes).
pub(crate) fn put_point(out: &mut Vec<u8>, p: &Point) {
    put_str16(out, &p.id);
    put_u32(out, p.vector.len() as u32);
    out.extend_from_slice(crate::mmap_f32::f32_bytes(&p.vector));
    match &p.image_path {
        Some(s) => {
            out.push(1);
            put_bytes32(out, s.as_bytes());
        }
        None => out.push(0),
    }
    match &p.image_bytes {
        Some(b) => {
            out.push(1);
            put_bytes32(out, b);
        }
        None => out.push(0),
    }
    put_u32(out, p.metadata.len() as u32);
    for (k, v) in &p.metadata {
        put_str16(out, k);
        match v {
            MetaValue::Bool(b) => {
                out.push(0);
                out.push(*b as u8);
            }
            MetaValue::Int(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_le_bytes());
            }
            MetaValue::Float(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_le_bytes());
            }
            MetaValue::Str(s) => {
                out.push(3);
                put_bytes32(out, s.as_bytes());
            }
        }
    }
}

/// Appends an id (u16 length prefix).
pub(crate) fn put_id(out: &mut Vec<u8>, id: &str) {
    put_str16(out, id);
}

/// A bounds-checked reader; every read fails cleanly on short input.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Decoding failure: what and where (offset within the decoded buffer).
#[derive(Debug)]
pub(crate) struct DecodeError {
    pub offset: usize,
    pub what: &'static str,
}

type Dec<T> = Result<T, DecodeError>;

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
    /// Offset of the next byte to read.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }
    /// Bytes left to read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Dec<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(DecodeError {
                offset: self.pos,
                what,
            }),
        }
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Dec<u8> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Dec<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Dec<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Dec<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self, len: usize, what: &'static str) -> Dec<String> {
        let at = self.pos;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError { offset: at, what })
    }
    pub(crate) fn id(&mut self) -> Dec<String> {
        let n = self.u16("id length")? as usize;
        self.string(n, "id")
    }

    pub(crate) fn point(&mut self) -> Dec<Point> {
        let id = self.id()?;
        let dim = self.u32("dimension")? as usize;
        let raw = self.take(dim.saturating_mul(4), "vector")?;
        let vector = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let image_path = match self.u8("image path flag")? {
            0 => None,
            _ => {
                let n = self.u32("image path length")? as usize;
                Some(self.string(n, "image path")?)
            }
        };
        let image_bytes = match self.u8("image bytes flag")? {
            0 => None,
            _ => {
                let n = self.u32("image bytes length")? as usize;
                Some(self.take(n, "image bytes")?.to_vec())
            }
        };
        let count = self.u32("metadata count")? as usize;
        let mut metadata = BTreeMap::new();
        for _ in 0..count {
            let kn = self.u16("metadata key length")? as usize;
            let key = self.string(kn, "metadata key")?;
            let value = match self.u8("metadata tag")? {
                0 => MetaValue::Bool(self.u8("bool")? != 0),
                1 => MetaValue::Int(self.u64("int")? as i64),
                2 => MetaValue::Float(f64::from_bits(self.u64("float")?)),
                3 => {
                    let n = self.u32("string length")? as usize;
                    MetaValue::Str(self.string(n, "string")?)
                }
                _ => {
                    return Err(DecodeError {
                        offset: self.pos - 1,
                        what: "metadata tag",
                    });
                }
            };
            metadata.insert(key, value);
        }
        Ok(Point {
            id,
            vector,
            image_path,
            image_bytes,
            metadata,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn point_roundtrip_and_truncation() {
        let mut p = Point {
            id: "a-1".into(),
            vector: vec![1.0, -2.5, f32::MIN_POSITIVE],
            image_path: Some("/x/y.jpg".into()),
            image_bytes: Some(vec![0, 1, 2, 255]),
            metadata: BTreeMap::new(),
        };
        p.metadata.insert("b".into(), MetaValue::Bool(true));
        p.metadata.insert("i".into(), MetaValue::Int(-7));
        p.metadata.insert("f".into(), MetaValue::Float(0.25));
        p.metadata
            .insert("s".into(), MetaValue::Str("héllo".into()));
        let mut buf = Vec::new();
        put_point(&mut buf, &p);
        let mut c = Cursor::new(&buf);
        assert_eq!(c.point().unwrap(), p);
        assert!(c.is_empty());
        for cut in 0..buf.len() {
            assert!(Cursor::new(&buf[..cut]).point().is_err(), "cut {cut}");
        }
    }
}
