//! Notices to the operators when an account needs them: its credential refused, its credit
//! spent, the whole account rate limited, a streak of failures and the success that ends it, an
//! OAuth grant that needs a new login. Each is POSTed to `notify.webhook_url`, as JSON or as a
//! Slack or Discord message.
//!
//! A notice comes from the report that changed the account's state: the store applies reports
//! one after another, across instances too (`Store::report_health` answers the health a report
//! was applied to and what it made of it), so one change is told once, by the instance whose report made it. The
//! changes that come back on their own (a rate limit, a spent credit found spent again after
//! each cooldown) are told at most once per `notify.repeat_after_secs` per account by each
//! instance; the others (refused, failing, recovered, a grant refused) need something to happen
//! between two of them, and each is told. Nothing on the request path waits: notices go into a
//! bounded queue, which a task of their own sends from, each tried three times; one that finds
//! the queue full is dropped and counted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::NotifyConfig;
use crate::scheduler::health::Verdict;
use crate::scheduler::policy::{Health, Status};
use crate::store::AccountRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The vendor refused the account's credential: out of rotation until an admin gives it
    /// another (or resets it). Not told of an account with an OAuth grant, whose refusal starts
    /// a renewal: `OAuthGrantRefused` is, when the grant is refused, and this one when three
    /// renewals in a row fail otherwise.
    AccountUnauthorized,
    /// The vendor says the account's credit is spent.
    AccountOutOfCredit,
    /// The whole account is rate limited (not one model's or one family's limit).
    AccountRateLimited,
    /// `notify.failures` failures in a row.
    AccountFailing,
    /// A success that ended such a streak.
    AccountRecovered,
    /// The account's OAuth grant cannot be used again: it needs a new login.
    #[serde(rename = "oauth_grant_refused")]
    OAuthGrantRefused,
    /// The account reached its daily or monthly budget (`crate::budget`): it serves again
    /// when the period ends.
    AccountBudgetReached,
}

impl Event {
    pub const ALL: [Event; 7] = [
        Event::AccountUnauthorized,
        Event::AccountOutOfCredit,
        Event::AccountRateLimited,
        Event::AccountFailing,
        Event::AccountRecovered,
        Event::OAuthGrantRefused,
        Event::AccountBudgetReached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::AccountUnauthorized => "account_unauthorized",
            Event::AccountOutOfCredit => "account_out_of_credit",
            Event::AccountRateLimited => "account_rate_limited",
            Event::AccountFailing => "account_failing",
            Event::AccountRecovered => "account_recovered",
            Event::OAuthGrantRefused => "oauth_grant_refused",
            Event::AccountBudgetReached => "account_budget_reached",
        }
    }

    /// Whether the event comes back without anything happening in between (the vendor's
    /// limits, a credit still spent at each retry): told at most once per
    /// `notify.repeat_after_secs`.
    fn recurs(self) -> bool {
        matches!(self, Event::AccountRateLimited | Event::AccountOutOfCredit)
    }

    /// The event a report made, `before` and `after` the account's health as the store had it
    /// and left it (`failures`: `notify.failures`).
    pub fn of_report(
        verdict: &Verdict,
        before: &Health,
        after: &Health,
        now: i64,
        failures: u32,
    ) -> Option<Event> {
        let event = match verdict {
            Verdict::Unauthorized => Event::AccountUnauthorized,
            Verdict::Exhausted => Event::AccountOutOfCredit,
            Verdict::RateLimited { .. } => Event::AccountRateLimited,
            Verdict::Failing => Event::AccountFailing,
            Verdict::Healthy => Event::AccountRecovered,
            _ => return None,
        };
        let made = match event {
            Event::AccountUnauthorized => {
                before.status != Status::Unauthorized && after.status == Status::Unauthorized
            }
            // From serving to out: of the reports racing when the credit ran out, the first
            // (each later one moves the exclusion on by no more than the time between them).
            // Or out already, for a shorter while (a failure's cooldown, an overload): moved
            // on to the long one.
            Event::AccountOutOfCredit => {
                after.status_at(now) == Status::CoolingDown
                    && (before.status_at(now) == Status::Ok
                        || after.until.saturating_sub(before.until) > CREDIT_MARGIN_MS)
            }
            Event::AccountRateLimited => {
                before.status_at(now) == Status::Ok && after.status_at(now) == Status::RateLimited
            }
            Event::AccountFailing => {
                before.consecutive_failures < failures && after.consecutive_failures >= failures
            }
            Event::AccountRecovered => {
                before.consecutive_failures >= failures && after.consecutive_failures == 0
            }
            Event::OAuthGrantRefused | Event::AccountBudgetReached => false,
        };
        made.then_some(event)
    }
}

