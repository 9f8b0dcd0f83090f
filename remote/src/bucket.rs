//! One bucket prefix behind `object_store`: files in and out, the
//! conditional create that fences writers, listings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutMode, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};

use crate::error::{RemoteError, Result};

/// Files above this go up in parts (S3 takes at most 5 GiB in one PUT, and a
/// failed part is retried alone).
const MULTIPART_ABOVE: u64 = 16 << 20;
/// Part size of a multipart upload, and read size of uploads and downloads.
const CHUNK: usize = 8 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// A prefix in an object store, opened from a `--remote` URL.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    root: Key,
    url: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.url)
    }
}

impl Bucket {
    /// Opens `url` (`s3://bucket/prefix`, `gs://…`, `az://…`, `file:///abs/path`).
    /// Credentials, region and endpoint come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, …).
    pub fn open(url: &str) -> Result<Bucket> {
        Self::open_with(url, &[])
    }

    /// [`open`](Self::open) with settings that override the environment's, by the
    /// lower-case names of the variables (`aws_endpoint_url`, `aws_allow_http`, ...).
    pub fn open_with(url: &str, overrides: &[(&str, &str)]) -> Result<Bucket> {
        let bad = |detail: String| RemoteError::BadUrl {
            url: url.to_string(),
            detail,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (scheme, path) =
            object_store::ObjectStoreScheme::parse(&parsed).map_err(|e| bad(e.to_string()))?;
        let root = Key::parse(path).map_err(|e| bad(e.to_string()))?;
        // A bucket that does not answer fails a request within about half a minute (so a
        // bulk load answers 503 rather than hanging), instead of the crate's three minutes.
        let retry = RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        };
        // Timeouts go in as settings (not a ClientOptions, which would replace the ones the
        // environment set, such as AWS_ALLOW_HTTP); the caller's overrides come after them.
        let settings: Vec<(&str, &str)> = [("connect_timeout", "5s"), ("timeout", "120s")]
            .into_iter()
            .chain(overrides.iter().copied())
            .collect();
        let store: Box<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Local => {
                // LocalFileSystem writes below the path, which must exist.
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| bad("not an absolute file path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| RemoteError::io(&dir, e))?;
                Box::new(LocalFileSystem::new())
            }
            // Credentials, region and endpoint from the environment (AWS_*, GOOGLE_*, AZURE_*).
            ObjectStoreScheme::AmazonS3 => Box::new(
                settings
                    .iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, *v)))
                    .fold(AmazonS3Builder::from_env(), |b, (k, v)| b.with_config(k, v))
                    .with_url(url)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            ObjectStoreScheme::GoogleCloudStorage => Box::new(
                settings
                    .iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, *v)))
                    .fold(GoogleCloudStorageBuilder::from_env(), |b, (k, v)| {
                        b.with_config(k, v)
                    })
                    .with_url(url)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            ObjectStoreScheme::MicrosoftAzure => Box::new(
                settings
                    .iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, *v)))
                    .fold(MicrosoftAzureBuilder::from_env(), |b, (k, v)| {
                        b.with_config(k, v)
                    })
                    .with_url(url)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                    "{other:?} is not one of s3://, gs://, az://, file://"
                )));
            }
        };
        Ok(Bucket {
            store: Arc::from(store),
            root,
            url: url.to_string(),
        })
    }

    /// The URL it was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The full key of `rel` (a `/`-separated path under the prefix).
    pub(crate) fn key(&self, rel: &str) -> Key {
        let rel = Key::from(rel);
        let parts: Vec<_> = self.root.parts().chain(rel.parts()).collect();
        Key::from_iter(parts)
    }

    /// `key` relative to the prefix, if it is under it.
    pub(crate) fn relative(&self, key: &Key) -> Option<String> {
        key.prefix_match(&self.root)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>())
            .map(|v| v.join("/"))
    }

    /// Uploads the file at `local` to `rel`; returns its length.
    pub(crate) async fn put_file(&self, local: &Path, rel: &str) -> Result<u64> {
        // tokio's files: reads and writes of gigabytes go to the blocking pool, not a
        // runtime worker that also answers probes and searches.
        let key = self.key(rel);
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| RemoteError::io(local, e))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| RemoteError::io(local, e))?
            .len();
        if len <= MULTIPART_ABOVE {
            let mut buf = Vec::with_capacity(len as usize);
            file.read_to_end(&mut buf)
                .await
                .map_err(|e| RemoteError::io(local, e))?;
            self.store
                .put(&key, PutPayload::from(buf))
                .await
                .map_err(RemoteError::store)?;
            return Ok(len);
        }
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(RemoteError::store)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        loop {
            let n = read_full(&mut file, &mut buf)
                .await
                .map_err(|e| RemoteError::io(local, e))?;
            if n == 0 {
                break;
            }
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                // Parts already sent would otherwise be kept (and billed) by the store.
                let _ = w.abort().await;
                return Err(RemoteError::store(e));
            }
            w.write(&buf[..n]);
            sent += n as u64;
        }
        w.finish().await.map_err(RemoteError::store)?;
        Ok(sent)
    }

    /// Downloads `rel` into `local` (written to a temp name, fsynced,
    /// renamed); refuses an object whose length is not `expect_len`.
    pub(crate) async fn get_file(&self, rel: &str, local: &Path, expect_len: u64) -> Result<()> {
        let key = self.key(rel);
        let got = self.store.get(&key).await.map_err(RemoteError::store)?;
        if got.meta.size != expect_len {
            return Err(RemoteError::BadManifest {
                key: rel.to_string(),
                detail: format!(
                    "object is {} bytes, the manifest says {expect_len}",
                    got.meta.size
                ),
            });
        }
        let tmp = local.with_extension("part");
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| RemoteError::io(&tmp, e))?;
        let mut stream = got.into_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(RemoteError::store)?;
            written += chunk.len() as u64;
            if written > expect_len {
                break;
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| RemoteError::io(&tmp, e))?;
        }
        if written != expect_len {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(RemoteError::Unavailable(format!(
                "download of {rel} ended at {written} of {expect_len} bytes"
            )));
        }
        file.sync_all()
            .await
            .map_err(|e| RemoteError::io(&tmp, e))?;
        tokio::fs::rename(&tmp, local)
            .await
            .map_err(|e| RemoteError::io(local, e))?;
        Ok(())
    }

    /// Creates `rel` with `bytes` unless it exists: `Ok(false)` when another
    /// writer created it first.
    pub(crate) async fn create(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.key(rel), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(RemoteError::store(e)),
        }
    }

    /// Proves that the store honours conditional creates (some S3-compatible stores ignore
    /// `If-None-Match` and would let two writers overwrite each other's manifests): creates
    /// one probe object twice and expects the second to be refused, then deletes it.
    pub async fn check_conditional_create(&self) -> Result<()> {
        let rel = format!("probes/{}", uuid::Uuid::new_v4().simple());
        let first = self.create(&rel, b"probe".to_vec()).await?;
        let second = self.create(&rel, b"probe".to_vec()).await?;
        let _ = self.delete(&self.key(&rel)).await;
        if first && !second {
            return Ok(());
        }
        Err(RemoteError::BadUrl {
            url: self.url.clone(),
            detail: "this object store does not refuse a create of an existing object \
                     (If-None-Match: * is ignored), so two writers could overwrite each \
                     other's manifests; use a store that supports conditional writes"
                .into(),
        })
    }

    /// The bytes of `rel`, refusing more than `max` (the bucket is not
    /// trusted to bound them).
    pub(crate) async fn get_small(&self, rel: &str, max: u64) -> Result<Bytes> {
        let got = self
            .store
            .get(&self.key(rel))
            .await
            .map_err(RemoteError::store)?;
        if got.meta.size > max {
            return Err(RemoteError::BadManifest {
                key: rel.to_string(),
                detail: format!("{} bytes, more than the {max} allowed", got.meta.size),
            });
        }
        got.bytes().await.map_err(RemoteError::store)
    }

    /// Every object under `rel` (recursively).
    pub(crate) async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.key(rel);
        let mut out = Vec::new();
        let mut s = self.store.list(Some(&prefix));
        while let Some(m) = s.next().await {
            out.push(m.map_err(RemoteError::store)?);
        }
        Ok(out)
    }

    /// Deletes `key` (an absolute key from [`list`](Self::list)); a missing
    /// object is not an error.
    pub(crate) async fn delete(&self, key: &Key) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(RemoteError::store(e)),
        }
    }
}

/// Reads until `buf` is full or the file ends.
async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
