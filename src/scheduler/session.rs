//! Which conversation a request belongs to, so it can stay on one account (warm prompt cache).
//!
//! Clients say it in different ways; the first that is present wins:
//!
//! 1. `x-session-id`: an explicit header, for any client;
//! 2. Claude Code: the `X-Claude-Code-Session-Id` header, or `session_id` inside the JSON string
//!    `metadata.user_id` (older versions: `…_session_<uuid>`);
//! 3. Codex CLI: the `session-id` header, else the body's `prompt_cache_key`;
//! 4. otherwise a hash of the system prompt and the first message, which stays the same for every
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
    /// `metadata.user_id` (a JSON string in Claude Code's requests; escaped, so maybe owned).
    pub metadata_user_id: Option<Cow<'a, str>>,
    /// Codex's `prompt_cache_key` (escaped, so maybe owned).
    pub prompt_cache_key: Option<Cow<'a, str>>,
    /// The raw `system` field.
    pub system: Option<&'a RawValue>,
    /// The raw first entry of `messages` (or `input`).
    pub first_message: Option<&'a RawValue>,
}

static X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
static X_CLAUDE_CODE_SESSION_ID: HeaderName = HeaderName::from_static("x-claude-code-session-id");
static SESSION_ID: HeaderName = HeaderName::from_static("session-id");

/// The session of a request, as an opaque 32-hex-character id scoped to `key_id`.
pub fn identify(key_id: &str, headers: &HeaderMap, hints: &Hints<'_>) -> Option<String> {
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
    Some(crate::auth::hex_lower(&hasher.finalize()[..16]))
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
