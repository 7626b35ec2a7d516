//! The attempts of one request: another account takes over while nothing has reached the client.

use std::time::{Duration, Instant};

use http::Response;

use super::call::Call;
use super::upstream::{Answer, Failure, send};
use crate::app::App;
use crate::body::Body;
use crate::error::{ApiError, ErrorKind};
use crate::limits::KeyLease;
use crate::metrics as m;
use crate::scheduler::policy::Sticky;
use crate::scheduler::{self, Picked, health};
use crate::store::{KeyRecord, RequestLogEntry};
use crate::usage::TokenUsage;

/// Who a request is, for logs and records.
pub(crate) struct Ctx<'a> {
    pub(crate) request_id: &'a str,
    /// Unix ms when it arrived.
    pub(crate) at_ms: i64,
    pub(crate) started: Instant,
}

/// The attempt whose answer goes to the client.
pub(crate) struct Served {
    pub(crate) picked: Picked,
    pub(crate) upstream: crate::upstream_client::UpstreamResponse,
    /// What was read of a stream to judge its first event: handed on before the rest.
    pub(crate) read: Option<bytes::Bytes>,
    pub(crate) sent_at: Instant,
    pub(crate) head_at: Instant,
    /// How long the request waited for a slot (`scheduler.queue_wait_secs`).
    pub(crate) queued: Duration,
}

#[expect(
    clippy::large_enum_variant,
    reason = "made once per request and taken apart at once: a box would be an allocation more"
)]
pub(crate) enum Attempts {
    Served(Served),
    /// Every account tried failed: the last upstream answer, as the client gets it.
    Failed(Response<Body>),
}

