//! In-process caches of key and account records, so the hot path reads memory, not the store.
//!
//! Admin writes go through here and invalidate what they change. Accounts are held as one
//! immutable snapshot, swapped whole on change, with their credentials already opened: the
//! scheduler scans it without locks held across awaits and without decrypting per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use http::HeaderValue;

use crate::crypto::MasterKey;
use tokio::sync::broadcast;

use crate::store::{AccountRecord, Change, KeyRecord, Store, StoreError};
use crate::upstream_client::{AccountProxy, proxy_aad};

/// How an Anthropic OAuth access token begins (an API key begins `sk-ant-api`).
const OAUTH_TOKEN_PREFIX: &str = "sk-ant-oat";

/// An account ready to serve: its record and its opened credential.
pub struct Account {
    pub record: AccountRecord,
    /// The upstream credential, marked sensitive so it never shows in debug output.
    pub api_key: HeaderValue,
    /// An Anthropic account whose credential is an OAuth token of a Claude subscription
    /// (`sk-ant-oat…`, as `claude setup-token` makes), or a Code Assist account's Google access
    /// token: `Bearer <token>`, sent in place of `x-api-key`.
    pub oauth_bearer: Option<HeaderValue>,
    /// A Code Assist account's project, as the API gave it (`providers::code_assist::project`).
    pub code_assist: Arc<crate::providers::code_assist::ProjectCell>,
    /// A ChatGPT account's `chatgpt-account-id`: the workspace its access token was issued for.
    pub chatgpt_account: Option<HeaderValue>,
    /// A Bedrock account's models that refused a beta the client named: their requests go
    /// without betas from then on (until the accounts are reloaded).
    pub refuses_betas: dashmap::DashSet<String>,
    /// The account's own proxy, which every call made for it goes through (`record.sealed_proxy`
    /// opened).
    pub proxy: Option<Arc<AccountProxy>>,
    /// `record.models` compiled once.
    models: Vec<glob::Pattern>,
    /// `record.model_map` compiled once, the most specific first (`upstream_model`).
    model_map: Vec<(glob::Pattern, String)>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.record.id)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// An account with its opened credential and proxy; `None` when the credential cannot be a
    /// header value, the proxy is not one, or a model glob no longer compiles (all are validated
    /// when written: such an account serves nothing rather than everything, or straight).
    pub fn new(record: AccountRecord, api_key: &str, proxy: Option<&str>) -> Option<Account> {
        // A Claude subscription's token, or a Google login's (always a bearer token).
        let bearer = match record.provider {
            crate::store::Provider::Anthropic => {
                api_key.starts_with(OAUTH_TOKEN_PREFIX) || record.oauth.is_some()
            }
            crate::store::Provider::CodeAssist => true,
            _ => false,
        };
        let oauth_bearer = if bearer {
            let mut bearer = HeaderValue::from_str(&format!("Bearer {api_key}")).ok()?;
            bearer.set_sensitive(true);
            Some(bearer)
        } else {
            None
        };
        let chatgpt_account = match record.provider {
            crate::store::Provider::ChatGpt => crate::providers::chatgpt::account_id(api_key)
                .and_then(|id| HeaderValue::from_str(&id).ok()),
            _ => None,
        };
        let mut api_key = HeaderValue::from_str(api_key).ok()?;
        api_key.set_sensitive(true);
        let models = record
            .models
            .iter()
            .map(|m| glob::Pattern::new(m))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        let mut model_map = record
            .model_map
            .iter()
            .map(|(from, to)| Ok((glob::Pattern::new(from)?, to.clone())))
            .collect::<Result<Vec<_>, glob::PatternError>>()
            .ok()?;
        // A name before any glob, a longer glob before a shorter one.
        model_map.sort_by_key(|(from, _)| {
            (
                is_glob(from.as_str()),
                std::cmp::Reverse(from.as_str().len()),
            )
        });
        let proxy = match proxy {
            Some(url) => Some(Arc::new(AccountProxy::new(url)?)),
            None => None,
        };
        Some(Account {
            record,
            api_key,
            proxy,
            oauth_bearer,
            chatgpt_account,
            refuses_betas: dashmap::DashSet::new(),
            code_assist: Default::default(),
            models,
            model_map,
        })
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// What `old` (this account as it was before a reload) learned that still holds: the Code
    /// Assist project of the same login (the same grant; without one, the same token; a grant
    /// given or taken away is another login) on the same API, its cell shared (a discovery under
    /// way lands in both); and the clients through the same proxy, with their open connections.
    fn keep_learned(&mut self, old: &Account) {
        if self.record.sealed_proxy == old.record.sealed_proxy {
            self.proxy.clone_from(&old.proxy);
        }
        let same_login = match (&self.record.oauth, &old.record.oauth) {
            (Some(new), Some(was)) => new.sealed_refresh_token == was.sealed_refresh_token,
            (None, None) => self.record.sealed_api_key == old.record.sealed_api_key,
            _ => false,
        };
        if same_login
            && self.record.base_url == old.record.base_url
            && self.record.project == old.record.project
        {
            self.code_assist = Arc::clone(&old.code_assist);
        }
    }

    /// Whether this account's `models` globs admit `model` (no globs: every model).
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| p.matches(model))
    }

    /// The name this account's vendor knows `model` by, when its `model_map` renames it: the
    /// entry naming it exactly, else the longest glob matching it. `None`: sent as asked.
    pub fn upstream_model(&self, model: Option<&str>) -> Option<&str> {
        let model = model?;
        self.model_map
            .iter()
            .find(|(from, _)| from.matches(model))
            .map(|(_, to)| to.as_str())
            .filter(|to| *to != model)
    }
}

