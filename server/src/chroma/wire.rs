//! Chroma's request bodies and the conversions between its records and the engine's points:
//! embeddings (float arrays or base64 of little-endian `f32`), metadata values, and the
//! documents and URIs, which live in the point's metadata under reserved keys.

use std::collections::BTreeMap;

use base64::Engine as _;
use glimpse_storage::{MAX_ID_BYTES, MetaValue, Point};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{ChromaError, ChromaResult};

/// Metadata key holding a record's document (the key Chroma uses internally too).
pub const DOCUMENT_KEY: &str = "chroma:document";
/// Metadata key holding a record's URI.
pub const URI_KEY: &str = "chroma:uri";
/// Metadata key marking a record that was given a metadata object (possibly emptied since).
pub const HAS_METADATA_KEY: &str = "chroma:meta";
/// Keys starting with this are Chroma's own and refused in user metadata.
const RESERVED_PREFIX: &str = "chroma:";

/// One embedding as sent: numbers, or base64 of little-endian `f32` (what the client sends
/// when pre-flight says `supports_base64_encoding`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum WireEmbedding {
    /// A JSON array of numbers.
    Floats(Vec<f32>),
    /// Base64 of the little-endian `f32` bytes.
    Base64(String),
}

impl WireEmbedding {
    /// The vector, or why the base64 does not hold one.
    pub fn decode(self, index: usize) -> ChromaResult<Vec<f32>> {
        match self {
            WireEmbedding::Floats(v) => Ok(v),
            WireEmbedding::Base64(s) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s.as_bytes())
                    .map_err(|e| {
                        ChromaError::invalid(format!("embedding #{index}: invalid base64: {e}"))
                    })?;
                if bytes.len() % 4 != 0 {
                    return Err(ChromaError::invalid(format!(
                        "embedding #{index}: {} bytes of base64 data is not a whole number of \
                         float32 values",
                        bytes.len()
                    )));
                }
                Ok(bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            }
        }
    }
}

/// Body of `add`, `upsert` and `update`.
#[derive(Debug, Deserialize)]
pub struct RecordsBody {
    /// Record ids.
    pub ids: Vec<String>,
    /// One embedding per id.
    #[serde(default)]
    pub embeddings: Option<Vec<Option<WireEmbedding>>>,
    /// One metadata object (or null) per id.
    #[serde(default)]
    pub metadatas: Option<Vec<Option<Map<String, Value>>>>,
    /// One document (or null) per id.
    #[serde(default)]
    pub documents: Option<Vec<Option<String>>>,
    /// One URI (or null) per id.
    #[serde(default)]
    pub uris: Option<Vec<Option<String>>>,
}

/// Body of `get`.
#[derive(Debug, Deserialize, Default)]
pub struct GetBody {
    /// Only these ids.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    /// Metadata filter.
    #[serde(default, rename = "where")]
    pub where_: Option<Value>,
    /// Document filter.
    #[serde(default)]
    pub where_document: Option<Value>,
    /// Page size.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Page start.
    #[serde(default)]
    pub offset: Option<usize>,
    /// Fields to return.
    #[serde(default)]
    pub include: Option<Vec<String>>,
}

/// Body of `query`.
#[derive(Debug, Deserialize)]
pub struct QueryBody {
    /// Query vectors.
    #[serde(default)]
    pub query_embeddings: Option<Vec<WireEmbedding>>,
    /// Query texts, embedded by the server's CLIP model (a Glimpse extension).
    #[serde(default)]
    pub query_texts: Option<Vec<String>>,
    /// Results per query.
    #[serde(default)]
    pub n_results: Option<usize>,
    /// Restrict to these ids.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    /// Metadata filter.
    #[serde(default, rename = "where")]
    pub where_: Option<Value>,
    /// Document filter.
    #[serde(default)]
    pub where_document: Option<Value>,
    /// Fields to return.
    #[serde(default)]
    pub include: Option<Vec<String>>,
}

/// Body of `delete`.
#[derive(Debug, Deserialize, Default)]
pub struct DeleteBody {
    /// Only these ids.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    /// Metadata filter.
    #[serde(default, rename = "where")]
    pub where_: Option<Value>,
    /// Document filter.
    #[serde(default)]
    pub where_document: Option<Value>,
}

/// Which fields an answer carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Include {
    /// Vectors.
    pub embeddings: bool,
    /// Metadata.
    pub metadatas: bool,
    /// Documents.
    pub documents: bool,
    /// URIs.
    pub uris: bool,
    /// Distances (queries).
    pub distances: bool,
}