/// Picks an account and sends; on a failure that another account may not have (connect error,
/// 429, 529, 5xx, first-byte timeout, an Anthropic stream that opens with such an error)
/// reports it and tries another, up to the scheduler's attempts and deadline.
pub(crate) async fn attempts(
    app: &App,
    call: &Call,
    client: &http::HeaderMap,
    key: &KeyRecord,
    key_lease: &mut KeyLease,
    ctx: &Ctx<'_>,
) -> Result<Attempts, ApiError> {
    // Attempts: another account takes over while nothing has reached the client.
    let policy = &app.config.scheduler;
    let deadline = ctx.started + Duration::from_secs(policy.attempt_deadline_secs);
    let queue_until = (ctx.started + Duration::from_secs(policy.queue_wait_secs)).min(deadline);
    // Time spent waiting for a slot: not the relay's own overhead.
    let mut queued = Duration::ZERO;
    let mut tried: Vec<String> = Vec::new();
    let mut last_failure: Option<Failure> = None;
    let mut rebind = false;
    // Accounts that refused this request (403) while another may serve it.
    let mut refused: Vec<String> = Vec::new();
    // An Anthropic stream may open with an error event after its 200 head (an overload): its
    // first event is read before the answer is taken, within the first-byte timeout.
    let first_event = matches!(call.target, super::call::Target::Anthropic { .. })
        .then(|| Duration::from_secs(app.config.upstream.first_byte_timeout_secs));
    loop {
        let attempt = u32::try_from(tried.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let ask = scheduler::Ask {
            protocol: call.target.protocol(),
            model: call.model.as_deref(),
            session: call.session.as_ref(),
            binding: key.binding.as_ref(),
            exclude: &tried,
            attempt,
            rebind,
            chatgpt: matches!(&call.target, super::call::Target::OpenAi { path }
                if crate::providers::chatgpt::serves(path)),
            code_assist: matches!(&call.target, super::call::Target::Gemini { path, .. }
                if crate::providers::code_assist::serves(path)),
        };
        let picked = match pick_queued(app, &ask, key, key_lease, queue_until, &mut queued).await {
            Ok(picked) => picked,
            // Nobody else can take it: the client gets what the last attempt got.
            Err(unavailable) => {
                let Some(failure) = last_failure else {
                    return Err(unavailable);
                };
                return failed(app, call, key, ctx, &tried, failure);
            }
        };
        rebind |= matches!(picked.sticky, Sticky::Bound | Sticky::Moved);
        key_lease.mark_sent();
        let sent_at = Instant::now();
        // An error answer whose meaning depends on its body is read whole first (it is small).
        let (sent, head_at) = match send(app, call, client, &picked.account).await {
            Ok((resp, head_at)) => {
                // The first event counts as the first byte: within the same time of sending.
                let within = first_event.map(|t| t.saturating_sub(sent_at.elapsed()));
                (Answer::of(resp, within).await, head_at)
            }
            Err(e) => (Err(e), Instant::now()),
        };
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let outcome = match &sent {
            Ok(answer) => answer.outcome(),
            Err(e) => e.outcome(),
        };
        let verdict = match health::judge(
            outcome,
            now_ms,
            Duration::from_secs(policy.rate_limit_cooldown_secs),
        ) {
            // A stored response lives on the account that made it: a 404 sends the call on.
            health::Verdict::ClientFault
                if call.names_a_stored_object()
                    && matches!(&sent, Ok(a) if a.status() == http::StatusCode::NOT_FOUND) =>
            {
                health::Verdict::Elsewhere
            }
            verdict => scheduler::scoped(
                verdict,
                picked.account.record.provider,
                call.model.as_deref(),
            ),
        };
        // A subscription's token refused after a renewal replaced it (this instance had not
        // heard yet, or the request was sent before) says nothing of the account: not reported,
        // or the renewed token would be taken for refused too; and if the renewal landed while
        // it was reported, the report is taken back.
        let subscription =
            verdict == health::Verdict::Unauthorized && picked.account.record.oauth.is_some();
        let mut stale = subscription && crate::oauth::replaced(app, &picked.account.record).await;
        if !stale {
            scheduler::report(app, policy, &picked, &verdict, || match &sent {
                Ok(answer) => answer.describe(),
                Err(e) => e.describe(),
            })
            .await;
            if subscription && crate::oauth::replaced(app, &picked.account.record).await {
                stale = true;
                if let Err(e) = app.store().reset_health(picked.account.id()).await {
                    tracing::warn!(account_id = picked.account.id(), error = %e, "could not take back a refusal of a replaced token");
                }
            }
        }
        match verdict {
            health::Verdict::Refused => refused.push(picked.account.id().to_owned()),
            // A subscription's token refused: renewed now, not at the next check.
            health::Verdict::Unauthorized if picked.account.record.oauth.is_some() && !stale => {
                app.oauth.wake();
            }
            health::Verdict::Healthy => {
                for account_id in refused.drain(..) {
                    scheduler::report_refusal(app, policy, &account_id).await;
                }
            }
            _ => {}
        }
        let may_retry = verdict.may_fail_over()
            && tried.len() + 1 < policy.max_attempts as usize
            && Instant::now() < deadline;
        let failure = match sent {
            // The vendor's answer to a refused credential is not the client's business (it
            // would read as its own key refused, and may quote the account's key).
            Ok(_) if verdict == health::Verdict::Unauthorized => Failure::Error(ApiError::new(
                ErrorKind::BadGateway,
                "the upstream refused this account's credentials; an admin must fix the account",
            )),
            // Nor is its word that the account is out of money (it would read as the client's).
            Ok(_) if verdict == health::Verdict::Exhausted => Failure::Error(
                ApiError::new(
                    ErrorKind::Unavailable,
                    "the upstream account is out of credit or quota; it is tried again later",
                )
                .with_retry_after(policy.failure_cooldown_max_secs.max(1)),
            ),
            Ok(answer) if !may_retry => {
                let (upstream, read) = answer.into_served();
                return Ok(Attempts::Served(Served {
                    picked,
                    upstream,
                    read,
                    sent_at,
                    head_at,
                    queued,
                }));
            }
            Ok(answer) => Failure::Response(answer.into_failure().await),
            Err(e) => Failure::Error(e.into_api_error()),
        };
        tried.push(picked.account.id().to_owned());
        if !may_retry {
            return failed(app, call, key, ctx, &tried, failure);
        }
        let (status, error) = match &failure {
            Failure::Response(b) => (b.status.as_u16(), String::new()),
            Failure::Error(e) => (e.status.as_u16(), e.message.clone()),
        };
        tracing::info!(request_id = ctx.request_id, account_id = %picked.account.id(), status, error, "upstream failed before the first byte; trying another account");
        last_failure = Some(failure);
        metrics::counter!(m::FAILOVERS).increment(1);
        // `picked` drops here: the failed attempt's account lease is released.
    }
}

/// `scheduler::pick`, waiting until `until` (`scheduler.queue_wait_secs` after the request
/// came) for a slot when the key is at its concurrency limit or every account that could serve
/// is busy or resting for less than the time left: asked again after 25–50 ms, doubling to
/// 125–250 ms (a random pause in the upper half of each step, so that waiters spread out), and
/// once more at `until`. There is no line: the store hands a freed slot to whoever asks first
/// after its release. Nothing is held while waiting (a refused admission or pick takes
/// nothing; the key's pending admission is planned again before each try, for the windows and
/// days of then), a client that leaves ends the wait, and so does the server's stop. The time
/// waited is added to `queued`.
async fn pick_queued(
    app: &App,
    ask: &scheduler::Ask<'_>,
    key: &KeyRecord,
    key_lease: &mut KeyLease,
    until: Instant,
    queued: &mut Duration,
) -> Result<Picked, ApiError> {
    let policy = &app.config.scheduler;
    let mut pause = Duration::from_millis(50);
    let mut wait: Option<Waiting> = None;
    loop {
        match scheduler::pick(&app.catalog, policy, ask, key_lease).await {
            Err(e) if waits_for_a_slot(app, &e, until) => {}
            other => {
                if let Some(w) = wait.take() {
                    *queued += w.end(if other.is_ok() { "served" } else { "gave_up" });
                }
                return other;
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        wait.get_or_insert_with(Waiting::start);
        let half = pause / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(0);
        let nap = half + Duration::from_micros(rand::random::<u64>() % (spread + 1));
        tokio::time::sleep(nap.min(left)).await;
        pause = (pause * 2).min(MAX_QUEUE_PAUSE);
        if let Err(e) = key_lease.replan(app, key) {
            if let Some(w) = wait.take() {
                *queued += w.end("gave_up");
            }
            return Err(e);
        }
    }
}

/// The longest pause between two tries of a waiting request (before its spread).
const MAX_QUEUE_PAUSE: Duration = Duration::from_millis(250);

/// A request's wait for a slot, counted when it ends (`switchyard_queued_total`,
/// `switchyard_queue_wait_seconds`); one whose request is dropped meanwhile (the client left)
/// as `abandoned`.
struct Waiting {
    since: Instant,
    ended: bool,
}

impl Waiting {
    fn start() -> Waiting {
        Waiting {
            since: Instant::now(),
            ended: false,
        }
    }

    /// Ends it: how long it lasted.
    fn end(mut self, outcome: &'static str) -> Duration {
        self.ended = true;
        record_wait(outcome, self.since.elapsed())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.ended {
            record_wait("abandoned", self.since.elapsed());
        }
    }
}

fn record_wait(outcome: &'static str, waited: Duration) -> Duration {
    metrics::counter!(m::QUEUED, "outcome" => outcome).increment(1);
    metrics::histogram!(m::QUEUE_WAIT).record(waited.as_secs_f64());
    waited
}

/// Whether `e` is a refusal a slot freeing soon ends: the key's concurrency limit, or no
/// account able to take the request now while one recovers on its own (`Retry-After`, whole
/// seconds rounded up) before `until`; not once the server is stopping.
fn waits_for_a_slot(app: &App, e: &ApiError, until: Instant) -> bool {
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() || app.stopping() {
        return false;
    }
    match (e.kind, e.code, e.retry_after) {
        (ErrorKind::RateLimited, Some(crate::limits::CONCURRENCY_CODE), _) => true,
        (ErrorKind::Unavailable, None, Some(secs)) => {
            Duration::from_secs(secs) <= left + Duration::from_secs(1)
        }
        _ => false,
    }
}

/// No attempt served: the request is logged (with the status the client gets, whether the last
/// attempt got an answer or none) and the client gets the last failure.
fn failed(
    app: &App,
    call: &Call,
    key: &KeyRecord,
    ctx: &Ctx<'_>,
    tried: &[String],
    failure: Failure,
) -> Result<Attempts, ApiError> {
    let status = match &failure {
        Failure::Response(b) => b.status,
        Failure::Error(e) => e.status,
    };
    let entry = RequestLogEntry {
        request_id: ctx.request_id.to_owned(),
        at: ctx.at_ms,
        key_id: key.id.clone(),
        account_id: tried.last().cloned(),
        model: call.model.clone().unwrap_or_default(),
        surface: call.surface.as_str().to_owned(),
        status: status.as_u16(),
        latency_ms: ctx.started.elapsed().as_millis() as u64,
        ttfb_ms: None,
        usage: TokenUsage::default(),
        cost_nanousd: 0,
        cache_hit: false,
        estimated: false,
    };
    tracing::info!(
        request_id = ctx.request_id,
        key_id = %key.id,
        account_id = ?entry.account_id,
        model = %entry.model,
        status = entry.status,
        latency_ms = entry.latency_ms,
        attempts = tried.len(),
        "request failed upstream on every account tried"
    );
    if call.billed() {
        app.stats.record(entry, false);
    }
    failure.respond(call).map(Attempts::Failed)
}
