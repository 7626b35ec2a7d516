//! What one client request means upstream: which accounts can serve it, what to send them, how to
//! read the usage from their answer and how to hand the answer back. Each surface reads its own
//! request shape here; everything after (limits, scheduling, sending, settling) is shared.

use std::borrow::Cow;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{ApiError, Surface};
use crate::providers::anthropic;
use crate::scheduler::session::{Hints, Session};
use crate::store::Protocol;
use crate::stream::openai;
use crate::translate;

/// Which API operation a request is for, by surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/messages`: billed.
    Messages,
    /// `POST /v1/messages/count_tokens`: relayed, not billed.
    CountTokens,
    /// `GET /v1/models[/{id}]` (Anthropic): relayed to any Anthropic account.
    AnthropicModels,
    /// `POST /v1/chat/completions`: native for OpenAI models, translated for Claude and Gemini.
    ChatCompletions,
    /// `POST /v1/responses`, and `POST /v1/responses/compact` (`path` after the version).
    Responses { path: String },
    /// A stored response: `GET` / `DELETE /v1/responses/{id}`, `POST …/{id}/cancel`,
    /// `GET …/{id}/input_items` (`path` after the version). Relayed, not billed; sent first to
    /// the account remembered as holding it, and from there to the others in turn (a 404 fails
    /// over).
    StoredResponse { path: String, method: Method },
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `GET /v1/models[/{id}]` (OpenAI): `path` after the version.
    OpenAiModels { path: String },
    /// `POST /{version}/models/{model}:{method}` (Gemini): `generateContent`,
    /// `streamGenerateContent`, `countTokens`, `embedContent`, ...
    Gemini {
        version: String,
        model: String,
        method: String,
    },
    /// `GET /{version}/models[/{model}]` (Gemini).
    GeminiModels { version: String, rest: String },
}

impl Endpoint {
    pub fn surface(&self) -> Surface {
        match self {
            Endpoint::Messages | Endpoint::CountTokens | Endpoint::AnthropicModels => {
                Surface::Anthropic
            }
            Endpoint::ChatCompletions
            | Endpoint::Responses { .. }
            | Endpoint::StoredResponse { .. }
            | Endpoint::Embeddings
            | Endpoint::OpenAiModels { .. } => Surface::OpenAi,
            Endpoint::Gemini { .. } | Endpoint::GeminiModels { .. } => Surface::Gemini,
        }
    }

    pub fn method(&self) -> Method {
        match self {
            Endpoint::AnthropicModels
            | Endpoint::OpenAiModels { .. }
            | Endpoint::GeminiModels { .. } => Method::GET,
            Endpoint::StoredResponse { method, .. } => method.clone(),
            _ => Method::POST,
        }
    }
}

/// Where a request goes upstream, relative to the serving account's base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Anthropic: the vendor path (`/v1/messages`).
    Anthropic { path: String },
    /// The OpenAI protocol: the path after the version (`/chat/completions`).
    OpenAi { path: String },
    /// Gemini: the version and the path after it (`models/gemini-2.5-flash:generateContent`).
    Gemini { version: String, path: String },
}

impl Target {
    pub fn protocol(&self) -> Protocol {
        match self {
            Target::Anthropic { .. } => Protocol::Anthropic,
            Target::OpenAi { .. } => Protocol::OpenAi,
            Target::Gemini { .. } => Protocol::Gemini,
        }
    }
}

/// How to read the usage of the upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageKind {
    AnthropicMessages,
    OpenAiChat,
    /// `stored`: the vendor keeps the response (a `/responses` call without `store: false`), so
    /// the answer's response id is read too, for the account that holds it.
    OpenAiResponses {
        stored: bool,
    },
    OpenAiEmbeddings,
    GeminiGenerate,
    /// Gemini's `embedContent` / `batchEmbedContents`, whose answers report no usage: billed the
    /// input admission estimated from the body.
    GeminiEmbed,
}

