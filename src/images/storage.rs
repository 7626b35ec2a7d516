//! Where generated images and cache entries are kept: named blobs in a local directory, or in an
//! S3-compatible bucket (feature `s3`, through `object_store`). Names are relative
//! (`files/<id>`, `cache/<digest>.json`) and made by Switchyard only, never from a client's
//! input beyond a checked hex id.

use std::path::{Path, PathBuf};
#[cfg(feature = "s3")]
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{ImageStorage, ImagesConfig};

#[derive(Debug, thiserror::Error)]
#[error("image storage: {0}")]
pub struct StorageError(String);

pub type StorageResult<T> = Result<T, StorageError>;

/// A storage backend for named blobs.
pub struct Storage {
    backend: Backend,
}

enum Backend {
    Local(PathBuf),
    #[cfg(feature = "s3")]
    Object(Arc<dyn object_store::ObjectStore>),
}

impl Storage {
    /// The storage `cfg` asks for, or `None` when it asks for none.
    pub fn open(cfg: &ImagesConfig, data_dir: &Path) -> StorageResult<Option<Storage>> {
        match cfg.storage {
            ImageStorage::None => Ok(None),
            ImageStorage::Local => {
                let dir = cfg
                    .local_dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("images"));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| StorageError(format!("cannot create {}: {e}", dir.display())))?;
                Ok(Some(Storage::local(dir)))
            }
            #[cfg(feature = "s3")]
            ImageStorage::S3 => s3(&cfg.s3).map(|store| Some(Storage::object(store))),
            #[cfg(not(feature = "s3"))]
            ImageStorage::S3 => Err(StorageError(
                "this build has no S3 support (cargo feature `s3`)".into(),
            )),
        }
    }

    pub fn local(dir: PathBuf) -> Storage {
        Storage {
            backend: Backend::Local(dir),
        }
    }

    /// Any `object_store` store (S3, or the in-memory one in tests).
    #[cfg(feature = "s3")]
    pub fn object(store: Arc<dyn object_store::ObjectStore>) -> Storage {
        Storage {
            backend: Backend::Object(store),
        }
    }

    /// Writes `name` whole: readers see the old blob, none, or the new one, never part of it.
    pub async fn put(&self, name: &str, bytes: Bytes) -> StorageResult<()> {
        match &self.backend {
            Backend::Local(dir) => {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| io_error("create", name, &e))?;
                }
                let tmp = path.with_extension(format!("tmp{:016x}", rand::random::<u64>()));
                tokio::fs::write(&tmp, &bytes)
                    .await
                    .map_err(|e| io_error("write", name, &e))?;
                tokio::fs::rename(&tmp, &path).await.map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    io_error("write", name, &e)
                })
            }
            #[cfg(feature = "s3")]
            Backend::Object(store) => {
                use object_store::ObjectStoreExt;
                store
                    .put(&object_store::path::Path::from(name), bytes.into())
                    .await
                    .map(drop)
                    .map_err(|e| StorageError(format!("put {name}: {e}")))
            }
        }
    }

    /// The blob, or `None` when there is none.
    pub async fn get(&self, name: &str) -> StorageResult<Option<Bytes>> {
        match &self.backend {
            Backend::Local(dir) => match tokio::fs::read(dir.join(name)).await {
                Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error("read", name, &e)),
            },
            #[cfg(feature = "s3")]
            Backend::Object(store) => {
                use object_store::ObjectStoreExt;
                match store.get(&object_store::path::Path::from(name)).await {
                    Ok(got) => got
                        .bytes()
                        .await
                        .map(Some)
                        .map_err(|e| StorageError(format!("get {name}: {e}"))),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(StorageError(format!("get {name}: {e}"))),
                }
            }
        }
    }

    /// Deletes the blob; one that is already gone is fine.
    pub async fn delete(&self, name: &str) -> StorageResult<()> {
        match &self.backend {
            Backend::Local(dir) => match tokio::fs::remove_file(dir.join(name)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error("delete", name, &e)),
            },
            #[cfg(feature = "s3")]
            Backend::Object(store) => {
                use object_store::ObjectStoreExt;
                match store.delete(&object_store::path::Path::from(name)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(StorageError(format!("delete {name}: {e}"))),
                }
            }
        }
    }

    /// Up to `limit` names under `dir` (`files`) ending in `suffix`, as `dir/<name>`, in name
    /// order, after `after` (a name this returned before) when given: a sweep goes on from where
    /// the last one stopped, so names past the first `limit` are reached too. Each with when it
    /// was last written, when the storage says.
    pub async fn list(
        &self,
        dir: &str,
        suffix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Listed>> {
        match &self.backend {
            Backend::Local(root) => {
                let mut out = Vec::new();
                let mut entries = match tokio::fs::read_dir(root.join(dir)).await {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(io_error("list", dir, &e)),
                };
                // A directory lists in no useful order: all of it is read, the first `limit`
                // after `after` kept.
                while let Some(entry) = entries
                    .next_entry()
                    .await
                    .map_err(|e| io_error("list", dir, &e))?
                {
                    if let Some(name) = entry.file_name().to_str()
                        && name.ends_with(suffix)
                    {
                        let name = format!("{dir}/{name}");
                        if after.is_none_or(|a| name.as_str() > a) {
                            out.push((name, entry));
                        }
                    }
                }
                out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                out.truncate(limit);
                let mut listed = Vec::with_capacity(out.len());
                for (name, entry) in out {
                    let modified = entry.metadata().await.ok().and_then(|m| m.modified().ok());
                    listed.push(Listed {
                        name,
                        written_ms: modified.and_then(|t| {
                            let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
                            i64::try_from(since.as_millis()).ok()
                        }),
                    });
                }
                Ok(listed)
            }
            #[cfg(feature = "s3")]
            Backend::Object(store) => {
                use futures_util::StreamExt;
                let prefix = object_store::path::Path::from(dir);
                // Object stores list in name order.
                let mut listed = match after {
                    Some(after) => store
                        .list_with_offset(Some(&prefix), &object_store::path::Path::from(after)),
                    None => store.list(Some(&prefix)),
                };
                let mut out = Vec::new();
                while out.len() < limit {
                    let Some(meta) = listed.next().await else {
                        break;
                    };
                    let meta = meta.map_err(|e| StorageError(format!("list {dir}: {e}")))?;
                    let name = meta.location.to_string();
                    if name.ends_with(suffix) {
                        out.push(Listed {
                            name,
                            written_ms: Some(meta.last_modified.timestamp_millis()),
                        });
                    }
                }
                Ok(out)
            }
        }
    }
}

