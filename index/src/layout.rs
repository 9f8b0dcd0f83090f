//! The serialised index: one byte buffer with a fixed header and 64-byte
//! aligned little-endian arrays, searchable in place ([`IvfPqView`]) so a
//! storage engine can mmap it without copying. The byte table is in
//! `docs/format.md`, section "Index file".

use std::borrow::Cow;

use crate::calibration::Calibration;
use crate::coarse::CoarseI8;
use crate::error::IndexError;
use crate::fastscan;
use crate::ivf::{InvList, IvfPqIndex};
use crate::metric::{Metric, Neighbor};
use crate::params::{PqBits, SearchParams};
use crate::search::{self, Core, ListRef, Lists, SearchStats};
use crate::shape::{IndexShape, shape_accessors};
use crate::tier::{self, CompactCodes, CompactKind, TierRef};

/// File magic.
pub const MAGIC: [u8; 8] = *b"GLIVFPQ\0";
/// Current format version.
pub const VERSION: u32 = 1;
/// Size of the fixed header; sections start after it.
pub const HEADER_LEN: usize = 192;
/// Alignment of every section.
pub const ALIGN: usize = 64;
/// Flag bit: the `inv_norms` section is present (cosine indexes).
pub const FLAG_INV_NORMS: u32 = 1;
/// Flag bit: a calibration section (the recall table) follows the codes; its offset and
/// length are at header bytes 168 and 176. Files without it are searched with the defaults.
pub const FLAG_CALIBRATION: u32 = 2;
/// Header position of the calibration section's offset (its length follows).
const CALIBRATION_AT: usize = 168;
/// Flag bit: the compact re-rank section (codes of every row, see `tier`) is present; its
/// offset is at header byte 184 and its length follows from `dim`, `len` and its kind (8-bit
/// codes, or rotated 6-bit ones with [`FLAG_COMPACT_ROTATED6`]).
pub const FLAG_COMPACT: u32 = 4;
/// Header position of the compact section's offset.
const COMPACT_AT: usize = 184;
/// Flag bit (with [`FLAG_COMPACT`]): the compact section holds its codes in entry order (the
/// lists' entries concatenated, as the ids section), so the candidates of one probed list
/// are read from one neighbourhood of the file. Without it (files written before) the codes
/// are in row order.
pub const FLAG_COMPACT_BY_ENTRY: u32 = 8;
/// Flag bit (with [`FLAG_COMPACT`]): the compact section holds rotated 6-bit codes (`rq6`)
/// rather than 8-bit ones (`sq8`).
pub const FLAG_COMPACT_ROTATED6: u32 = 16;

/// Number of array sections, in file order.
const SECTIONS: usize = 7;
const S_CENTROIDS: usize = 0;
const S_CODEBOOKS: usize = 1;
const S_LIST_OFFSETS: usize = 2;
const S_CODE_OFFSETS: usize = 3;
const S_IDS: usize = 4;
const S_INV_NORMS: usize = 5;
const S_CODES: usize = 6;

fn metric_code(m: Metric) -> u32 {
    match m {
        Metric::Cosine => 0,
        Metric::Dot => 1,
        Metric::L2 => 2,
    }
}

fn code_bytes(bits: PqBits, m: usize, n: usize) -> usize {
    match bits {
        PqBits::Eight => n * m,
        _ => n.div_ceil(fastscan::BLOCK) * fastscan::block_bytes(m),
    }
}

