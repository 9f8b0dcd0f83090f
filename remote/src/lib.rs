//! Glimpse on object storage (S3, GCS, Azure Blob, a local path) through
//! the `object_store` crate: the bucket is the source of truth, the data
//! directory holds the WAL and a cache.
//!
//! | module | job |
//! | --- | --- |
//! | `bucket` | one prefix: files up and down, the conditional create, listings |
//! | `layout` | the remote manifest and how keys are named (checked on read: the bucket is not trusted) |
//! | `catalog` | the published versions: list, newest, read one |
//! | `publisher` | the writer: committed state up, then a new manifest; fencing |
//! | `follower` | replicas and restores: a new manifest down, then a version swap |
//! | `gc` | old manifests and unreferenced objects, after a grace period |
//! | `record` | what the data directory remembers of its bucket |
//! | `status` | what `/readyz` and `/metrics` report |
//!
//! Data flows one way: the server calls in here, this crate calls the
//! storage engine (`committed_state`, `follow_collection`) and the bucket.

mod bucket;
mod catalog;
mod error;
mod follower;
mod gc;
mod layout;
mod publisher;
mod record;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use glimpse_storage::{Store, StoreOptions};

pub use bucket::Bucket;
pub use catalog::{latest_manifest, latest_version, missing_objects, read_manifest};
pub use error::{RemoteError, Result};
pub use follower::{Follower, SyncOutcome};
pub use layout::{RemoteCollection, RemoteFile, RemoteManifest, manifest_key};
pub use publisher::{Publisher, PublisherOptions};
pub use record::{APPLIED_RECORD, AppliedRecord, WRITER_RECORD, WriterRecord};
pub use status::{RemoteStatus, Role};

/// Opens the store of a writer whose data lives in `bucket`, and claims
/// the prefix by publishing a version of its own (after which any older
/// writer on the prefix is fenced at its next publication).
///
/// - A data directory that published to this URL before goes on if the
///   bucket's newest version is the one it published last; if another
///   writer published since, it refuses (start on an empty directory to
///   restore instead).
/// - An empty data directory restores the newest version first: its files
///   are fetched read-only, then the store reopens for writing and numbers
///   its WAL on from the restored checkpoint.
/// - A data directory with collections of its own and no record of this
///   bucket refuses when the bucket has data (one of the two would be lost).
pub async fn open_writer(
    bucket: Bucket,
    data_dir: &Path,
    store_opts: StoreOptions,
    opts: PublisherOptions,
) -> Result<(Arc<Store>, Arc<Publisher>)> {
    let status = Arc::new(RemoteStatus::new(Role::Writer, bucket.url()));
    let recorded: Option<WriterRecord> = record::read(&data_dir.join(WRITER_RECORD))?;
    bucket.check_conditional_create().await?;
    let latest = latest_manifest(&bucket).await?;
    let mut store = Arc::new(Store::open(data_dir, store_opts.clone())?);
    let seed = match (&recorded, latest) {
        (Some(r), _) if r.url != bucket.url() => {
            return Err(RemoteError::Diverged(format!(
                "{} was published to {}, not {}; use another --data-dir",
                data_dir.display(),
                r.url,
                bucket.url()
            )));
        }
        // The create of `pending` went through though its answer was lost (a timeout, a kill).
        (Some(r), Some(l))
            if r.version != l.version
                && !(r.pending == Some(l.version) && l.writer == r.session) =>
        {
            return Err(RemoteError::Diverged(format!(
                "the bucket's newest version is {}, but {} last published version {}: another writer published since. Start on an empty --data-dir to restore from the bucket",
                l.version,
                data_dir.display(),
                r.version
            )));
        }
        (Some(_), l) => l,
        (None, Some(l)) => {
            // A restore that was interrupted left its follower's record: it resumes.
            let resuming = data_dir.join(APPLIED_RECORD).exists();
            if !store.list().is_empty() && !resuming {
                return Err(RemoteError::Diverged(format!(
                    "{} has collections of its own and {} has version {}; refusing to mix them. Use an empty --data-dir to restore from the bucket",
                    data_dir.display(),
                    bucket.url(),
                    l.version
                )));
            }
            drop(store);
            restore(
                &bucket,
                data_dir,
                &store_opts,
                &opts.extras,
                &status,
                l.version,
            )
            .await?;
            store = Arc::new(Store::open(data_dir, store_opts)?);
            tracing::info!(
                version = l.version,
                url = bucket.url(),
                "restored from object storage"
            );
            Some(l)
        }
        (None, None) => None,
    };
    let publisher = Arc::new(Publisher::new(bucket, &store, data_dir, seed, opts, status).await?);
    publisher.publish(&store, true).await?;
    // The claim is this directory's writer record now; a restore's follower record goes.
    let _ = std::fs::remove_file(data_dir.join(APPLIED_RECORD));
    Ok((store, publisher))
}

/// Fetches the newest version into the (empty) store at `data_dir`.
async fn restore(
    bucket: &Bucket,
    data_dir: &Path,
    store_opts: &StoreOptions,
    extras: &[(String, PathBuf)],
    status: &Arc<RemoteStatus>,
    version: u64,
) -> Result<()> {
    let ro = StoreOptions {
        read_only: true,
        ..store_opts.clone()
    };
    let store = Arc::new(Store::open(data_dir, ro)?);
    let mut f = Follower::new(
        bucket.clone(),
        store.clone(),
        data_dir,
        extras.to_vec(),
        Duration::ZERO,
        status.clone(),
    )?;
    // The version looked at, not a newer one: a writer publishing meanwhile fences this one
    // at its claim, as it should.
    f.sync_to(Some(version)).await?;
    drop(f);
    store.close()?;
    Ok(())
}

/// Opens a read-only replica of `bucket` at `data_dir` (its cache: files
/// fetched before are reused) and its follower; call
/// [`Follower::sync_once`] to bring it up to date.
pub fn open_replica(
    bucket: Bucket,
    data_dir: &Path,
    store_opts: StoreOptions,
    extras: Vec<(String, PathBuf)>,
    grace: Duration,
) -> Result<(Arc<Store>, Follower)> {
    if data_dir.join(WRITER_RECORD).exists() {
        return Err(RemoteError::Diverged(format!(
            "{} is a writer's data directory; a replica (or a query from a bucket) needs a directory of its own",
            data_dir.display()
        )));
    }
    let status = Arc::new(RemoteStatus::new(Role::Replica, bucket.url()));
    let ro = StoreOptions {
        read_only: true,
        ..store_opts
    };
    let store = Arc::new(Store::open(data_dir, ro)?);
    let follower = Follower::new(bucket, store.clone(), data_dir, extras, grace, status)?;
    Ok((store, follower))
}
