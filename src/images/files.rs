//! Stored images as files served at `/files/{id}`: the id is 256 random bits (the URL is the only
//! credential, as with a vendor's signed link), and beside each image a small JSON record says
//! its media type, until when its URL answers and when it is deleted. The sweeper deletes what is
//! past its time, a bounded number per round.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::storage::{Listed, Storage, StorageResult};

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

/// Where the periodic sweep goes on from: each round looks at `SWEEP_LIST` names of each kind
/// after where the last one stopped, wrapping around at the end, so that every name is looked at
/// however many there are (with a fixed first window, more live images than it holds hid every
/// expired one behind them).
#[derive(Debug, Default)]
pub struct Sweep {
    files_after: Option<String>,
    cache_after: Option<String>,
    /// Whether each kind's listing reached its end since `start_lap`.
    files_wrapped: bool,
    cache_wrapped: bool,
    /// How long after its record was written each kind can be due at the earliest (a file's
    /// retention, a cache entry's TTL): a record younger than that is not read. Without them
    /// every record was read on every tick, due or not (on S3, a GET per image kept, every
    /// five minutes). `None`: every record is read.
    files_min_age_ms: Option<i64>,
    cache_min_age_ms: Option<i64>,
}

impl Sweep {
    /// A sweep that reads only records old enough to be due: images are deleted no sooner than
    /// `retention_secs` after they were made, cache entries end `cache_ttl_secs` after.
    pub fn with_min_ages(retention_secs: u64, cache_ttl_secs: u64) -> Sweep {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1_000)).ok();
        Sweep {
            files_min_age_ms: ms(retention_secs),
            cache_min_age_ms: ms(cache_ttl_secs),
            ..Sweep::default()
        }
    }

    /// Begins a lap: `went_round` says when both kinds' listings have since reached their end
    /// (each at its own pace: one may wrap many times before the other does once).
    pub fn start_lap(&mut self) {
        self.files_wrapped = false;
        self.cache_wrapped = false;
    }

    pub fn went_round(&self) -> bool {
        self.files_wrapped && self.cache_wrapped
    }
}

/// Deletes images past their `delete_ms` and cache entries past their end, from where `at` says
/// the last round stopped. Returns how many were deleted.
pub async fn sweep(storage: &Storage, now_ms: i64, at: &mut Sweep) -> StorageResult<usize> {
    let mut deleted = 0;
    let listed = storage
        .list("files", ".json", at.files_after.as_deref(), SWEEP_LIST)
        .await?;
    let complete = listed.len() < SWEEP_LIST;
    let mut looked = 0;
    for listed in &listed {
        if deleted >= SWEEP_DELETE {
            break;
        }
        looked += 1;
        if too_young(listed, at.files_min_age_ms, now_ms) {
            continue;
        }
        let name = &listed.name;
        let Some(raw) = storage.get(name).await? else {
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
            storage.delete(name).await?;
            deleted += 1;
        }
    }
    let (after, wrapped) = next_start(&listed, looked, complete, at.files_after.take());
    at.files_after = after;
    at.files_wrapped |= wrapped;
    let (cached, after, wrapped) = super::cache::sweep(
        storage,
        now_ms,
        at.cache_after.take(),
        at.cache_min_age_ms,
        SWEEP_LIST,
        SWEEP_DELETE - deleted.min(SWEEP_DELETE),
    )
    .await?;
    at.cache_after = after;
    at.cache_wrapped |= wrapped;
    Ok(deleted + cached)
}

/// Whether a listed record was written too recently to be due (`min_age_ms` after its write).
pub(super) fn too_young(listed: &Listed, min_age_ms: Option<i64>, now_ms: i64) -> bool {
    match (listed.written_ms, min_age_ms) {
        (Some(written), Some(age)) => written.saturating_add(age) > now_ms,
        _ => false,
    }
}

