//! Write-ahead log: every acknowledged write is a framed, checksummed record
//! here before it reaches the memtable.
//!
//! The log is a directory of files named `<first_seq:020>.wal`. Each file:
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 8    | magic `GLIMPWAL`                        |
//! | 8      | 4    | format version (u32 LE, = 1)            |
//! | 12     | 4    | reserved, 0                             |
//! | 16     | ...  | records                                 |
//!
//! Record (all little endian):
//!
//! | offset  | size | field                                          |
//! |---------|------|------------------------------------------------|
//! | 0       | 4    | `n`: body length (u32)                         |
//! | 4       | 8    | sequence number (u64), +1 per record           |
//! | 12      | 4    | crc32 of bytes 0..12 (header checksum)         |
//! | 16      | n    | body: kind u8 (1 upsert, 2 delete) + payload   |
//! | 16+n    | 4    | crc32 of the body                              |
//!
//! Recovery reads until the end of the newest file. A record cut short at
//! the end of the newest file (or whose body checksum fails and that ends
//! exactly at end of file, or followed only by zero bytes) is a torn write
//! of an unacknowledged batch: it is truncated with a warning. Any other
//! damage is corruption and opening fails naming the file and offset,
//! unless `salvage` is set.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::codec::{self, Cursor};
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::fsync_dir;
use crate::types::Point;

const MAGIC: &[u8; 8] = b"GLIMPWAL";
const VERSION: u32 = 1;
const FILE_HEADER: u64 = 16;
const REC_HEADER: usize = 16;
const REC_OVERHEAD: usize = 20;
/// Largest record body; bigger batches are rejected before logging.
pub(crate) const MAX_RECORD_BODY: usize = 1 << 30;

const KIND_UPSERT: u8 = 1;
const KIND_DELETE: u8 = 2;
/// Fewest bytes an encoded point takes (empty id, no vector, flags, no metadata).
const MIN_POINT_BYTES: usize = 2 + 4 + 1 + 1 + 4;
/// Fewest bytes an encoded id takes (its length prefix).
const MIN_ID_BYTES: usize = 2;

/// A logged operation.
#[derive(Debug, Clone, PartialEq)]
pub enum WalOp {
    /// Insert or replace points.
    Upsert(Vec<Point>),
    /// Delete ids.
    Delete(Vec<String>),
}

impl WalOp {
    /// Encodes the record body (kind byte + payload).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            WalOp::Upsert(points) => {
                out.push(KIND_UPSERT);
                codec::put_u32(&mut out, points.len() as u32);
                for p in points {
                    codec::put_point(&mut out, p);
                }
            }
            WalOp::Delete(ids) => {
                out.push(KIND_DELETE);
                codec::put_u32(&mut out, ids.len() as u32);
                for id in ids {
                    codec::put_id(&mut out, id);
                }
            }
        }
        out
    }

    /// Decodes a record body. With `dim`, every upserted vector must have that length: a
    /// record of another dimension (checksums prove only that the bytes are as written) would
    /// put rows of the wrong width into the memtable. The count only sizes the first
    /// allocation as far as the body can hold that many entries.
    fn decode(body: &[u8], dim: Option<usize>) -> std::result::Result<WalOp, codec::DecodeError> {
        let mut c = Cursor::new(body);
        let kind = c.u8("record kind")?;
        let n = c.u32("count")? as usize;
        let op = match kind {
            KIND_UPSERT => {
                let room = c.remaining() / MIN_POINT_BYTES;
                let mut v = Vec::with_capacity(n.min(1 << 16).min(room));
                for _ in 0..n {
                    let at = c.position();
                    let p = c.point()?;
                    if dim.is_some_and(|d| p.vector.len() != d) {
                        return Err(codec::DecodeError {
                            offset: at,
                            what: "vector dimension (not the collection's)",
                        });
                    }
                    v.push(p);
                }
                WalOp::Upsert(v)
            }
            KIND_DELETE => {
                let room = c.remaining() / MIN_ID_BYTES;
                let mut v = Vec::with_capacity(n.min(1 << 16).min(room));
                for _ in 0..n {
                    v.push(c.id()?);
                }
                WalOp::Delete(v)
            }
            _ => {
                return Err(codec::DecodeError {
                    offset: 0,
                    what: "record kind",
                });
            }
        };
        if !c.is_empty() {
            return Err(codec::DecodeError {
                offset: body.len(),
                what: "trailing bytes",
            });
        }
        Ok(op)
    }
}

fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn frame(out: &mut Vec<u8>, seq: u64, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let hcrc = crc32fast::hash(&out[start..start + 12]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
}

fn file_header() -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Lists WAL files sorted by first sequence number; other names are ignored.
fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".wal")
            && let Ok(seq) = stem.parse::<u64>()
        {
            out.push((seq, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// How a scan of one file ended.
struct ScanEnd {
    /// Bytes of valid data (header + whole records).
    valid_len: u64,
    /// Whether bytes after `valid_len` must be cut off.
    truncate: bool,
}

/// Walks the records of one WAL file, calling `visit(offset, seq, body)`.
fn scan_file(
    path: &Path,
    bytes: &[u8],
    is_last: bool,
    salvage: bool,
    expected: &mut Option<u64>,
    mut visit: impl FnMut(u64, u64, &[u8]) -> Result<()>,
) -> Result<ScanEnd> {
    let torn_or_corrupt = |off: usize, detail: String, torn: bool| -> Result<ScanEnd> {
        if torn {
            tracing::warn!(
                path = %path.display(), offset = off,
                "WAL ends with a torn record ({detail}); truncating it (the write was never acknowledged)"
            );
            Ok(ScanEnd {
                valid_len: off as u64,
                truncate: true,
            })
        } else if salvage {
            tracing::warn!(
                path = %path.display(), offset = off,
                "salvage: WAL corrupt ({detail}); dropping the rest of this file"
            );
            Ok(ScanEnd {
                valid_len: off as u64,
                truncate: true,
            })
        } else {
            Err(StorageError::corrupt(
                path,
                off as u64,
                format!("WAL {detail}"),
            ))
        }
    };
    if bytes.len() < FILE_HEADER as usize {
        if is_last {
            return torn_or_corrupt(0, "file header cut short".into(), true);
        }
        return Err(StorageError::corrupt(
            path,
            0,
            "WAL file shorter than its header",
        ));
    }
    if &bytes[..8] != MAGIC {
        return torn_or_corrupt(0, "bad file magic".into(), false);
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return torn_or_corrupt(0, format!("unsupported file version {version}"), false);
    }
    if bytes[12..16] != [0, 0, 0, 0] {
        return torn_or_corrupt(12, "reserved header bytes are not zero".into(), false);
    }
    let mut off = FILE_HEADER as usize;
    let rest_is_zero = |from: usize| bytes[from..].iter().all(|&b| b == 0);
    while off < bytes.len() {
        let remaining = bytes.len() - off;
        if remaining < REC_OVERHEAD {
            let torn = is_last || rest_is_zero(off);
            return torn_or_corrupt(
                off,
                format!("record header cut short ({remaining} bytes left)"),
                torn,
            );
        }
        let h = &bytes[off..off + REC_HEADER];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let mut s = [0u8; 8];
        s.copy_from_slice(&h[4..12]);
        let seq = u64::from_le_bytes(s);
        let hcrc = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
        if crc32fast::hash(&h[..12]) != hcrc {
            let torn = is_last && rest_is_zero(off);
            return torn_or_corrupt(off, "record header checksum mismatch".into(), torn);
        }
        if len + REC_OVERHEAD > remaining {
            return torn_or_corrupt(
                off,
                format!("record of {len} bytes cut short ({remaining} bytes left)"),
                is_last,
            );
        }
        let body = &bytes[off + REC_HEADER..off + REC_HEADER + len];
        let c = &bytes[off + REC_HEADER + len..off + REC_OVERHEAD + len];
        let bcrc = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let end = off + REC_OVERHEAD + len;
        if crc32fast::hash(body) != bcrc {
            let torn = is_last && (end == bytes.len() || rest_is_zero(end));
            return torn_or_corrupt(
                off,
                format!("record seq {seq} body checksum mismatch"),
                torn,
            );
        }
        if let Some(exp) = *expected
            && seq != exp
        {
            return torn_or_corrupt(
                off,
                format!("sequence {seq} where {exp} was expected"),
                false,
            );
        }
        visit(off as u64, seq, body)?;
        *expected = Some(seq + 1);
        off = end;
    }
    Ok(ScanEnd {
        valid_len: off as u64,
        truncate: false,
    })
}

/// What replay found, to continue appending where it ended.
pub(crate) struct ReplayOutcome {
    /// Highest sequence number seen in the log (0 if none).
    pub last_seq: u64,
    /// Remaining WAL files: (first seq, path, valid length).
    pub files: Vec<(u64, PathBuf, u64)>,
}

/// Replays the log in `dir`, calling `apply` for every record with a
/// sequence number above `checkpoint`. Files wholly at or below the
/// checkpoint are deleted without being read. A record whose vectors are not
/// `dim` long is corruption.
pub(crate) fn replay(
    dir: &Path,
    checkpoint: u64,
    dim: usize,
    salvage: bool,
    mut apply: impl FnMut(u64, WalOp) -> Result<()>,
) -> Result<ReplayOutcome> {
    let mut files = list_files(dir)?;
    // A file is obsolete when the next one starts at or before checkpoint+1.
    let mut keep_from = 0;
    for i in 0..files.len().saturating_sub(1) {
        if files[i + 1].0 <= checkpoint + 1 {
            keep_from = i + 1;
        }
    }
    for (_, p) in files.drain(..keep_from) {
        fs::remove_file(&p).at(&p)?;
    }
    let mut out = ReplayOutcome {
        last_seq: 0,
        files: Vec::new(),
    };
    let mut expected: Option<u64> = None;
    let n = files.len();
    for (i, (first, path)) in files.into_iter().enumerate() {
        let is_last = i + 1 == n;
        let bytes = fs::read(&path).at(&path)?;
        let mut last = out.last_seq;
        let end = scan_file(
            &path,
            &bytes,
            is_last,
            salvage,
            &mut expected,
            |off, seq, body| {
                last = seq;
                if seq <= checkpoint {
                    return Ok(());
                }
                let op = WalOp::decode(body, Some(dim)).map_err(|e| {
                    StorageError::corrupt(
                        &path,
                        off + REC_HEADER as u64 + e.offset as u64,
                        format!("undecodable record seq {seq}: bad {}", e.what),
                    )
                })?;
                apply(seq, op)
            },
        )?;
        out.last_seq = last;
        if end.truncate {
            if end.valid_len < FILE_HEADER {
                fs::remove_file(&path).at(&path)?;
                fsync_dir(dir)?;
                continue;
            }
            let f = OpenOptions::new().write(true).open(&path).at(&path)?;
            f.set_len(end.valid_len).at(&path)?;
            f.sync_all().at(&path)?;
            if salvage {
                expected = None;
            }
        }
        out.files.push((first, path, end.valid_len));
    }
    Ok(out)
}

/// Appends records and rotates/deletes log files. Owned by whichever
/// thread currently leads the write group.
pub(crate) struct WalWriter {
    dir: PathBuf,
    /// Closed files (first seq, path) plus the active one last.
    files: VecDeque<(u64, PathBuf)>,
    file: File,
    len: u64,
    next_seq: u64,
    segment_bytes: u64,
    unsynced: bool,
}

impl WalWriter {
    /// Continues the log after replay: appends to the newest file or starts one.
    pub(crate) fn open(
        dir: &Path,
        outcome: ReplayOutcome,
        checkpoint: u64,
        segment_bytes: u64,
    ) -> Result<Self> {
        let next_seq = outcome.last_seq.max(checkpoint) + 1;
        let mut files: VecDeque<(u64, PathBuf)> = outcome
            .files
            .iter()
            .map(|(s, p, _)| (*s, p.clone()))
            .collect();
        let (file, len) = match outcome.files.last() {
            Some((_, path, valid_len)) => {
                let mut f = OpenOptions::new().write(true).open(path).at(path)?;
                f.seek(SeekFrom::Start(*valid_len)).at(path)?;
                (f, *valid_len)
            }
            None => {
                let (f, path) = Self::create_file(dir, next_seq)?;
                files.push_back((next_seq, path));
                (f, FILE_HEADER)
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            file,
            len,
            next_seq,
            segment_bytes: segment_bytes.max(FILE_HEADER + 1),
            unsynced: false,
        })
    }

    fn create_file(dir: &Path, first_seq: u64) -> Result<(File, PathBuf)> {
        let path = dir.join(file_name(first_seq));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .at(&path)?;
        f.write_all(&file_header()).at(&path)?;
        f.sync_all().at(&path)?;
        fsync_dir(dir)?;
        Ok((f, path))
    }

    fn active_path(&self) -> &Path {
        self.files
            .back()
            .map(|(_, p)| p.as_path())
            .unwrap_or(&self.dir)
    }

    /// The sequence number the next record gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends `bodies` as consecutive records with one `write`. On failure
    /// the file is cut back to its previous length so the log stays clean;
    /// `Err((error, fatal))` tells whether that cleanup failed too.
    pub(crate) fn append(
        &mut self,
        bodies: &[Vec<u8>],
    ) -> std::result::Result<(u64, u64), (StorageError, bool)> {
        if self.len >= self.segment_bytes {
            self.rotate().map_err(|e| (e, false))?;
        }
        let first = self.next_seq;
        let mut buf = Vec::with_capacity(bodies.iter().map(|b| b.len() + REC_OVERHEAD).sum());
        for (i, b) in bodies.iter().enumerate() {
            frame(&mut buf, first + i as u64, b);
        }
        if let Err(e) = self.file.write_all(&buf) {
            let err = StorageError::io(self.active_path(), e);
            let cleanup = self
                .file
                .set_len(self.len)
                .and_then(|_| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()));
            return Err((err, cleanup.is_err()));
        }
        self.len += buf.len() as u64;
        self.next_seq += bodies.len() as u64;
        self.unsynced = true;
        Ok((first, buf.len() as u64))
    }

    /// fsyncs the active file if anything is unsynced; returns the time spent.
    pub(crate) fn sync(&mut self) -> Result<Option<Duration>> {
        if !self.unsynced {
            return Ok(None);
        }
        let t = Instant::now();
        let r = self.file.sync_data();
        r.at(self.active_path())?;
        self.unsynced = false;
        Ok(Some(t.elapsed()))
    }

    fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        let (f, path) = Self::create_file(&self.dir, self.next_seq)?;
        self.file = f;
        self.len = FILE_HEADER;
        self.files.push_back((self.next_seq, path));
        Ok(())
    }

    /// Deletes files all of whose records are at or below `checkpoint`
    /// (which must already be durable in the manifest). The active file stays.
    pub(crate) fn remove_obsolete(&mut self, checkpoint: u64) -> Result<()> {
        let mut removed = false;
        while self.files.len() >= 2 && self.files[1].0 <= checkpoint + 1 {
            if let Some((_, p)) = self.files.pop_front() {
                fs::remove_file(&p).at(&p)?;
                removed = true;
            }
        }
        if removed {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Total bytes of the log files.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|(_, p)| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// One record as listed by [`dump_wal`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WalRecordSummary {
    /// File holding the record.
    pub file: PathBuf,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// Sequence number.
    pub seq: u64,
    /// `upsert` or `delete`.
    pub kind: String,
    /// Number of points or ids.
    pub count: usize,
    /// Body length in bytes.
    pub body_bytes: usize,
    /// First few ids of the record.
    pub sample_ids: Vec<String>,
}

/// Lists every record of the WAL directory `dir` (read only; a torn tail
/// ends the listing, corruption is an error).
pub fn dump_wal(dir: &Path) -> Result<Vec<WalRecordSummary>> {
    let files = list_files(dir)?;
    let mut out = Vec::new();
    let mut expected = None;
    let n = files.len();
    for (i, (_, path)) in files.iter().enumerate() {
        let bytes = fs::read(path).at(path)?;
        scan_file(
            path,
            &bytes,
            i + 1 == n,
            false,
            &mut expected,
            |off, seq, body| {
                let op = WalOp::decode(body, None).map_err(|e| {
                    StorageError::corrupt(path, off, format!("undecodable record: bad {}", e.what))
                })?;
                let (kind, ids): (&str, Vec<String>) = match &op {
                    WalOp::Upsert(ps) => ("upsert", ps.iter().map(|p| p.id.clone()).collect()),
                    WalOp::Delete(ids) => ("delete", ids.clone()),
                };
                out.push(WalRecordSummary {
                    file: path.clone(),
                    offset: off,
                    seq,
                    kind: kind.to_string(),
                    count: ids.len(),
                    body_bytes: body.len(),
                    sample_ids: ids.into_iter().take(5).collect(),
                });
                Ok(())
            },
        )?;
    }
    Ok(out)
}
