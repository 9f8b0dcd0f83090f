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
        .ok_or_else(|| FilterError(format!("expected an object, got {}", describe(v))))?;
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
                return Err(FilterError(format!("unknown operator {}", cut(k))));
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
    // Named in error messages only, cut short.
    let shown = cut(field);
    let Some(ops) = val.as_object() else {
        return Ok(Filter::Eq {
            key: field.to_string(),
            value: scalar(field, val)?,
        });
    };
    if ops.is_empty() {
        return Err(FilterError(format!("field {shown:?}: empty condition")));
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
                    .ok_or_else(|| FilterError(format!("field {shown:?}: {op} takes an array")))?;
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
                    "field {shown:?}: unknown operator {}",
                    cut(other)
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
                    "field {:?}: number {n} out of range",
                    cut(field)
                )))
            }
        }
        other => Err(FilterError(format!(
            "field {:?}: expected a string, number or bool, got {}",
            cut(field),
            describe(other)
        ))),
    }
}

fn number(field: &str, op: &str, v: &Value) -> Result<f64, FilterError> {
    v.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
        FilterError(format!(
            "field {:?}: {op} takes a finite number",
            cut(field)
        ))
    })
}

/// Longest name or string quoted in an error message, in characters.
const SHOWN_CHARS: usize = 64;

/// `s` cut to [`SHOWN_CHARS`] characters for an error message.
pub(crate) fn cut(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]).into(),
        None => s.into(),
    }
}

/// What `v` is, for an error message: scalars as JSON (strings cut short), arrays and objects by
/// size. A container is never serialised: one nested thousands of levels deep would overflow
/// the stack, and a large one would be copied whole into the message.
fn describe(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(o) => format!("an object of {} keys", o.len()),
        Value::String(s) => format!("{:?}", cut(s)),
        scalar => scalar.to_string(),
    }
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

/// Fuzzing on stable Rust: arbitrary and deeply nested JSON values through [`parse_filter`]:
/// an error or a filter, never a panic or a stack overflow, and error messages of bounded size.
/// Inputs that once broke something live in `tests/fuzz-corpus/filter/` and are replayed by
/// `corpus_replays`.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod fuzz {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;

    /// Keys that steer the parser into every branch, and some that are plain fields.
    const KEYS: &[&str] = &[
        "$and", "$or", "$not", "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$x",
        "label", "", "$",
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(8, 128, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(
                    |kv| {
                        Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                    }
                ),
            ]
        })
    }

    /// Bytes of `v` as compact JSON, without recursing (so deep values can be measured).
    fn size(v: &Value) -> usize {
        let mut stack = vec![v];
        let mut n = 0;
        while let Some(v) = stack.pop() {
            n += match v {
                Value::Array(a) => {
                    stack.extend(a);
                    2 + a.len()
                }
                Value::Object(o) => {
                    stack.extend(o.values());
                    2 + o.keys().map(|k| k.len() + 4).sum::<usize>()
                }
                Value::String(s) => s.len() + 2,
                other => other.to_string().len(),
            };
        }
        n
    }

    /// Drops `v` without recursing: serde_json's own drop recurses once per level.
    fn dismantle(v: Value) {
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                Value::Array(a) => stack.extend(a),
                Value::Object(o) => stack.extend(o.into_iter().map(|(_, v)| v)),
                _ => {}
            }
        }
    }

    /// Parses `v` on a thread with a small stack: deep input must be refused without recursing
    /// once per level, and error messages stay short whatever the input's size.
    fn check(v: &Value) {
        let result = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn_scoped(s, || parse_filter(v))
                .unwrap()
                .join()
                .unwrap()
        });
        if let Err(FilterError(message)) = result {
            assert!(message.len() <= 512, "{} bytes of message", message.len());
        }
    }

    /// `{key: v}`, moving `v` (`json!` would serialise it again, recursing once per level).
    fn obj(key: &str, v: Value) -> Value {
        let mut m = Map::new();
        m.insert(key.to_owned(), v);
        Value::Object(m)
    }

    /// Chains of `$not`, `$and`, `$or`, arrays, fields or `$in` `depth` levels deep under a
    /// field, built without recursion.
    fn deep(depth: usize, kind: u8) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = match kind % 6 {
                0 => obj("$not", v),
                1 => obj("$and", Value::Array(vec![v])),
                2 => obj("$or", Value::Array(vec![json!({"a": 1}), v])),
                3 => Value::Array(vec![v]),
                4 => obj("a", v),
                _ => obj("$in", Value::Array(vec![v])),
            };
        }
        obj("field", v)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_values_parse_or_fail(v in value()) {
            check(&v);
            // A filter never holds more than a small multiple of its JSON.
            if let Ok(f) = parse_filter(&v) {
                let debug = format!("{f:?}").len();
                prop_assert!(debug <= 8 * size(&v) + 64, "{debug} for {}", size(&v));
            }
        }

        #[test]
        fn arbitrary_values_under_a_field_or_operator_parse_or_fail(
            key in proptest::sample::select(KEYS),
            v in value(),
        ) {
            check(&json!({ key: v }));
            check(&json!({ "f": { key: v } }));
        }

        #[test]
        fn deep_nesting_is_an_error_not_a_stack_overflow(
            depth in 17usize..20_000,
            kind in 0u8..6,
        ) {
            let v = deep(depth, kind);
            check(&v);
            // Moved, not cloned: cloning and dropping recurse once per level.
            let v = obj("$and", Value::Array(vec![v]));
            check(&v);
            dismantle(v);
        }
    }

    #[test]
    fn nesting_up_to_the_limit_still_parses() {
        let mut v = json!({"a": 1});
        for _ in 0..MAX_DEPTH {
            v = json!({ "$not": v });
        }
        assert!(parse_filter(&v).is_ok());
        let v = json!({ "$not": v });
        assert!(parse_filter(&v).unwrap_err().0.contains("nested deeper"));
    }

    /// Every file of the corpus is JSON text (serde_json's own limit of 128 levels applies, as
    /// for a request body), parsed and, when it is JSON, given to the filter parser.
    #[test]
    fn corpus_replays() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz-corpus/filter");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(v) = serde_json::from_slice::<Value>(&text) {
                check(&v);
            }
            n += 1;
        }
        assert!(n >= 2, "corpus {} has {n} files", dir.display());
    }
}