impl IvfPqIndex {
    /// Serialises the index into one buffer (layout in `docs/format.md`).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_with(None, None)
    }

    /// [`to_bytes`](Self::to_bytes) with `calibration`, the index's measured recall table, and
    /// `compact`, the codes of its rows (the compact re-rank tier), appended as their
    /// sections. `compact` must encode exactly the index's rows, and the lists must hold each of
    /// rows `0..len` once (as an index built over those rows from row 0 does), since the codes
    /// are written in the lists' entry order; otherwise it is left out.
    pub fn to_bytes_with(
        &self,
        calibration: Option<&Calibration>,
        compact: Option<&CompactCodes>,
    ) -> Vec<u8> {
        self.write_bytes(calibration, compact, true)
    }

    /// [`to_bytes_with`](Self::to_bytes_with) with the compact codes in row order, as files
    /// written before [`FLAG_COMPACT_BY_ENTRY`] hold them (tests that such files still work).
    #[cfg(test)]
    pub(crate) fn to_bytes_with_tier_by_row(
        &self,
        calibration: Option<&Calibration>,
        compact: Option<&CompactCodes>,
    ) -> Vec<u8> {
        self.write_bytes(calibration, compact, false)
    }

    fn write_bytes(
        &self,
        calibration: Option<&Calibration>,
        compact: Option<&CompactCodes>,
        tier_by_entry: bool,
    ) -> Vec<u8> {
        let shape = &self.shape;
        let with_norms = shape.metric == Metric::Cosine;
        let mut list_offsets = Vec::with_capacity(self.lists.len() + 1);
        let mut code_offsets = Vec::with_capacity(self.lists.len() + 1);
        let (mut e, mut c) = (0u64, 0u64);
        list_offsets.push(0u64);
        code_offsets.push(0u64);
        for l in &self.lists {
            e += l.ids.len() as u64;
            c += l.codes.len() as u64;
            list_offsets.push(e);
            code_offsets.push(c);
        }
        let mut sections: [Vec<u8>; SECTIONS] = Default::default();
        sections[S_CENTROIDS] = le_f32(&self.centroids);
        sections[S_CODEBOOKS] = le_f32(&self.codebooks);
        sections[S_LIST_OFFSETS] = list_offsets.iter().flat_map(|x| x.to_le_bytes()).collect();
        sections[S_CODE_OFFSETS] = code_offsets.iter().flat_map(|x| x.to_le_bytes()).collect();
        sections[S_IDS] = self
            .lists
            .iter()
            .flat_map(|l| l.ids.iter().flat_map(|x| x.to_le_bytes()))
            .collect();
        if with_norms {
            sections[S_INV_NORMS] = self
                .lists
                .iter()
                .flat_map(|l| le_f32(&l.inv_norms))
                .collect();
        }
        sections[S_CODES] = self
            .lists
            .iter()
            .flat_map(|l| l.codes.iter().copied())
            .collect();

        let mut offsets = [0u64; SECTIONS];
        let mut pos = HEADER_LEN;
        for (i, s) in sections.iter().enumerate() {
            pos = pos.next_multiple_of(ALIGN);
            offsets[i] = pos as u64;
            pos += s.len();
        }
        let cal = calibration.map(Calibration::to_bytes);
        let mut cal_at = 0;
        if let Some(c) = &cal {
            pos = pos.next_multiple_of(ALIGN);
            cal_at = pos;
            pos += c.len();
        }
        let kind = compact.map(CompactCodes::kind);
        let compact = compact
            .filter(|c| c.rows() == self.shape.len && c.dim() == self.shape.dim)
            .map(|c| {
                if tier_by_entry {
                    c.to_bytes_in_order(self.lists.iter().flat_map(|l| l.ids.iter().copied()))
                } else {
                    c.to_bytes_in_order(0..self.shape.len as u32)
                }
            })
            .filter(|b| !b.is_empty());
        let mut compact_at = 0;
        if let Some(c) = &compact {
            pos = pos.next_multiple_of(ALIGN);
            compact_at = pos;
            pos += c.len();
        }
        let total = pos.next_multiple_of(ALIGN);
        let mut out = vec![0u8; total];
        out[0..8].copy_from_slice(&MAGIC);
        put_u32(&mut out, 8, VERSION);
        put_u32(&mut out, 12, HEADER_LEN as u32);
        put_u32(&mut out, 16, metric_code(shape.metric));
        put_u32(&mut out, 20, shape.dim as u32);
        put_u32(&mut out, 24, self.lists.len() as u32);
        put_u32(&mut out, 28, shape.m as u32);
        put_u32(
            &mut out,
            32,
            if shape.bits == PqBits::Eight { 8 } else { 4 },
        );
        let mut flags = if with_norms { FLAG_INV_NORMS } else { 0 };
        if let Some(c) = &cal {
            flags |= FLAG_CALIBRATION;
            put_u64(&mut out, CALIBRATION_AT, cal_at as u64);
            put_u64(&mut out, CALIBRATION_AT + 8, c.len() as u64);
            out[cal_at..cal_at + c.len()].copy_from_slice(c);
        }
        if let Some(c) = &compact {
            flags |= FLAG_COMPACT;
            if tier_by_entry {
                flags |= FLAG_COMPACT_BY_ENTRY;
            }
            if kind == Some(CompactKind::Rotated6) {
                flags |= FLAG_COMPACT_ROTATED6;
            }
            put_u64(&mut out, COMPACT_AT, compact_at as u64);
            out[compact_at..compact_at + c.len()].copy_from_slice(c);
        }
        put_u32(&mut out, 36, flags);
        put_u64(&mut out, 40, e);
        for i in 0..SECTIONS {
            put_u64(&mut out, 48 + 16 * i, offsets[i]);
            put_u64(&mut out, 56 + 16 * i, sections[i].len() as u64);
        }
        put_u64(&mut out, 160, total as u64);
        for (i, s) in sections.iter().enumerate() {
            let o = offsets[i] as usize;
            out[o..o + s.len()].copy_from_slice(s);
        }
        out
    }

    /// A borrowed view over this index, searchable like a loaded one.
    pub fn view(&self) -> IvfPqView<'_> {
        // Views over an in-memory index are built through the byte format
        // only by `from_bytes`; here the lists are exposed directly.
        IvfPqView::from_index(self)
    }
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reinterprets little-endian bytes as `T`s: borrowed when aligned on a
/// little-endian machine, copied otherwise.
fn cast<T: bytemuck::Pod>(bytes: &[u8], from_le: fn(&[u8]) -> T) -> Cow<'_, [T]> {
    if cfg!(target_endian = "little")
        && let Ok(s) = bytemuck::try_cast_slice::<u8, T>(bytes)
    {
        return Cow::Borrowed(s);
    }
    let w = std::mem::size_of::<T>();
    Cow::Owned(bytes.chunks_exact(w).map(from_le).collect())
}

