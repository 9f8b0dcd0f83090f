//! Metadata filters evaluated per row inside a scan.

use crate::meta_value::MetaValue;

/// A predicate over a point's metadata. A missing key makes every leaf
/// false (so `Not(Eq{..})` matches points without the key).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `metadata[key] == value`; integers and floats compare numerically.
    Eq {
        /// Metadata key.
        key: String,
        /// Value to compare with.
        value: MetaValue,
    },
    /// Numeric range; every bound given must hold. Non-numeric values fail.
    Range {
        /// Metadata key.
        key: String,
        /// Exclusive lower bound.
        gt: Option<f64>,
        /// Inclusive lower bound.
        gte: Option<f64>,
        /// Exclusive upper bound.
        lt: Option<f64>,
        /// Inclusive upper bound.
        lte: Option<f64>,
    },
    /// `metadata[key]` equals one of `values`.
    In {
        /// Metadata key.
        key: String,
        /// Accepted values.
        values: Vec<MetaValue>,
    },
    /// `metadata[key]` is a string containing `needle` (case-sensitive, byte-wise); any other
    /// value, or none, fails. ChromaDB's `where_document` `$contains` is this on the document.
    Contains {
        /// Metadata key.
        key: String,
        /// Substring to look for.
        needle: String,
    },
    /// `metadata[key]` is a string in which `pattern` finds a match; any other value, or none,
    /// fails. ChromaDB's `where_document` `$regex`.
    Regex {
        /// Metadata key.
        key: String,
        /// The compiled pattern.
        pattern: TextPattern,
    },
    /// All sub-filters hold (true when empty).
    And(Vec<Filter>),
    /// At least one sub-filter holds (false when empty).
    Or(Vec<Filter>),
    /// The sub-filter does not hold.
    Not(Box<Filter>),
}

/// A compiled regular expression for [`Filter::Regex`]: the `regex` crate's syntax, matched in
/// time linear in the text, compiled under a size limit so that a hostile pattern cannot take
/// much memory.
#[derive(Debug, Clone)]
pub struct TextPattern(regex::Regex);

impl TextPattern {
    /// Most bytes a compiled pattern (and its lazy DFA) may take.
    pub const MAX_COMPILED_BYTES: usize = 1 << 20;

    /// Compiles `pattern`, or says why it cannot be (syntax, or too large once compiled).
    pub fn new(pattern: &str) -> Result<TextPattern, String> {
        regex::RegexBuilder::new(pattern)
            .size_limit(Self::MAX_COMPILED_BYTES)
            .dfa_size_limit(Self::MAX_COMPILED_BYTES)
            .build()
            .map(TextPattern)
            .map_err(|e| e.to_string())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Two patterns are equal when they were written the same.
impl PartialEq for TextPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// A borrowed metadata value, from the memtable or an mmapped segment.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MetaRef<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl MetaRef<'_> {
    fn as_f64(self) -> Option<f64> {
        match self {
            MetaRef::Int(i) => Some(i as f64),
            MetaRef::Float(f) => Some(f),
            _ => None,
        }
    }

    fn equals(self, v: &MetaValue) -> bool {
        match (self, v) {
            (MetaRef::Bool(a), MetaValue::Bool(b)) => a == *b,
            (MetaRef::Str(a), MetaValue::Str(b)) => a == b,
            (MetaRef::Int(a), MetaValue::Int(b)) => a == *b,
            (MetaRef::Int(a), MetaValue::Float(b)) => (a as f64) == *b,
            (MetaRef::Float(a), MetaValue::Int(b)) => a == (*b as f64),
            (MetaRef::Float(a), MetaValue::Float(b)) => a == *b,
            _ => false,
        }
    }
}

impl<'a> From<&'a MetaValue> for MetaRef<'a> {
    fn from(v: &'a MetaValue) -> Self {
        match v {
            MetaValue::Bool(b) => MetaRef::Bool(*b),
            MetaValue::Int(i) => MetaRef::Int(*i),
            MetaValue::Float(f) => MetaRef::Float(*f),
            MetaValue::Str(s) => MetaRef::Str(s),
        }
    }
}

/// Key lookup over some metadata representation.
pub(crate) trait MetaLookup {
    fn lookup(&self, key: &str) -> Option<MetaRef<'_>>;
}

impl MetaLookup for std::collections::BTreeMap<String, MetaValue> {
    fn lookup(&self, key: &str) -> Option<MetaRef<'_>> {
        self.get(key).map(MetaRef::from)
    }
}

impl Filter {
    /// Evaluates the filter against a metadata map.
    pub fn matches(&self, meta: &std::collections::BTreeMap<String, MetaValue>) -> bool {
        self.eval(meta)
    }

