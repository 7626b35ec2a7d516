//! Metric names, and the Prometheus recorder they are rendered from at `/metrics`.

use std::sync::OnceLock;

use dashmap::DashMap;
use foldhash::fast::RandomState;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `surface` and `status`.
pub const REQUESTS: &str = "switchyard_requests_total";
/// Upstream time from sending the request to the end of the response body, seconds.
pub const UPSTREAM_LATENCY: &str = "switchyard_upstream_latency_seconds";
/// Upstream time from sending the request to the response head, seconds.
pub const UPSTREAM_TTFB: &str = "switchyard_upstream_ttfb_seconds";
/// Time spent in Switchyard itself (before sending upstream, and between the upstream's response
/// head and handing it to the client), seconds.
pub const RELAY_OVERHEAD: &str = "switchyard_relay_overhead_seconds";
/// Tokens by `model` and `kind` (input, output, cache_creation, cache_read).
pub const TOKENS: &str = "switchyard_tokens_total";
/// Cost by `model`, nano-dollars.
pub const COST: &str = "switchyard_cost_nanousd_total";
/// Response bodies currently streaming to clients.
pub const ACTIVE_STREAMS: &str = "switchyard_active_streams";
/// Requests for a model without a price, priced at the default; by `model`.
pub const UNKNOWN_MODEL_PRICE: &str = "switchyard_unknown_model_price_total";
/// Request-log entries lost: recorded after the stats task stopped, or dropped from a full
/// backlog while the store was unavailable.
pub const USAGE_DROPPED: &str = "switchyard_usage_dropped_total";
/// Account health reports written, by `kind` (success, rate_limited, overloaded, failure,
/// unauthorized).
pub const ACCOUNT_REPORTS: &str = "switchyard_account_reports_total";
/// 1 for each account's current `status` (ok, rate_limited, cooling_down, unauthorized), else 0;
/// by `account_id`, read from the store at scrape time.
pub const ACCOUNT_STATUS: &str = "switchyard_account_status";
/// Requests in flight per `account_id`, across every instance.
pub const ACCOUNT_IN_FLIGHT: &str = "switchyard_account_in_flight";
/// Consecutive upstream failures per `account_id`.
pub const ACCOUNT_FAILURES: &str = "switchyard_account_consecutive_failures";
/// 1 while the account rests for a spent budget of its own (`crate::budget`), else 0.
pub const ACCOUNT_BUDGET_SPENT: &str = "switchyard_account_budget_exhausted";
/// Attempts abandoned for another account before the first byte.
pub const FAILOVERS: &str = "switchyard_failovers_total";
/// Waits for a slot (`scheduler.queue_wait_secs`), by `outcome`: `served` (a
/// slot came), `gave_up` (none within the wait) or `abandoned` (the client left); and how long
/// they waited.
pub const QUEUED: &str = "switchyard_queued_total";
pub const QUEUE_WAIT: &str = "switchyard_queue_wait_seconds";
/// Renewals of subscription accounts' OAuth tokens (`crate::oauth`), by outcome: `renewed`,
/// `refused` (the grant cannot be used again), `failed` (tried again later).
pub const OAUTH_RENEWALS: &str = "switchyard_oauth_renewals_total";
/// Notices to the operators (`crate::notify`), by `event` and `outcome`: `sent`, `failed` (every
/// try failed or the webhook refused it), `dropped` (the queue was full).
pub const NOTICES: &str = "switchyard_notices_total";
/// Upstream requests that failed before a response head, by `reason`.
pub const UPSTREAM_ERRORS: &str = "switchyard_upstream_errors_total";

/// Client connections open on each server `worker`.
pub const WORKER_CONNECTIONS: &str = "switchyard_worker_connections";

/// Images generated, by `model`.
pub const IMAGES: &str = "switchyard_images_generated_total";
/// Image requests answered from the result cache, by `model`.
pub const IMAGE_CACHE_HITS: &str = "switchyard_image_cache_hits_total";
/// Image requests the result cache could not answer, by `model` (counted only with the cache on).
pub const IMAGE_CACHE_MISSES: &str = "switchyard_image_cache_misses_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once; later calls (several servers in one test process)
/// share it.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(RELAY_OVERHEAD.to_owned()), OVERHEAD_BUCKETS)
            .and_then(|b| b.set_buckets(LATENCY_BUCKETS));
        match builder {
            Ok(builder) => {
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                // Fails only if another recorder was installed first; then ours renders nothing
                // but the relay keeps working.
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!("a metrics recorder was already installed");
                }
                handle
            }
            Err(e) => {
                tracing::error!(error = %e, "metrics buckets rejected; histograms render as summaries");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

pub fn render() -> String {
    install().render()
}

/// Histograms keep their samples until upkeep folds them in; without a scrape they would grow
/// without bound, so upkeep runs on a timer of its own. Started once per process.
pub fn spawn_upkeep() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let handle = install().clone();
        // Stopped by: the runtime shutting down (it holds nothing that needs flushing).
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    });
}