/// Whether a model name (of an account's `models`, a model map, a price file) is a glob rather
/// than one model's name.
pub fn is_glob(name: &str) -> bool {
    name.contains(['*', '?', '['])
}

/// Tries to reload the accounts after a change, over about 20 s.
const RELOAD_ATTEMPTS: u32 = 8;

pub struct Catalog {
    store: Arc<dyn Store>,
    master_key: MasterKey,
    /// Key records by hash. Only hits are cached: a miss goes to the store every time, so a key
    /// created by another process is usable at once.
    keys: DashMap<String, Arc<KeyRecord>, foldhash::fast::RandomState>,
    /// Counts key invalidations: a record read from the store is cached only if none happened
    /// while it was read (else a record changed meanwhile could be cached for good).
    key_changes: AtomicU64,
    accounts: RwLock<Arc<Vec<Arc<Account>>>>,
}

impl Catalog {
    pub async fn load(store: Arc<dyn Store>, master_key: MasterKey) -> Result<Catalog, StoreError> {
        let catalog = Catalog {
            store,
            master_key,
            keys: DashMap::default(),
            key_changes: AtomicU64::new(0),
            accounts: RwLock::new(Arc::new(Vec::new())),
        };
        catalog.reload_accounts().await?;
        Ok(catalog)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.master_key
    }