/// How much later than before a spent credit's report must put an account's return, when the
/// account was out already, to be told: more than reports racing each other move it.
const CREDIT_MARGIN_MS: i64 = 60_000;

/// A notice's body: the notice as JSON (with its message as `text`), or its message alone as
/// a Slack (`{"text"}`) or Discord (`{"content"}`) webhook takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Slack,
    Discord,
}

/// What the relay tells of an account.
#[derive(Debug, Clone)]
pub struct Notice {
    pub event: Event,
    pub account_id: String,
    pub account_name: String,
    pub provider: &'static str,
    /// Unix ms the account is out of rotation until, when that is known.
    pub until: Option<i64>,
    /// What the vendor or the relay said: the account's last error or the grant's failure,
    /// which never quote a secret.
    pub detail: String,
    /// Unix ms.
    pub at: i64,
}

impl Notice {
    /// A notice of `event` about the account of `record`, at `at` (unix ms).
    pub fn of(
        record: &AccountRecord,
        event: Event,
        until: Option<i64>,
        detail: String,
        at: i64,
    ) -> Notice {
        Notice {
            event,
            account_id: record.id.clone(),
            account_name: record.name.clone(),
            provider: record.provider.as_str(),
            until,
            detail,
            at,
        }
    }

    /// One line for a person.
    pub fn text(&self) -> String {
        let who = format!(
            "Switchyard account \"{}\" ({}, {})",
            self.account_name, self.provider, self.account_id
        );
        let until = self
            .until
            .map(rfc3339)
            .unwrap_or_else(|| "later".to_owned());
        let detail = &self.detail;
        match self.event {
            Event::AccountUnauthorized => format!(
                "{who}: the vendor refused its credential ({detail}); out of rotation until the \
                 credential is replaced (by an admin, or by a renewal of its OAuth grant) or an \
                 admin resets the account"
            ),
            Event::AccountOutOfCredit => format!(
                "{who}: the vendor says its credit is spent ({detail}); tried again at {until}"
            ),
            Event::AccountRateLimited => {
                format!("{who}: rate limited until {until} ({detail})")
            }
            Event::AccountFailing => {
                format!("{who}: failing ({detail}); cooling down until {until}")
            }
            Event::AccountRecovered => format!("{who}: serving again after a failure streak"),
            Event::OAuthGrantRefused => format!(
                "{who}: its OAuth grant cannot be used again ({detail}); it needs a new login"
            ),
            Event::AccountBudgetReached => format!("{who}: {detail}"),
        }
    }

