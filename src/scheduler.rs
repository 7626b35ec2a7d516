//! Choosing the upstream account for a request.
//!
//! Candidates are the enabled, schedulable accounts of the right provider whose model globs
//! admit the model (any account, when there is no model). The store makes the choice atomically (lowest priority number, then least
//! recently used, never one at its concurrency cap) and takes the account's lease with it.

pub mod health;
pub mod policy;
pub mod session;

use std::sync::Arc;

use crate::catalog::{Account, Catalog};
use crate::error::{ApiError, ErrorKind};
use crate::limits::LeaseGuard;
use crate::store::{Candidate, Provider};

pub async fn pick(
    catalog: &Catalog,
    provider: Provider,
    model: Option<&str>,
    leases: &mut LeaseGuard,
) -> Result<Arc<Account>, ApiError> {
    let accounts = catalog.accounts();
    let serving: Vec<&Arc<Account>> = accounts
        .iter()
        .filter(|a| a.record.provider == provider && model.is_none_or(|m| a.serves(m)))
        .collect();
    let candidates: Vec<Candidate> = serving
        .iter()
        .filter(|a| a.record.enabled && a.record.schedulable)
        .map(|a| Candidate {
            account_id: a.record.id.clone(),
            priority: a.record.priority,
            max_concurrency: a.record.max_concurrency,
        })
        .collect();
    let model = model.unwrap_or("(any)");
    if candidates.is_empty() {
        let message = if serving.is_empty() {
            format!("no upstream account serves model {model}")
        } else {
            format!(
                "no upstream account for model {model} is available now: every one is disabled or unschedulable"
            )
        };
        return Err(ApiError::new(ErrorKind::Unavailable, message));
    }
    let picked = catalog
        .store()
        .pick_account(&candidates, leases.lease())
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorKind::Unavailable,
                format!("the store is unavailable: {e}"),
            )
        })?;
    let Some(id) = picked else {
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            format!("no upstream account for model {model} is available now: every one is at its concurrency limit"),
        )
        .with_retry_after(1));
    };
    leases.set_account(&id);
    serving
        .into_iter()
        .find(|a| a.record.id == id)
        .cloned()
        .ok_or_else(|| ApiError::internal("the store picked an unknown account"))
}