/// A name `Storage::list` found.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    /// Unix ms of its last write, when the storage says.
    pub written_ms: Option<i64>,
}

fn io_error(what: &str, name: &str, e: &std::io::Error) -> StorageError {
    StorageError(format!("{what} {name}: {e}"))
}

/// The bucket `cfg` names; credentials not configured come from the `AWS_*` environment.
#[cfg(feature = "s3")]
fn s3(cfg: &crate::config::S3Config) -> StorageResult<Arc<dyn object_store::ObjectStore>> {
    use object_store::aws::AmazonS3Builder;
    // object_store builds its own reqwest client, which needs the process's rustls provider.
    crate::app::install_crypto_provider();
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(cfg.bucket.clone().unwrap_or_default())
        .with_allow_http(cfg.allow_http);
    if let Some(region) = &cfg.region {
        builder = builder.with_region(region.clone());
    }
    if let Some(endpoint) = &cfg.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if let Some(id) = &cfg.access_key_id {
        builder = builder.with_access_key_id(id.clone());
    }
    if let Some(secret) = &cfg.secret_access_key {
        builder = builder.with_secret_access_key(secret.clone());
    }
    // The builder's errors name options, never their values.
    let store = builder
        .build()
        .map_err(|e| StorageError(format!("images.s3: {e}")))?;
    let prefix = cfg.prefix.trim_matches('/');
    if prefix.is_empty() {
        Ok(Arc::new(store))
    } else {
        Ok(Arc::new(object_store::prefix::PrefixStore::new(
            store,
            prefix.to_owned(),
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn round_trip(storage: &Storage) {
        assert_eq!(storage.get("files/a").await.unwrap(), None);
        storage
            .put("files/a", Bytes::from_static(b"one"))
            .await
            .unwrap();
        storage
            .put("files/a.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        storage
            .put("files/a", Bytes::from_static(b"two"))
            .await
            .unwrap();
        assert_eq!(
            storage.get("files/a").await.unwrap().as_deref(),
            Some(&b"two"[..])
        );
        storage
            .put("files/b.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let names =
            |listed: &[Listed]| -> Vec<String> { listed.iter().map(|l| l.name.clone()).collect() };
        let listed = storage.list("files", ".json", None, 10).await.unwrap();
        assert_eq!(names(&listed), ["files/a.json", "files/b.json"]);
        // Each with when it was written: just now.
        let now = jiff::Timestamp::now().as_millisecond();
        for l in &listed {
            let written = l.written_ms.unwrap();
            assert!((now - 60_000..=now + 1_000).contains(&written), "{l:?}");
        }
        let first = storage.list("files", ".json", None, 1).await.unwrap();
        assert_eq!(names(&first), ["files/a.json"]);
        let next = storage
            .list("files", ".json", Some(&first[0].name), 1)
            .await
            .unwrap();
        assert_eq!(names(&next), ["files/b.json"]);
        let past = storage
            .list("files", ".json", Some(&next[0].name), 1)
            .await
            .unwrap();
        assert!(past.is_empty());
        storage.delete("files/b.json").await.unwrap();
        assert!(
            storage
                .list("cache", ".json", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        storage.delete("files/a").await.unwrap();
        storage.delete("files/a").await.unwrap();
        assert_eq!(storage.get("files/a").await.unwrap(), None);
    }

    #[tokio::test]
    async fn local_directory_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        round_trip(&Storage::local(dir.path().to_owned())).await;
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("files"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["a.json".to_owned()]);
    }

    /// The object-store path that S3 takes, on the in-memory store.
    #[cfg(feature = "s3")]
    #[tokio::test]
    async fn object_store_round_trip() {
        round_trip(&Storage::object(Arc::new(
            object_store::memory::InMemory::new(),
        )))
        .await;
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_settings_build_a_store_without_a_network_call() {
        let cfg = crate::config::S3Config {
            bucket: Some("b".into()),
            region: Some("us-east-1".into()),
            endpoint: Some("http://127.0.0.1:9".into()),
            prefix: "sy/".into(),
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret-value".into()),
            allow_http: true,
        };
        assert!(s3(&cfg).is_ok());
    }
}
