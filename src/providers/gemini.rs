//! Google Gemini (the Generative Language API): the `x-goog-api-key` header, and a base URL
//! without the version, as the Google SDKs have it; the client's version (`v1beta` or `v1`) and
//! method path are kept.

use http::HeaderMap;

use crate::catalog::Account;

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// `base_url` + `/{version}/{path}` + what the client's query may carry upstream
/// ([`upstream_query`]).
pub fn upstream_url(account: &Account, version: &str, path: &str, query: Option<&str>) -> String {
    let query = query.map(upstream_query);
    super::join(
        &account.record.base_url,
        &format!("/{version}/{path}"),
        query.as_deref(),
    )
}

/// A call's path (`models/{model}:{method}`) with the model as the account names it, when its
/// model map renames it.
pub fn model_path<'a>(path: &'a str, model: Option<&str>) -> std::borrow::Cow<'a, str> {
    let method = path
        .strip_prefix("models/")
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, method)| method);
    match (model, method) {
        (Some(model), Some(method)) => format!("models/{model}:{method}").into(),
        _ => path.into(),
    }
}

/// The body of a call whose model the account renames, for the methods whose body names the
/// model again (Google wants it to match the URL's): `embedContent`'s `model`, each of
/// `batchEmbedContents`' `requests[].model`, `countTokens`' `generateContentRequest.model`.
/// `None`: the body goes as it is.
pub fn renamed_body(path: &str, body: &[u8], model: &str) -> Option<bytes::Bytes> {
    let named = serde_json::Value::from(format!("models/{model}"));
    let set = |slot: Option<&mut serde_json::Value>| {
        if let Some(slot) = slot.filter(|s| s.is_string()) {
            *slot = named.clone();
        }
    };
    match path.rsplit_once(':')?.1 {
        "embedContent" => super::json_fields::with_fields(body, &[("model", named.clone())]),
        method @ ("batchEmbedContents" | "countTokens") => {
            let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
            if method == "countTokens" {
                set(value.pointer_mut("/generateContentRequest/model"));
            } else if let Some(requests) = value
                .get_mut("requests")
                .and_then(serde_json::Value::as_array_mut)
            {
                for request in requests {
                    set(request.get_mut("model"));
                }
            }
            serde_json::to_vec(&value).ok().map(bytes::Bytes::from)
        }
        _ => None,
    }
}

/// The client's query parameters that go to Google: `alt=sse` or `alt=json` (the answer's
/// form), and a listing's `pageSize` and `pageToken`. Every Google API also reads "system
/// parameters" from the query, which a client must not set on the account's behalf: `fields`
/// (an answer without `usageMetadata` would be billed nothing), `access_token` or `$key` (a bad
/// credential beside the account's key is a 401 that takes the account out of rotation),
/// `alt=proto`, `quotaUser` …; names are compared decoded (`%24key` is `$key`).
pub fn upstream_query(query: &str) -> String {
    let kept = form_urlencoded::parse(query.as_bytes()).filter(|(k, v)| match k.as_ref() {
        "alt" => v == "sse" || v == "json",
        "pageSize" | "pageToken" => true,
        _ => false,
    });
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .finish()
}

/// The client's headers, less Google's system parameters (`x-goog-fieldmask` would leave the
/// usage out of the answer, `x-goog-user-project` bill another project …): of the `x-goog-*`
/// headers only the SDK's `x-goog-api-client` goes.
pub fn upstream_headers(client: &HeaderMap, account: &Account) -> HeaderMap {
    let mut headers = client_headers(client);
    headers.insert("x-goog-api-key", account.api_key.clone());
    headers
}

/// The client's headers that go to Google, without a credential.
pub fn client_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = super::forward_headers(client);
    let system: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-goog-") && name.as_str() != "x-goog-api-client")
        .cloned()
        .collect();
    for name in system {
        headers.remove(name);
    }
    headers
}

/// How a Gemini SSE stream reports an error mid-stream.
pub fn error_event(message: &str) -> bytes::Bytes {
    let data = serde_json::json!({
        "error": { "code": 500, "message": message, "status": "INTERNAL" }
    });
    bytes::Bytes::from(format!("data: {data}\n\n"))
}
