//! The Lua scripts, loaded once and called by SHA.
//!
//! Each script is loaded with `SCRIPT LOAD` at connect (on every primary of a cluster), which also
//! tells us its SHA-1. A node that lost its script cache since (a restart, a failover, `SCRIPT
//! FLUSH`) answers `NOSCRIPT`; the call is then repeated once as `EVAL` with the source, which
//! runs it and caches it on that node again, so the next `EVALSHA` succeeds. `NOSCRIPT` means
//! nothing ran, so the repeat cannot apply anything twice.

use fred::prelude::{Client, ClientLike, ClusterInterface, Error, LuaInterface};
use fred::types::{ClusterHash, CustomCommand, Key, Value};

use super::unavailable;
use crate::store::StoreResult;

/// One script: its source and the SHA-1 that Redis knows it by.
pub(super) struct Script {
    name: &'static str,
    source: &'static str,
    sha: String,
}

/// Every script the store runs (see the header of each `.lua` file for keys and arguments).
pub(super) struct Scripts {
    pub(super) key_put: Script,
    pub(super) key_delete: Script,
    pub(super) key_forget: Script,
    pub(super) key_by_hash: Script,
    pub(super) account_put: Script,
    pub(super) account_delete: Script,
    pub(super) account_forget: Script,
    pub(super) account_runtime: Script,
    pub(super) prices_put: Script,
    pub(super) take: Script,
    pub(super) give: Script,
    pub(super) renew: Script,
    pub(super) key_state: Script,
    pub(super) health_cas: Script,
    pub(super) usage_add: Script,
    pub(super) usage_read: Script,
    pub(super) log_add: Script,
    pub(super) log_read: Script,
    pub(super) claim: Script,
    pub(super) unclaim: Script,
    pub(super) spend_add: Script,
    pub(super) spend_raise: Script,
}

/// The scripts of the live state start with live.lua: its names, helpers and sweeps.
macro_rules! live {
    ($file:literal) => {
        concat!(include_str!("live.lua"), include_str!($file))
    };
}

const SOURCES: [(&str, &str); 22] = [
    ("key_put", include_str!("key_put.lua")),
    ("key_delete", include_str!("key_delete.lua")),
    ("key_forget", live!("key_forget.lua")),
    ("key_by_hash", include_str!("key_by_hash.lua")),
    ("account_put", include_str!("account_put.lua")),
    ("account_delete", include_str!("account_delete.lua")),
    ("account_forget", live!("account_forget.lua")),
    ("account_runtime", live!("account_runtime.lua")),
    ("prices_put", include_str!("prices_put.lua")),
    ("take", live!("take.lua")),
    ("give", live!("give.lua")),
    ("renew", include_str!("renew.lua")),
    ("key_state", live!("key_state.lua")),
    ("health_cas", live!("health_cas.lua")),
    ("usage_add", include_str!("usage_add.lua")),
    ("usage_read", include_str!("usage_read.lua")),
    ("log_add", include_str!("log_add.lua")),
    ("log_read", include_str!("log_read.lua")),
    ("claim", include_str!("claim.lua")),
    ("unclaim", include_str!("unclaim.lua")),
    ("spend_add", include_str!("spend_add.lua")),
    ("spend_raise", include_str!("spend_raise.lua")),
];

impl Scripts {
    /// Loads every script (on each primary of a cluster) and learns their SHAs.
    pub(super) async fn load(client: &Client) -> StoreResult<Scripts> {
        let loads = SOURCES.iter().map(|&(name, source)| async move {
            let sha = load_one(client, source)
                .await
                .map_err(|e| unavailable(&format!("loading script {name}"), &e))?;
            Ok::<_, crate::store::StoreError>(Script { name, source, sha })
        });
        let loaded = futures_util::future::try_join_all(loads).await?;
        let mut it = loaded.into_iter();
        let mut next = || {
            it.next()
                .ok_or_else(|| crate::store::StoreError::Unavailable("script table".into()))
        };
        Ok(Scripts {
            key_put: next()?,
            key_delete: next()?,
            key_forget: next()?,
            key_by_hash: next()?,
            account_put: next()?,
            account_delete: next()?,
            account_forget: next()?,
            account_runtime: next()?,
            prices_put: next()?,
            take: next()?,
            give: next()?,
            renew: next()?,
            key_state: next()?,
            health_cas: next()?,
            usage_add: next()?,
            usage_read: next()?,
            log_add: next()?,
            log_read: next()?,
            claim: next()?,
            unclaim: next()?,
            spend_add: next()?,
            spend_raise: next()?,
        })
    }
}

/// `SCRIPT LOAD` on the one server, or on every primary of a cluster (a keyless command would
/// reach only one of them). Returns the SHA-1 the server computed.
async fn load_one(client: &Client, source: &str) -> Result<String, Error> {
    if !client.is_clustered() {
        return client.script_load(source).await;
    }
    let primaries = client
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default();
    let mut sha = None;
    for server in primaries {
        // As a custom command: fred's `WithOptions` has no Lua interface, and calling
        // `script_load` through it would silently drop the node choice.
        sha = Some(
            client
                .with_cluster_node(server)
                .custom::<String, _>(
                    CustomCommand::new("SCRIPT", ClusterHash::Random, false),
                    vec!["LOAD", source],
                )
                .await?,
        );
    }
    match sha {
        Some(sha) => Ok(sha),
        // No routing table yet: load on whichever node answers; the others learn it through
        // the NOSCRIPT fallback.
        None => client.script_load(source).await,
    }
}

