//! Azure OpenAI: one deployment per model under the resource's endpoint, the `api-key` header and
//! an `api-version` query parameter.

use bytes::Bytes;
use http::HeaderMap;

use crate::catalog::Account;

/// Used when an account does not name one: a GA version with chat, embeddings and images.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// `{endpoint}/openai/deployments/{deployment}{path}?api-version=…`, where the deployment is the
/// account's for `model` (or the model's own name), and `path` the OpenAI path after the version
/// (`/chat/completions`). The client's query is dropped: Azure takes only the api-version.
///
/// The Responses API and the model list are not per deployment: they are on Azure's v1 API,
/// `{endpoint}/openai/v1{path}` without an api-version, the deployment named as the body's model
/// (`responses_body`).
pub fn upstream_url(account: &Account, path: &str, model: Option<&str>) -> String {
    let record = &account.record;
    if on_v1(path) {
        return format!("{}/openai/v1{path}", record.base_url.trim_end_matches('/'));
    }
    let model = model.unwrap_or_default();
    let deployment = deployment(account, model);
    let version = record.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION);
    let deployment: String = form_urlencoded::byte_serialize(deployment.as_bytes()).collect();
    let version: String = form_urlencoded::byte_serialize(version.as_bytes()).collect();
    format!(
        "{}/openai/deployments/{deployment}{path}?api-version={version}",
        record.base_url.trim_end_matches('/')
    )
}

fn on_v1(path: &str) -> bool {
    ["/responses", "/models"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// The account's deployment for `model`, or the model's own name.
pub fn deployment<'a>(account: &'a Account, model: &'a str) -> &'a str {
    account
        .record
        .deployments
        .get(model)
        .map_or(model, String::as_str)
}

/// A Responses body for the v1 API, which takes the deployment as its `model`: rewritten when
/// the account names a deployment other than the model (`None`: the body goes as it is).
pub fn responses_body(account: &Account, body: &[u8], model: Option<&str>) -> Option<Bytes> {
    let model = model?;
    let deployment = deployment(account, model);
    if deployment == model {
        return None;
    }
    super::json_fields::with_fields(body, &[("model", serde_json::Value::from(deployment))])
}

/// Whether the account's api-version accepts `stream_options` (2024-09-01-preview and later;
/// versions are dates, so they compare as strings).
pub fn takes_stream_options(account: &Account) -> bool {
    account
        .record
        .api_version
        .as_deref()
        .unwrap_or(DEFAULT_API_VERSION)
        >= "2024-09-01"
}

pub fn upstream_headers(client: &HeaderMap, account: &Account) -> HeaderMap {
    let mut headers = super::forward_headers(client);
    headers.insert("api-key", account.api_key.clone());
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_models_are_on_the_v1_api() {
        for path in [
            "/responses",
            "/responses/resp_1",
            "/models",
            "/models/gpt-4o",
        ] {
            assert!(on_v1(path), "{path}");
        }
        for path in [
            "/chat/completions",
            "/embeddings",
            "/responsesx",
            "/images/generations",
        ] {
            assert!(!on_v1(path), "{path}");
        }
    }
}
