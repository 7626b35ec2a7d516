//! The image result cache: identical requests (same key, operation, model, prompt and
//! parameters) within the TTL get the stored images without an upstream call.
//!
//! An entry is a small JSON record in the image storage (`cache/<digest>.json`) naming the
//! stored files, so every instance on one bucket shares the cache and nothing is held in memory.
//! The files of a cached result live `ttl` longer than other images, so a hit near the entry's
//! end still hands out URLs that answer for `url_ttl_secs`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::storage::{Storage, StorageResult};

/// One cached result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unix ms.
    pub created_ms: i64,
    /// Answers identical requests until then (unix ms).
    pub expires_ms: i64,
    pub images: Vec<CachedImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedImage {
    /// The stored file (`files::save`).
    pub id: String,
    pub mime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revised_prompt: Option<String>,
}

/// The cache key of a request: its key's id (results never cross keys), the operation, the
/// model and the request's fingerprint.
pub fn key(key_id: &str, operation: &str, model: &str, fingerprint: &[u8; 32]) -> String {
    let mut d = Sha256::new();
    for part in [key_id.as_bytes(), operation.as_bytes(), model.as_bytes()] {
        d.update((part.len() as u64).to_be_bytes());
        d.update(part);
    }
    d.update(fingerprint);
    hex::encode(d.finalize())
}

fn name(key: &str) -> String {
    format!("cache/{key}.json")
}

/// The live entry under `key`, if any.
pub async fn lookup(storage: &Storage, key: &str, now_ms: i64) -> StorageResult<Option<Entry>> {
    let Some(raw) = storage.get(&name(key)).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Entry>(&raw)
        .ok()
        .filter(|e| now_ms < e.expires_ms && !e.images.is_empty()))
}

pub async fn put(storage: &Storage, key: &str, entry: &Entry) -> StorageResult<()> {
    let raw = serde_json::to_vec(entry).unwrap_or_default();
    storage.put(&name(key), Bytes::from(raw)).await
}

/// Deletes up to `max_delete` entries past their end, of `max_list` listed after `after`.
/// Returns how many, where the next round starts and whether this one reached the end
/// (`files::next_start`).
pub async fn sweep(
    storage: &Storage,
    now_ms: i64,
    after: Option<String>,
    min_age_ms: Option<i64>,
    max_list: usize,
    max_delete: usize,
) -> StorageResult<(usize, Option<String>, bool)> {
    let mut deleted = 0;
    let listed = storage
        .list("cache", ".json", after.as_deref(), max_list)
        .await?;
    let mut looked = 0;
    for listed in &listed {
        if deleted >= max_delete {
            break;
        }
        looked += 1;
        if super::files::too_young(listed, min_age_ms, now_ms) {
            continue;
        }
        let name = &listed.name;
        let Some(raw) = storage.get(name).await? else {
            continue;
        };
        if serde_json::from_slice::<Entry>(&raw).is_ok_and(|e| now_ms >= e.expires_ms) {
            storage.delete(name).await?;
            deleted += 1;
        }
    }
    let complete = listed.len() < max_list;
    let (next, wrapped) = super::files::next_start(&listed, looked, complete, after);
    Ok((deleted, next, wrapped))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_keys_operations_models_and_requests() {
        let f = [1u8; 32];
        let k = key("key_a", "generations", "dall-e-3", &f);
        assert_eq!(k, key("key_a", "generations", "dall-e-3", &f));
        assert_ne!(k, key("key_b", "generations", "dall-e-3", &f));
        assert_ne!(k, key("key_a", "edits", "dall-e-3", &f));
        assert_ne!(k, key("key_a", "generations", "dall-e-2", &f));
        assert_ne!(k, key("key_a", "generations", "dall-e-3", &[2u8; 32]));
        // Length prefixes: moving a character between fields changes the key.
        assert_ne!(key("ab", "c", "m", &f), key("a", "bc", "m", &f));
    }

    #[tokio::test]
    async fn entries_live_until_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().to_owned());
        let entry = Entry {
            created_ms: 0,
            expires_ms: 100,
            images: vec![CachedImage {
                id: "f".repeat(64),
                mime: "image/png".into(),
                revised_prompt: None,
            }],
        };
        put(&storage, "k", &entry).await.unwrap();
        assert_eq!(lookup(&storage, "k", 99).await.unwrap(), Some(entry));
        assert_eq!(lookup(&storage, "k", 100).await.unwrap(), None);
        assert_eq!(lookup(&storage, "other", 0).await.unwrap(), None);
        assert_eq!(
            sweep(&storage, 99, None, None, 10, 10).await.unwrap(),
            (0, None, true)
        );
        assert_eq!(
            sweep(&storage, 100, None, None, 10, 10).await.unwrap(),
            (1, None, true)
        );
        assert!(storage.get("cache/k.json").await.unwrap().is_none());
    }
}