/// The handles of the metrics recorded on every relayed request. `metrics::counter!` and its kin
/// build the key (allocating label values) and look it up in the recorder on every call; these
/// are looked up once and then recorded into directly. Names and labels are the same as the
/// macros would give.
struct Handles {
    active_streams: Gauge,
    upstream_latency: Histogram,
    upstream_ttfb: Histogram,
    relay_overhead: Histogram,
    /// `REQUESTS` by (surface, status).
    requests: DashMap<(&'static str, u16), Counter, RandomState>,
    /// `TOKENS` and `COST` by model; at most `MAX_CACHED_MODELS` (the model is the client's word).
    models: DashMap<String, ModelCounters, RandomState>,
}

/// Beyond this many models, the counters of new ones are looked up on every request instead.
const MAX_CACHED_MODELS: usize = 1024;

/// Model names that get a `model` label of their own; later ones share `other`.
const MAX_MODEL_LABELS: usize = 256;

/// The `model` label of a series. The client names the model (an account without model globs
/// takes any name, and the price table matches globs and strips date suffixes, so a known price
/// says nothing of how many names there are), and each label value is a series the recorder
/// keeps for good: a label per name sent would let one key grow the process's memory without
/// bound. The first `MAX_MODEL_LABELS` names seen keep theirs, later ones get `other`.
pub fn model_label(model: &str) -> &str {
    static SEEN: OnceLock<std::sync::RwLock<std::collections::HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let known = seen
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(model);
    if known {
        return model;
    }
    let mut seen = seen
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.len() < MAX_MODEL_LABELS {
        seen.insert(model.to_owned());
        return model;
    }
    if seen.contains(model) { model } else { "other" }
}

/// The `kind` label of `TOKENS`, in the order `record_model_usage` takes the counts.
pub const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_creation", "cache_read"];

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| {
        // Handles taken before the recorder is installed would record into nothing.
        install();
        Handles {
            active_streams: metrics::gauge!(ACTIVE_STREAMS),
            upstream_latency: metrics::histogram!(UPSTREAM_LATENCY),
            upstream_ttfb: metrics::histogram!(UPSTREAM_TTFB),
            relay_overhead: metrics::histogram!(RELAY_OVERHEAD),
            requests: DashMap::default(),
            models: DashMap::default(),
        }
    })
}

/// `ACTIVE_STREAMS`.
pub fn active_streams() -> &'static Gauge {
    &handles().active_streams
}

/// `WORKER_CONNECTIONS` of one worker (looked up once per worker, at start).
pub fn worker_connections(worker: usize) -> Gauge {
    install();
    metrics::gauge!(WORKER_CONNECTIONS, "worker" => worker.to_string())
}

/// `UPSTREAM_LATENCY`.
pub fn upstream_latency() -> &'static Histogram {
    &handles().upstream_latency
}

/// `UPSTREAM_TTFB`.
pub fn upstream_ttfb() -> &'static Histogram {
    &handles().upstream_ttfb
}

/// `RELAY_OVERHEAD`.
pub fn relay_overhead() -> &'static Histogram {
    &handles().relay_overhead
}

/// Counts one answered request in `REQUESTS`.
pub fn count_request(surface: &'static str, status: u16) {
    let requests = &handles().requests;
    if let Some(counter) = requests.get(&(surface, status)) {
        counter.increment(1);
        return;
    }
    requests
        .entry((surface, status))
        .or_insert_with(
            || metrics::counter!(REQUESTS, "surface" => surface, "status" => status.to_string()),
        )
        .increment(1);
}

/// Adds a request's tokens (in `TOKEN_KINDS` order; kinds with none are not touched) and cost
/// to `TOKENS` and `COST` of its model.
pub fn record_model_usage(model: &str, tokens: [u64; 4], cost_nanousd: u64) {
    let models = &handles().models;
    if let Some(counters) = models.get(model) {
        counters.record(model, tokens, cost_nanousd);
    } else if models.len() < MAX_CACHED_MODELS {
        models
            .entry(model.to_owned())
            .or_insert_with(|| ModelCounters::new(model))
            .record(model, tokens, cost_nanousd);
    } else {
        ModelCounters::new(model).record(model, tokens, cost_nanousd);
    }
}

/// One model's counters. A token kind's series appears once it counted something, as it did
/// when every request called `metrics::counter!` only for the kinds it used.
struct ModelCounters {
    tokens: [OnceLock<Counter>; 4],
    cost: Counter,
}

impl ModelCounters {
    fn new(model: &str) -> ModelCounters {
        ModelCounters {
            tokens: Default::default(),
            cost: metrics::counter!(COST, "model" => model.to_owned()),
        }
    }

    fn record(&self, model: &str, tokens: [u64; 4], cost_nanousd: u64) {
        for ((counter, kind), n) in self.tokens.iter().zip(TOKEN_KINDS).zip(tokens) {
            if n > 0 {
                counter
                    .get_or_init(
                        || metrics::counter!(TOKENS, "model" => model.to_owned(), "kind" => kind),
                    )
                    .increment(n);
            }
        }
        self.cost.increment(cost_nanousd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_bounded_by_what_the_client_sends() {
        // Stable for a name once labelled, whichever it got.
        let first = model_label("label-test-first").to_owned();
        for i in 0..2 * MAX_MODEL_LABELS {
            model_label(&format!("label-test-{i}"));
        }
        assert_eq!(model_label("label-test-first"), first);
        assert_eq!(model_label("label-test-never-seen"), "other");
        // However the name looks: a price-table glob does not make it its own label.
        assert_eq!(model_label("claude-sonnet-4-label-test-random"), "other");
    }
}
