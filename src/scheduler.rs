//! Choosing the upstream account for a request.
//!
//! Candidates are the enabled, schedulable accounts of the right provider whose model globs
//! admit the model (any account, when there is no model), less those this request already
//! tried. The store makes the choice atomically (lowest priority number, then least recently
//! used, never one at its concurrency cap) and takes the account's lease with it. See
//! docs/scheduler.md.

pub mod health;
pub mod policy;
pub mod session;

use std::sync::Arc;

use crate::catalog::{Account, Catalog};
use crate::error::{ApiError, ErrorKind};
use crate::limits::{AccountLease, KeyLease};
use crate::store::{Candidate, Provider};

/// The account serving one attempt, and its lease.
pub struct Picked {
    pub account: Arc<Account>,
    pub lease: AccountLease,
}

/// What a request asks of the scheduler.
pub struct Ask<'a> {
    pub provider: Provider,
    /// `None`: any account of the provider (e.g. listing models).
    pub model: Option<&'a str>,
    /// Accounts already tried by this request.
    pub exclude: &'a [String],
    /// 1 for the first attempt.
    pub attempt: u32,
}

pub async fn pick(catalog: &Catalog, ask: &Ask<'_>, key: &KeyLease) -> Result<Picked, ApiError> {
    let accounts = catalog.accounts();
    let serving: Vec<&Arc<Account>> = accounts
        .iter()
        .filter(|a| a.record.provider == ask.provider && ask.model.is_none_or(|m| a.serves(m)))
        .collect();
    let candidates: Vec<Candidate> = serving
        .iter()
        .filter(|a| a.record.enabled && a.record.schedulable)
        .filter(|a| !ask.exclude.iter().any(|id| id == a.id()))
        .map(|a| Candidate {
            account_id: a.record.id.clone(),
            priority: a.record.priority,
            max_concurrency: a.record.max_concurrency,
        })
        .collect();
    let model = ask.model.unwrap_or("(any)");
    if candidates.is_empty() {
        let message = if serving.is_empty() {
            format!("no upstream account serves model {model}")
        } else if ask.exclude.is_empty() {
            format!(
                "no upstream account for model {model} is available now: every one is disabled or unschedulable"
            )
        } else {
            format!("no other upstream account for model {model} is available")
        };
        return Err(ApiError::new(ErrorKind::Unavailable, message));
    }
    let lease = key.attempt_lease(ask.attempt);
    let picked = catalog
        .store()
        .pick_account(&candidates, &lease)
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
            format!(
                "no upstream account for model {model} is available now: every one is at its concurrency limit"
            ),
        )
        .with_retry_after(1));
    };
    let lease = key.account_lease(&id, lease);
    let account = serving
        .into_iter()
        .find(|a| a.record.id == id)
        .cloned()
        .ok_or_else(|| ApiError::internal("the store picked an unknown account"))?;
    Ok(Picked { account, lease })
}
