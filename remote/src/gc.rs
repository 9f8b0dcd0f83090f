//! Garbage collection of a prefix: old manifests and the objects no kept
//! manifest names.
//!
//! A manifest is kept while it is one of the newest `retain` or its
//! successor appeared less than `grace` ago (a replica that read it while it
//! was the newest has that long to fetch its files). An object is deleted
//! when no kept manifest names it and it is older than `grace` (so an upload
//! whose manifest is not written yet is never taken).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::bucket::Bucket;
use crate::catalog::{read_manifest, versions};
use crate::error::Result;
use crate::layout::MANIFESTS;

/// Runs one collection; returns how many objects it deleted.
pub(crate) async fn collect(bucket: &Bucket, retain: usize, grace: Duration) -> Result<u64> {
    let published = versions(bucket).await?;
    let n = published.len();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (i, p) in published.iter().enumerate() {
        let newest = i + retain.max(1) >= n;
        let superseded_long_ago = published
            .get(i + 1)
            .is_some_and(|next| age(&next.meta.last_modified) >= grace);
        if newest || !superseded_long_ago {
            kept.push(p.version);
        } else {
            dropped.push(p.meta.location.clone());
        }
    }
    let mut referenced = HashSet::new();
    for v in &kept {
        let m = read_manifest(bucket, *v).await?;
        referenced.extend(m.keys().map(str::to_string));
    }
    let mut deleted = 0u64;
    for rel in ["collections", "extras"] {
        for meta in bucket.list(rel).await? {
            let Some(key) = bucket.relative(&meta.location) else {
                continue;
            };
            if !referenced.contains(&key) && age(&meta.last_modified) >= grace {
                bucket.delete(&meta.location).await?;
                deleted += 1;
            }
        }
    }
    // Manifests last: until they go, a reader of one finds every object it names.
    for loc in dropped {
        bucket.delete(&loc).await?;
        deleted += 1;
    }
    if deleted > 0 {
        tracing::info!(
            deleted,
            kept = kept.len(),
            prefix = MANIFESTS,
            "object storage garbage collected"
        );
    }
    Ok(deleted)
}

/// How long ago `t` was (zero if it is in the future).
fn age<T: Into<SystemTime> + Clone>(t: &T) -> Duration {
    SystemTime::now()
        .duration_since(t.clone().into())
        .unwrap_or(Duration::ZERO)
}