    /// The key record whose secret hashes to `hash`.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        if let Some(hit) = self.keys.get(hash) {
            return Ok(Some(Arc::clone(hit.value())));
        }
        let changes = self.key_changes.load(Ordering::Acquire);
        let Some(record) = self.store.key_by_hash(hash).await? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        if self.key_changes.load(Ordering::Acquire) == changes {
            self.keys.insert(hash.to_owned(), Arc::clone(&record));
            // An invalidation between the check and the insert: undone.
            if self.key_changes.load(Ordering::Acquire) != changes {
                self.keys.remove(hash);
            }
        }
        Ok(Some(record))
    }

    /// Forgets a cached key after it changed.
    pub fn invalidate_key(&self, hash: &str) {
        self.key_changes.fetch_add(1, Ordering::AcqRel);
        self.keys.remove(hash);
    }

    /// Forgets a deleted key under whatever secret it was cached: a rotation between the
    /// delete's read and its write may have cached it under a hash the delete never saw (the
    /// embedded store has no change feed to tell). Admin path only: it walks the cache.
    pub fn forget_key(&self, id: &str) {
        self.key_changes.fetch_add(1, Ordering::AcqRel);
        self.keys.retain(|_, record| record.id != id);
    }

    /// When the store is shared, applies other instances' changes to these caches as they are
    /// announced. The task holds the catalog weakly and ends with the store's change feed.
    pub fn follow_changes(self: &Arc<Self>) {
        let Some(mut changes) = self.store.changes() else {
            return;
        };
        let catalog = Arc::downgrade(self);
        // Stopped by: the store dropping its change feed (the receiver then reports Closed).
        tokio::spawn(async move {
            loop {
                let change = match changes.recv().await {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Lagged(_)) => Change::Resync,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(catalog) = catalog.upgrade() else {
                    return;
                };
                catalog.apply(change).await;
            }
        });
    }

    async fn apply(&self, change: Change) {
        match change {
            Change::Key { hash } => self.invalidate_key(&hash),
            Change::Accounts => self.reload_accounts_logged().await,
            // The app follows these itself (`App::follow_prices`).
            Change::Prices => {}
            Change::Resync => {
                self.key_changes.fetch_add(1, Ordering::AcqRel);
                self.keys.clear();
                self.reload_accounts_logged().await;
            }
        }
    }

    /// Retried for a while: after a reconnect the change feed may be back before the store's
    /// command connections, and a change missed here would leave this instance serving a
    /// disabled or deleted account until the next change.
    async fn reload_accounts_logged(&self) {
        let mut pause = Duration::from_millis(250);
        for attempt in 1..=RELOAD_ATTEMPTS {
            match self.reload_accounts().await {
                Ok(()) => return,
                Err(e) if attempt == RELOAD_ATTEMPTS => {
                    // The next change or resync tries again.
                    tracing::warn!(error = %e, "reloading accounts after a change failed");
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(4));
                }
            }
        }
    }

    /// The current accounts, oldest first.
    /// Whether an enabled OpenAI-protocol account lists `model` in its `models` (an account
    /// without a list serves anything, but does not claim Claude or Gemini models; nor does a
    /// model map, which renames what an account is sent, not what it claims).
    pub fn openai_lists(&self, model: &str) -> bool {
        self.accounts().iter().any(|a| {
            a.record.enabled
                && a.record.provider.serves_openai_api()
                && !a.models.is_empty()
                && a.serves(model)
        })
    }

    pub fn accounts(&self) -> Arc<Vec<Arc<Account>>> {
        match self.accounts.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads every account record and opens its credential and proxy. An account whose
    /// credential or proxy cannot be opened (master key changed) is left out and logged, never
    /// served.
    pub async fn reload_accounts(&self) -> Result<(), StoreError> {
        let records = self.store.accounts().await?;
        let before = self.accounts();
        let mut ready = Vec::with_capacity(records.len());
        for record in records {
            match self.prepare(record) {
                Ok(mut account) => {
                    if let Some(old) = before.iter().find(|a| a.id() == account.id()) {
                        account.keep_learned(old);
                    }
                    ready.push(Arc::new(account));
                }
                Err(id) => tracing::error!(
                    account_id = %id,
                    "cannot open this account's credential (was the master key changed?); it is not served"
                ),
            }
        }
        let ready = Arc::new(ready);
        match self.accounts.write() {
            Ok(mut guard) => *guard = ready,
            Err(poisoned) => *poisoned.into_inner() = ready,
        }
        Ok(())
    }

    fn prepare(&self, record: AccountRecord) -> Result<Account, String> {
        let plain = self
            .master_key
            .open(&record.id, &record.sealed_api_key)
            .map_err(|_| record.id.clone())?;
        let proxy = self.proxy_of(&record).map_err(|_| record.id.clone())?;
        let id = record.id.clone();
        Account::new(record, &plain, proxy.as_deref()).ok_or(id)
    }

    /// The proxy calls made for the account of `record` go through: the one its served self
    /// holds (with its clients' open connections) when that is the same, else one made now. An
    /// error when the sealed URL cannot be opened: such an account is never called straight.
    pub fn proxy_for(
        &self,
        record: &AccountRecord,
    ) -> Result<Option<Arc<AccountProxy>>, &'static str> {
        if let Some(served) = self.accounts().iter().find(|a| a.id() == record.id)
            && served.record.sealed_proxy == record.sealed_proxy
        {
            return Ok(served.proxy.clone());
        }
        const UNUSABLE: &str = "the account's proxy cannot be opened (was the master key changed?)";
        match self.proxy_of(record).map_err(|_| UNUSABLE)? {
            None => Ok(None),
            Some(url) => AccountProxy::new(&url)
                .map(|proxy| Some(Arc::new(proxy)))
                .ok_or(UNUSABLE),
        }
    }

    /// The proxy URL of `record`, opened.
    pub fn proxy_of(
        &self,
        record: &AccountRecord,
    ) -> Result<Option<String>, crate::crypto::CryptoError> {
        record
            .sealed_proxy
            .as_deref()
            .map(|sealed| self.master_key.open(&proxy_aad(&record.id), sealed))
            .transpose()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    /// A key deleted (here straight in the store, as when a rotation cached it under a hash the
    /// delete never read) is forgotten by its id, under every hash it was cached by.
    #[tokio::test]
    async fn a_deleted_key_is_forgotten_under_any_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), 100).unwrap());
        let key = KeyRecord {
            id: "k".into(),
            name: "k".into(),
            hash: "h1".into(),
            prefix: "sy-".into(),
            enabled: true,
            created_at: 0,
            binding: None,
            limits: Default::default(),
            revision: 0,
        };
        store.insert_key(&key).await.unwrap();
        let catalog = Catalog::load(
            Arc::clone(&store),
            MasterKey::from_hex(&"ab".repeat(32)).unwrap(),
        )
        .await
        .unwrap();
        assert!(catalog.key_by_hash("h1").await.unwrap().is_some());
        store.delete_key("k").await.unwrap();
        // Cached: the store is not asked again.
        assert!(catalog.key_by_hash("h1").await.unwrap().is_some());
        catalog.forget_key("k");
        assert!(catalog.key_by_hash("h1").await.unwrap().is_none());
    }
}
