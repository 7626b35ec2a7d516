//! Per-key admission: one atomic store call before anything else happens, and the lease it takes.
//!
//! The lease is held by a guard that releases it when dropped: on every path out of the relay
//! (an error before the upstream call, the end of the response body, a client that went away)
//! the counters return, exactly once.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::new_id;
use crate::error::{ApiError, ErrorKind};
use crate::store::{Admission, Admit, KeyRecord, Lease, Store};

/// The leases one request holds; released on drop.
pub struct LeaseGuard {
    store: Arc<dyn Store>,
    key_id: String,
    /// Set once the scheduler picked an account under the same lease.
    account_id: Option<String>,
    lease: Lease,
}

impl LeaseGuard {
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn set_account(&mut self, account_id: &str) {
        self.account_id = Some(account_id.to_owned());
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
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
) -> Result<LeaseGuard, ApiError> {
    let lease = Lease {
        id: new_id("lease"),
        ttl,
    };
    let admission = Admission {
        key_id: key.id.clone(),
        max_concurrency: None,
    };
    match store.admit(&admission, &lease).await {
        Ok(Admit::Granted) => Ok(LeaseGuard {
            store: Arc::clone(store),
            key_id: key.id.clone(),
            account_id: None,
            lease,
        }),
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
