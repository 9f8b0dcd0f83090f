//! Parsing the JSON `filter` of a search request into the storage engine's
//! [`Filter`], so it can be applied inside the index scan.
//!
//! The syntax follows ChromaDB's `where` (Glimpse replaces it), so clients
//! carry over:
//!
//! ```json
//! {"label": 3}                                  // equality
//! {"label": {"$in": [1, 2]}, "split": {"$ne": "val"}}
//! {"score": {"$gte": 0.5, "$lt": 2}}            // ranges on numbers
//! {"$or": [{"label": 1}, {"$not": {"split": "train"}}]}
//! ```
//!
//! Several keys in one object are AND-ed.

use glimpse_storage::{Filter, MetaValue};
use serde_json::Value;

/// Why a filter was refused; the message names the offending part.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid filter: {0}")]
pub struct FilterError(pub String);

/// Parses a ChromaDB-style `where` object.
pub fn parse_filter(v: &Value) -> Result<Filter, FilterError> {
    parse_depth(v, 0)
}

const MAX_DEPTH: usize = 16;

fn parse_depth(v: &Value, depth: usize) -> Result<Filter, FilterError> {
    if depth > MAX_DEPTH {
        return Err(FilterError(format!(
            "nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| FilterError(format!("expected an object, got {v}")))?;
    if obj.is_empty() {
        return Err(FilterError("empty object".into()));
    }
    let mut parts = Vec::with_capacity(obj.len());
    for (key, val) in obj {
        let part = match key.as_str() {
            "$and" | "$or" => {
                let arr = val
                    .as_array()
                    .ok_or_else(|| FilterError(format!("{key} takes an array")))?;
                if arr.is_empty() {
                    return Err(FilterError(format!("{key} takes a non-empty array")));
                }
                let subs = arr
                    .iter()
                    .map(|s| parse_depth(s, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$and" {
                    Filter::And(subs)
                } else {
                    Filter::Or(subs)
                }
            }
            "$not" => Filter::Not(Box::new(parse_depth(val, depth + 1)?)),
            k if k.starts_with('$') => {
                return Err(FilterError(format!("unknown operator {k}")));
            }
            field => parse_field(field, val)?,
        };
        parts.push(part);
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Filter::And(parts)
    })
}

fn parse_field(field: &str, val: &Value) -> Result<Filter, FilterError> {
    let Some(ops) = val.as_object() else {
        return Ok(Filter::Eq {
            key: field.to_string(),
            value: scalar(field, val)?,
        });
    };
    if ops.is_empty() {
        return Err(FilterError(format!("field {field:?}: empty condition")));
    }
    let mut parts = Vec::new();
    let mut range = (None, None, None, None); // gt, gte, lt, lte
    for (op, arg) in ops {
        match op.as_str() {
            "$eq" => parts.push(Filter::Eq {
                key: field.to_string(),
                value: scalar(field, arg)?,
            }),
            "$ne" => parts.push(Filter::Not(Box::new(Filter::Eq {
                key: field.to_string(),
                value: scalar(field, arg)?,
            }))),
            "$in" | "$nin" => {
                let arr = arg
                    .as_array()
                    .ok_or_else(|| FilterError(format!("field {field:?}: {op} takes an array")))?;
                let values = arr
                    .iter()
                    .map(|x| scalar(field, x))
                    .collect::<Result<Vec<_>, _>>()?;
                let f = Filter::In {
                    key: field.to_string(),
                    values,
                };
                parts.push(if op == "$in" {
                    f
                } else {
                    Filter::Not(Box::new(f))
                });
            }
            "$gt" => range.0 = Some(number(field, op, arg)?),
            "$gte" => range.1 = Some(number(field, op, arg)?),
            "$lt" => range.2 = Some(number(field, op, arg)?),
            "$lte" => range.3 = Some(number(field, op, arg)?),
            other => {
                return Err(FilterError(format!(
                    "field {field:?}: unknown operator {other}"
                )));
            }
        }
    }
    if range != (None, None, None, None) {
        parts.push(Filter::Range {
            key: field.to_string(),
            gt: range.0,
            gte: range.1,
            lt: range.2,
            lte: range.3,
        });
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Filter::And(parts)
    })
}

fn scalar(field: &str, v: &Value) -> Result<MetaValue, FilterError> {
    match v {
        Value::String(s) => Ok(MetaValue::Str(s.clone())),
        Value::Bool(b) => Ok(MetaValue::Bool(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(MetaValue::Int(i))
            } else if let Some(f) = n.as_f64() {
                Ok(MetaValue::Float(f))
            } else {
                Err(FilterError(format!(
                    "field {field:?}: number {n} out of range"
                )))
            }
        }
        other => Err(FilterError(format!(
            "field {field:?}: expected a string, number or bool, got {other}"
        ))),
    }
}

fn number(field: &str, op: &str, v: &Value) -> Result<f64, FilterError> {
    v.as_f64()
        .filter(|f| f.is_finite())
        .ok_or_else(|| FilterError(format!("field {field:?}: {op} takes a finite number")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_chroma_style_filters() {
        assert_eq!(
            parse_filter(&json!({"label": 3})).unwrap(),
            Filter::Eq {
                key: "label".into(),
                value: MetaValue::Int(3)
            }
        );
        let f = parse_filter(&json!({"score": {"$gte": 0.5, "$lt": 2}})).unwrap();
        assert_eq!(
            f,
            Filter::Range {
                key: "score".into(),
                gt: None,
                gte: Some(0.5),
                lt: Some(2.0),
                lte: None
            }
        );
        let f = parse_filter(&json!({"$or": [{"a": "x"}, {"$not": {"b": true}}]})).unwrap();
        assert!(matches!(f, Filter::Or(ref v) if v.len() == 2));
        let f = parse_filter(&json!({"a": {"$nin": [1, 2]}})).unwrap();
        assert!(matches!(f, Filter::Not(_)));
    }

    #[test]
    fn refuses_bad_filters_with_a_reason() {
        for bad in [
            json!([1]),
            json!({}),
            json!({"$xor": []}),
            json!({"a": {"$gt": "x"}}),
            json!({"a": {"$in": 3}}),
            json!({"a": [1, 2]}),
            json!({"a": {"$regex": "x"}}),
        ] {
            let err = parse_filter(&bad).unwrap_err();
            assert!(err.0.len() > 5, "{bad}: {err}");
        }
    }
}
