//! Per-key admission: one atomic store call before anything else happens, and the leases a
//! request holds.
//!
//! Leases are held by guards that release them when dropped: on every path out of the relay
//! (an error before the upstream call, a failed attempt moving to another account, the end of
//! the response body, a client that went away) the counters return, exactly once.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::new_id;
use crate::error::{ApiError, ErrorKind};
use crate::store::{Admission, Admit, KeyRecord, Lease, Store};

/// The key's lease of one request; released on drop. A key without limits holds none (nothing
/// would read it), so its requests skip the store here.
pub struct KeyLease(Release);

impl KeyLease {
    pub fn lease(&self) -> &Lease {
        &self.0.lease
    }

    pub fn key_id(&self) -> &str {
        &self.0.key_id
    }

    /// The lease an account takes for one attempt of this request. Each attempt has its own id,
    /// so a failed attempt gives back its account without touching the key's lease.
    pub fn attempt_lease(&self, attempt: u32) -> Lease {
        Lease {
            id: format!("{}.{attempt}", self.0.lease.id),
            ttl: self.0.lease.ttl,
        }
    }

    /// Guards `lease`, which the store gave `account_id` for this request.
    pub fn account_lease(&self, account_id: &str, lease: Lease) -> AccountLease {
        AccountLease(Release {
            held: true,
            store: Arc::clone(&self.0.store),
            key_id: self.0.key_id.clone(),
            account_id: Some(account_id.to_owned()),
            lease,
        })
    }
}

/// An account's lease for one attempt; released on drop.
pub struct AccountLease(Release);

impl AccountLease {
    pub fn lease(&self) -> &Lease {
        &self.0.lease
    }
}

struct Release {
    /// `false` for a key lease that was never taken: dropping it calls nothing.
    held: bool,
    store: Arc<dyn Store>,
    key_id: String,
    /// Set for account leases: the lease is the account's, not the key's (the key holds no lease
    /// of this id, so releasing it there changes nothing).
    account_id: Option<String>,
    lease: Lease,
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (process exit): the leases expire on their own.
            return;
        };
        let store = Arc::clone(&self.store);
        let key_id = std::mem::take(&mut self.key_id);
        let account_id = self.account_id.take();
        let lease = self.lease.clone();
        // Stopped by: success, or the last retry (a few seconds); past that the lease expires
        // on its own after its ttl.
        runtime.spawn(async move {
            let mut delay = Duration::from_millis(200);
            for attempt in 1..=RELEASE_ATTEMPTS {
                match store.release(&key_id, account_id.as_deref(), &lease).await {
                    Ok(()) => return,
                    Err(e) if attempt == RELEASE_ATTEMPTS => {
                        tracing::warn!(error = %e, lease = %lease.id, "lease release failed; it will expire on its own");
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        });
    }
}

/// Tries to release a lease this many times (over about 6 s) while the store is unreachable.
const RELEASE_ATTEMPTS: u32 = 5;

/// Checks the key's limits and takes its lease, in one store call.
pub async fn admit(
    store: &Arc<dyn Store>,
    key: &KeyRecord,
    ttl: Duration,
) -> Result<KeyLease, ApiError> {
    let lease = Lease {
        id: new_id("lease"),
        ttl,
    };
    let admission = Admission {
        key_id: key.id.clone(),
        max_concurrency: None,
    };
    let release = |held| Release {
        held,
        store: Arc::clone(store),
        key_id: key.id.clone(),
        account_id: None,
        lease: lease.clone(),
    };
    // Nothing to check or count: no store call on the request path.
    if admission.max_concurrency.is_none() {
        return Ok(KeyLease(release(false)));
    }
    match store.admit(&admission, &lease).await {
        Ok(Admit::Granted) => Ok(KeyLease(release(true))),
        Ok(Admit::ConcurrencyExceeded { limit }) => Err(ApiError::new(
            ErrorKind::RateLimited,
            format!("this key allows {limit} concurrent requests; wait for one to finish"),
        )
        .with_retry_after(1)),
        Err(e) => Err(ApiError::new(
            ErrorKind::Unavailable,
            format!("the store is unavailable: {e}"),
        )),
    }
}