/// Where the next round starts, and whether this one reached the end of the listing: after the
/// last name looked at; from the start once the end was reached; where it was if this round
/// looked at nothing (the deletions were used up before it began).
pub(super) fn next_start(
    listed: &[Listed],
    looked: usize,
    complete: bool,
    was: Option<String>,
) -> (Option<String>, bool) {
    if complete && looked == listed.len() {
        (None, true)
    } else if looked == 0 {
        (was, false)
    } else {
        (listed.get(looked - 1).map(|l| l.name.clone()), false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Local storage holding one image: served until 2,000 ms, deleted from 3,000 ms.
    async fn one_image() -> (tempfile::TempDir, Storage, FileMeta, String) {
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
        (dir, storage, meta, id)
    }

    #[tokio::test]
    async fn files_expire_then_are_swept() {
        let (_dir, storage, meta, id) = one_image().await;
        assert!(valid_id(&id));
        let (got, bytes) = open(&storage, &id, 1_500).await.unwrap().unwrap();
        assert_eq!((got, &bytes[..]), (meta.clone(), &b"img"[..]));
        // Past its URL's end: not served, still kept.
        assert_eq!(open(&storage, &id, 2_000).await.unwrap(), None);
        let mut at = Sweep::default();
        assert_eq!(sweep(&storage, 2_500, &mut at).await.unwrap(), 0);
        assert!(
            at.went_round(),
            "one round reached the end of both listings"
        );
        assert!(storage.get(&data_name(&id)).await.unwrap().is_some());
        // Past its retention: deleted.
        assert_eq!(sweep(&storage, 3_000, &mut at).await.unwrap(), 1);
        assert!(storage.get(&data_name(&id)).await.unwrap().is_none());
        assert!(storage.get(&meta_name(&id)).await.unwrap().is_none());
    }

    /// A sweep with the kinds' least ages reads no record younger than them (a GET each on
    /// S3), and still deletes what is due.
    #[tokio::test]
    async fn records_too_young_to_be_due_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().to_owned());
        let now = jiff::Timestamp::now().as_millisecond();
        let meta = FileMeta {
            mime: "image/png".into(),
            created_ms: now,
            expires_ms: now + 1_000,
            delete_ms: now + 60_000,
        };
        let id = save(&storage, Bytes::from_static(b"img"), &meta)
            .await
            .unwrap();
        // A record that says it is due while its write is younger than the retention is not
        // read: it cannot be (a record is written with its image).
        let early = FileMeta {
            delete_ms: now,
            ..meta.clone()
        };
        storage
            .put(
                &meta_name(&id),
                Bytes::from(serde_json::to_vec(&early).unwrap()),
            )
            .await
            .unwrap();
        let mut at = Sweep::with_min_ages(60, 60);
        assert_eq!(sweep(&storage, now + 1_000, &mut at).await.unwrap(), 0);
        assert!(storage.get(&data_name(&id)).await.unwrap().is_some());
        // Without least ages, the record is read and believed.
        assert_eq!(
            sweep(&storage, now + 1_000, &mut Sweep::default())
                .await
                .unwrap(),
            1
        );
        // Past the retention, a sweep with least ages reads and deletes.
        let id = save(&storage, Bytes::from_static(b"img"), &meta)
            .await
            .unwrap();
        let mut at = Sweep::with_min_ages(60, 60);
        assert_eq!(sweep(&storage, now + 61_000, &mut at).await.unwrap(), 1);
        assert!(storage.get(&data_name(&id)).await.unwrap().is_none());
    }

    /// A round goes on from where the last stopped: a full listing leaves the cursor at its last
    /// name, one that reached the end (or stopped early at the deletion cap) says so.
    #[tokio::test]
    async fn each_round_goes_on_from_the_last() {
        let names = |n: usize| -> Vec<Listed> {
            (0..n)
                .map(|i| Listed {
                    name: format!("files/{i}.json"),
                    written_ms: None,
                })
                .collect()
        };
        let was = || Some("files/x.json".to_owned());
        // Full window, all looked at: on from the last.
        assert_eq!(
            next_start(&names(3), 3, false, was()),
            (Some("files/2.json".to_owned()), false)
        );
        // The end was reached: from the start again.
        assert_eq!(next_start(&names(2), 2, true, was()), (None, true));
        assert_eq!(next_start(&[], 0, true, was()), (None, true));
        // Stopped at the deletion cap: on from the last one looked at, even at the end.
        assert_eq!(
            next_start(&names(3), 2, true, was()),
            (Some("files/1.json".to_owned()), false)
        );
        // Nothing looked at (the cap used up before): where it was.
        assert_eq!(next_start(&names(3), 0, false, was()), (was(), false));

        // A cursor past an expired image skips it this round; the wrap finds it the next.
        let (_dir, storage, _, id) = one_image().await;
        let mut at = Sweep {
            files_after: Some(meta_name(&id)),
            ..Sweep::default()
        };
        assert_eq!(sweep(&storage, 3_000, &mut at).await.unwrap(), 0);
        assert!(at.went_round());
        assert_eq!(sweep(&storage, 3_000, &mut at).await.unwrap(), 1);
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
