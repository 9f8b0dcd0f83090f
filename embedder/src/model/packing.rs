//! Where each sequence of a batch sits in the packed `(rows, hidden)` activation a tower runs.
//!
//! Sequences are packed, never padded: every token is one row, and everything but attention
//! is per row. Two layouts:
//! - [`Packing::from_runs`]: each sequence owns its rows, back to back (images, and text on
//!   devices whose attention runs through candle ops, which need runs of equal lengths);
//! - [`Packing::sharing_prefixes`]: under causal attention a token's row at every layer
//!   depends only on the tokens up to it, so sequences that begin with the same tokens share
//!   those rows, computed once. Every CLIP text query begins with the start-of-text token, so
//!   a batch of 16 short queries (6–7 tokens) computes 15 fewer rows of its ~105 (14 %), and
//!   queries written from one template ("a photo of a …") share the whole template. A shared
//!   row is computed by exactly the operations it goes through alone (every kernel computes
//!   each row alone), so sharing changes no bit of any result.

/// `count` sequences of `len` tokens each, stored back to back from token row `start` of a
/// packed `(tokens, hidden)` activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: usize,
    pub count: usize,
    pub len: usize,
}

/// One sequence of a [`Packing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// Where its row numbers start in [`Packing::rows`].
    at: usize,
    /// Its tokens.
    len: usize,
    /// Its first position whose row no earlier sequence computes: attention answers
    /// positions `first_new..len` of this sequence (and the earlier ones with the sequence
    /// that introduced them).
    first_new: usize,
}

/// The rows of every sequence of a batch; see the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packing {
    /// The row of each position of each sequence, sequences back to back.
    rows: Vec<u32>,
    spans: Vec<Span>,
    /// Rows of the activation.
    tokens: usize,
    /// The same layout as runs of equal-length sequences, when no row is shared.
    runs: Option<Vec<Run>>,
}

/// A batch of token sequences laid out with shared prefixes: the packing, the token id and
/// position of each computed row, and the order of the sequences in the packing.
pub(crate) struct SharedPrefixes {
    pub packing: Packing,
    /// The token of each row.
    pub ids: Vec<u32>,
    /// Each row's position within its sequence(s).
    pub positions: Vec<u32>,
    /// `order[s]` is the caller's index of the packing's sequence `s`.
    pub order: Vec<usize>,
}

impl Packing {
    /// Sequences that own their rows, as `runs` lay them out.
    pub(crate) fn from_runs(runs: &[Run]) -> Self {
        let mut rows = Vec::new();
        let mut spans = Vec::new();
        let mut tokens = 0;
        for run in runs {
            for s in 0..run.count {
                let start = run.start + s * run.len;
                spans.push(Span {
                    at: rows.len(),
                    len: run.len,
                    first_new: 0,
                });
                rows.extend((start..start + run.len).map(|r| r as u32));
                tokens = tokens.max(start + run.len);
            }
        }
        Packing {
            rows,
            spans,
            tokens,
            runs: Some(runs.to_vec()),
        }
    }

    /// Sequences (each at least one token) sharing the rows of their common prefixes, for
    /// causal attention only. They are sorted (stably) by their tokens, so each sequence's
    /// longest common prefix with any earlier one is its prefix in common with the one just
    /// before it, and its own rows (the positions after that prefix) are new rows appended
    /// in order. A sequence identical to the one before it computes no row at all.
    pub(crate) fn sharing_prefixes(seqs: &[&[u32]]) -> SharedPrefixes {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by(|&a, &b| seqs[a].cmp(seqs[b]));
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        let mut rows: Vec<u32> = Vec::with_capacity(total);
        let mut spans: Vec<Span> = Vec::with_capacity(seqs.len());
        let mut ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut previous: Option<(&[u32], usize)> = None;
        for &i in &order {
            let seq = seqs[i];
            let at = rows.len();
            let shared = match previous {
                Some((prev, prev_at)) => {
                    let common = prev.iter().zip(seq).take_while(|(a, b)| a == b).count();
                    rows.extend_from_within(prev_at..prev_at + common);
                    common
                }
                None => 0,
            };
            for (p, &id) in seq.iter().enumerate().skip(shared) {
                rows.push(ids.len() as u32);
                ids.push(id);
                positions.push(p as u32);
            }
            spans.push(Span {
                at,
                len: seq.len(),
                first_new: shared,
            });
            previous = Some((seq, at));
        }
        SharedPrefixes {
            packing: Packing {
                rows,
                spans,
                tokens: ids.len(),
                runs: None,
            },
            ids,
            positions,
            order,
        }
    }

