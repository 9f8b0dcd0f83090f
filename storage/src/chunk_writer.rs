//! Appends to a file in whole, aligned 2 MiB writes.
//!
//! Why: the re-rank reads `k · refine` raw vectors scattered over a segment's
//! mapping, each on its own 4 KiB page, so a query pays one TLB miss (a page
//! walk) per candidate. When a file reaches the page cache through writes of
//! whole 2 MiB-aligned chunks, Linux (ext4 and xfs with large folios) keeps it
//! as 2 MiB folios and maps them with one PMD entry each, which removes those
//! misses: measured +20 % QPS at 200k × 512 (docs/benchmarks.md, "Huge pages
//! for the raw vectors"). A `BufWriter` writes whatever it holds when the next
//! row does not fit, which leaves its writes unaligned for most row widths;
//! this writer only ever writes full chunks until the final tail.

use std::io::{self, Write};

/// The write size and alignment: one x86-64/aarch64 (4 KiB granule) PMD page.
pub(crate) const CHUNK: usize = 2 << 20;

/// Buffers appends and hands the inner writer only whole [`CHUNK`]s (the
/// last, partial one at [`ChunkWriter::finish`]).
pub(crate) struct ChunkWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> ChunkWriter<W> {
    /// Wraps `inner`, which must be positioned at a multiple of [`CHUNK`]
    /// (a new file is).
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    /// Appends `bytes`.
    pub(crate) fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.buf.is_empty() && bytes.len() >= CHUNK {
                // Whole chunks straight from the caller's slice, no copy.
                let whole = bytes.len() / CHUNK * CHUNK;
                self.inner.write_all(&bytes[..whole])?;
                bytes = &bytes[whole..];
                continue;
            }
            let take = (CHUNK - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == CHUNK {
                self.inner.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Writes the tail and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Records the offset and length of every write it receives.
    #[derive(Default)]
    struct Recorder {
        data: Vec<u8>,
        writes: Vec<(usize, usize)>,
    }

    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.writes.push((self.data.len(), b.len()));
            self.data.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_only_aligned_whole_chunks_then_the_tail() {
        // 3 KiB rows (d = 768) do not divide 2 MiB: a BufWriter would flush at odd offsets.
        let row: Vec<u8> = (0..3072u32).map(|i| (i % 251) as u8).collect();
        let mut w = ChunkWriter::new(Recorder::default());
        let mut want = Vec::new();
        for _ in 0..2000 {
            w.write_all(&row).unwrap();
            want.extend_from_slice(&row);
        }
        // One write larger than a chunk, arriving mid-chunk.
        let big = vec![7u8; 5 * CHUNK + 123];
        w.write_all(&big).unwrap();
        want.extend_from_slice(&big);
        let rec = w.finish().unwrap();
        assert_eq!(rec.data, want);
        let (last, body) = rec.writes.split_last().unwrap();
        for &(off, len) in body {
            assert_eq!(off % CHUNK, 0, "write at {off}");
            assert_eq!(len % CHUNK, 0, "write of {len}");
        }
        assert_eq!(last.0 % CHUNK, 0);
        assert_eq!(last.0 + last.1, want.len());
    }

    #[test]
    fn whole_chunks_from_an_empty_buffer_go_straight_through() {
        let mut w = ChunkWriter::new(Recorder::default());
        w.write_all(&vec![1u8; 2 * CHUNK]).unwrap();
        let rec = w.finish().unwrap();
        assert_eq!(rec.writes, vec![(0, 2 * CHUNK)]);
    }
}