/// How the upstream answer reaches the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Respond {
    /// Byte for byte.
    Passthrough,
    /// Byte for byte, but for the usage-only chunk Switchyard asked for on the client's behalf.
    HideUsageChunk,
    /// An Anthropic answer, as OpenAI chat completions (for the client's model name).
    ChatFromAnthropic {
        model: String,
        stream: bool,
        include_usage: bool,
        /// Unix seconds, the chunks' `created`.
        created: i64,
        /// The request declared legacy `functions`: a call goes back as `function_call`.
        functions: bool,
    },
    /// A Gemini answer, as OpenAI chat completions.
    ChatFromGemini {
        model: String,
        stream: bool,
        include_usage: bool,
        created: i64,
    },
}

/// One client request, ready to be relayed.
#[derive(Debug, Clone)]
pub struct Call {
    pub surface: Surface,
    pub target: Target,
    pub method: Method,
    /// The model asked for (what accounts are chosen by and usage is priced at).
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    /// What to send upstream: the client's body, or its translation.
    pub body: Bytes,
    /// The body as the client sent it (for an account that cannot take what `body` added).
    pub client_body: Bytes,
    /// `Some` for billed requests.
    pub usage: Option<UsageKind>,
    pub respond: Respond,
    /// The upstream query (the client's for native calls; `alt=sse` for translated streams).
    pub query: Option<String>,
    /// The session hints' result (`session::identify`), filled in by the relay.
    pub session: Option<Session>,
    /// Whether the client asked for a streamed answer. A non-streamed answer's head comes only
    /// once the answer is whole, so it is waited for longer (`upstream.answer_timeout_secs`).
    pub streams: bool,
    /// The wait for the upstream's response head when not the `upstream` one
    /// (image calls: `images.first_byte_timeout_secs`).
    pub first_byte_timeout: Option<std::time::Duration>,
    /// Image calls: a successful answer is read whole within these bounds as part of its
    /// attempt, so that one that stalls or is cut half-way fails over like a missing head.
    pub whole_answer: Option<WholeAnswer>,
}

impl Call {
    /// Whether the call names a stored object one account holds (a stored response): a 404
    /// from one account sends it to the next.
    pub fn names_a_stored_object(&self) -> bool {
        matches!(&self.target, Target::OpenAi { path } if path.starts_with("/responses/") && path != "/responses/compact")
    }
}

/// How long, and how much, a call reads of an answer it takes whole.
#[derive(Debug, Clone, Copy)]
pub struct WholeAnswer {
    pub within: std::time::Duration,
    pub max_bytes: u64,
}

/// Why an answer taken whole did not arrive.
#[derive(Debug)]
pub enum Unread {
    /// It is larger than `max_bytes`.
    TooLarge,
    /// The body failed half-way: the error.
    Cut(String),
    /// It took longer than `within`.
    TimedOut,
}

impl WholeAnswer {
    /// Reads `resp`'s body whole within these bounds: its head, and the body.
    pub async fn read(
        &self,
        resp: crate::upstream_client::UpstreamResponse,
    ) -> Result<(http::response::Parts, Bytes), Unread> {
        let (head, mut body) = resp.into_parts();
        let limit = usize::try_from(self.max_bytes).unwrap_or(usize::MAX);
        let read = async {
            // The chunks as they came; joined once at the end, and not at all when there is one
            // (an answer already in memory, or a small one).
            let (mut chunks, mut len) = (Vec::new(), 0usize);
            while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                let frame = frame.map_err(|e| Unread::Cut(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    len = len.saturating_add(data.len());
                    if len > limit {
                        return Err(Unread::TooLarge);
                    }
                    chunks.push(data);
                }
            }
            Ok(match chunks.len() {
                0 => Bytes::new(),
                1 => chunks.swap_remove(0),
                _ => {
                    let mut whole = bytes::BytesMut::with_capacity(len);
                    for chunk in &chunks {
                        whole.extend_from_slice(chunk);
                    }
                    whole.freeze()
                }
            })
        };
        match tokio::time::timeout(self.within, read).await {
            Ok(Ok(whole)) => Ok((head, whole)),
            Ok(Err(unread)) => Err(unread),
            Err(_) => Err(Unread::TimedOut),
        }
    }
}

