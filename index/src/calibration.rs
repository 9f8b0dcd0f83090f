//! A segment's recall table: for each recall target, the cheapest search parameters that
//! reached it on the segment's own data when its index was built (measured by
//! [`calibrate`](crate::calibrate::calibrate)), stored in the index file's calibration
//! section (byte layout in `docs/format.md`, "Calibration section").
//!
//! A search asks for a recall target instead of `nprobe`/`refine`; each segment answers
//! with the parameters its own table names, so segments of very different sizes and data get
//! what each needs, and the constants fitted to one benchmark distribution are no longer the
//! default.

use crate::error::IndexError;

/// Recall@k a search aims at when the caller names neither a target nor parameters.
pub const DEFAULT_RECALL_TARGET: f32 = 0.95;

/// The targets a calibration records, ascending. A request between two of them gets the
/// parameters of the next higher one, so it is never served below what it asked for.
pub const CALIBRATION_TARGETS: [f32; 11] = [
    0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995,
];

/// Format version of the calibration section this build writes (version 1, without the
/// codes-only recalls, is still read).
const SECTION_VERSION: u32 = 2;
/// Bytes before the points: version, k, queries per set, shift, point count, tier margin.
const SECTION_HEADER: usize = 24;
/// Bytes per point in version 1 sections.
const POINT_BYTES_V1: usize = 24;
/// Bytes per point.
const POINT_BYTES: usize = 32;
/// Point flag: the parameters reached the target.
const POINT_REACHED: u32 = 1;
/// Point flag: ranking on the compact tier's codes alone reached the target too.
const POINT_CODES_REACHED: u32 = 2;
/// Most points a section may hold (a hostile count must not size an allocation).
const MAX_POINTS: usize = 64;
/// Largest `refine` a calibration may name.
pub const MAX_CALIBRATED_REFINE: usize = 256;

/// The parameters chosen for one recall target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationPoint {
    /// The recall@k this point was chosen for.
    pub target: f32,
    /// Lists probed.
    pub nprobe: u32,
    /// Candidates re-ranked per result.
    pub refine: u32,
    /// Recall@k measured with these parameters on queries drawn from the segment's rows, less
    /// the calibration's estimate of how much choosing them among many flattered them (its
    /// bootstrap optimism for this target; 0 in tables written before 2026-12-07).
    pub recall_in: f32,
    /// The same on those queries moved off the data by one common offset.
    pub recall_shifted: f32,
    /// Whether both measured recalls, less the calibration's margin (see
    /// `CalibrationOptions`), reached `target` plus the selection's optimism (or a lower
    /// target's higher requirement). When no parameters did, the point holds the best found
    /// and this is false.
    pub reached: bool,
    /// Recall@k on the in-distribution queries with these parameters when the final ranking
    /// uses the compact tier's codes alone (`rescore` off: no raw row read), less the same
    /// optimism as `recall_in`; 0 where not measured (no tier, or tables written before
    /// 2026-12-07).
    pub codes_recall_in: f32,
    /// The same on the shifted queries.
    pub codes_recall_shifted: f32,
    /// Whether the codes-only recalls, less the calibration's margin, reached `target` too:
    /// then a search that allows it may skip the raw rows at this point.
    pub codes_reached: bool,
}

impl CalibrationPoint {
    /// The lower of the two measured recalls: what a caller can expect.
    pub fn expected_recall(&self) -> f32 {
        self.recall_in.min(self.recall_shifted)
    }

    /// Whether a search with these parameters scores its candidates on the compact re-rank
    /// tier, where the index has one (at least
    /// [`COMPACT_MIN_PER_RESULT`](crate::COMPACT_MIN_PER_RESULT) candidates per result).
    pub fn uses_compact_tier(&self) -> bool {
        self.refine as usize >= crate::COMPACT_MIN_PER_RESULT
    }

    /// The lower of the two codes-only recalls (0 where not measured).
    pub fn expected_codes_recall(&self) -> f32 {
        self.codes_recall_in.min(self.codes_recall_shifted)
    }

    /// Whether the codes-only recalls were measured (they are 0 where not: no tier, points
    /// above the first that fell short, tables written before 2026-12-07).
    pub fn codes_measured(&self) -> bool {
        self.codes_reached || self.codes_recall_in != 0.0 || self.codes_recall_shifted != 0.0
    }
}