pub(super) fn is_noscript(error: &Error) -> bool {
    error.details().starts_with("NOSCRIPT")
}

impl Script {
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the script: `EVALSHA`, or `EVAL` when the node does not know it. Keys and arguments
    /// are converted once; the copy kept for the `EVAL` fallback shares their bytes.
    pub(super) async fn run<K: Into<Key>, V: Into<Value>>(
        &self,
        client: &Client,
        keys: impl IntoIterator<Item = K>,
        args: impl IntoIterator<Item = V>,
    ) -> StoreResult<Value> {
        let keys: Vec<Key> = keys.into_iter().map(Into::into).collect();
        let args: Vec<Value> = args.into_iter().map(Into::into).collect();
        let first = client
            .evalsha::<Value, _, _, _>(self.sha.as_str(), keys.clone(), args.clone())
            .await;
        match first {
            Err(e) if is_noscript(&e) => self.eval(client, keys, args).await,
            other => other.map_err(|e| unavailable(self.name, &e)),
        }
    }

    /// Runs the script from its source (and so caches it on the node that runs it).
    pub(super) async fn eval<K: Into<Key>, V: Into<Value>>(
        &self,
        client: &Client,
        keys: impl IntoIterator<Item = K>,
        args: impl IntoIterator<Item = V>,
    ) -> StoreResult<Value> {
        let keys: Vec<Key> = keys.into_iter().map(Into::into).collect();
        let args: Vec<Value> = args.into_iter().map(Into::into).collect();
        client
            .eval::<Value, _, _, _>(self.source, keys, args)
            .await
            .map_err(|e| unavailable(self.name, &e))
    }

    /// Queues an `EVALSHA` on a pipeline; the caller handles `NOSCRIPT` answers (see `run_all`).
    /// fred's pipelines take no `evalsha`, so it goes as a custom command routed by its first
    /// key's slot (every key of a call shares that slot).
    pub(super) async fn queue(
        &self,
        pipeline: &fred::clients::Pipeline<Client>,
        keys: &[String],
        args: &[String],
    ) -> StoreResult<()> {
        let slot = keys
            .first()
            .map_or(ClusterHash::Random, |k| ClusterHash::from(k.as_str()));
        let mut argv = Vec::with_capacity(2 + keys.len() + args.len());
        argv.push(self.sha.clone());
        argv.push(keys.len().to_string());
        argv.extend(keys.iter().cloned());
        argv.extend(args.iter().cloned());
        pipeline
            .custom::<(), _>(CustomCommand::new("EVALSHA", slot, false), argv)
            .await
            .map_err(|e| unavailable(self.name, &e))
    }
}

/// One script call of a pipeline.
pub(super) struct Call<'a> {
    pub(super) script: &'a Script,
    pub(super) keys: Vec<String>,
    pub(super) args: Vec<String>,
}

/// Sends every call in one pipeline (on a cluster fred routes each to its node), then repeats as
/// `EVAL` the ones a node answered `NOSCRIPT` to. Fails if any call failed otherwise; the calls
/// must therefore be safe to send again (the usage scripts skip a batch they already applied).
pub(super) async fn run_all(client: &Client, calls: Vec<Call<'_>>) -> StoreResult<Vec<Value>> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let pipeline = client.pipeline();
    for call in &calls {
        call.script.queue(&pipeline, &call.keys, &call.args).await?;
    }
    let results = pipeline.try_all::<Value>().await;
    if results.len() != calls.len() {
        // A transport failure or timeout answers the whole pipeline with one error.
        let detail = results
            .into_iter()
            .find_map(Result::err)
            .map(|e| e.to_string())
            .unwrap_or_else(|| "short pipeline answer".to_owned());
        return Err(crate::store::StoreError::Unavailable(format!(
            "redis pipeline: {detail}"
        )));
    }
    let mut out = Vec::with_capacity(calls.len());
    let mut retries = Vec::new();
    for (i, (call, result)) in calls.iter().zip(results).enumerate() {
        match result {
            Ok(value) => out.push(value),
            Err(e) if is_noscript(&e) => {
                out.push(Value::Null);
                retries.push(i);
            }
            Err(e) => return Err(unavailable(call.script.name(), &e)),
        }
    }
    let repeats = calls
        .into_iter()
        .enumerate()
        .filter(|(i, _)| retries.contains(i))
        .map(|(i, call)| async move { (i, call.script.eval(client, call.keys, call.args).await) });
    for (i, result) in futures_util::future::join_all(repeats).await {
        if let Some(slot) = out.get_mut(i) {
            *slot = result?;
        }
    }
    Ok(out)
}
