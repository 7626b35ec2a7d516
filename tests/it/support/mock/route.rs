//! Which vendor route a request hits, and the checks made before the behaviour queue is
//! consulted (credentials, Azure's `api-version`).

use http::{HeaderMap, Method};

use super::bedrock::{self, BedrockOp};
use super::code_assist::{self, CodeAssistOp};
use super::{Vendor, anthropic, credential, gemini, openai, query_param};

/// An OpenAI-shaped operation (on `/v1/…` or an Azure deployment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OpenAiOp {
    Chat,
    Responses,
    Embeddings,
    ImagesGenerate,
    ImagesEdit,
    /// `/v1/responses/{id}[/…]`, any method: none is stored here, so a 404 unless the
    /// behaviour says otherwise.
    StoredResponse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GeminiOp {
    Generate,
    Stream,
    CountTokens,
    /// `embedContent`: one embedding, no usage (as Google answers).
    Embed,
    Predict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Messages,
    CountTokens,
    Models(Vendor),
    /// `azure`: the deployment (empty on Azure's v1 API, whose body names it as the model).
    OpenAi(OpenAiOp, Option<String>),
    Gemini(GeminiOp, String),
    /// Bedrock's runtime: the operation and the model id.
    Bedrock(BedrockOp, String),
    /// The Code Assist API (`/v1internal:{method}`).
    CodeAssist(CodeAssistOp),
    File(String),
    NotFound(Vendor),
}

impl Route {
    pub(super) fn parse(
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Route {
        let post = method == Method::POST;
        let get = method == Method::GET;
        if let Some(method) = path.strip_prefix("/v1internal:") {
            return match CodeAssistOp::of(method) {
                Some(op) if post => Route::CodeAssist(op),
                _ => Route::NotFound(Vendor::Gemini),
            };
        }
        if path.starts_with("/model/") {
            return match bedrock::route(path) {
                Some((op, model)) if post => Route::Bedrock(op, model),
                _ => Route::NotFound(Vendor::Bedrock),
            };
        }
        if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            if let (true, Some((deployment, op))) = (post, rest.split_once('/'))
                && let (false, Some(op)) = (deployment.is_empty(), openai_op(op))
            {
                return Route::OpenAi(op, Some(deployment.to_owned()));
            }
            return Route::NotFound(Vendor::Azure);
        }
        // Azure's v1 API: OpenAI's paths, no api-version, the deployment as the body's model.
        if let Some(op) = path.strip_prefix("/openai/v1/").and_then(openai_op)
            && post
            && op == OpenAiOp::Responses
        {
            return Route::OpenAi(op, Some(String::new()));
        }
        if path.starts_with("/openai/") {
            return Route::NotFound(Vendor::Azure);
        }
        // ChatGPT's Codex backend: the Responses API only (checked in `openai::handle`).
        if let Some(op) = path.strip_prefix("/backend-api/codex/") {
            return match openai_op(op) {
                Some(op @ OpenAiOp::Responses) if post => Route::OpenAi(op, None),
                _ => Route::NotFound(Vendor::OpenAi),
            };
        }
        for prefix in ["/v1beta/models", "/v1/models"] {
            let Some(rest) = path.strip_prefix(prefix) else {
                continue;
            };
            if rest.is_empty() && get {
                let vendor = if prefix == "/v1beta/models" {
                    Vendor::Gemini
                } else {
                    models_flavour(headers, query)
                };
                return Route::Models(vendor);
            }
            let call = rest.strip_prefix('/').and_then(|r| r.rsplit_once(':'));
            if let (true, Some((model, op))) = (post, call) {
                return match gemini_op(op) {
                    Some(op) => Route::Gemini(op, model.to_owned()),
                    None => Route::NotFound(Vendor::Gemini),
                };
            }
        }
        if post {
            match path {
                "/v1/messages" => return Route::Messages,
                "/v1/messages/count_tokens" => return Route::CountTokens,
                _ => {}
            }
            if let Some(op) = path.strip_prefix("/v1/").and_then(openai_op) {
                return Route::OpenAi(op, None);
            }
        }
        if path.starts_with("/v1/responses/") {
            return Route::OpenAi(OpenAiOp::StoredResponse, None);
        }
        if let (true, Some(id)) = (get, path.strip_prefix("/mock-files/")) {
            return Route::File(id.to_owned());
        }
        if path.starts_with("/v1beta/") {
            return Route::NotFound(Vendor::Gemini);
        }
        Route::NotFound(Vendor::Anthropic)
    }

