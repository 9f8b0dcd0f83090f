//! Similarity metrics and the scored neighbor type.

use std::cmp::Ordering;

use crate::distance;

/// How two vectors are compared.
///
/// Scores keep their natural meaning so they can be shown to users:
/// cosine similarity and dot product (higher is better), squared
/// Euclidean distance for `L2` (lower is better). Use
/// [`Metric::cmp_best_first`] to order scores of any metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Cosine similarity in `[-1, 1]`; higher is better.
    Cosine,
    /// Inner product; higher is better.
    Dot,
    /// Squared Euclidean distance; lower is better.
    L2,
}

impl Metric {
    /// The lower-case name used in APIs and on disk (`cosine`, `dot`, `l2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// Parses the name written by [`Metric::as_str`] (case-insensitive).
    pub fn parse(name: &str) -> Option<Metric> {
        match name.to_ascii_lowercase().as_str() {
            "cosine" | "cos" => Some(Metric::Cosine),
            "dot" | "ip" | "inner_product" => Some(Metric::Dot),
            "l2" | "euclidean" => Some(Metric::L2),
            _ => None,
        }
    }

    /// Whether larger scores are better under this metric.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// The exact score of `a` against `b` (same length required).
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Cosine => distance::cosine_similarity(a, b),
            Metric::Dot => distance::dot(a, b),
            Metric::L2 => distance::l2sq(a, b),
        }
    }

    /// Orders two scores so that the better one comes first
    /// (`Ordering::Less` means `a` is better than `b`). NaN sorts last.
    pub fn cmp_best_first(self, a: f32, b: f32) -> Ordering {
        let ord = if self.higher_is_better() {
            b.partial_cmp(&a)
        } else {
            a.partial_cmp(&b)
        };
        ord.unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
    }

    /// The worst possible score, a neutral start for "best so far" searches.
    pub fn worst_score(self) -> f32 {
        if self.higher_is_better() {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One search result: a row number of the searched slice and its exact score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    /// Position of the vector in the slice the search ran over.
    pub row: u32,
    /// Score under the metric of the search (see [`Metric`]).
    pub score: f32,
}
