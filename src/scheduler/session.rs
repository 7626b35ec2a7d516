//! Which conversation a request belongs to, so it can stay on one account (warm prompt cache).
//!
//! Clients say it in different ways; the first that is present wins:
//!
//! 1. a stored OpenAI response the request names (`previous_response_id`, or the id in
//!    `/v1/responses/{id}`): it lives on the account that made it, so that response is the
//!    session, whatever else the request says (see [`Session::stored_response`]);
//! 2. `x-session-id`: an explicit header, for any client;
//! 3. Claude Code: the `X-Claude-Code-Session-Id` header, or `session_id` inside the JSON string
//!    `metadata.user_id` (older versions: `…_session_<uuid>`);
//! 4. Codex CLI: the `session-id` header, else the body's `prompt_cache_key`;
//! 5. otherwise a hash of the system prompt and the first message, which stays the same for every
//!    turn of one conversation.
//!
//! The result is hashed with the key id: two keys never share a session, and the store never
//! sees what the client sent.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// What the body says about the session; borrowed from the request body.
#[derive(Debug, Default, Clone)]
pub struct Hints<'a> {
    /// The stored response the request names: its `previous_response_id`, or the id in a
    /// stored response's path (escaped in a body, so maybe owned).
    pub response_id: Option<Cow<'a, str>>,
    /// `metadata.user_id` (a JSON string in Claude Code's requests; escaped, so maybe owned).
    pub metadata_user_id: Option<Cow<'a, str>>,
    /// Codex's `prompt_cache_key` (escaped, so maybe owned).
    pub prompt_cache_key: Option<Cow<'a, str>>,
    /// The raw `system` field.
    pub system: Option<&'a RawValue>,
    /// The raw first entry of `messages` (or `input`).
    pub first_message: Option<&'a RawValue>,
}

/// A request's session: the binding its pick reads, makes or renews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Opaque (32 hex characters), scoped to the key.
    pub id: String,
    /// The session of a stored response (`response_id`), not of a conversation: its binding
    /// names the account that holds the response. Written when an answer made the response, for
    /// `scheduler.response_binding_ttl_secs`, and only read by a pick (never made, moved or
    /// renewed there): it stays where it is when that account cannot serve now, whatever
    /// `scheduler.sticky_overflow` says: the response does not move with the request.
    pub stored_response: bool,
}

impl Session {
    /// The session of the stored response `response_id`, as seen by key `key_id`. Scoped to the
    /// key like every session: another key naming the same response finds no binding (it tries
    /// the accounts in turn, as before bindings), and cannot move this key's.
    pub fn of_response(key_id: &str, response_id: &str) -> Session {
        let mut hasher = Sha256::new();
        hasher.update(key_id.as_bytes());
        hasher.update([0]);
        hasher.update(b"response\0");
        hasher.update(response_id.as_bytes());
        Session {
            id: crate::auth::hex_lower(&hasher.finalize()[..16]),
            stored_response: true,
        }
    }
}

static X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
static X_CLAUDE_CODE_SESSION_ID: HeaderName = HeaderName::from_static("x-claude-code-session-id");
static SESSION_ID: HeaderName = HeaderName::from_static("session-id");

/// The session of a request, as an opaque 32-hex-character id scoped to `key_id`.
pub fn identify(key_id: &str, headers: &HeaderMap, hints: &Hints<'_>) -> Option<Session> {
    if let Some(response_id) = hints.response_id.as_deref().filter(|id| !id.is_empty()) {
        return Some(Session::of_response(key_id, response_id));
    }
    let header = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let explicit = header(&X_SESSION_ID)
        .or_else(|| header(&X_CLAUDE_CODE_SESSION_ID))
        .or_else(|| {
            hints
                .metadata_user_id
                .as_deref()
                .and_then(claude_code_session)
        })
        .or_else(|| header(&SESSION_ID))
        .or_else(|| hints.prompt_cache_key.as_deref().filter(|k| !k.is_empty()));
    let mut hasher = Sha256::new();
    hasher.update(key_id.as_bytes());
    hasher.update([0]);
    match explicit {
        Some(id) => {
            hasher.update(b"id\0");
            hasher.update(id.as_bytes());
        }
        None => {
            if hints.system.is_none() && hints.first_message.is_none() {
                return None;
            }
            hasher.update(b"prompt\0");
            hasher.update(hints.system.map_or("", RawValue::get).as_bytes());
            hasher.update([0]);
            hasher.update(hints.first_message.map_or("", RawValue::get).as_bytes());
        }
    }
    Some(Session {
        id: crate::auth::hex_lower(&hasher.finalize()[..16]),
        stored_response: false,
    })
}

