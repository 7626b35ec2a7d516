//! Azure OpenAI: one deployment per model under the resource's endpoint, the `api-key` header and
//! an `api-version` query parameter.

use http::HeaderMap;

use crate::catalog::Account;

/// Used when an account does not name one: a GA version with chat, embeddings and images.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// `{endpoint}/openai/deployments/{deployment}{path}?api-version=…`, where the deployment is the
/// account's for `model` (or the model's own name), and `path` the OpenAI path after the version
/// (`/chat/completions`). The client's query is dropped: Azure takes only the api-version.
pub fn upstream_url(account: &Account, path: &str, model: Option<&str>) -> String {
    let record = &account.record;
    let model = model.unwrap_or_default();
    let deployment = record.deployments.get(model).map_or(model, String::as_str);
    let version = record.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION);
    let deployment: String = form_urlencoded::byte_serialize(deployment.as_bytes()).collect();
    let version: String = form_urlencoded::byte_serialize(version.as_bytes()).collect();
    format!(
        "{}/openai/deployments/{deployment}{path}?api-version={version}",
        record.base_url.trim_end_matches('/')
    )
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