/// A segment's recall table.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The k of the measured recall@k.
    pub k: u32,
    /// Queries per set (in-distribution and shifted).
    pub queries: u32,
    /// Norm of the common offset of the shifted set (relative to the rows' norm).
    pub shift: f32,
    /// One point per target, targets ascending.
    pub points: Vec<CalibrationPoint>,
    /// The share of the compact tier's full pruning margin that searches of at most `k`
    /// results prune with (see [`SearchParams::tier_margin`](crate::SearchParams)): what the
    /// calibration's own queries needed to keep their exact top k, with room to spare
    /// (`RecallGrid::measure_tier_margin`); 0 where not measured (no tier, or tables written
    /// before 2026-12-07's second session), which means the full margin.
    pub tier_margin: f32,
}

impl Calibration {
    /// The point serving `target`: the first whose target is at least `target`, else the
    /// last (the best the calibration found). `None` only for an empty table.
    pub fn point_for(&self, target: f32) -> Option<&CalibrationPoint> {
        self.points
            .iter()
            .find(|p| p.target >= target)
            .or_else(|| self.points.last())
    }

    /// The point serving `target` with the final ranking on the compact tier's codes alone:
    /// the first whose target is at least `target` and whose codes-only recall reached it.
    /// `None` when none did (the search then reads the raw rows, at [`point_for`](Self::point_for)).
    pub fn codes_point_for(&self, target: f32) -> Option<&CalibrationPoint> {
        self.points
            .iter()
            .find(|p| p.target >= target && p.codes_reached)
    }

    /// The share of the compact tier's full margin a search of `k` results prunes with: the
    /// measured [`tier_margin`](Self::tier_margin) for `k` up to the table's (the near-ties
    /// around the k-th place it measured are the same kind for a smaller k), else 1.
    pub fn tier_margin_for(&self, k: usize) -> f32 {
        if self.tier_margin > 0.0 && self.tier_margin <= 1.0 && k <= self.k as usize {
            self.tier_margin
        } else {
            1.0
        }
    }

