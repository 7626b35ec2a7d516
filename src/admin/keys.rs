//! `/admin/keys`: client API keys. The secret is shown once, in the create answer.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{created, now_ms, nullable, ok, rfc3339, store_error, valid_name};
use crate::app::App;
use crate::auth;
use crate::body::Body;
use crate::error::{ApiError, ErrorKind};
use crate::limits;
use crate::store::{
    AccountRecord, Bucket, Dimension, KeyBinding, KeyLimits, KeyRecord, UsageQuery,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    #[serde(default = "yes")]
    enabled: bool,
    binding: Option<KeyBinding>,
    /// Absent or `null`: no limits.
    #[serde(default)]
    limits: Option<KeyLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    name: Option<String>,
    enabled: Option<bool>,
    /// `null` removes the binding.
    #[serde(default, deserialize_with = "nullable")]
    binding: Option<Option<KeyBinding>>,
    /// A JSON merge patch (RFC 7396) of the limits: fields given replace those set, `null`
    /// removes one; `limits: null` removes them all.
    #[serde(default, deserialize_with = "nullable")]
    limits: Option<Option<Value>>,
}

/// Applies `patch` to `target` as RFC 7396 says.
fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(fields) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(map) = target {
        for (name, value) in fields {
            if value.is_null() {
                map.remove(&name);
            } else {
                merge_patch(map.entry(name).or_insert(Value::Null), value);
            }
        }
    }
}

fn valid_limits(limits: KeyLimits) -> Result<KeyLimits, ApiError> {
    limits::access::validate(&limits)?;
    Ok(limits)
}

fn yes() -> bool {
    true
}

/// A binding names accounts that exist, or a group that has accounts: a key bound to nothing
/// would be answered 503 on every request.
async fn valid_binding(
    app: &App,
    binding: Option<KeyBinding>,
) -> Result<Option<KeyBinding>, ApiError> {
    let Some(b) = &binding else {
        return Ok(binding);
    };
    let group = b.group.as_deref().filter(|g| !g.is_empty());
    if b.accounts.is_empty() && group.is_none() {
        return Err(ApiError::invalid(
            "binding: give `accounts` (account ids) or a `group`",
        ));
    }
    let accounts = app.store().accounts().await.map_err(store_error)?;
    let unknown: Vec<&str> = b
        .accounts
        .iter()
        .filter(|id| !accounts.iter().any(|a| a.id == **id))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::invalid(format!(
            "binding.accounts: no account with id {}",
            unknown.join(", ")
        )));
    }
    if let Some(group) = group
        && !accounts.iter().any(|a| a.group.as_deref() == Some(group))
    {
        return Err(ApiError::invalid(format!(
            "binding.group: no account is in group {group:?}; add accounts to it first"
        )));
    }
    Ok(binding)
}

/// Whether `binding` names one of `accounts`, or a group one of them is in: what the scheduler
/// picks a bound key's account among (`scheduler::pick`).
pub(super) fn binds_any(binding: &KeyBinding, accounts: &[AccountRecord]) -> bool {
    let group = binding.group.as_deref().filter(|g| !g.is_empty());
    accounts.iter().any(|a| {
        binding.accounts.contains(&a.id) || (group.is_some() && a.group.as_deref() == group)
    })
}

/// The keys that `accounts_after` would leave bound to nothing: bound without `fallback` (a
/// key with it goes to the shared pool), to some of `accounts_before` and to none after. A key
/// already bound to nothing is not counted: the change does not make it so.
pub(super) async fn stranded_by(
    app: &App,
    accounts_before: &[AccountRecord],
    accounts_after: &[AccountRecord],
) -> Result<Vec<String>, ApiError> {
    let keys = app.store().keys().await.map_err(store_error)?;
    Ok(keys
        .into_iter()
        // A disabled key counts too: enabled again (nothing checks its binding then), it would
        // be answered 503 on every request.
        .filter(|k| {
            k.binding.as_ref().is_some_and(|b| {
                !b.fallback && binds_any(b, accounts_before) && !binds_any(b, accounts_after)
            })
        })
        .map(|k| k.id)
        .collect())
}

fn view(key: &KeyRecord) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "enabled": key.enabled,
        "created_at": rfc3339(key.created_at),
        "binding": key.binding,
        "limits": key.limits,
    })
}

pub async fn create(app: &Arc<App>, req: CreateKey) -> Result<Response<Body>, ApiError> {
    let secret = auth::generate_key();
    let record = KeyRecord {
        id: auth::new_id("key"),
        name: valid_name(&req.name)?,
        hash: auth::hash_key(&secret),
        prefix: auth::display_prefix(&secret),
        enabled: req.enabled,
        created_at: now_ms(),
        binding: valid_binding(app, req.binding).await?,
        limits: valid_limits(req.limits.unwrap_or_default())?,
        revision: 0,
    };
    app.store().insert_key(&record).await.map_err(store_error)?;
    let mut body = view(&record);
    body["key"] = Value::String(secret);
    created(&record.id, &body)
}