    pub(crate) fn eval<M: MetaLookup + ?Sized>(&self, meta: &M) -> bool {
        match self {
            Filter::Eq { key, value } => meta.lookup(key).is_some_and(|v| v.equals(value)),
            Filter::Range {
                key,
                gt,
                gte,
                lt,
                lte,
            } => {
                let Some(x) = meta.lookup(key).and_then(MetaRef::as_f64) else {
                    return false;
                };
                gt.is_none_or(|b| x > b)
                    && gte.is_none_or(|b| x >= b)
                    && lt.is_none_or(|b| x < b)
                    && lte.is_none_or(|b| x <= b)
            }
            Filter::In { key, values } => meta
                .lookup(key)
                .is_some_and(|v| values.iter().any(|c| v.equals(c))),
            Filter::Contains { key, needle } => {
                matches!(meta.lookup(key), Some(MetaRef::Str(s)) if s.contains(needle.as_str()))
            }
            Filter::Regex { key, pattern } => {
                matches!(meta.lookup(key), Some(MetaRef::Str(s)) if pattern.0.is_match(s))
            }
            Filter::And(fs) => fs.iter().all(|f| f.eval(meta)),
            Filter::Or(fs) => fs.iter().any(|f| f.eval(meta)),
            Filter::Not(f) => !f.eval(meta),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn evaluates_all_variants() {
        let mut m = BTreeMap::new();
        m.insert("n".to_string(), MetaValue::Int(5));
        m.insert("s".to_string(), MetaValue::Str("cat".into()));
        m.insert("b".to_string(), MetaValue::Bool(true));
        let eq = |k: &str, v: MetaValue| Filter::Eq {
            key: k.into(),
            value: v,
        };
        assert!(eq("n", MetaValue::Int(5)).matches(&m));
        assert!(eq("n", MetaValue::Float(5.0)).matches(&m));
        assert!(!eq("n", MetaValue::Str("5".into())).matches(&m));
        assert!(!eq("missing", MetaValue::Int(5)).matches(&m));
        let range = Filter::Range {
            key: "n".into(),
            gt: Some(4.0),
            gte: None,
            lt: None,
            lte: Some(5.0),
        };
        assert!(range.matches(&m));
        let range = Filter::Range {
            key: "n".into(),
            gt: Some(5.0),
            gte: None,
            lt: None,
            lte: None,
        };
        assert!(!range.matches(&m));
        let range_s = Filter::Range {
            key: "s".into(),
            gt: None,
            gte: None,
            lt: None,
            lte: None,
        };
        assert!(!range_s.matches(&m));
        let inn = Filter::In {
            key: "s".into(),
            values: vec![MetaValue::Str("dog".into()), MetaValue::Str("cat".into())],
        };
        assert!(inn.matches(&m));
        assert!(Filter::And(vec![inn.clone(), eq("b", MetaValue::Bool(true))]).matches(&m));
        assert!(!Filter::And(vec![inn.clone(), eq("b", MetaValue::Bool(false))]).matches(&m));
        assert!(Filter::Or(vec![eq("b", MetaValue::Bool(false)), inn.clone()]).matches(&m));
        assert!(!Filter::Or(vec![]).matches(&m));
        assert!(Filter::Not(Box::new(eq("missing", MetaValue::Int(1)))).matches(&m));
    }

    #[test]
    fn contains_is_a_case_sensitive_substring_of_strings_only() {
        let mut m = BTreeMap::new();
        m.insert("doc".to_string(), MetaValue::Str("a Black cat".into()));
        m.insert("n".to_string(), MetaValue::Int(12));
        let c = |k: &str, n: &str| Filter::Contains {
            key: k.into(),
            needle: n.into(),
        };
        assert!(c("doc", "Black c").matches(&m));
        assert!(c("doc", "").matches(&m));
        assert!(!c("doc", "black").matches(&m));
        assert!(!c("n", "1").matches(&m), "numbers are not searched as text");
        assert!(!c("missing", "").matches(&m));
        assert!(Filter::Not(Box::new(c("missing", "x"))).matches(&m));
    }

    #[test]
    fn regex_matches_strings_only_and_refuses_huge_patterns() {
        let mut m = BTreeMap::new();
        m.insert("doc".to_string(), MetaValue::Str("The quick fox".into()));
        m.insert("n".to_string(), MetaValue::Int(7));
        let r = |k: &str, p: &str| Filter::Regex {
            key: k.into(),
            pattern: TextPattern::new(p).unwrap(),
        };
        assert!(r("doc", "[Qq]uick").matches(&m));
        assert!(r("doc", "^The.*x$").matches(&m));
        assert!(!r("doc", "^quick").matches(&m));
        assert!(!r("n", "7").matches(&m));
        assert!(!r("missing", ".*").matches(&m));
        assert!(TextPattern::new("(unclosed").is_err());
        // Compiles to far more than the limit.
        assert!(TextPattern::new(r"\w{1000}\w{1000}\w{1000}").is_err());
    }
}