impl Call {
    pub fn billed(&self) -> bool {
        self.usage.is_some()
    }
}

/// Fields every surface's generation request may carry, read without building the body.
#[derive(Deserialize, Default)]
struct Peek<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    /// Responses: run in the background, answered before it is generated.
    #[serde(default)]
    background: Option<bool>,
    /// Responses: `false` asks the vendor not to keep the response.
    #[serde(default)]
    store: Option<bool>,
    /// Responses: the stored response this turn follows (owned only when escaped).
    #[serde(default, borrow)]
    previous_response_id: Option<Cow<'a, str>>,
    /// Owned only when escaped (`json.dumps` escapes every non-ASCII character).
    #[serde(default, borrow)]
    prompt_cache_key: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    messages: Option<&'a RawValue>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    instructions: Option<&'a RawValue>,
    #[serde(default, borrow)]
    contents: Option<&'a RawValue>,
    #[serde(default, rename = "systemInstruction", borrow)]
    system_instruction: Option<&'a RawValue>,
    #[serde(default, rename = "generationConfig")]
    generation_config: Option<GenerationConfig>,
}

#[derive(Deserialize, Default)]
struct GenerationConfig {
    #[serde(default, rename = "maxOutputTokens")]
    max_output_tokens: Option<u64>,
}

fn peek(body: &[u8]) -> Result<Peek<'_>, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))
}

fn required_model(model: Option<String>) -> Result<String, ApiError> {
    model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("model: field required"))
}

/// The raw first element of a JSON array (the conversation's first message), for sessions:
/// the rest is skipped, not collected (a vector of every message was a pointer per element of a
/// body of up to 32 MiB, on every request).
fn first_of(raw: Option<&RawValue>) -> Option<&RawValue> {
    struct First<'a>(Option<&'a RawValue>);
    impl<'de> Deserialize<'de> for First<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = First<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an array")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<First<'de>, A::Error> {
                    let first = seq.next_element::<&'de RawValue>()?;
                    while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                    Ok(First(first))
                }
            }
            d.deserialize_seq(Visit)
        }
    }
    serde_json::from_str::<First<'_>>(raw?.get()).ok()?.0
}

/// The opening of an OpenAI conversation, for sessions: its first system (or developer)
/// message and its first other message. Chat and Responses clients put the system prompt in the
/// list, so the list's first element alone is the same for every conversation of an app (which
/// bound all of them to one account). A string (a Responses `input`) is the first message
/// itself. Elements after the first other message are skipped, not collected.
fn opening(raw: Option<&RawValue>) -> (Option<&RawValue>, Option<&RawValue>) {
    struct Opening<'a>(Option<&'a RawValue>, Option<&'a RawValue>);
    #[derive(Deserialize)]
    struct Role<'a> {
        #[serde(borrow, default)]
        role: Option<std::borrow::Cow<'a, str>>,
    }
    impl<'de> Deserialize<'de> for Opening<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Opening<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an array")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Opening<'de>, A::Error> {
                    let mut opening = Opening(None, None);
                    while let Some(message) = seq.next_element::<&'de RawValue>()? {
                        let role = serde_json::from_str::<Role<'_>>(message.get())
                            .ok()
                            .and_then(|r| r.role);
                        if matches!(role.as_deref(), Some("system" | "developer")) {
                            opening.0.get_or_insert(message);
                        } else {
                            opening.1 = Some(message);
                            break;
                        }
                    }
                    while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                    Ok(opening)
                }
            }
            d.deserialize_seq(Visit)
        }
    }
    let Some(raw) = raw else {
        return (None, None);
    };
    if raw.get().trim_start().starts_with('"') {
        return (None, Some(raw));
    }
    serde_json::from_str::<Opening<'_>>(raw.get()).map_or((None, None), |o| (o.0, o.1))
}

