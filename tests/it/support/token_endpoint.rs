//! A mock OAuth token endpoint: the refresh-token grant (RFC 6749 §6) as JSON, as Claude Code's
//! and Codex CLI's logins use it, with the vendors' rotation: each grant answered spends the
//! refresh token it named and issues a new one, and a spent one is refused with `invalid_grant`
//! (so two renewals racing with one token show as a refused grant). Every access token it
//! issues can be handed to a [`MockUpstream`], whose API then takes only that one. As Google's
//! ([`TokenEndpoint::as_google`]) it takes the grant as a form with the client's secret, and
//! keeps the refresh token (Google does not rotate them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::mock::MockUpstream;

pub const CLIENT_ID: &str = "test-cli-client";

/// What one access token looks like.
#[derive(Clone, Debug)]
pub enum TokenShape {
    /// `at-<n>`, opaque.
    Opaque,
    /// An unsigned JWT naming this ChatGPT account, expiring with `expires_in` (as ChatGPT's).
    ChatGpt { account_id: String },
}

type KeySetter = Box<dyn Fn(&str) + Send + Sync>;

struct State {
    /// The refresh token the endpoint takes now: `rt-<grants answered>`.
    refresh_token: String,
    granted: usize,
    requests: Vec<Value>,
    /// Sent as `expires_in`; `None` leaves it out.
    expires_in: Option<u64>,
    /// Waits this long before judging a grant (while two renewals could overlap).
    delay: Duration,
    /// Answers given instead of judging, in order: (status, body).
    scripted: VecDeque<(u16, Value)>,
    shape: TokenShape,
    /// Told each access token issued.
    api: Option<KeySetter>,
    /// As Google's: the client secret a grant must carry, as a form.
    google: Option<String>,
    /// Each request's content type, in order.
    content_types: Vec<String>,
}

pub struct TokenEndpoint {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl TokenEndpoint {
    /// Takes `rt-0` first; issues `at-1`/`rt-1`, then `at-2`/`rt-2`, ... (`expires_in` 3600).
    pub async fn start() -> TokenEndpoint {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            refresh_token: "rt-0".to_owned(),
            granted: 0,
            requests: Vec::new(),
            expires_in: Some(3600),
            delay: Duration::ZERO,
            scripted: VecDeque::new(),
            shape: TokenShape::Opaque,
            api: None,
            google: None,
            content_types: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(state, req).await) }
                    });
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TokenEndpoint { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    /// The grant an account is given: `rt-0` at this endpoint, as [`CLIENT_ID`].
    pub fn grant(&self) -> Value {
        json!({ "refresh_token": "rt-0", "token_url": self.url(), "client_id": CLIENT_ID })
    }

    /// Grants answered with tokens.
    pub fn granted(&self) -> usize {
        lock(&self.state).granted
    }

    /// Every request body received, in order.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.state).requests.clone()
    }

    pub fn set_expires_in(&self, secs: Option<u64>) {
        lock(&self.state).expires_in = secs;
    }

    pub fn set_delay(&self, delay: Duration) {
        lock(&self.state).delay = delay;
    }

    /// From now on the endpoint is Google's: a form with `client_secret`, refresh tokens kept.
    pub fn as_google(&self, client_secret: &str) {
        lock(&self.state).google = Some(client_secret.to_owned());
    }

    /// Each request's content type, in order.
    pub fn content_types(&self) -> Vec<String> {
        lock(&self.state).content_types.clone()
    }

    pub fn set_shape(&self, shape: TokenShape) {
        lock(&self.state).shape = shape;
    }

    /// The next request is answered so, whatever it asks.
    pub fn script(&self, status: u16, body: Value) {
        lock(&self.state).scripted.push_back((status, body));
    }

    /// From now on `api` takes only the access token issued last (and `first` until then).
    pub fn serve_for(&self, api: &MockUpstream, first: &str) {
        api.require_api_key(first);
        let setter = api.credential_setter();
        lock(&self.state).api = Some(Box::new(move |token| setter(token)));
    }

    /// The access token the `n`-th grant issues, in the endpoint's shape (`expires_in` from now).
    pub fn access_token(&self, n: usize) -> String {
        let st = lock(&self.state);
        token(&st.shape, n, st.expires_in)
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An unsigned JWT with these claims.
pub fn jwt(claims: &Value) -> String {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.unsigned",
        b64(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// A ChatGPT access token for `account_id`, expiring `secs` from now.
pub fn chatgpt_token(account_id: &str, secs: u64, n: usize) -> String {
    let exp = jiff::Timestamp::now().as_second() + secs as i64;
    jwt(&json!({
        "exp": exp,
        "jti": format!("token-{n}"),
        "https://api.openai.com/auth": { "chatgpt_account_id": account_id, "chatgpt_plan_type": "pro" },
    }))
}

fn token(shape: &TokenShape, n: usize, expires_in: Option<u64>) -> String {
    match shape {
        TokenShape::Opaque => format!("at-{n}"),
        TokenShape::ChatGpt { account_id } => {
            chatgpt_token(account_id, expires_in.unwrap_or(3600), n)
        }
    }
}

async fn answer(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path_ok = req.method() == http::Method::POST && req.uri().path() == "/oauth/token";
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form = content_type == "application/x-www-form-urlencoded";
    // A form is recorded as the object of its fields.
    let body: Value = if form {
        form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let (delay, google) = {
        let mut st = lock(&state);
        st.requests.push(body.clone());
        st.content_types.push(content_type.clone());
        (st.delay, st.google.clone())
    };
    let json_type = match &google {
        Some(_) => form,
        None => content_type.starts_with("application/json"),
    };
    tokio::time::sleep(delay).await;
    let mut st = lock(&state);
    let (status, reply) = if let Some(scripted) = st.scripted.pop_front() {
        scripted
    } else if !path_ok || !json_type || body["grant_type"] != "refresh_token" {
        (400, json!({ "error": "invalid_request" }))
    } else if body["client_id"] != CLIENT_ID
        || google.is_some_and(|secret| body["client_secret"] != secret.as_str())
    {
        (401, json!({ "error": "invalid_client" }))
    } else if body["refresh_token"] != st.refresh_token.as_str() {
        (
            400,
            json!({ "error": "invalid_grant", "error_description": "refresh token already used" }),
        )
    } else {
        st.granted += 1;
        let n = st.granted;
        let access = token(&st.shape, n, st.expires_in);
        if let Some(api) = &st.api {
            api(&access);
        }
        let mut reply = json!({ "access_token": access, "token_type": "Bearer" });
        // Google keeps the refresh token; the others rotate it.
        if st.google.is_none() {
            st.refresh_token = format!("rt-{n}");
            reply["refresh_token"] = json!(st.refresh_token);
        }
        if let Some(secs) = st.expires_in {
            reply["expires_in"] = json!(secs);
        }
        (200, reply)
    };
    let mut resp = Response::new(Full::new(Bytes::from(reply.to_string())));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