/// Every key; with `?with=usage`, each with its limits' current use, as `GET /admin/keys/{id}`
/// shows it (one store read per key, a few at a time).
pub async fn list(
    app: &Arc<App>,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let with_usage = match query.get("with").map(String::as_str) {
        None | Some("") => false,
        Some("usage") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "with: `usage` or nothing, not `{other}`"
            )));
        }
    };
    let keys = app.store().keys().await.map_err(store_error)?;
    let data: Vec<Value> = if with_usage {
        app.stats.flush().await;
        // Owned records: a closure over borrowed ones is not `Send` for every lifetime (the
        // server's future must be).
        futures_util::stream::iter(keys)
            .map(|key| async move { used_view(app, &key).await })
            .buffered(USAGE_READS_AT_ONCE)
            .try_collect()
            .await?
    } else {
        keys.iter().map(view).collect()
    };
    ok(StatusCode::OK, &json!({ "data": data }))
}

/// How many keys' use a listing reads from the store at once.
const USAGE_READS_AT_ONCE: usize = 16;

async fn find(app: &Arc<App>, id: &str) -> Result<KeyRecord, ApiError> {
    app.store()
        .key(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("no key with id {id}")))
}

/// The key with its limits' current use and its last request.
pub async fn get(app: &Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let key = find(app, id).await?;
    app.stats.flush().await;
    ok(StatusCode::OK, &used_view(app, &key).await?)
}

/// The key's view with its limits' current use (as its own `/v1/key-info` shows them) and
/// `last_used_at`: the arrival of its newest request counted in usage (`null` if none), from
/// the key's all-time usage counters, as written by the last flush.
async fn used_view(app: &App, key: &KeyRecord) -> Result<Value, ApiError> {
    let total = UsageQuery {
        dimension: Dimension::Key(key.id.clone()),
        buckets: vec![Bucket::Total],
    };
    let (mut body, totals) = tokio::try_join!(limits::info::view(app, key, view(key)), async {
        app.store().usage(&total).await.map_err(store_error)
    },)?;
    let last = totals.first().map_or(0, |c| c.last_at);
    body["last_used_at"] = json!((last > 0).then(|| rfc3339(last)));
    Ok(body)
}

pub async fn patch(app: &Arc<App>, id: &str, req: PatchKey) -> Result<Response<Body>, ApiError> {
    let mut record = find(app, id).await?;
    if let Some(name) = req.name {
        record.name = valid_name(&name)?;
    }
    if let Some(enabled) = req.enabled {
        record.enabled = enabled;
    }
    if let Some(binding) = req.binding {
        record.binding = valid_binding(app, binding).await?;
    }
    if let Some(patch) = req.limits {
        let mut current = serde_json::to_value(&record.limits)
            .map_err(|e| ApiError::internal(format!("encoding limits: {e}")))?;
        merge_patch(&mut current, patch.unwrap_or(Value::Null));
        if current.is_null() {
            current = json!({});
        }
        let limits = serde_path_to_error::deserialize(current)
            .map_err(|e| ApiError::invalid(format!("limits.{}: {}", e.path(), e.inner())))?;
        record.limits = valid_limits(limits)?;
    }
    let was = record.hash.clone();
    write(app, &record, &was).await?;
    ok(StatusCode::OK, &view(&record))
}

/// Writes `record` over the stored one, if that is still the one read (its revision): a change
/// read before another one (a rotation, a disable) is refused rather than undoing it. `was`:
/// the hash of the secret the read record had.
async fn write(app: &App, record: &KeyRecord, was: &str) -> Result<(), ApiError> {
    let updated = app.store().update_key(record).await.map_err(store_error)?;
    // After the write too: a lookup that read the old record during the write may have cached
    // it (under the old secret's hash, for a rotation).
    app.catalog.invalidate_key(was);
    if updated {
        return Ok(());
    }
    match app.store().key(&record.id).await.map_err(store_error)? {
        None => Err(ApiError::not_found(format!("no key with id {}", record.id))),
        Some(_) => Err(ApiError::new(
            ErrorKind::Conflict,
            "the key was changed (or its secret rotated) while this change was made: read it \
             again and retry",
        )),
    }
}

/// A new secret for the key, shown once in the answer as at creation; the old one is refused
/// from now on, on every instance (the store drops its hash and tells the others). The key
/// keeps its id, limits, their use, binding and usage: a leaked secret is replaced without
/// losing them.
pub async fn rotate(app: &Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let mut record = find(app, id).await?;
    let secret = auth::generate_key();
    let was = std::mem::replace(&mut record.hash, auth::hash_key(&secret));
    record.prefix = auth::display_prefix(&secret);
    write(app, &record, &was).await?;
    let mut body = view(&record);
    body["key"] = Value::String(secret);
    ok(StatusCode::OK, &body)
}

pub async fn delete(app: &Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    find(app, id).await?;
    app.store().delete_key(id).await.map_err(store_error)?;
    app.catalog.forget_key(id);
    ok(StatusCode::OK, &json!({ "id": id, "deleted": true }))
}
