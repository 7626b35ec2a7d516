//! The real relay, in process, on 127.0.0.1:0, with a fresh data dir.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use switchyard::app::App;
use switchyard::config::Config;
use switchyard::server::Server;
use switchyard::store::{Store, StoreError};

use super::mock::{MockUpstream, http_client};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The upstream secret of the account [`relay_with_account`] adds.
pub const ACCOUNT_KEY: &str = "sk-ant-upstream-secret-0001";

/// A relay with one Anthropic account on a fresh mock and one key: (relay, mock, key, account id).
pub async fn relay_with_account() -> (Relay, MockUpstream, String, String) {
    let mock = MockUpstream::start().await;
    let relay = Relay::start().await;
    let account_id = relay.add_account(&mock, ACCOUNT_KEY, json!({})).await;
    let (_, key) = relay.create_key("alice").await;
    (relay, mock, key, account_id)
}

pub struct Relay {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub data_dir: PathBuf,
    /// Keeps the temporary data dir alive when the relay made it.
    _tmp: Option<Arc<tempfile::TempDir>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A configuration for tests: loopback, port 0, fast stats flushes.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        ..Config::default()
    };
    config.stats.flush_interval_ms = 20;
    config.server.shutdown_grace_secs = 5;
    config
}

impl Relay {
    pub async fn start() -> Relay {
        Relay::start_configured(|_| {}).await
    }

    /// Starts on a fresh data dir with the test configuration, changed by `configure`.
    pub async fn start_configured(configure: impl FnOnce(&mut Config)) -> Relay {
        Relay::start_on(&Backend::Embedded, configure).await
    }

    /// Starts on `backend` (a Redis one under a prefix of its own), configured by `configure`.
    pub async fn start_on(backend: &Backend, configure: impl FnOnce(&mut Config)) -> Relay {
        Relay::start_on_wrapped(backend, configure, |store| store).await
    }