impl Include {
    /// Parses `include`, or Chroma's default when absent (`metadatas` and `documents`, plus
    /// `distances` for queries).
    pub fn parse(list: Option<&[String]>, query: bool) -> ChromaResult<(Include, Vec<String>)> {
        let default: Vec<String> = if query {
            vec!["metadatas".into(), "documents".into(), "distances".into()]
        } else {
            vec!["metadatas".into(), "documents".into()]
        };
        let names = list.map(<[String]>::to_vec).unwrap_or(default);
        let mut inc = Include::default();
        for n in &names {
            match n.as_str() {
                "embeddings" => inc.embeddings = true,
                "metadatas" => inc.metadatas = true,
                "documents" => inc.documents = true,
                "uris" => inc.uris = true,
                "distances" if query => inc.distances = true,
                // Loading the data behind URIs is the client's job (its data loader).
                "data" => {}
                other => {
                    return Err(ChromaError::invalid(format!(
                        "include must hold only {}; got {:?}",
                        if query {
                            "embeddings, metadatas, documents, uris, distances"
                        } else {
                            "embeddings, metadatas, documents, uris"
                        },
                        cut(other)
                    )));
                }
            }
        }
        Ok((inc, names))
    }
}

/// Checks a batch of ids: non-empty, at most [`MAX_ID_BYTES`] each, no duplicates, at most
/// `max_batch` of them.
pub fn check_ids(ids: &[String], max_batch: usize) -> ChromaResult<()> {
    if ids.len() > max_batch {
        return Err(ChromaError::invalid(format!(
            "Cannot submit more than {max_batch} records at once (got {}); split the batch",
            ids.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let mut dups = Vec::new();
    for id in ids {
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return Err(ChromaError::invalid(format!(
                "ids must be 1 to {MAX_ID_BYTES} bytes long; got one of {} bytes",
                id.len()
            )));
        }
        if !seen.insert(id.as_str()) && dups.len() < 5 {
            dups.push(cut(id));
        }
    }
    if !dups.is_empty() {
        return Err(ChromaError::duplicate_id(format!(
            "Expected IDs to be unique, found duplicates of: {}",
            dups.join(", ")
        )));
    }
    Ok(())
}

/// Checks that an optional per-record list has one entry per id.
pub fn check_len<T>(what: &str, list: &Option<Vec<T>>, ids: usize) -> ChromaResult<()> {
    match list {
        Some(l) if l.len() != ids => Err(ChromaError::invalid(format!(
            "Number of {what} ({}) must match number of ids ({ids})",
            l.len()
        ))),
        _ => Ok(()),
    }
}

/// What one metadata value becomes: a value, or (null) the removal of the key.
pub enum MetaChange {
    /// Set the key.
    Set(MetaValue),
    /// Remove the key (`update` with a null value).
    Remove,
}

/// Converts a client metadata object, refusing reserved keys and values the engine cannot
/// hold (lists, objects).
pub fn metadata_in(m: Map<String, Value>) -> ChromaResult<Vec<(String, MetaChange)>> {
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        if k.starts_with(RESERVED_PREFIX) {
            return Err(ChromaError::invalid(format!(
                "metadata key {:?} is reserved (keys starting with {RESERVED_PREFIX:?} are \
                 Chroma's own)",
                cut(&k)
            )));
        }
        let change = match v {
            Value::Null => MetaChange::Remove,
            Value::Bool(b) => MetaChange::Set(MetaValue::Bool(b)),
            Value::String(s) => MetaChange::Set(MetaValue::Str(s)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => MetaChange::Set(MetaValue::Int(i)),
                None => match n.as_f64() {
                    Some(f) if f.is_finite() => MetaChange::Set(MetaValue::Float(f)),
                    _ => {
                        return Err(ChromaError::invalid(format!(
                            "metadata value of {:?} is out of range",
                            cut(&k)
                        )));
                    }
                },
            },
            Value::Array(_) | Value::Object(_) => {
                return Err(ChromaError::invalid(format!(
                    "Expected metadata value of {:?} to be a str, int, float or bool; lists \
                     and objects are not supported",
                    cut(&k)
                )));
            }
        };
        out.push((k, change));
    }
    Ok(out)
}

/// Applies metadata changes (when the record was sent a metadata object), the document and
/// the URI (each when sent) to a point. The point's `image_path` follows an `image_path`
/// string, so the page shows the image.
pub fn apply_record(
    p: &mut Point,
    changes: Option<Vec<(String, MetaChange)>>,
    document: Option<String>,
    uri: Option<String>,
) {
    if let Some(changes) = changes {
        for (k, c) in changes {
            match c {
                MetaChange::Set(v) => {
                    p.metadata.insert(k, v);
                }
                MetaChange::Remove => {
                    p.metadata.remove(&k);
                }
            }
        }
        // Chroma answers `{}` for a record whose every key was removed, `null` for one that
        // never had metadata.
        p.metadata
            .insert(HAS_METADATA_KEY.to_string(), MetaValue::Bool(true));
    }
    for (key, value) in [(DOCUMENT_KEY, document), (URI_KEY, uri)] {
        if let Some(s) = value {
            p.metadata.insert(key.to_string(), MetaValue::Str(s));
        }
    }
    p.image_path = match p.metadata.get("image_path") {
        Some(MetaValue::Str(s)) => Some(s.clone()),
        _ => None,
    };
}

/// The client's view of a point's metadata: the reserved keys left out; `null` for a record
/// that was never given metadata (as Chroma answers), `{}` for one whose keys were all removed.
pub fn metadata_out(m: &BTreeMap<String, MetaValue>) -> Value {
    let user: Map<String, Value> = m
        .iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), meta_json(v)))
        .collect();
    if user.is_empty() && !m.contains_key(HAS_METADATA_KEY) {
        Value::Null
    } else {
        Value::Object(user)
    }
}