fn f32_le(b: &[u8]) -> f32 {
    f32::from_bits(get_u32(b, 0))
}
fn u32_le(b: &[u8]) -> u32 {
    get_u32(b, 0)
}
fn u64_le(b: &[u8]) -> u64 {
    get_u64(b, 0)
}

/// Offset and length of the calibration section, checked to lie aligned after `after` and
/// inside `bytes`.
fn calibration_section(bytes: &[u8], after: usize) -> Result<(usize, usize), IndexError> {
    let at = usize::try_from(get_u64(bytes, CALIBRATION_AT))
        .map_err(|_| corrupt("calibration offset"))?;
    let len = usize::try_from(get_u64(bytes, CALIBRATION_AT + 8))
        .map_err(|_| corrupt("calibration length"))?;
    if at % ALIGN != 0 || at < after {
        return Err(corrupt(format!("calibration section misplaced at {at}")));
    }
    at.checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| corrupt("calibration section runs past the end"))?;
    Ok((at, len))
}

fn corrupt(msg: impl Into<String>) -> IndexError {
    IndexError::Corrupt(msg.into())
}

/// Multiplies sizes, reporting overflow as corruption.
fn mul(a: usize, b: usize) -> Result<usize, IndexError> {
    a.checked_mul(b).ok_or_else(|| corrupt("size overflow"))
}

/// The `i8` coarse-ranking table derived from an index's centroids (see
/// [`IvfPqView::from_bytes_with`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CoarseTable(CoarseI8);

