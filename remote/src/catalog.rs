//! The published versions of a prefix: listing them, reading one.

use object_store::ObjectMeta;

use crate::bucket::Bucket;
use crate::error::Result;
use crate::layout::{
    MANIFESTS, MAX_MANIFEST_BYTES, RemoteManifest, manifest_key, parse_manifest_key,
};

/// One published manifest object.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    pub version: u64,
    pub meta: ObjectMeta,
}

/// Every manifest under the prefix, oldest first.
pub(crate) async fn versions(bucket: &Bucket) -> Result<Vec<Published>> {
    let mut out: Vec<Published> = bucket
        .list(MANIFESTS)
        .await?
        .into_iter()
        .filter_map(|meta| {
            let rel = bucket.relative(&meta.location)?;
            Some(Published {
                version: parse_manifest_key(&rel)?,
                meta,
            })
        })
        .collect();
    out.sort_by_key(|p| p.version);
    Ok(out)
}

/// The newest version number, if any was published.
pub async fn latest_version(bucket: &Bucket) -> Result<Option<u64>> {
    Ok(versions(bucket).await?.last().map(|p| p.version))
}

/// Reads and checks manifest `version`.
pub async fn read_manifest(bucket: &Bucket, version: u64) -> Result<RemoteManifest> {
    let key = manifest_key(version);
    let bytes = bucket.get_small(&key, MAX_MANIFEST_BYTES).await?;
    RemoteManifest::parse(&key, version, &bytes)
}

/// Keys that manifest `version` names but the bucket does not hold (empty
/// when the version is whole): a consistency check for operators and tests.
pub async fn missing_objects(bucket: &Bucket, version: u64) -> Result<Vec<String>> {
    let m = read_manifest(bucket, version).await?;
    let mut present = std::collections::HashMap::new();
    for rel in ["collections", "extras"] {
        for meta in bucket.list(rel).await? {
            if let Some(k) = bucket.relative(&meta.location) {
                present.insert(k, meta.size);
            }
        }
    }
    let mut missing: Vec<String> = m
        .collections
        .values()
        .flat_map(|c| c.files.values().flat_map(|f| f.values()))
        .chain(m.extras.values())
        .filter(|f| present.get(&f.key) != Some(&f.len))
        .map(|f| f.key.clone())
        .collect();
    missing.sort();
    Ok(missing)
}

/// The newest manifest, if any was published.
pub async fn latest_manifest(bucket: &Bucket) -> Result<Option<RemoteManifest>> {
    match latest_version(bucket).await? {
        Some(v) => read_manifest(bucket, v).await.map(Some),
        None => Ok(None),
    }
}