/// Builds the call for `endpoint` from the client's body; `default_max_tokens` fills in what a
/// translation to Anthropic needs. Returns the session hints beside it.
pub fn build<'a>(
    endpoint: &Endpoint,
    vendor_path: &str,
    query: Option<&str>,
    body: &'a Bytes,
    default_max_tokens: u64,
    native: &dyn Fn(&str) -> bool,
) -> Result<(Call, Hints<'a>), ApiError> {
    let surface = endpoint.surface();
    let client_body = body;
    let call = |target, model, max_tokens, body, usage, respond| Call {
        surface,
        target,
        method: endpoint.method(),
        model,
        max_tokens,
        body,
        client_body: client_body.clone(),
        usage,
        respond,
        query: query.map(str::to_owned),
        session: None,
        streams: false,
        first_byte_timeout: None,
        whole_answer: None,
    };
    match endpoint {
        Endpoint::Messages | Endpoint::CountTokens => {
            let ask = anthropic::inspect(body)?;
            let usage = (*endpoint == Endpoint::Messages).then_some(UsageKind::AnthropicMessages);
            let target = Target::Anthropic {
                path: vendor_path.to_owned(),
            };
            let streams = ask.stream;
            Ok((
                Call {
                    streams,
                    ..call(
                        target,
                        Some(ask.model),
                        ask.max_tokens,
                        body.clone(),
                        usage,
                        Respond::Passthrough,
                    )
                },
                ask.session,
            ))
        }
        Endpoint::AnthropicModels => Ok((
            call(
                Target::Anthropic {
                    path: vendor_path.to_owned(),
                },
                None,
                None,
                Bytes::new(),
                None,
                Respond::Passthrough,
            ),
            Hints::default(),
        )),
        Endpoint::OpenAiModels { path } => Ok((
            call(
                Target::OpenAi { path: path.clone() },
                None,
                None,
                Bytes::new(),
                None,
                Respond::Passthrough,
            ),
            Hints::default(),
        )),
        Endpoint::GeminiModels { version, rest } => Ok((
            call(
                Target::Gemini {
                    version: version.clone(),
                    path: rest.clone(),
                },
                None,
                None,
                Bytes::new(),
                None,
                Respond::Passthrough,
            ),
            Hints::default(),
        )),
        Endpoint::ChatCompletions => chat(body, query, default_max_tokens, surface, native),
        Endpoint::StoredResponse { path, .. } => Ok((
            call(
                Target::OpenAi { path: path.clone() },
                None,
                None,
                body.clone(),
                None,
                Respond::Passthrough,
            ),
            Hints {
                response_id: stored_response_id(path).map(|id| Cow::Owned(id.to_owned())),
                ..Hints::default()
            },
        )),
        Endpoint::Responses { .. } | Endpoint::Embeddings => {
            let p = peek(body)?;
            let model = required_model(p.model)?;
            let (path, usage) = match endpoint {
                // Compaction answers with items to send back, not a response to name later.
                Endpoint::Responses { path } => (
                    path.as_str(),
                    UsageKind::OpenAiResponses {
                        stored: path == "/responses" && p.store != Some(false),
                    },
                ),
                _ => ("/embeddings", UsageKind::OpenAiEmbeddings),
            };
            if p.background == Some(true) {
                // Answered `queued` with no usage: what it then generates would be spent
                // outside every limit and bill.
                return Err(ApiError::invalid(
                    "background: background responses are not relayed (their usage is not \
                     known when the request ends); send the request without it",
                ));
            }
            let (system, first_message) = opening(p.input);
            let hints = Hints {
                response_id: p.previous_response_id,
                prompt_cache_key: p.prompt_cache_key,
                system: p.instructions.or(system),
                first_message,
                ..Hints::default()
            };
            Ok((
                Call {
                    streams: p.stream == Some(true),
                    ..call(
                        Target::OpenAi {
                            path: path.to_owned(),
                        },
                        Some(model),
                        p.max_output_tokens,
                        body.clone(),
                        Some(usage),
                        Respond::Passthrough,
                    )
                },
                hints,
            ))
        }
        Endpoint::Gemini {
            version,
            model,
            method,
        } => {
            // The methods relayed, billed or not. Any other (`predictLongRunning` for video,
            // `batchGenerateContent`, …) would spend the account's money outside every limit
            // and the bill, so it is refused.
            let usage = match method.as_str() {
                "generateContent" | "streamGenerateContent" => Some(UsageKind::GeminiGenerate),
                "embedContent" | "batchEmbedContents" => Some(UsageKind::GeminiEmbed),
                "countTokens" => None,
                _ => {
                    return Err(ApiError::not_found(format!(
                        "models/{model}:{method} is not relayed (relayed: generateContent, \
                         streamGenerateContent, countTokens, embedContent, batchEmbedContents)"
                    )));
                }
            };
            let p = if usage.is_some() {
                peek(body)?
            } else {
                Peek::default()
            };
            let hints = Hints {
                system: p.system_instruction,
                first_message: first_of(p.contents),
                ..Hints::default()
            };
            Ok((
                Call {
                    streams: method == "streamGenerateContent",
                    ..call(
                        Target::Gemini {
                            version: version.clone(),
                            path: format!("models/{model}:{method}"),
                        },
                        Some(model.clone()),
                        p.generation_config.and_then(|g| g.max_output_tokens),
                        body.clone(),
                        usage,
                        Respond::Passthrough,
                    )
                },
                hints,
            ))
        }
    }
}