/// An index searchable in place over serialised bytes (or over an
/// [`IvfPqIndex`] via [`IvfPqIndex::view`]).
#[derive(Debug, Clone)]
pub struct IvfPqView<'a> {
    /// Dimension, metric, list count, code shape and row count.
    shape: IndexShape,
    centroids: Cow<'a, [f32]>,
    coarse: Cow<'a, CoarseI8>,
    codebooks: Cow<'a, [f32]>,
    lists: ViewLists<'a>,
    /// The compact re-rank tier, when the file has one.
    compact: Option<TierRef<'a>>,
}

/// List storage of a view: flat arrays from bytes, or an index's lists.
#[derive(Debug, Clone)]
enum ViewLists<'a> {
    Flat {
        list_offsets: Cow<'a, [u64]>,
        code_offsets: Cow<'a, [u64]>,
        ids: Cow<'a, [u32]>,
        inv_norms: Cow<'a, [f32]>,
        codes: &'a [u8],
    },
    /// An index's lists. Such a view has no compact tier, so its entry positions are never
    /// looked up (and not computed: `IvfPqIndex::search` builds a view per query).
    Index(&'a [InvList]),
}

impl<'a> IvfPqView<'a> {
    fn from_index(index: &'a IvfPqIndex) -> Self {
        IvfPqView {
            shape: index.shape,
            centroids: Cow::Borrowed(&index.centroids),
            coarse: Cow::Borrowed(&index.coarse),
            codebooks: Cow::Borrowed(&index.codebooks),
            lists: ViewLists::Index(&index.lists),
            compact: None,
        }
    }

