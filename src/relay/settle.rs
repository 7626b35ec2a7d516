//! The end of a relayed request: usage → cost → stats and the key's counters; leases released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::app::App;
use crate::budget::Budget;
use crate::catalog::Account;
use crate::error::Surface;
use crate::limits::{AccountLease, KeyLease, Spent};
use crate::metrics as m;
use crate::scheduler::session::Session;
use crate::store::{Binding, RequestLogEntry};
use crate::stream::tap::{End, Observer};
use crate::stream::usage::UsageReader;
use crate::usage::TokenUsage;

/// How often the leases of a request still in progress are renewed: a third of their ttl, so
/// that a renewal lost to an unreachable store is made up by the next one before they expire.
pub(super) fn renewal_period(lease_ttl: Duration) -> Duration {
    lease_ttl / 3
}

/// Settles a request when its response body ends or is dropped, and keeps its leases alive
/// while it runs (a stream can outlast their ttl).
pub(super) struct Settle {
    pub(super) app: Arc<App>,
    pub(super) request_id: String,
    pub(super) key_id: String,
    /// The account that served: its id for the log, its budgets for its spend.
    pub(super) account: Arc<Account>,
    pub(super) model: String,
    pub(super) surface: Surface,
    pub(super) status: u16,
    pub(super) at_ms: i64,
    pub(super) started: Instant,
    pub(super) sent_at: Instant,
    pub(super) ttfb_ms: u64,
    /// `None` for endpoints that are not billed.
    pub(super) usage: Option<UsageReader>,
    /// The request's input tokens judged by its size, for an answer that never reported them.
    pub(super) input_estimate: u64,
    /// For a streamed answer: the upstream protocol's error event, to end a cut stream with.
    pub(super) error_event: Option<fn(&str) -> Bytes>,
    pub(super) leases: Option<(KeyLease, AccountLease)>,
}

impl Observer for Settle {
    fn on_data(&mut self, data: &Bytes) {
        if let Some(usage) = &mut self.usage {
            usage.observe(data);
        }
    }

    fn error_event(&self, message: &str) -> Option<Bytes> {
        self.error_event.map(|event| event(message))
    }

    fn renew(&mut self) {
        if let Some((key_lease, account_lease)) = &self.leases {
            key_lease.renew_with(account_lease, self.app.clock.now_ms());
        }
    }

    fn on_end(&mut self, end: End) {
        let leases = self.leases.take();
        m::active_streams().decrement(1.0);
        let latency_ms = self.started.elapsed().as_millis() as u64;
        m::upstream_latency().record(self.sent_at.elapsed().as_secs_f64());
        m::count_request(self.surface.as_str(), self.status);
        // An error answer is billed only what it reported.
        let (usage, estimated) = match &self.usage {
            Some(u) if self.status < 400 => u.billed(self.input_estimate, end == End::Complete),
            Some(u) => (u.usage(), false),
            None => (TokenUsage::default(), false),
        };
        let usage = usage.capped();
        let cost = self.app.pricing().cost(&self.model, &usage);
        if Budget::of(&self.account.record).is_some() {
            let (id, request) = (self.account.id(), &self.request_id);
            crate::budget::charge(&self.app, id, request, self.started, cost.nanousd);
        }
        if let Some((key_lease, account_lease)) = leases {
            // In the same store call as the leases: nothing more on the request's way.
            let bind = self.stored_response();
            key_lease.settle_with(account_lease, Spent::of(&usage, cost.nanousd), bind);
        }
        let end = match &end {
            End::Complete => "complete",
            End::Failed(_) => "upstream_failed",
            End::Dropped => "client_disconnected",
        };
        tracing::info!(
            request_id = %self.request_id,
            key_id = %self.key_id,
            account_id = %self.account.id(),
            model = %self.model,
            status = self.status,
            latency_ms,
            ttfb_ms = self.ttfb_ms,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cost_nanousd = cost.nanousd,
            estimated,
            end,
            "request"
        );
        if self.usage.is_some() {
            let label = m::model_label(&self.model);
            if !cost.known_model {
                metrics::counter!(m::UNKNOWN_MODEL_PRICE, "model" => label.to_owned()).increment(1);
            }
            record_token_metrics(label, &usage, cost.nanousd);
            let billed = self.status < 400 || !usage.is_empty();
            // `on_end` is the last use of these: they move into the log entry.
            let entry = RequestLogEntry {
                request_id: std::mem::take(&mut self.request_id),
                at: self.at_ms,
                key_id: std::mem::take(&mut self.key_id),
                account_id: Some(self.account.id().to_owned()),
                model: std::mem::take(&mut self.model),
                surface: self.surface.as_str().to_owned(),
                status: self.status,
                latency_ms,
                ttfb_ms: Some(self.ttfb_ms),
                usage,
                cost_nanousd: cost.nanousd,
                cache_hit: false,
                estimated,
            };
            self.app.stats.record(entry, billed);
        }
    }
}

impl Settle {
    /// The session of the stored response this answer made (its id seen, the request not
    /// `store: false`), with its TTL: bound to the account that made it, where a follow-up turn
    /// or a fetch of it must go. Whatever the stream's end: the vendor keeps a response cut
    /// short too, as `incomplete`.
    fn stored_response(&self) -> Option<Binding> {
        let ttl = self.app.config.scheduler.response_binding_ttl_secs;
        if self.status >= 400 || ttl == 0 {
            return None;
        }
        let id = self.usage.as_ref()?.response_id()?;
        Some(Binding {
            session: Session::of_response(&self.key_id, &id).id,
            ttl: Duration::from_secs(ttl),
        })
    }
}

fn record_token_metrics(model: &str, usage: &TokenUsage, cost_nanousd: u64) {
    // In the order of `m::TOKEN_KINDS`.
    let tokens = [
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
    ];
    m::record_model_usage(model, tokens, cost_nanousd);
}