    /// Serialises the table (the index file's calibration section).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Version 1 while no codes-only recall was measured (indexes without a compact tier),
        // so releases that know only version 1 still read those files.
        let codes = self.points.iter().any(CalibrationPoint::codes_measured);
        let (version, point_bytes) = if codes {
            (SECTION_VERSION, POINT_BYTES)
        } else {
            (1, POINT_BYTES_V1)
        };
        let mut out = Vec::with_capacity(SECTION_HEADER + point_bytes * self.points.len());
        for v in [version, self.k, self.queries] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.shift.to_le_bytes());
        out.extend_from_slice(&(self.points.len() as u32).to_le_bytes());
        // Zero (reserved) in files from before the margin was measured; readers that predate it
        // never look at it, so they prune with the full margin: slower, never wrong.
        out.extend_from_slice(&self.tier_margin.to_le_bytes());
        for p in &self.points {
            out.extend_from_slice(&p.target.to_le_bytes());
            out.extend_from_slice(&p.nprobe.to_le_bytes());
            out.extend_from_slice(&p.refine.to_le_bytes());
            out.extend_from_slice(&p.recall_in.to_le_bytes());
            out.extend_from_slice(&p.recall_shifted.to_le_bytes());
            let flags = if p.reached { POINT_REACHED } else { 0 }
                | if p.codes_reached {
                    POINT_CODES_REACHED
                } else {
                    0
                };
            out.extend_from_slice(&flags.to_le_bytes());
            if codes {
                out.extend_from_slice(&p.codes_recall_in.to_le_bytes());
                out.extend_from_slice(&p.codes_recall_shifted.to_le_bytes());
            }
        }
        out
    }

    /// Parses and checks a section written by [`to_bytes`](Self::to_bytes) for an index of
    /// `nlist` lists. Every count, range and order is checked: corrupt bytes are an error.
    pub fn from_bytes(bytes: &[u8], nlist: usize) -> Result<Calibration, IndexError> {
        let bad = |m: String| IndexError::Corrupt(format!("calibration section: {m}"));
        if bytes.len() < SECTION_HEADER {
            return Err(bad(format!("{} bytes is too short", bytes.len())));
        }
        let u = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let f = |at: usize| f32::from_bits(u(at));
        let point_bytes = match u(0) {
            1 => POINT_BYTES_V1,
            SECTION_VERSION => POINT_BYTES,
            v => return Err(bad(format!("unknown version {v}"))),
        };
        let (k, queries, shift, count) = (u(4), u(8), f(12), u(16) as usize);
        if k == 0 || queries == 0 || !shift.is_finite() || shift < 0.0 {
            return Err(bad(format!("k {k}, queries {queries}, shift {shift}")));
        }
        let tier_margin = f(20);
        if !(0.0..=1.0).contains(&tier_margin) {
            return Err(bad(format!("tier margin {tier_margin}")));
        }
        if count > MAX_POINTS || bytes.len() != SECTION_HEADER + count * point_bytes {
            return Err(bad(format!("{count} points in {} bytes", bytes.len())));
        }
        let mut points = Vec::with_capacity(count);
        for i in 0..count {
            let at = SECTION_HEADER + i * point_bytes;
            let flags = u(at + 20);
            let known = if point_bytes == POINT_BYTES {
                POINT_REACHED | POINT_CODES_REACHED
            } else {
                POINT_REACHED
            };
            if flags & !known != 0 {
                return Err(bad(format!("point {i} flags {flags}")));
            }
            let codes = |off: usize| if point_bytes > off { f(at + off) } else { 0.0 };
            let p = CalibrationPoint {
                target: f(at),
                nprobe: u(at + 4),
                refine: u(at + 8),
                recall_in: f(at + 12),
                recall_shifted: f(at + 16),
                reached: flags & POINT_REACHED != 0,
                codes_recall_in: codes(24),
                codes_recall_shifted: codes(28),
                codes_reached: flags & POINT_CODES_REACHED != 0,
            };
            let unit = |x: f32| x.is_finite() && (0.0..=1.0).contains(&x);
            if !unit(p.target)
                || p.target == 0.0
                || !unit(p.recall_in)
                || !unit(p.recall_shifted)
                || !unit(p.codes_recall_in)
                || !unit(p.codes_recall_shifted)
            {
                return Err(bad(format!("point {i} recall out of range")));
            }
            // What `measure_codes_only` writes: the codes reach a target only where the exact
            // re-rank did, and only with recalls at or above it.
            if p.codes_reached && !(p.reached && p.expected_codes_recall() >= p.target) {
                return Err(bad(format!(
                    "point {i} codes reached without the recalls for it"
                )));
            }
            if p.nprobe == 0 || p.nprobe as usize > nlist {
                return Err(bad(format!(
                    "point {i} nprobe {} (nlist {nlist})",
                    p.nprobe
                )));
            }
            if p.refine == 0 || p.refine as usize > MAX_CALIBRATED_REFINE {
                return Err(bad(format!("point {i} refine {}", p.refine)));
            }
            if points
                .last()
                .is_some_and(|q: &CalibrationPoint| q.target >= p.target)
            {
                return Err(bad("targets not ascending".into()));
            }
            points.push(p);
        }
        Ok(Calibration {
            k,
            queries,
            shift,
            points,
            tier_margin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Calibration {
        let p = |target, nprobe, refine, reached| CalibrationPoint {
            target,
            nprobe,
            refine,
            recall_in: target + 0.001,
            recall_shifted: target + 0.002,
            reached,
            codes_recall_in: target + 0.0005,
            codes_recall_shifted: target,
            codes_reached: nprobe == 16,
        };
        Calibration {
            k: 10,
            queries: 256,
            shift: 0.6,
            points: vec![
                p(0.9, 8, 10, true),
                p(0.95, 16, 12, true),
                p(0.99, 64, 40, false),
            ],
            tier_margin: 0.0,
        }
    }

    #[test]
    fn a_target_between_points_gets_the_next_higher_one() {
        let t = table();
        assert_eq!(t.point_for(0.2).map(|p| p.nprobe), Some(8));
        assert_eq!(t.point_for(0.9).map(|p| p.nprobe), Some(8));
        assert_eq!(t.point_for(0.91).map(|p| p.nprobe), Some(16));
        assert_eq!(t.point_for(0.999).map(|p| p.nprobe), Some(64));
        assert!(
            Calibration {
                points: vec![],
                ..t
            }
            .point_for(0.5)
            .is_none()
        );
    }

    #[test]
    fn bytes_round_trip_and_every_field_is_checked() {
        let t = table();
        let b = t.to_bytes();
        assert_eq!(Calibration::from_bytes(&b, 100).ok(), Some(t.clone()));
        // nprobe beyond the index's lists.
        assert!(Calibration::from_bytes(&b, 32).is_err());
        // Truncation, a hostile count, a bad flag, a NaN recall, unordered targets.
        assert!(Calibration::from_bytes(&b[..b.len() - 1], 100).is_err());
        let mut c = b.clone();
        c[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Calibration::from_bytes(&c, 100).is_err());
        let mut c = b.clone();
        c[SECTION_HEADER..SECTION_HEADER + 4].copy_from_slice(&0f32.to_le_bytes());
        assert!(Calibration::from_bytes(&c, 100).is_err(), "a target of 0");
        let mut c = b.clone();
        c[SECTION_HEADER + 20] = 7;
        assert!(Calibration::from_bytes(&c, 100).is_err());
        let mut c = b.clone();
        c[SECTION_HEADER + 24..SECTION_HEADER + 28].copy_from_slice(&1.5f32.to_le_bytes());
        assert!(
            Calibration::from_bytes(&c, 100).is_err(),
            "a codes recall above 1"
        );
        let mut c = b.clone();
        c[SECTION_HEADER + 12..SECTION_HEADER + 16].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Calibration::from_bytes(&c, 100).is_err());
        let mut c = b.clone();
        c[SECTION_HEADER + POINT_BYTES..SECTION_HEADER + POINT_BYTES + 4]
            .copy_from_slice(&0.5f32.to_le_bytes());
        assert!(Calibration::from_bytes(&c, 100).is_err());
        for cut in 0..b.len() {
            assert!(Calibration::from_bytes(&b[..cut], 100).is_err());
        }
    }

    /// The tier margin travels in the header word that was reserved (zero, never read), is
    /// refused outside [0, 1], and serves searches of at most the table's k only.
    #[test]
    fn the_tier_margin_round_trips_and_is_checked() {
        let t = Calibration {
            tier_margin: 0.375,
            ..table()
        };
        let b = t.to_bytes();
        assert_eq!(b[20..24], 0.375f32.to_le_bytes());
        assert_eq!(Calibration::from_bytes(&b, 100).ok(), Some(t.clone()));
        for bad in [f32::NAN, -0.25, 1.5, f32::INFINITY] {
            let mut c = b.clone();
            c[20..24].copy_from_slice(&bad.to_le_bytes());
            assert!(Calibration::from_bytes(&c, 100).is_err(), "{bad}");
        }
        assert_eq!(t.tier_margin_for(10), 0.375);
        assert_eq!(t.tier_margin_for(1), 0.375);
        assert_eq!(t.tier_margin_for(11), 1.0, "a k the table did not measure");
        assert_eq!(table().tier_margin_for(10), 1.0, "not measured");
        // Tables from before the margin (the word zero) read as unmeasured.
        let old = table().to_bytes();
        assert_eq!(old[20..24], [0; 4]);
        let read = Calibration::from_bytes(&old, 100).expect("an older table");
        assert_eq!(read.tier_margin_for(10), 1.0);
    }

    /// Tables written before the codes-only recalls (version 1, 24-byte points) still read,
    /// with no codes-only point.
    #[test]
    fn version_one_sections_still_read() {
        let t = table();
        let mut v1 = Vec::new();
        let b = t.to_bytes();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&b[4..SECTION_HEADER]);
        for i in 0..t.points.len() {
            let at = SECTION_HEADER + i * POINT_BYTES;
            v1.extend_from_slice(&b[at..at + 20]);
            v1.extend_from_slice(&u32::from(t.points[i].reached).to_le_bytes());
        }
        let read = Calibration::from_bytes(&v1, 100).expect("a version 1 table");
        for (r, p) in read.points.iter().zip(&t.points) {
            assert_eq!(
                (r.nprobe, r.refine, r.reached),
                (p.nprobe, p.refine, p.reached)
            );
            assert_eq!((r.codes_recall_in, r.codes_reached), (0.0, false));
        }
        assert!(read.codes_point_for(0.5).is_none());
        // A table without codes-only recalls is written as version 1, byte for byte.
        let plain = Calibration {
            points: read.points.clone(),
            ..t.clone()
        };
        assert_eq!(plain.to_bytes(), v1);
        // A version 1 point with the codes flag is refused (version 1 has no codes recalls).
        let mut c = v1.clone();
        c[SECTION_HEADER + 20] = 3;
        assert!(Calibration::from_bytes(&c, 100).is_err());
        // A version 2 length with a version 1 tag is refused.
        let mut c = b.clone();
        c[0..4].copy_from_slice(&1u32.to_le_bytes());
        assert!(Calibration::from_bytes(&c, 100).is_err());
    }

    /// The codes-only point for a target is the first at or above it whose codes reached.
    #[test]
    fn the_codes_only_point_is_the_first_that_reached_at_or_above_the_target() {
        let t = table();
        assert_eq!(t.codes_point_for(0.5).map(|p| p.nprobe), Some(16));
        assert_eq!(t.codes_point_for(0.95).map(|p| p.nprobe), Some(16));
        assert!(t.codes_point_for(0.96).is_none());
    }
}
