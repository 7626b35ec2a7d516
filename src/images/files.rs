//! Stored images as files served at `/files/{id}`: the id is 256 random bits (the URL is the only
//! credential, as with a vendor's signed link), and beside each image a small JSON record says
//! its media type, until when its URL answers and when it is deleted. The sweeper deletes what is
//! past its time, a bounded number per round.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::storage::{Storage, StorageResult};

/// What is known of one stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub mime: String,
    /// Unix ms.
    pub created_ms: i64,
    /// The URL answers until then (unix ms), then 404.
    pub expires_ms: i64,
    /// Deleted by the sweeper after then (unix ms).
    pub delete_ms: i64,
}

/// 32 random bytes, hex.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Only ids Switchyard could have made name a file: nothing else reaches the storage.
pub fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn data_name(id: &str) -> String {
    format!("files/{id}")
}

fn meta_name(id: &str) -> String {
    format!("files/{id}.json")
}

/// Stores one image; returns its id. The record is written last, so a file is served only once
/// it is whole.
pub async fn save(storage: &Storage, bytes: Bytes, meta: &FileMeta) -> StorageResult<String> {
    let id = new_id();
    storage.put(&data_name(&id), bytes).await?;
    let record = serde_json::to_vec(meta).unwrap_or_default();
    storage.put(&meta_name(&id), Bytes::from(record)).await?;
    Ok(id)
}

/// The record of `id` while its URL answers, else `None`.
pub async fn meta(storage: &Storage, id: &str, now_ms: i64) -> StorageResult<Option<FileMeta>> {
    if !valid_id(id) {
        return Ok(None);
    }
    let Some(raw) = storage.get(&meta_name(id)).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<FileMeta>(&raw)
        .ok()
        .filter(|m| now_ms < m.expires_ms))
}

/// The image `id` and its record while its URL answers, else `None`.
pub async fn open(
    storage: &Storage,
    id: &str,
    now_ms: i64,
) -> StorageResult<Option<(FileMeta, Bytes)>> {
    let Some(meta) = self::meta(storage, id, now_ms).await? else {
        return Ok(None);
    };
    Ok(storage.get(&data_name(id)).await?.map(|b| (meta, b)))
}

/// Names looked at per sweep round, and deletions per round: a backlog shrinks over rounds
/// instead of one round holding the storage for long.
const SWEEP_LIST: usize = 10_000;
const SWEEP_DELETE: usize = 1_000;

/// Deletes images past their `delete_ms` and cache entries past their end. Returns how many
/// were deleted.
pub async fn sweep(storage: &Storage, now_ms: i64) -> StorageResult<usize> {
    let mut deleted = 0;
    for name in storage.list("files", ".json", SWEEP_LIST).await? {
        if deleted >= SWEEP_DELETE {
            break;
        }
        let Some(raw) = storage.get(&name).await? else {
            continue;
        };
        // An unreadable record is not ours to judge: left alone.
        let Ok(meta) = serde_json::from_slice::<FileMeta>(&raw) else {
            continue;
        };
        if now_ms >= meta.delete_ms {
            // The record goes last, so an interrupted sweep finds the file again next round.
            if let Some(data) = name.strip_suffix(".json") {
                storage.delete(data).await?;
            }
            storage.delete(&name).await?;
            deleted += 1;
        }
    }
    deleted += super::cache::sweep(
        storage,
        now_ms,
        SWEEP_LIST,
        SWEEP_DELETE - deleted.min(SWEEP_DELETE),
    )
    .await?;
    Ok(deleted)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_expire_then_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().to_owned());
        let meta = FileMeta {
            mime: "image/png".into(),
            created_ms: 1_000,
            expires_ms: 2_000,
            delete_ms: 3_000,
        };
        let id = save(&storage, Bytes::from_static(b"img"), &meta)
            .await
            .unwrap();
        assert!(valid_id(&id));
        let (got, bytes) = open(&storage, &id, 1_500).await.unwrap().unwrap();
        assert_eq!((got, &bytes[..]), (meta.clone(), &b"img"[..]));
        // Past its URL's end: not served, still kept.
        assert_eq!(open(&storage, &id, 2_000).await.unwrap(), None);
        assert_eq!(sweep(&storage, 2_500).await.unwrap(), 0);
        assert!(storage.get(&data_name(&id)).await.unwrap().is_some());
        // Past its retention: deleted.
        assert_eq!(sweep(&storage, 3_000).await.unwrap(), 1);
        assert!(storage.get(&data_name(&id)).await.unwrap().is_none());
        assert!(storage.get(&meta_name(&id)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn ids_are_checked_before_the_storage_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().to_owned());
        std::fs::write(dir.path().join("secret.json"), "{}").unwrap();
        assert_eq!(open(&storage, "../secret", 0).await.unwrap(), None);
        assert!(!valid_id(&"A".repeat(64)));
        assert_ne!(new_id(), new_id());
    }
}