    /// Sequences in the packing.
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Rows of the activation the packing describes.
    pub(crate) fn tokens(&self) -> usize {
        self.tokens
    }

    /// The layout as runs of equal-length sequences, when no row is shared.
    pub(crate) fn runs(&self) -> Option<&[Run]> {
        self.runs.as_deref()
    }

    /// Sequence `s`: the row of each of its positions, and its first position whose row it
    /// computes (see [`Span::first_new`]).
    pub(crate) fn sequence(&self, s: usize) -> (&[u32], usize) {
        let span = self.spans[s];
        (&self.rows[span.at..span.at + span.len], span.first_new)
    }

    /// Every sequence, as [`Self::sequence`] gives it.
    pub(crate) fn sequences(&self) -> impl Iterator<Item = (&[u32], usize)> + '_ {
        (0..self.len()).map(|s| self.sequence(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_own_their_rows() {
        let runs = [
            Run {
                start: 0,
                count: 2,
                len: 3,
            },
            Run {
                start: 6,
                count: 1,
                len: 2,
            },
        ];
        let p = Packing::from_runs(&runs);
        assert_eq!(p.len(), 3);
        assert_eq!(p.tokens(), 8);
        assert_eq!(p.runs(), Some(&runs[..]));
        let seqs: Vec<(Vec<u32>, usize)> = p.sequences().map(|(r, f)| (r.to_vec(), f)).collect();
        assert_eq!(
            seqs,
            vec![(vec![0, 1, 2], 0), (vec![3, 4, 5], 0), (vec![6, 7], 0)]
        );
    }

    /// Common prefixes share rows, every row is computed by exactly one sequence (the first
    /// to reach it), and each sequence's rows hold its own tokens at its own positions.
    #[test]
    fn common_prefixes_share_their_rows() {
        let texts: [&[u32]; 6] = [
            &[9, 1, 2, 8],
            &[9, 5, 8],
            &[9, 1, 2, 3, 8],
            &[9, 1, 2, 8],
            &[7, 8],
            &[9, 1, 4, 8],
        ];
        let shared = Packing::sharing_prefixes(&texts);
        let p = &shared.packing;
        assert_eq!(p.len(), texts.len());
        assert_eq!(p.runs(), None);
        // Sorted: [7 8], [9 1 2 3 8], [9 1 2 8] twice, [9 1 4 8], [9 5 8].
        assert_eq!(shared.order, vec![4, 2, 0, 3, 5, 1]);
        // Rows: 7 8 | 9 1 2 3 8 | 8 | - | 4 8 | 5 8.
        assert_eq!(shared.ids, vec![7, 8, 9, 1, 2, 3, 8, 8, 4, 8, 5, 8]);
        assert_eq!(p.tokens(), 12);
        let mut computed = vec![0; p.tokens()];
        for (s, &i) in shared.order.iter().enumerate() {
            let (rows, first_new) = p.sequence(s);
            assert_eq!(rows.len(), texts[i].len());
            for (pos, &r) in rows.iter().enumerate() {
                assert_eq!(shared.ids[r as usize], texts[i][pos]);
                assert_eq!(shared.positions[r as usize] as usize, pos);
                if pos >= first_new {
                    computed[r as usize] += 1;
                }
            }
        }
        assert_eq!(computed, vec![1; p.tokens()]);
        // The duplicate computes nothing; the start token is computed once for the 9s.
        assert_eq!(p.sequence(3).1, 4);
        assert_eq!(p.sequence(5), (&[2, 10, 11][..], 1));
    }
}