    /// Validates `bytes` (written by [`IvfPqIndex::to_bytes`]) and returns a
    /// view over them. Every size, offset and list boundary is checked, so
    /// corrupt or truncated input is an error, never a panic. Sections are
    /// borrowed when suitably aligned and copied otherwise.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<IvfPqView<'a>, IndexError> {
        Self::parse(bytes, None)
    }

    /// [`from_bytes`](Self::from_bytes) reusing the coarse table that
    /// [`coarse_table`](Self::coarse_table) built from the same bytes. Quantizing the
    /// centroids costs far more than a whole search (≈1 ms at 447 × 512), so callers that
    /// re-open a view per query (the storage engine, over an mmap) build it once. A table of
    /// the wrong shape is ignored and rebuilt, never trusted.
    pub fn from_bytes_with(
        bytes: &'a [u8],
        table: &'a CoarseTable,
    ) -> Result<IvfPqView<'a>, IndexError> {
        Self::parse(bytes, Some(&table.0))
    }

    /// The coarse table of this view, to pass to [`from_bytes_with`](Self::from_bytes_with).
    pub fn coarse_table(&self) -> CoarseTable {
        CoarseTable(self.coarse.clone().into_owned())
    }

    fn parse(bytes: &'a [u8], table: Option<&'a CoarseI8>) -> Result<IvfPqView<'a>, IndexError> {
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        if bytes[0..8] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        let version = get_u32(bytes, 8);
        if version != VERSION {
            return Err(IndexError::UnsupportedVersion(version));
        }
        if get_u32(bytes, 12) as usize != HEADER_LEN {
            return Err(corrupt("bad header length"));
        }
        let metric = match get_u32(bytes, 16) {
            0 => Metric::Cosine,
            1 => Metric::Dot,
            2 => Metric::L2,
            x => return Err(corrupt(format!("unknown metric code {x}"))),
        };
        let dim = get_u32(bytes, 20) as usize;
        let nlist = get_u32(bytes, 24) as usize;
        let m = get_u32(bytes, 28) as usize;
        let bits = match get_u32(bytes, 32) {
            4 => PqBits::Four,
            8 => PqBits::Eight,
            x => return Err(corrupt(format!("unsupported code width {x}"))),
        };
        let flags = get_u32(bytes, 36);
        let known = FLAG_INV_NORMS
            | FLAG_CALIBRATION
            | FLAG_COMPACT
            | FLAG_COMPACT_BY_ENTRY
            | FLAG_COMPACT_ROTATED6;
        if flags & !known != 0 {
            return Err(corrupt(format!("unknown flags {flags:#x}")));
        }
        if flags & (FLAG_COMPACT_BY_ENTRY | FLAG_COMPACT_ROTATED6) != 0 && flags & FLAG_COMPACT == 0
        {
            return Err(corrupt(
                "compact order or kind flag without a compact section",
            ));
        }
        let with_norms = flags & FLAG_INV_NORMS != 0;
        if with_norms != (metric == Metric::Cosine) {
            return Err(corrupt("norm section flag does not match the metric"));
        }
        let len = usize::try_from(get_u64(bytes, 40)).map_err(|_| corrupt("entry count"))?;
        if dim == 0 || nlist == 0 || m == 0 || m > dim || (bits == PqBits::Four && m > 256) {
            return Err(corrupt(format!(
                "invalid shape dim={dim} nlist={nlist} m={m}"
            )));
        }
        if get_u64(bytes, 160) != bytes.len() as u64 {
            return Err(corrupt(format!(
                "length {} does not match the recorded {}",
                bytes.len(),
                get_u64(bytes, 160)
            )));
        }
        if len > u32::MAX as usize + 1 {
            return Err(corrupt("too many entries"));
        }
        let ksub = bits.ksub();
        let expected: [Option<usize>; SECTIONS] = [
            Some(mul(mul(nlist, dim)?, 4)?),
            Some(mul(mul(ksub, dim)?, 4)?),
            Some(mul(nlist + 1, 8)?),
            Some(mul(nlist + 1, 8)?),
            Some(mul(len, 4)?),
            Some(if with_norms { mul(len, 4)? } else { 0 }),
            None, // checked against the code offsets below
        ];
        let mut secs: [&[u8]; SECTIONS] = [&[]; SECTIONS];
        let mut prev_end = HEADER_LEN;
        for i in 0..SECTIONS {
            let off = usize::try_from(get_u64(bytes, 48 + 16 * i))
                .map_err(|_| corrupt("section offset"))?;
            let slen = usize::try_from(get_u64(bytes, 56 + 16 * i))
                .map_err(|_| corrupt("section length"))?;
            if off % ALIGN != 0 || off < prev_end {
                return Err(corrupt(format!("section {i} misplaced at {off}")));
            }
            let end = off
                .checked_add(slen)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| corrupt(format!("section {i} runs past the end (truncated?)")))?;
            if let Some(want) = expected[i]
                && want != slen
            {
                return Err(corrupt(format!(
                    "section {i} has {slen} bytes, expected {want}"
                )));
            }
            secs[i] = &bytes[off..end];
            prev_end = end;
        }
        if flags & FLAG_CALIBRATION != 0 {
            let (at, len) = calibration_section(bytes, prev_end)?;
            prev_end = at + len;
        }
        let compact = if flags & FLAG_COMPACT != 0 {
            let at = usize::try_from(get_u64(bytes, COMPACT_AT))
                .map_err(|_| corrupt("compact section offset"))?;
            let rotated = flags & FLAG_COMPACT_ROTATED6 != 0;
            let want = if rotated {
                tier::rq6_section_len(dim, len)
            } else {
                tier::sq8_section_len(dim, len)
            }
            .ok_or_else(|| corrupt("compact section size"))?;
            if at % ALIGN != 0 || at < prev_end {
                return Err(corrupt(format!("compact section misplaced at {at}")));
            }
            let end = at
                .checked_add(want)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| corrupt("compact section runs past the end"))?;
            let by_entry = flags & FLAG_COMPACT_BY_ENTRY != 0;
            let section = &bytes[at..end];
            Some(if rotated {
                TierRef::Rotated6(
                    tier::Rq6Ref::parse(section, dim, len, by_entry).map_err(corrupt)?,
                )
            } else {
                TierRef::Sq8(tier::Sq8Ref::parse(section, dim, len, by_entry).map_err(corrupt)?)
            })
        } else {
            None
        };
        let list_offsets = cast::<u64>(secs[S_LIST_OFFSETS], u64_le);
        let code_offsets = cast::<u64>(secs[S_CODE_OFFSETS], u64_le);
        let codes = secs[S_CODES];
        if list_offsets[0] != 0 || code_offsets[0] != 0 {
            return Err(corrupt("offsets must start at 0"));
        }
        for l in 0..nlist {
            let (a, b) = (list_offsets[l], list_offsets[l + 1]);
            if b < a {
                return Err(corrupt(format!("list {l} offsets decrease")));
            }
            let n = usize::try_from(b - a).map_err(|_| corrupt("list size"))?;
            if n > len {
                return Err(corrupt(format!("list {l} larger than the index")));
            }
            let want = code_bytes(bits, m, n);
            let (ca, cb) = (code_offsets[l], code_offsets[l + 1]);
            if cb < ca || (cb - ca) as u128 != want as u128 {
                return Err(corrupt(format!("list {l} code bytes inconsistent")));
            }
        }
        if list_offsets[nlist] != len as u64 || code_offsets[nlist] != codes.len() as u64 {
            return Err(corrupt("list offsets do not cover the arrays"));
        }
        let centroids = cast::<f32>(secs[S_CENTROIDS], f32_le);
        let coarse = match table {
            Some(t) if t.scales.len() == nlist && t.codes.len() == nlist * dim => Cow::Borrowed(t),
            _ => Cow::Owned(CoarseI8::new(&centroids, dim)),
        };
        Ok(IvfPqView {
            shape: IndexShape {
                dim,
                metric,
                nlist,
                m,
                bits,
                len,
            },
            centroids,
            coarse,
            codebooks: cast::<f32>(secs[S_CODEBOOKS], f32_le),
            lists: ViewLists::Flat {
                list_offsets,
                code_offsets,
                ids: cast::<u32>(secs[S_IDS], u32_le),
                inv_norms: cast::<f32>(secs[S_INV_NORMS], f32_le),
                codes,
            },
            compact,
        })
    }

    /// The recall table stored in `bytes` (an index file), or `None` when it has none (files
    /// written before calibration existed, or indexes too small to calibrate). The whole file
    /// is validated first, so corrupt input is an error.
    pub fn read_calibration(bytes: &[u8]) -> Result<Option<Calibration>, IndexError> {
        let view = IvfPqView::from_bytes(bytes)?;
        if get_u32(bytes, 36) & FLAG_CALIBRATION == 0 {
            return Ok(None);
        }
        let (at, len) = calibration_section(bytes, HEADER_LEN)?;
        Calibration::from_bytes(&bytes[at..at + len], view.nlist()).map(Some)
    }

    /// Top `params.k` rows for `query`, best first, with exact scores from
    /// `vectors`, the raw row-major data the index was built over. Rows for
    /// which `filter` returns false are skipped during the scan; when at
    /// least `k` allowed rows exist, `k` results come back. A query of the
    /// wrong length gives no results; candidate rows beyond the end of
    /// `vectors` are dropped.
    pub fn search(
        &self,
        query: &[f32],
        vectors: &[f32],
        params: &SearchParams,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Vec<Neighbor> {
        self.search_with_stats(query, vectors, params, filter, &mut SearchStats::default())
    }

    /// [`search`](Self::search) that also adds where the time went to `stats`.
    pub fn search_with_stats(
        &self,
        query: &[f32],
        vectors: &[f32],
        params: &SearchParams,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
        stats: &mut SearchStats,
    ) -> Vec<Neighbor> {
        search::search(&self.core(), self, query, vectors, params, filter, stats)
    }

    /// The share of the compact tier's full margin this search needed to keep its exact top
    /// k (see `search::needed_tier_margin`); `None` where it would not prune on the tier.
    pub(crate) fn needed_tier_margin(
        &self,
        query: &[f32],
        vectors: &[f32],
        params: &SearchParams,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Option<f32> {
        search::needed_tier_margin(&self.core(), self, query, vectors, params, filter)
    }

    /// An empty index with this index's trained coarse quantizer and PQ
    /// codebooks: other vectors can be [added](IvfPqIndex::add) to it
    /// without training, which costs one assignment and one encoding pass
    /// instead of k-means (how the storage engine indexes a new segment
    /// from an existing segment's training). Recall holds as long as the new
    /// vectors come from the distribution the quantizers were trained on.
    pub fn empty_like(&self) -> IvfPqIndex {
        IvfPqIndex {
            shape: IndexShape {
                len: 0,
                ..self.shape
            },
            centroids: self.centroids.to_vec(),
            coarse: self.coarse.clone().into_owned(),
            codebooks: self.codebooks.to_vec(),
            lists: vec![InvList::default(); self.shape.nlist],
        }
    }

    /// Copies the view into an owned [`IvfPqIndex`], e.g. to add rows to a
    /// loaded index.
    pub fn to_index(&self) -> IvfPqIndex {
        let lists = (0..self.shape.nlist)
            .map(|l| {
                let r = self.list(l);
                InvList {
                    ids: r.ids.to_vec(),
                    inv_norms: r.inv_norms.to_vec(),
                    codes: r.codes.to_vec(),
                }
            })
            .collect();
        IvfPqIndex {
            shape: self.shape,
            lists,
            ..self.empty_like()
        }
    }

    pub(crate) fn core(&self) -> Core<'_> {
        Core {
            shape: self.shape,
            centroids: &self.centroids,
            coarse: &self.coarse,
            codebooks: &self.codebooks,
            compact: self.compact.as_ref(),
        }
    }

    /// Whether the file carries the compact re-rank tier (codes of every row).
    pub fn has_compact_tier(&self) -> bool {
        self.compact.is_some()
    }

    /// Which compact re-rank tier the file carries, if any.
    pub fn compact_kind(&self) -> Option<CompactKind> {
        self.compact.as_ref().map(TierRef::kind)
    }

    shape_accessors!();

    /// Whether every array is borrowed from the input bytes (no copies).
    pub fn is_zero_copy(&self) -> bool {
        let flat = match &self.lists {
            ViewLists::Flat {
                list_offsets,
                code_offsets,
                ids,
                inv_norms,
                ..
            } => {
                matches!(list_offsets, Cow::Borrowed(_))
                    && matches!(code_offsets, Cow::Borrowed(_))
                    && matches!(ids, Cow::Borrowed(_))
                    && matches!(inv_norms, Cow::Borrowed(_))
            }
            ViewLists::Index(_) => true,
        };
        flat && matches!(self.centroids, Cow::Borrowed(_))
            && matches!(self.codebooks, Cow::Borrowed(_))
    }
}

impl Lists for IvfPqView<'_> {
    fn list(&self, l: usize) -> ListRef<'_> {
        match &self.lists {
            ViewLists::Index(lists) => {
                let x = &lists[l];
                ListRef {
                    ids: &x.ids,
                    inv_norms: &x.inv_norms,
                    codes: &x.codes,
                    // No tier over an in-memory index (see `ViewLists::Index`).
                    first_entry: 0,
                }
            }
            ViewLists::Flat {
                list_offsets,
                code_offsets,
                ids,
                inv_norms,
                codes,
            } => {
                // Offsets were validated in `from_bytes`.
                let (a, b) = (list_offsets[l] as usize, list_offsets[l + 1] as usize);
                let (ca, cb) = (code_offsets[l] as usize, code_offsets[l + 1] as usize);
                ListRef {
                    ids: &ids[a..b],
                    inv_norms: if inv_norms.is_empty() {
                        &[]
                    } else {
                        &inv_norms[a..b]
                    },
                    codes: &codes[ca..cb],
                    // At most `u32::MAX + 1` entries (checked in `parse`).
                    first_entry: a as u32,
                }
            }
        }
    }
}

#[cfg(test)]
mod fuzz;