/// A reserved string field of a point (`DOCUMENT_KEY`, `URI_KEY`), or null.
pub fn reserved_out(m: &BTreeMap<String, MetaValue>, key: &str) -> Value {
    match m.get(key) {
        Some(MetaValue::Str(s)) => Value::String(s.clone()),
        _ => Value::Null,
    }
}

fn meta_json(v: &MetaValue) -> Value {
    match v {
        MetaValue::Bool(b) => Value::Bool(*b),
        MetaValue::Int(i) => Value::from(*i),
        MetaValue::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        MetaValue::Str(s) => Value::String(s.clone()),
    }
}

/// A vector as JSON numbers.
pub fn vector_out(v: &[f32]) -> Value {
    Value::Array(
        v.iter()
            .map(|x| {
                serde_json::Number::from_f64(f64::from(*x))
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            })
            .collect(),
    )
}

/// A value cut short for an error message.
pub fn cut(s: &str) -> String {
    crate::filter_json::cut(s).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64_embeddings_are_little_endian_f32() {
        let v = [1.5f32, -2.0, 0.25];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = base64::engine::general_purpose::STANDARD.encode(bytes);
        let e: WireEmbedding = serde_json::from_value(Value::String(s)).unwrap();
        assert_eq!(e.decode(0).unwrap(), v.to_vec());
        let bad: WireEmbedding = serde_json::from_value(Value::String("AAAAAAA=".into())).unwrap();
        assert!(bad.decode(3).unwrap_err().message.contains("#3"));
        let floats: WireEmbedding = serde_json::from_str("[1, 2.5]").unwrap();
        assert_eq!(floats.decode(0).unwrap(), vec![1.0, 2.5]);
    }

    #[test]
    fn reserved_keys_stay_hidden_and_refused() {
        let mut p = Point::default();
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"image_path": "a.jpg", "n": 3, "x": 0.5, "ok": true}"#)
                .unwrap();
        apply_record(
            &mut p,
            Some(metadata_in(m).unwrap()),
            Some("a doc".into()),
            None,
        );
        assert_eq!(p.image_path.as_deref(), Some("a.jpg"));
        assert_eq!(reserved_out(&p.metadata, DOCUMENT_KEY), "a doc");
        let out = metadata_out(&p.metadata);
        assert_eq!(
            out,
            serde_json::json!({"image_path": "a.jpg", "n": 3, "x": 0.5, "ok": true})
        );
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"chroma:document": "sneaky"}"#).unwrap();
        assert!(metadata_in(bad).is_err());
        let list: Map<String, Value> = serde_json::from_str(r#"{"tags": [1, 2]}"#).unwrap();
        assert!(metadata_in(list).is_err());
        let mut bare = Point::default();
        apply_record(&mut bare, None, Some("only a doc".into()), None);
        assert_eq!(metadata_out(&bare.metadata), Value::Null);
        // Every key removed: an empty object, not null.
        let gone: Map<String, Value> = serde_json::from_str(r#"{"n": null}"#).unwrap();
        let mut emptied = Point::default();
        apply_record(&mut emptied, Some(metadata_in(gone).unwrap()), None, None);
        assert_eq!(metadata_out(&emptied.metadata), serde_json::json!({}));
    }

    #[test]
    fn duplicate_and_oversized_ids_are_refused() {
        let ids: Vec<String> = ["a", "b", "a"].into_iter().map(String::from).collect();
        assert_eq!(check_ids(&ids, 10).unwrap_err().name, "DuplicateIDError");
        assert_eq!(
            check_ids(&["x".repeat(300)], 10).unwrap_err().name,
            "InvalidArgumentError"
        );
        assert!(check_ids(&ids[..2], 1).is_err());
        assert!(check_ids(&ids[..2], 2).is_ok());
    }
}