/// `session_id` from Claude Code's `metadata.user_id`: a JSON object in a string
/// (`{"device_id":…,"session_id":"…"}`), or, in older versions, `user_…_session_<uuid>`.
fn claude_code_session(user_id: &str) -> Option<&str> {
    if user_id.trim_start().starts_with('{') {
        #[derive(serde::Deserialize)]
        struct UserId<'a> {
            #[serde(borrow)]
            session_id: Option<&'a str>,
        }
        return serde_json::from_str::<UserId<'_>>(user_id)
            .ok()
            .and_then(|u| u.session_id)
            .filter(|s| !s.is_empty());
    }
    user_id
        .rsplit_once("_session_")
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn claude_code_session_from_either_place_is_the_same_session() {
        let user_id = r#"{"device_id":"a7f8","account_uuid":"","session_id":"58183aad-7ca9"}"#;
        let from_body = identify(
            "k",
            &HeaderMap::new(),
            &Hints {
                metadata_user_id: Some(user_id.into()),
                ..Hints::default()
            },
        );
        let mut h = HeaderMap::new();
        h.insert("x-claude-code-session-id", "58183aad-7ca9".parse().unwrap());
        assert_eq!(identify("k", &h, &Hints::default()), from_body);
        assert!(from_body.is_some());
        // Another key, another session.
        assert_ne!(identify("k2", &h, &Hints::default()), from_body);
        // Older format.
        assert_eq!(
            claude_code_session("user_abc_account__session_58183aad-7ca9"),
            Some("58183aad-7ca9")
        );
    }

    #[test]
    fn explicit_header_wins_and_codex_is_recognised() {
        let mut h = HeaderMap::new();
        h.insert("session-id", "codex-1".parse().unwrap());
        let codex = identify("k", &h, &Hints::default());
        let by_cache_key = identify(
            "k",
            &HeaderMap::new(),
            &Hints {
                prompt_cache_key: Some("codex-1".into()),
                ..Hints::default()
            },
        );
        assert_eq!(codex, by_cache_key);
        h.insert("x-session-id", "mine".parse().unwrap());
        assert_ne!(identify("k", &h, &Hints::default()), codex);
    }

    /// A named stored response is the session, whatever else the request says: the binding of
    /// the response the relay saw made. Scoped to the key, and never a conversation's.
    #[test]
    fn a_named_stored_response_is_the_session() {
        let mut h = HeaderMap::new();
        h.insert("x-session-id", "mine".parse().unwrap());
        let hints = Hints {
            response_id: Some("resp_1".into()),
            prompt_cache_key: Some("codex-1".into()),
            ..Hints::default()
        };
        let session = identify("k", &h, &hints).unwrap();
        assert!(session.stored_response);
        assert_eq!(session, Session::of_response("k", "resp_1"));
        assert_eq!(session.id.len(), 32);
        assert_ne!(session, Session::of_response("k2", "resp_1"));
        assert_ne!(session.id, Session::of_response("k", "resp_2").id);
        // An explicit session named `resp_1` is another one.
        let mut same_text = HeaderMap::new();
        same_text.insert("x-session-id", "resp_1".parse().unwrap());
        let conversation = identify("k", &same_text, &Hints::default()).unwrap();
        assert!(!conversation.stored_response);
        assert_ne!(conversation.id, session.id);
        // An empty id names nothing.
        let empty = Hints {
            response_id: Some("".into()),
            ..Hints::default()
        };
        assert_eq!(
            identify("k", &h, &empty),
            identify("k", &h, &Hints::default())
        );
    }

    #[test]
    fn without_an_id_the_prompt_decides() {
        let system = raw(r#""You are terse.""#);
        let first = raw(r#"{"role":"user","content":"hi"}"#);
        let other = raw(r#"{"role":"user","content":"hello"}"#);
        let a = identify(
            "k",
            &HeaderMap::new(),
            &Hints {
                system: Some(&system),
                first_message: Some(&first),
                ..Hints::default()
            },
        );
        let b = identify(
            "k",
            &HeaderMap::new(),
            &Hints {
                system: Some(&system),
                first_message: Some(&first),
                ..Hints::default()
            },
        );
        let c = identify(
            "k",
            &HeaderMap::new(),
            &Hints {
                system: Some(&system),
                first_message: Some(&other),
                ..Hints::default()
            },
        );
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(identify("k", &HeaderMap::new(), &Hints::default()), None);
    }
}
