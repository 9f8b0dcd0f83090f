//! Chroma's `where` (metadata) and `where_document` (document text) filters, as one engine
//! [`Filter`] evaluated inside the scan. `where` has the syntax `/v1` already speaks
//! (`crate::filter_json`); `where_document` supports `$contains`, `$not_contains`, `$regex`,
//! `$not_regex`, `$and` and `$or` over the document stored under [`DOCUMENT_KEY`].

use glimpse_storage::{Filter, TextPattern};
use serde_json::Value;

use super::error::{ChromaError, ChromaResult};
use super::wire::{DOCUMENT_KEY, cut};
use crate::filter_json::parse_filter;

/// Longest `$regex` pattern accepted, in bytes (compiled size is bounded separately).
const MAX_PATTERN_BYTES: usize = 4096;

/// Deepest `$and`/`$or` nesting accepted in `where_document`.
const MAX_DEPTH: usize = 16;

/// The filter of a `get`, `query` or `delete`: both parts AND-ed; `None` when neither is
/// given (an empty object counts as not given, as the client sends `{}` for "no filter").
pub fn build(
    where_: Option<&Value>,
    where_document: Option<&Value>,
) -> ChromaResult<Option<Filter>> {
    let mut parts = Vec::new();
    if let Some(w) = where_.filter(|w| !is_empty(w)) {
        parts.push(parse_filter(w).map_err(|e| ChromaError::invalid(e.to_string()))?);
    }
    if let Some(d) = where_document.filter(|d| !is_empty(d)) {
        parts.push(document_filter(d, 0)?);
    }
    Ok(match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Filter::And(parts)),
    })
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(|o| o.is_empty())
}

fn document_filter(v: &Value, depth: usize) -> ChromaResult<Filter> {
    if depth > MAX_DEPTH {
        return Err(ChromaError::invalid(format!(
            "where_document is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let obj = v.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
        ChromaError::invalid("where_document must be an object with exactly one operator")
    })?;
    let Some((op, arg)) = obj.iter().next() else {
        return Err(ChromaError::invalid("where_document is empty"));
    };
    let text = || {
        arg.as_str().map(str::to_string).ok_or_else(|| {
            ChromaError::invalid(format!("where_document {}: expected a string", cut(op)))
        })
    };
    Ok(match op.as_str() {
        "$contains" => Filter::Contains {
            key: DOCUMENT_KEY.into(),
            needle: text()?,
        },
        "$not_contains" => Filter::Not(Box::new(Filter::Contains {
            key: DOCUMENT_KEY.into(),
            needle: text()?,
        })),
        "$and" | "$or" => {
            let list = arg.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                ChromaError::invalid(format!("where_document {op} takes a non-empty list"))
            })?;
            let subs = list
                .iter()
                .map(|s| document_filter(s, depth + 1))
                .collect::<ChromaResult<Vec<_>>>()?;
            if op == "$and" {
                Filter::And(subs)
            } else {
                Filter::Or(subs)
            }
        }
        "$regex" | "$not_regex" => {
            let source = text()?;
            if source.len() > MAX_PATTERN_BYTES {
                return Err(ChromaError::invalid(format!(
                    "where_document {op}: the pattern is {} bytes; the limit is \
                     {MAX_PATTERN_BYTES}",
                    source.len()
                )));
            }
            let pattern = TextPattern::new(&source)
                .map_err(|e| ChromaError::invalid(format!("where_document {op}: {e}")))?;
            let f = Filter::Regex {
                key: DOCUMENT_KEY.into(),
                pattern,
            };
            if op == "$regex" {
                f
            } else {
                Filter::Not(Box::new(f))
            }
        }
        other => {
            return Err(ChromaError::invalid(format!(
                "where_document: unknown operator {}",
                cut(other)
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn both_parts_are_anded_and_empty_means_none() {
        assert!(build(Some(&json!({})), Some(&json!({}))).unwrap().is_none());
        let f = build(
            Some(&json!({"n": {"$gt": 1}})),
            Some(&json!({"$or": [{"$contains": "cat"}, {"$not_contains": "dog"}]})),
        )
        .unwrap()
        .unwrap();
        let Filter::And(parts) = f else {
            panic!("expected an AND");
        };
        assert_eq!(parts.len(), 2);
        assert!(matches!(&parts[1], Filter::Or(v) if v.len() == 2));
    }

    #[test]
    fn bad_document_filters_are_named() {
        for bad in [
            json!({"$contains": 3}),
            json!({"$regex": "(unclosed"}),
            json!({"$regex": "a".repeat(5000)}),
            json!({"$and": []}),
            json!({"$contains": "a", "$not_contains": "b"}),
            json!({"$like": "a"}),
        ] {
            let e = build(None, Some(&bad)).unwrap_err();
            assert_eq!(e.name, "InvalidArgumentError", "{bad}");
        }
        let mut deep = json!({"$contains": "x"});
        for _ in 0..40 {
            deep = json!({"$and": [deep]});
        }
        assert!(
            build(None, Some(&deep))
                .unwrap_err()
                .message
                .contains("deeper")
        );
    }
}