    /// `start_on`, on the store `wrap` makes of the backend's (`App::open_with`).
    pub async fn start_on_wrapped(
        backend: &Backend,
        configure: impl FnOnce(&mut Config),
        wrap: impl Fn(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Relay {
        let tmp = Arc::new(tempfile::tempdir().unwrap());
        let mut config = test_config(tmp.path());
        if let Backend::Redis(url) = backend {
            config.store = url.clone();
            config.redis.prefix = format!("sy-test-{:016x}:", rand::random::<u64>());
            config.master_key = Some("ab".repeat(32));
        }
        configure(&mut config);
        Relay::start_with_wrapped(config, Some(tmp), wrap).await
    }

    /// Starts on `config`; `tmp` is kept alive as long as the relay.
    pub async fn start_with(config: Config, tmp: Option<Arc<tempfile::TempDir>>) -> Relay {
        Relay::start_with_wrapped(config, tmp, |store| store).await
    }

    async fn start_with_wrapped(
        config: Config,
        tmp: Option<Arc<tempfile::TempDir>>,
        wrap: impl Fn(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Relay {
        let data_dir = config.data_dir.clone();
        let app = open_app(config, wrap).await;
        let server = Server::bind(Arc::clone(&app)).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(
            async move {
                let _ = stopped.await;
            },
            std::future::pending(),
        ));
        Relay {
            addr,
            app,
            data_dir,
            _tmp: tmp,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The temporary dir, to restart another relay on the same data.
    pub fn tmp(&self) -> Option<Arc<tempfile::TempDir>> {
        self._tmp.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Graceful stop: waits for open requests (within the grace period) and the final flush.
    pub async fn stop(mut self) {
        self.begin_stop();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Signals the stop without waiting; returns the server task.
    pub fn begin_stop(&mut self) -> Option<JoinHandle<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take()
    }

    /// `GET /metrics`, the Prometheus text.
    pub async fn metrics(&self) -> String {
        http_client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET /health`, parsed.
    pub async fn health(&self) -> Value {
        http_client()
            .get(self.url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = http_client()
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Creates a key; returns (id, secret).
    pub async fn create_key(&self, name: &str) -> (String, String) {
        let (status, v) = self
            .admin(
                reqwest::Method::POST,
                "/admin/keys",
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Adds an Anthropic account pointing at `mock`; `extra` fields override the defaults.
    pub async fn add_account(&self, mock: &MockUpstream, api_key: &str, extra: Value) -> String {
        let mut body = json!({
            "name": format!("account on {}", mock.addr()),
            "provider": "anthropic",
            "base_url": mock.base_url(),
            "api_key": api_key,
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let (status, v) = self
            .admin(reqwest::Method::POST, "/admin/accounts", Some(body))
            .await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    pub async fn usage(&self, query: &str) -> Value {
        let (status, v) = self
            .admin(reqwest::Method::GET, &format!("/admin/usage?{query}"), None)
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    pub async fn requests(&self, query: &str) -> Vec<Value> {
        let (status, v) = self
            .admin(
                reqwest::Method::GET,
                &format!("/admin/requests?{query}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["data"].as_array().unwrap().clone()
    }

    /// Imports a LiteLLM price file pricing `model` at $1,000 and $2,000 per million input and
    /// output tokens; returns what an answer of 10 input and 20 output tokens then costs.
    pub async fn import_test_prices(&self, model: &str) -> u64 {
        let file = json!({ model: {
            "litellm_provider": "anthropic",
            "input_cost_per_token": 0.001,
            "output_cost_per_token": 0.002,
        } });
        let (status, v) = self
            .admin(reqwest::Method::POST, "/admin/pricing/import", Some(file))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["imported_models"], 1);
        // Nano-dollars per token: 1,000 in, 2,000 out.
        10 * 1_000_000 + 20 * 2_000_000
    }

    /// Sends one request of `model` and returns the cost the request log shows for it (the
    /// newest entry: callers send one at a time).
    pub async fn cost_of_one(&self, key: &str, model: &str) -> u64 {
        let resp = self
            .messages(key, &messages_body(model, false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        self.app.stats.flush().await;
        self.requests("limit=1").await[0]["cost_nanousd"]
            .as_u64()
            .unwrap()
    }

    /// The request log once it holds at least `n` entries (it is written in the background).
    pub async fn logged(&self, n: usize) -> Vec<Value> {
        for _ in 0..250 {
            let entries = self.requests("limit=1000").await;
            if entries.len() >= n {
                return entries;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the request log never reached {n} entries");
    }

    /// The account's leases in flight, as the store counts them.
    pub async fn account_in_flight(&self, account_id: &str) -> u32 {
        self.app
            .store()
            .account_runtime(account_id)
            .await
            .unwrap()
            .in_flight
    }

    /// `GET /v1/key-info` with the key (asserting 200).
    pub async fn key_info(&self, key: &str) -> Value {
        let resp = http_client()
            .get(self.url("/v1/key-info"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// A Messages request with the key as `x-api-key`.
    /// Gemini CLI's captured generation requests to this relay, each with `key` as its API
    /// key and the captured headers otherwise as they came, and the body it sends.
    pub fn gemini_cli_requests(&self, key: &str) -> Vec<(reqwest::RequestBuilder, Vec<u8>)> {
        super::captured("gemini-cli.requests.jsonl")
            .into_iter()
            .filter(|c| c.method == "POST")
            .map(|c| {
                let raw = serde_json::to_vec(c.body.as_ref().unwrap()).unwrap();
                let url = self.url(&format!("{}?{}", c.path, c.query));
                let mut req = http_client().post(url).body(raw.clone());
                for (name, value) in &c.headers {
                    let lower = name.to_ascii_lowercase();
                    if lower == "x-goog-api-key" {
                        req = req.header("x-goog-api-key", key);
                    } else if !["host", "content-length", "connection", "accept-encoding"]
                        .contains(&lower.as_str())
                    {
                        req = req.header(name.as_str(), value.as_str());
                    }
                }
                (req, raw)
            })
            .collect()
    }

    /// One non-streamed request for Claude Sonnet 4.5 with `key`, its answer.
    pub async fn ask(&self, key: &str) -> reqwest::Response {
        self.messages(key, &messages_body("claude-sonnet-4-5", false))
            .send()
            .await
            .unwrap()
    }

    pub fn messages(&self, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.messages_at("/v1/messages", key, body)
    }

    /// The same, to `path` (e.g. with a query).
    pub fn messages_at(&self, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
        http_client()
            .post(self.url(path))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
    }
}

/// Opens the app on the store `wrap` makes of the configured one, waiting briefly while a
/// just-stopped relay's last tasks let go of the store.
async fn open_app(config: Config, wrap: impl Fn(Arc<dyn Store>) -> Arc<dyn Store>) -> Arc<App> {
    for _ in 0..100 {
        match App::open_with(config.clone(), &wrap).await {
            Ok(app) => return app,
            Err(e) if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Locked)) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("relay does not start: {e:#}"),
        }
    }
    panic!("the data dir stayed locked");
}

/// Opens the embedded store of a stopped relay, waiting as `open_app` does.
pub async fn reopen_store(data_dir: &Path) -> switchyard::store::embedded::EmbeddedStore {
    for _ in 0..100 {
        match switchyard::store::embedded::EmbeddedStore::open(data_dir, 1_000) {
            Ok(store) => return store,
            Err(StoreError::Locked) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the data dir stayed locked");
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A store the relay runs on in tests.
#[derive(Debug, Clone)]
pub enum Backend {
    Embedded,
    Redis(String),
}

/// The embedded store, and Redis when `REDIS_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Embedded];
    if let Ok(url) = std::env::var("REDIS_URL") {
        all.push(Backend::Redis(url));
    }
    all
}

pub fn messages_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{ "role": "user", "content": "hi" }],
    })
}