    pub fn body(&self, format: Format) -> Value {
        match format {
            Format::Json => json!({
                "event": self.event.as_str(),
                "text": self.text(),
                "account": {
                    "id": self.account_id,
                    "name": self.account_name,
                    "provider": self.provider,
                },
                "until": self.until.map(rfc3339),
                "detail": self.detail,
                "at": rfc3339(self.at),
            }),
            Format::Slack => json!({ "text": self.text() }),
            Format::Discord => json!({ "content": self.text() }),
        }
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Notices waiting to be sent, at most.
const QUEUE: usize = 256;
/// Tries per notice, and how long each may take.
const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Notifier {
    events: Vec<Event>,
    repeat_after_ms: i64,
    failures: u32,
    queue: Option<mpsc::Sender<Notice>>,
    /// When each account's event was last told (unix ms).
    told: Mutex<HashMap<(String, Event), i64>>,
}

impl Notifier {
    /// Starts the task that sends notices, when there is a webhook to send them to: through
    /// `proxy` (`upstream.proxy`) when one is given, else the environment's. Needs the process's
    /// rustls provider and a tokio runtime.
    pub fn start(config: &NotifyConfig, proxy: Option<&str>) -> anyhow::Result<Notifier> {
        let queue = match &config.webhook_url {
            Some(url) => {
                let mut client = reqwest::Client::builder()
                    .timeout(ATTEMPT_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none());
                if let Some(proxy) = proxy {
                    let proxy = reqwest::Proxy::all(proxy)?.no_proxy(reqwest::NoProxy::from_env());
                    client = client.proxy(proxy);
                }
                let client = client.build()?;
                let (tx, rx) = mpsc::channel(QUEUE);
                // Stopped by: every sender dropped (the app with its notifier).
                tokio::spawn(deliver(rx, client, url.clone(), config.format));
                Some(tx)
            }
            None => None,
        };
        Ok(Notifier {
            events: config.events.clone(),
            repeat_after_ms: i64::try_from(config.repeat_after_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            failures: config.failures,
            queue,
            told: Mutex::new(HashMap::new()),
        })
    }

    /// `notify.failures`.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Queues `notice`, unless its event is not told, or recurs and was told of its account
    /// within `repeat_after_secs`.
    pub fn tell(&self, notice: Notice) {
        let Some(queue) = &self.queue else {
            return;
        };
        if !self.events.contains(&notice.event) {
            return;
        }
        let recurs = notice.event.recurs();
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        let key = (notice.account_id.clone(), notice.event);
        if recurs
            && told
                .get(&key)
                .is_some_and(|at| notice.at < at.saturating_add(self.repeat_after_ms))
        {
            return;
        }
        let (event, at) = (notice.event.as_str(), notice.at);
        tracing::info!(account_id = %notice.account_id, event, "telling the operators");
        match queue.try_send(notice) {
            Ok(()) if recurs => {
                told.insert(key, at);
                // Bounded by accounts × events, less what is past its window.
                if told.len() > 4096 {
                    let horizon = at.saturating_sub(self.repeat_after_ms);
                    told.retain(|_, told_at| *told_at > horizon);
                }
            }
            Ok(()) => {}
            Err(e) => {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "the notice queue is full",
                    mpsc::error::TrySendError::Closed(_) => "notices are no longer sent",
                };
                tracing::warn!(event, "{why}; a notice was dropped");
                metrics::counter!(crate::metrics::NOTICES, "event" => event, "outcome" => "dropped")
                    .increment(1);
            }
        }
    }
}

/// Sends each notice, one at a time, tried up to [`ATTEMPTS`] times (1 and 4 s apart, or after
/// a 429's `Retry-After`, up to a minute) unless the webhook refuses it for good (a 3xx, or a 4xx
/// other than 408 and 429). The URL is never logged (a Slack or Discord webhook's URL is its
/// secret).
async fn deliver(
    mut queue: mpsc::Receiver<Notice>,
    client: reqwest::Client,
    url: String,
    format: Format,
) {
    while let Some(notice) = queue.recv().await {
        let body = notice.body(format).to_string();
        let event = notice.event.as_str();
        let mut outcome = "failed";
        let mut wait = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let pause = wait
                    .take()
                    .unwrap_or_else(|| Duration::from_secs(4u64.pow(attempt - 1)));
                tokio::time::sleep(pause).await;
            }
            let sent = client
                .post(&url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let why = match sent {
                Ok(resp) if resp.status().is_success() => {
                    outcome = "sent";
                    break;
                }
                Ok(resp) => {
                    let status = resp.status();
                    tracing::warn!(event, %status, "the notice webhook refused a notice");
                    if status == http::StatusCode::TOO_MANY_REQUESTS {
                        wait = resp
                            .headers()
                            .get(http::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                            .map(|secs| Duration::from_secs(secs.clamp(1, 60)));
                    }
                    let for_good = status.is_redirection()
                        || (status.is_client_error() && !matches!(status.as_u16(), 408 | 429));
                    if for_good {
                        break;
                    }
                    continue;
                }
                Err(e) => crate::upstream_client::chain(&e.without_url()),
            };
            tracing::warn!(event, error = %why, "the notice webhook could not be reached");
        }
        metrics::counter!(crate::metrics::NOTICES, "event" => event, "outcome" => outcome)
            .increment(1);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::scheduler::policy::Report;

    fn after(before: &Health, report: &Report, now: i64) -> Health {
        let mut after = before.clone();
        after.apply(report, now);
        after
    }

    #[test]
    fn a_report_tells_of_the_change_it_made_once() {
        let now = 1_000_000;
        let fail = Report::Failure {
            base_ms: 1_000,
            max_ms: 60_000,
            error: "upstream answered 500".into(),
        };
        let event = |verdict: &Verdict, before: &Health, report: &Report| {
            Event::of_report(verdict, before, &after(before, report, now), now, 3)
        };
        // A streak is told when it reaches the threshold, not before or after.
        let mut health = Health::default();
        let mut told = Vec::new();
        for _ in 0..5 {
            told.push(event(&Verdict::Failing, &health, &fail));
            health.apply(&fail, now);
        }
        assert_eq!(told, [None, None, Some(Event::AccountFailing), None, None]);
        // The success that ends it; one after a short streak says nothing.
        let success = Report::Success { sent_at: now };
        assert_eq!(
            event(&Verdict::Healthy, &health, &success),
            Some(Event::AccountRecovered)
        );
        let mut short = Health::default();
        short.apply(&fail, now);
        assert_eq!(event(&Verdict::Healthy, &short, &success), None);
        // A success sent before the last error lifts nothing: no recovery.
        let stale = Report::Success { sent_at: now - 1 };
        assert_eq!(event(&Verdict::Healthy, &health, &stale), None);

        // Refused: once, not again while it stays refused.
        let refused = Report::Unauthorized {
            error: "upstream answered 401".into(),
        };
        let clean = Health::default();
        assert_eq!(
            event(&Verdict::Unauthorized, &clean, &refused),
            Some(Event::AccountUnauthorized)
        );
        let unauthorized = after(&clean, &refused, now);
        assert_eq!(event(&Verdict::Unauthorized, &unauthorized, &refused), None);

        // A whole account's rate limit, when it was serving; not one family's.
        let limited = Verdict::RateLimited {
            until_ms: now + 60_000,
            family: None,
            per_model: false,
        };
        let limit = Report::RateLimited {
            until: now + 60_000,
            family: None,
            error: "upstream answered 429".into(),
        };
        assert_eq!(
            event(&limited, &clean, &limit),
            Some(Event::AccountRateLimited)
        );
        assert_eq!(event(&limited, &after(&clean, &limit, now), &limit), None);
        let opus = Report::RateLimited {
            until: now + 60_000,
            family: Some("opus".into()),
            error: "upstream answered 429".into(),
        };
        assert_eq!(event(&limited, &clean, &opus), None);

        // Out of credit: from serving to out; not the reports racing it (each moves the
        // cooldown on), but again when a retry after the cooldown finds it spent still.
        let spent = |at: i64| Report::Overloaded {
            until: at + 600_000,
            error: "upstream answered 400".into(),
        };
        assert_eq!(
            event(&Verdict::Exhausted, &clean, &spent(now)),
            Some(Event::AccountOutOfCredit)
        );
        let out = after(&clean, &spent(now), now);
        let racing = Event::of_report(
            &Verdict::Exhausted,
            &out,
            &after(&out, &spent(now + 5), now + 5),
            now + 5,
            3,
        );
        assert_eq!(racing, None);
        let later = now + 600_001;
        let again = Event::of_report(
            &Verdict::Exhausted,
            &out,
            &after(&out, &spent(later), later),
            later,
            3,
        );
        assert_eq!(again, Some(Event::AccountOutOfCredit));
        // Cooling down after a failure (five seconds) when the credit runs out: told.
        let cooling = after(&clean, &fail, now);
        let spent_while_cooling = Event::of_report(
            &Verdict::Exhausted,
            &cooling,
            &after(&cooling, &spent(now), now),
            now,
            3,
        );
        assert_eq!(spent_while_cooling, Some(Event::AccountOutOfCredit));
    }

    fn notice(event: Event, at: i64) -> Notice {
        Notice {
            event,
            account_id: "acct_1".into(),
            account_name: "team \"main\"".into(),
            provider: "anthropic",
            until: Some(1_796_000_000_000),
            detail: "upstream answered 429".into(),
            at,
        }
    }

    #[test]
    fn notices_are_json_or_a_chat_message() {
        let n = notice(Event::AccountRateLimited, 1_795_000_000_000);
        let body = n.body(Format::Json);
        assert_eq!(body["event"], "account_rate_limited");
        assert_eq!(body["account"]["name"], "team \"main\"");
        assert_eq!(body["until"], "2026-11-30T00:53:20Z");
        assert_eq!(body["at"], "2026-11-18T11:06:40Z");
        let text = body["text"].as_str().unwrap();
        assert_eq!(
            text,
            "Switchyard account \"team \"main\"\" (anthropic, acct_1): rate limited until \
             2026-11-30T00:53:20Z (upstream answered 429)"
        );
        assert_eq!(n.body(Format::Slack), json!({ "text": text }));
        assert_eq!(n.body(Format::Discord), json!({ "content": text }));
        // The names the configuration takes.
        let events: Vec<Event> = serde_json::from_value(json!([
            "account_unauthorized",
            "account_out_of_credit",
            "account_rate_limited",
            "account_failing",
            "account_recovered",
            "oauth_grant_refused",
            "account_budget_reached"
        ]))
        .unwrap();
        assert_eq!(events, Event::ALL);
        for e in Event::ALL {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
    }

    #[tokio::test]
    async fn an_accounts_event_is_told_once_within_the_repeat_window() {
        crate::app::install_crypto_provider();
        let config = NotifyConfig {
            // Nothing listens: the sends fail in the background; what is queued is the point.
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
            events: vec![Event::AccountRateLimited, Event::AccountFailing],
            repeat_after_secs: 60,
            ..NotifyConfig::default()
        };
        let notifier = Notifier::start(&config, None).unwrap();
        let told = |n: &Notifier| n.told.lock().unwrap().clone();
        let limited = ("acct_1".to_owned(), Event::AccountRateLimited);
        notifier.tell(notice(Event::AccountRateLimited, 1_000));
        notifier.tell(notice(Event::AccountRateLimited, 30_000));
        assert_eq!(told(&notifier)[&limited], 1_000);
        notifier.tell(notice(Event::AccountRateLimited, 61_000));
        assert_eq!(told(&notifier)[&limited], 61_000);
        // What does not recur on its own is told each time: nothing to hold back.
        notifier.tell(notice(Event::AccountFailing, 62_000));
        notifier.tell(notice(Event::AccountFailing, 63_000));
        assert_eq!(told(&notifier).len(), 1);
        // An event not asked for is not told.
        notifier.tell(notice(Event::AccountUnauthorized, 62_000));
        assert_eq!(told(&notifier).len(), 1);
        // Queued: two rate limits and both failures (the task has not run: nothing yielded).
        assert_eq!(notifier.queue.as_ref().unwrap().capacity(), QUEUE - 4);
    }
}