/// The id of the stored response a stored-response path names: `/responses/{id}[/…]`.
fn stored_response_id(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/responses/")?;
    let id = rest.split_once('/').map_or(rest, |(id, _)| id);
    (!id.is_empty()).then_some(id)
}

/// Which accounts serve a chat completions request for `model`: an OpenAI-protocol account that
/// lists it by name or glob (`native`), else Claude models go to Anthropic accounts and Gemini
/// models to Gemini accounts, by translation; any other model is OpenAI's.
pub fn chat_protocol(model: &str, native: bool) -> Protocol {
    if native {
        Protocol::OpenAi
    } else if model.starts_with("claude") {
        Protocol::Anthropic
    } else if model.starts_with("gemini") {
        Protocol::Gemini
    } else {
        Protocol::OpenAi
    }
}

/// Chat completions: native to OpenAI accounts, or translated for a Claude or Gemini model.
fn chat<'a>(
    body: &'a Bytes,
    query: Option<&str>,
    default_max_tokens: u64,
    surface: Surface,
    native: &dyn Fn(&str) -> bool,
) -> Result<(Call, Hints<'a>), ApiError> {
    let p = peek(body)?;
    // As sent, for the answer's `model`.
    let model = required_model(p.model.clone())?;
    // The name the key's model rules, the scheduler and the prices read: Google's OpenAI-style
    // `models/gemini-…` is the same model as `gemini-…`.
    let name = model.strip_prefix("models/").unwrap_or(&model).to_owned();
    let (system, first_message) = opening(p.messages);
    let hints = Hints {
        prompt_cache_key: p.prompt_cache_key,
        system,
        first_message,
        ..Hints::default()
    };
    let max_tokens = p.max_completion_tokens.or(p.max_tokens);
    let client = body;
    let call = |target, body, usage, respond, query: Option<String>| Call {
        surface,
        target,
        method: Method::POST,
        model: Some(name.clone()),
        max_tokens,
        body,
        client_body: client.clone(),
        usage: Some(usage),
        respond,
        query,
        session: None,
        // Translations stream when the chat body asks to, as the native call does.
        streams: p.stream == Some(true),
        first_byte_timeout: None,
        whole_answer: None,
    };
    let now = jiff::Timestamp::now().as_second();
    let call = match chat_protocol(&name, native(&name)) {
        Protocol::OpenAi => match openai::ask_for_usage(body) {
            // A stream that did not ask for usage: asked for it, and the extra chunk hidden.
            Some(asking) => call(
                Target::OpenAi {
                    path: "/chat/completions".to_owned(),
                },
                asking,
                UsageKind::OpenAiChat,
                Respond::HideUsageChunk,
                query.map(str::to_owned),
            ),
            None => call(
                Target::OpenAi {
                    path: "/chat/completions".to_owned(),
                },
                body.clone(),
                UsageKind::OpenAiChat,
                Respond::Passthrough,
                query.map(str::to_owned),
            ),
        },
        Protocol::Anthropic => {
            let max = u32::try_from(default_max_tokens).unwrap_or(u32::MAX);
            let t = translate::anthropic::request(body, max)?;
            call(
                Target::Anthropic {
                    path: "/v1/messages".to_owned(),
                },
                t.body,
                UsageKind::AnthropicMessages,
                Respond::ChatFromAnthropic {
                    model: model.clone(),
                    stream: t.stream,
                    include_usage: t.include_usage,
                    created: now,
                    functions: t.functions,
                },
                None,
            )
        }
        Protocol::Gemini => {
            let t = translate::gemini::request(body)?;
            let name = t.model.strip_prefix("models/").unwrap_or(&t.model);
            let method = if t.stream {
                "streamGenerateContent"
            } else {
                "generateContent"
            };
            call(
                Target::Gemini {
                    version: "v1beta".to_owned(),
                    path: format!("models/{name}:{method}"),
                },
                t.body,
                UsageKind::GeminiGenerate,
                Respond::ChatFromGemini {
                    model: model.clone(),
                    stream: t.stream,
                    include_usage: t.include_usage,
                    created: now,
                },
                t.stream.then(|| "alt=sse".to_owned()),
            )
        }
    };
    Ok((call, hints))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_first_message_is_read_without_the_rest() {
        let raw = |s: &str| serde_json::value::RawValue::from_string(s.to_owned()).unwrap();
        let many = raw(r#"[{"role":"user","content":"hi"}, {"a":[1,2,{"b":"]"}]}, 3]"#);
        assert_eq!(
            first_of(Some(&many)).map(RawValue::get),
            Some(r#"{"role":"user","content":"hi"}"#)
        );
        for none in ["[]", r#"{"not":"an array"}"#, r#""text""#] {
            assert!(first_of(Some(&raw(none))).is_none(), "{none}");
        }
        assert!(first_of(None).is_none());
    }

    /// Two conversations of one app (one system prompt) are two sessions; a conversation's
    /// later turns are its own.
    #[test]
    fn an_openai_conversation_is_known_by_its_system_prompt_and_first_user_message() {
        let session = |endpoint: Endpoint, body: &str| {
            let body = Bytes::from(body.to_owned());
            let (_, hints) = build(&endpoint, "/x", None, &body, 4096, &|_| true).unwrap();
            crate::scheduler::session::identify("key_1", &http::HeaderMap::new(), &hints)
        };
        let chat = |messages: &str| {
            session(
                Endpoint::ChatCompletions,
                &format!(r#"{{"model":"gpt-5","messages":{messages}}}"#),
            )
        };
        let sys = r#"{"role":"system","content":"You are the app."}"#;
        let one = chat(&format!(
            r#"[{sys},{{"role":"user","content":"plan a trip"}}]"#
        ));
        let later = chat(&format!(
            r#"[{sys},{{"role":"user","content":"plan a trip"}},{{"role":"assistant","content":"ok"}},{{"role":"user","content":"to Rome"}}]"#
        ));
        let other = chat(&format!(
            r#"[{sys},{{"role":"user","content":"fix my code"}}]"#
        ));
        assert!(one.is_some());
        assert_eq!(one, later);
        assert_ne!(one, other);

        let responses = |input: &str| {
            session(
                Endpoint::Responses {
                    path: "/responses".into(),
                },
                &format!(r#"{{"model":"gpt-5","input":{input}}}"#),
            )
        };
        let a = responses(r#""plan a trip""#);
        assert!(a.is_some(), "a string input is the first message");
        assert_ne!(a, responses(r#""fix my code""#));
        assert_ne!(
            responses(r#"[{"role":"developer","content":"d"},{"role":"user","content":"a"}]"#),
            responses(r#"[{"role":"developer","content":"d"},{"role":"user","content":"b"}]"#)
        );
    }

    /// A Responses turn names the stored response it follows, a stored response's path names
    /// its own; the answer's id is read (for the account that made it) only when the vendor
    /// stores it.
    #[test]
    fn stored_responses_are_named_and_read_only_when_the_vendor_keeps_them() {
        let responses = |path: &str, body: &str| {
            let endpoint = Endpoint::Responses { path: path.into() };
            let body = Bytes::from(body.to_owned());
            let (call, hints) = build(&endpoint, "/x", None, &body, 64, &|_| true).unwrap();
            (call.usage, hints.response_id.map(Cow::into_owned))
        };
        let stored = |stored| Some(UsageKind::OpenAiResponses { stored });
        assert_eq!(
            responses("/responses", r#"{"model":"gpt-5","input":"hi"}"#),
            (stored(true), None)
        );
        assert_eq!(
            responses(
                "/responses",
                r#"{"model":"gpt-5","input":"hi","store":true,"previous_response_id":"resp_1"}"#
            ),
            (stored(true), Some("resp_1".to_owned()))
        );
        assert_eq!(
            responses(
                "/responses",
                r#"{"model":"gpt-5","input":"hi","store":false}"#
            ),
            (stored(false), None)
        );
        assert_eq!(
            responses("/responses/compact", r#"{"model":"gpt-5","input":"hi"}"#),
            (stored(false), None)
        );
        for (path, id) in [
            ("/responses/resp_2", Some("resp_2")),
            ("/responses/resp_2/input_items", Some("resp_2")),
            ("/responses/resp_2/cancel", Some("resp_2")),
            ("/responses/", None),
        ] {
            let endpoint = Endpoint::StoredResponse {
                path: path.into(),
                method: Method::GET,
            };
            let empty = Bytes::new();
            let (call, hints) = build(&endpoint, "/x", None, &empty, 64, &|_| true).unwrap();
            assert_eq!(hints.response_id.as_deref(), id, "{path}");
            assert!(!call.billed());
        }
    }

    /// Whether each surface's call says the client asked for a stream (the answer timeout
    /// depends on it).
    #[test]
    fn every_surface_says_whether_its_answer_streams() {
        let gemini = |method: &str| Endpoint::Gemini {
            version: "v1beta".to_owned(),
            model: "gemini-2.5-flash".to_owned(),
            method: method.to_owned(),
        };
        let contents = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
        let chat = |model: &str, stream: bool| {
            format!(
                r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
            )
        };
        let messages = |stream: bool| {
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":9,"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
            )
        };
        let cases = [
            (Endpoint::Messages, messages(true), true),
            (Endpoint::Messages, messages(false), false),
            (
                Endpoint::Responses {
                    path: "/responses".into(),
                },
                r#"{"model":"gpt-5","stream":true,"input":"hi"}"#.to_owned(),
                true,
            ),
            (
                Endpoint::Responses {
                    path: "/responses".into(),
                },
                r#"{"model":"gpt-5","input":"hi"}"#.to_owned(),
                false,
            ),
            (gemini("streamGenerateContent"), contents.to_owned(), true),
            (gemini("generateContent"), contents.to_owned(), false),
            (Endpoint::ChatCompletions, chat("gpt-4o", true), true),
            (
                Endpoint::ChatCompletions,
                chat("claude-sonnet-4-5", true),
                true,
            ),
            (
                Endpoint::ChatCompletions,
                chat("gemini-2.5-pro", false),
                false,
            ),
        ];
        for (endpoint, body, streams) in cases {
            let body = Bytes::from(body);
            let (call, _) = build(&endpoint, "/v1/x", None, &body, 64, &|_| false).unwrap();
            assert_eq!(call.streams, streams, "{endpoint:?} {body:?}");
        }
    }
}
