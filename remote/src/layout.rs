//! What the bucket holds and how its keys are named.
//!
//! ```text
//! <prefix>/manifests/<version:020>.json          written once, with a conditional create
//! <prefix>/collections/<name>/seg-<id:012>/<session>/<n>/<file>
//! <prefix>/extras/<session>/<n>/<name>           server files beside the store (chroma.json)
//! ```
//! `<session>` is a fresh UUID per writer process and `<n>` counts its
//! uploads: a key is never written twice, so a writer that lost a race (or was killed half-way) can never
//! overwrite an object that a published manifest names. Segment files are
//! immutable; a file reused by the next version keeps its key.

use std::collections::BTreeMap;

use glimpse_storage::is_valid_collection_name;
use glimpse_storage::manifest::Manifest;
use serde::{Deserialize, Serialize};

use crate::error::{RemoteError, Result};

/// Folder of the manifests under the prefix.
pub const MANIFESTS: &str = "manifests";
/// Format number of [`RemoteManifest`].
pub const FORMAT: u32 = 1;
/// Largest manifest a reader accepts (a million segments' worth of file
/// lists is far less).
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// The key of manifest `version`, relative to the prefix.
pub fn manifest_key(version: u64) -> String {
    format!("{MANIFESTS}/{version:020}.json")
}

/// The version of a manifest key (relative to the prefix), if it is one.
pub fn parse_manifest_key(rel: &str) -> Option<u64> {
    let name = rel.strip_prefix(MANIFESTS)?.strip_prefix('/')?;
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The key of a segment file uploaded by writer `session` as its `n`th upload (a collection
/// dropped and made again numbers its segments from 1 again: the count keeps keys unique).
pub fn segment_file_key(
    collection: &str,
    segment: u64,
    session: &str,
    n: u64,
    file: &str,
) -> String {
    format!("collections/{collection}/seg-{segment:012}/{session}/{n}/{file}")
}

/// The key of an extra file uploaded by writer `session` (its `n`th upload).
pub fn extra_key(session: &str, n: u64, name: &str) -> String {
    format!("extras/{session}/{n}/{name}")
}

/// One object a manifest names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteFile {
    /// Key relative to the prefix.
    pub key: String,
    /// Length in bytes.
    pub len: u64,
}

/// One collection of a published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteCollection {
    /// The collection's own manifest (segments, tombstone generations,
    /// deferred index files, WAL checkpoint).
    pub manifest: Manifest,
    /// Per segment id, its files by name.
    pub files: BTreeMap<u64, BTreeMap<String, RemoteFile>>,
}

/// One published version of a whole store: `manifests/<version>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// This version (equal to the number in its key).
    pub version: u64,
    /// The writer session that published it.
    pub writer: String,
    /// Milliseconds since the Unix epoch at publication.
    pub published_at_ms: u64,
    /// Collections by name.
    pub collections: BTreeMap<String, RemoteCollection>,
    /// Server files kept beside the store (for example `chroma.json`), by name.
    #[serde(default)]
    pub extras: BTreeMap<String, RemoteFile>,
}

impl RemoteManifest {
    /// Whether `other` describes the same data (ignores version, writer, time).
    pub fn same_content(&self, other: &RemoteManifest) -> bool {
        self.collections == other.collections && self.extras == other.extras
    }

    /// Every key it names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.collections
            .values()
            .flat_map(|c| c.files.values().flat_map(|f| f.values()))
            .chain(self.extras.values())
            .map(|f| f.key.as_str())
    }

    /// Parses and checks a manifest read from `key`: the bucket is not
    /// trusted, and names from it become local paths.
    pub fn parse(key: &str, version: u64, bytes: &[u8]) -> Result<RemoteManifest> {
        let bad = |detail: String| RemoteError::BadManifest {
            key: key.to_string(),
            detail,
        };
        let m: RemoteManifest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(bad(format!(
                "format {} (this build reads {FORMAT})",
                m.format
            )));
        }
        if m.version != version {
            return Err(bad(format!(
                "says version {}, key says {version}",
                m.version
            )));
        }
        for (name, c) in &m.collections {
            if !is_valid_collection_name(name) || c.manifest.name != *name {
                return Err(bad(format!("bad collection name {name:?}")));
            }
            let ids: Vec<u64> = c.manifest.segments.iter().map(|s| s.id).collect();
            if ids.len() != c.files.len() || ids.iter().any(|id| !c.files.contains_key(id)) {
                return Err(bad(format!(
                    "collection {name}: segment files do not match its segments"
                )));
            }
            for files in c.files.values() {
                for (fname, f) in files {
                    check_file(fname, f).map_err(&bad)?;
                }
            }
        }
        for (fname, f) in &m.extras {
            check_file(fname, f).map_err(&bad)?;
        }
        Ok(m)
    }
}

/// A file name that is safe as one local path component, and a key that
/// stays under the prefix.
fn check_file(name: &str, f: &RemoteFile) -> std::result::Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !plain {
        return Err(format!("file name {name:?} is not a plain file name"));
    }
    if f.key.is_empty()
        || f.key.starts_with('/')
        || f.key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(format!("key {:?} is not a relative key", f.key));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keys_round_trip_and_sort_by_version() {
        assert_eq!(parse_manifest_key(&manifest_key(42)), Some(42));
        assert!(manifest_key(9) < manifest_key(10));
        assert_eq!(parse_manifest_key("manifests/42.json"), None);
        assert_eq!(
            parse_manifest_key("manifests/0000000000000000004a.json"),
            None
        );
        assert_eq!(parse_manifest_key("other/00000000000000000042.json"), None);
    }

    fn manifest_with_file(name: &str, key: &str) -> Vec<u8> {
        serde_json::json!({
            "format": 1, "version": 3, "writer": "w", "published_at_ms": 0,
            "collections": {},
            "extras": { name: { "key": key, "len": 1 } }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn hostile_names_and_keys_are_refused() {
        assert!(
            RemoteManifest::parse(
                "k",
                3,
                &manifest_with_file("chroma.json", "extras/a/1/chroma.json")
            )
            .is_ok()
        );
        for (name, key) in [
            ("../evil", "extras/a"),
            ("a/b", "extras/a"),
            (".hidden", "extras/a"),
            ("ok", "../../etc/passwd"),
            ("ok", "/abs"),
            ("ok", "a//b"),
        ] {
            assert!(
                RemoteManifest::parse("k", 3, &manifest_with_file(name, key)).is_err(),
                "{name} {key}"
            );
        }
        assert!(RemoteManifest::parse("k", 4, &manifest_with_file("x", "extras/x")).is_err());
        assert!(RemoteManifest::parse("k", 3, b"{not json").is_err());
    }
}
