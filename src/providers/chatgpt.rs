//! ChatGPT subscriptions (Plus, Pro, Business, ...) through the Codex backend: what Codex CLI
//! talks to when it is logged in with a ChatGPT account instead of an API key. It speaks the
//! Responses API at `{base}/responses` (and `/responses/compact`), with the login's access token
//! as a bearer token and the ChatGPT account (workspace) it was issued for in
//! `chatgpt-account-id`. It keeps no response (`store` must be `false`) and answers only as a
//! stream, so it serves streamed Responses calls and compactions, nothing else (not chat
//! completions, embeddings, images or the model list: the scheduler offers such accounts for no
//! other call). The access token lasts days; the account's OAuth grant renews it
//! (`crate::oauth`).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::catalog::Account;

pub const DEFAULT_BASE_URL: &str = "https://chatgpt.com/backend-api/codex";

/// The claim of a ChatGPT access token (a JWT) that holds what it was issued for.
const AUTH_CLAIM: &str = "https://api.openai.com/auth";

static ACCOUNT_ID: HeaderName = HeaderName::from_static("chatgpt-account-id");
static OPENAI_BETA: HeaderName = HeaderName::from_static("openai-beta");
static ORIGINATOR: HeaderName = HeaderName::from_static("originator");

/// The ChatGPT account (workspace) id an access token was issued for: its JWT's
/// `https://api.openai.com/auth` claim's `chatgpt_account_id`. The signature is not checked:
/// the backend checks it.
pub fn account_id(access_token: &str) -> Option<String> {
    let claims = crate::oauth::jwt_claims(access_token)?;
    let id = claims
        .get(AUTH_CLAIM)?
        .get("chatgpt_account_id")?
        .as_str()?;
    (!id.is_empty()).then(|| id.to_owned())
}

/// Whether a ChatGPT account serves an OpenAI call on `path` (after the version): a streamed
/// Responses generation, or a compaction.
pub fn serves(path: &str, streams: bool) -> bool {
    match path {
        "/responses" => streams,
        "/responses/compact" => true,
        _ => false,
    }
}

/// `base_url` + the Responses path. The client's query does not go: the backend takes none.
pub fn upstream_url(account: &Account, path: &str) -> String {
    super::join(&account.record.base_url, path, None)
}

/// The client's headers (Codex CLI's `session_id`, `originator`, ... go as they came), the
/// access token as a bearer token, the ChatGPT account, and the Responses beta the backend
/// wants; `originator` says Codex's own name when the client gave none.
pub fn upstream_headers(client: &HeaderMap, account: &Account) -> HeaderMap {
    let mut headers = super::openai::upstream_headers(client, account);
    if let Some(id) = &account.chatgpt_account {
        headers.insert(ACCOUNT_ID.clone(), id.clone());
    }
    headers.insert(
        OPENAI_BETA.clone(),
        HeaderValue::from_static("responses=experimental"),
    );
    if !headers.contains_key(&ORIGINATOR) {
        headers.insert(ORIGINATOR.clone(), HeaderValue::from_static("codex_cli_rs"));
    }
    headers
}

/// A Responses body as the backend takes it: `store: false` when the client asked the vendor to
/// keep the response (the default), which the backend refuses to do. `None` when it goes as it
/// is (Codex CLI's say `store: false` already), or is not a JSON object.
pub fn request_body(body: &Bytes, stores: bool) -> Option<Bytes> {
    if !stores {
        return None;
    }
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    object.insert("store".to_owned(), serde_json::Value::Bool(false));
    serde_json::to_vec(&object).ok().map(Bytes::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn the_account_id_is_read_from_the_access_tokens_auth_claim() {
        let token = jwt(serde_json::json!({
            "exp": 1_800_000_000,
            AUTH_CLAIM: { "chatgpt_account_id": "acc-123", "chatgpt_plan_type": "pro" }
        }));
        assert_eq!(account_id(&token).as_deref(), Some("acc-123"));
        assert_eq!(crate::oauth::jwt_expiry_ms(&token), Some(1_800_000_000_000));
        for bad in [
            jwt(serde_json::json!({ "exp": 1 })),
            jwt(serde_json::json!({ AUTH_CLAIM: { "chatgpt_account_id": "" } })),
            "sk-proj-not-a-jwt".to_owned(),
            "a.%%%.c".to_owned(),
        ] {
            assert_eq!(account_id(&bad), None, "{bad}");
        }
    }

    #[test]
    fn only_streamed_responses_and_compactions_are_served() {
        assert!(serves("/responses", true));
        assert!(!serves("/responses", false));
        assert!(serves("/responses/compact", false));
        for path in [
            "/chat/completions",
            "/embeddings",
            "/models",
            "/responses/resp_1",
            "/images/generations",
        ] {
            assert!(!serves(path, true), "{path}");
        }
    }

    #[test]
    fn a_body_that_asks_to_store_goes_with_store_false() {
        let body = Bytes::from_static(br#"{"model":"gpt-5","input":"hi","stream":true}"#);
        let sent: serde_json::Value =
            serde_json::from_slice(&request_body(&body, true).unwrap()).unwrap();
        assert_eq!(sent["store"], false);
        assert_eq!(sent["input"], "hi");
        assert_eq!(request_body(&body, false), None);
    }
}