    pub(super) fn vendor(&self) -> Vendor {
        match self {
            Route::Messages | Route::CountTokens => Vendor::Anthropic,
            Route::Models(v) | Route::NotFound(v) => *v,
            Route::OpenAi(_, Some(_)) => Vendor::Azure,
            Route::OpenAi(_, None) | Route::File(_) => Vendor::OpenAi,
            Route::Gemini(..) | Route::CodeAssist(_) => Vendor::Gemini,
            Route::Bedrock(..) => Vendor::Bedrock,
        }
    }

    /// Whether the route answers by the behaviour queue.
    pub(super) fn takes_behavior(&self) -> bool {
        matches!(
            self,
            Route::Messages
                | Route::CountTokens
                | Route::OpenAi(..)
                | Route::Gemini(..)
                | Route::Bedrock(..)
                | Route::CodeAssist(CodeAssistOp::Call(_))
        )
    }
}

fn openai_op(path: &str) -> Option<OpenAiOp> {
    Some(match path {
        "chat/completions" => OpenAiOp::Chat,
        "responses" | "responses/compact" => OpenAiOp::Responses,
        "embeddings" => OpenAiOp::Embeddings,
        "images/generations" => OpenAiOp::ImagesGenerate,
        "images/edits" => OpenAiOp::ImagesEdit,
        _ => return None,
    })
}

fn gemini_op(op: &str) -> Option<GeminiOp> {
    Some(match op {
        "generateContent" => GeminiOp::Generate,
        "streamGenerateContent" => GeminiOp::Stream,
        "countTokens" => GeminiOp::CountTokens,
        "embedContent" => GeminiOp::Embed,
        "predict" => GeminiOp::Predict,
        _ => return None,
    })
}

/// `GET /v1/models` is Anthropic's and OpenAI's (and Gemini's under `/v1/`): tell them apart by
/// the credential the client sent; Anthropic when in doubt (its clients may send a bearer token
/// too, always with `anthropic-version`).
fn models_flavour(headers: &HeaderMap, query: Option<&str>) -> Vendor {
    if headers.contains_key("x-api-key") || headers.contains_key("anthropic-version") {
        Vendor::Anthropic
    } else if headers.contains_key("x-goog-api-key") || query_param(query, "key").is_some() {
        Vendor::Gemini
    } else if headers.contains_key("authorization") {
        Vendor::OpenAi
    } else {
        Vendor::Anthropic
    }
}

/// Rejects a request before the queue is consulted: missing or wrong credentials, Azure without
/// `api-version`. `None`: go on.
pub(super) fn precheck(
    route: &Route,
    headers: &HeaderMap,
    query: Option<&str>,
    key: Option<&str>,
) -> Option<(u16, String)> {
    let vendor = route.vendor();
    if let Route::CodeAssist(_) = route {
        return code_assist::precheck(headers, key);
    }
    // Bedrock's credentials are checked with the body they sign (`bedrock::handle`).
    if matches!(
        route,
        Route::File(_) | Route::NotFound(_) | Route::Bedrock(..)
    ) {
        return None;
    }
    let presented = match vendor {
        Vendor::Anthropic => credential(headers, None),
        Vendor::OpenAi => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned),
        Vendor::Azure => headers
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        Vendor::Gemini => headers
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| query_param(query, "key")),
        Vendor::Bedrock => None,
    };
    let wrong = match (&presented, key) {
        (Some(p), Some(k)) => p != k,
        _ => false,
    };
    // Anthropic only checks when a key is configured (its older tests send none).
    let missing = presented.is_none() && (vendor != Vendor::Anthropic || key.is_some());
    if missing || wrong {
        return Some(match vendor {
            Vendor::Anthropic => anthropic::auth_error(missing),
            Vendor::OpenAi | Vendor::Azure => openai::auth_error(vendor == Vendor::Azure, missing),
            Vendor::Gemini => gemini::auth_error(missing),
            Vendor::Bedrock => unreachable!("checked in bedrock::handle"),
        });
    }
    let v1 = matches!(route, Route::OpenAi(_, Some(d)) if d.is_empty());
    if vendor == Vendor::Azure && !v1 && query_param(query, "api-version").is_none() {
        return Some(openai::azure_missing_api_version());
    }
    None
}
