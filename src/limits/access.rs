//! What a key may call, checked without the store: validity dates, surfaces, clients, models.

use http::{HeaderMap, HeaderName, header};

use crate::error::{ApiError, ErrorKind};
use crate::store::KeyLimits;

/// Clients a key can be restricted to, recognised by the headers they send (see
/// `tests/fixtures/clients/`).
pub const CLIENTS: [&str; 3] = ["claude-code", "gemini-cli", "codex"];

/// Surfaces a key can be restricted to.
pub const SURFACES: [&str; 4] = ["anthropic", "openai", "gemini", "images"];

static X_APP: HeaderName = HeaderName::from_static("x-app");
static ORIGINATOR: HeaderName = HeaderName::from_static("originator");

/// Which known client sent these headers: Claude Code (`User-Agent: claude-cli/…`, `x-app: cli`),
/// Gemini CLI (`User-Agent: GeminiCLI…`), Codex CLI (`User-Agent: codex_…`, `originator: codex_…`).
pub fn client_of(headers: &HeaderMap) -> Option<&'static str> {
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let agent = header(&header::USER_AGENT).unwrap_or("");
    if agent.starts_with("claude-cli/") || header(&X_APP) == Some("cli") {
        Some("claude-code")
    } else if agent.starts_with("GeminiCLI") {
        Some("gemini-cli")
    } else if agent.starts_with("codex")
        || header(&ORIGINATOR).is_some_and(|o| o.starts_with("codex"))
    {
        Some("codex")
    } else {
        None
    }
}

/// Refuses a key whose validity ended (`expires_at`) by `now`.
pub fn expired(limits: &KeyLimits, now: jiff::Timestamp) -> Result<(), ApiError> {
    match limits.expires_at {
        Some(expires) if now >= expires => Err(ApiError::new(
            ErrorKind::Permission,
            format!("this API key expired at {expires}"),
        )
        .with_code("key_expired")),
        _ => Ok(()),
    }
}

/// Refuses a request the key may not make: outside its validity dates, on a surface, from a
/// client or for a model it is not allowed.
pub fn check(
    limits: &KeyLimits,
    now: jiff::Timestamp,
    surface: &str,
    client: Option<&str>,
    model: Option<&str>,
) -> Result<(), ApiError> {
    let denied = |code: &'static str, message: String| {
        Err(ApiError::new(ErrorKind::Permission, message).with_code(code))
    };
    if let Some(starts) = limits.starts_at
        && now < starts
    {
        return denied(
            "key_not_yet_valid",
            format!("this API key is valid from {starts}"),
        );
    }
    expired(limits, now)?;
    if !limits.allowed_surfaces.is_empty() && !limits.allowed_surfaces.iter().any(|s| s == surface)
    {
        return denied(
            "surface_not_allowed",
            format!(
                "this API key may not call the {surface} API (allowed: {})",
                limits.allowed_surfaces.join(", ")
            ),
        );
    }
    if !limits.allowed_clients.is_empty()
        && !client.is_some_and(|c| limits.allowed_clients.iter().any(|a| a == c))
    {
        return denied(
            "client_not_allowed",
            format!(
                "this API key may only be used from {} (this client is {})",
                limits.allowed_clients.join(", "),
                client.unwrap_or("not one of them")
            ),
        );
    }
    if let Some(model) = model {
        if let Some(glob) = limits.blocked_models.iter().find(|g| matches(g, model)) {
            return denied(
                "model_not_allowed",
                format!("this API key may not use model {model} (blocked by {glob:?})"),
            );
        }
        if !limits.allowed_models.is_empty()
            && !limits.allowed_models.iter().any(|g| matches(g, model))
        {
            return denied(
                "model_not_allowed",
                format!(
                    "this API key may not use model {model} (allowed: {})",
                    limits.allowed_models.join(", ")
                ),
            );
        }
    }
    Ok(())
}

/// Patterns are validated when the key is written; one that fails here matches nothing.
fn matches(glob: &str, model: &str) -> bool {
    glob::Pattern::new(glob).is_ok_and(|p| p.matches(model))
}

/// Checks limits an admin is about to save: globs, clients, surfaces, the window length, and no
/// limit of 0.
pub fn validate(limits: &KeyLimits) -> Result<(), ApiError> {
    for glob in limits.allowed_models.iter().chain(&limits.blocked_models) {
        glob::Pattern::new(glob)
            .map_err(|e| ApiError::invalid(format!("limits: model glob {glob:?}: {e}")))?;
    }
    if let Some(c) = limits
        .allowed_clients
        .iter()
        .find(|c| !CLIENTS.contains(&c.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "limits.allowed_clients: unknown client {c:?} (known: {})",
            CLIENTS.join(", ")
        )));
    }
    if let Some(s) = limits
        .allowed_surfaces
        .iter()
        .find(|s| !SURFACES.contains(&s.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "limits.allowed_surfaces: unknown surface {s:?} (known: {})",
            SURFACES.join(", ")
        )));
    }
    if let Some(w) = &limits.window
        && !(super::meters::MIN_WINDOW_SECS..=super::meters::MAX_WINDOW_SECS).contains(&w.seconds)
    {
        return Err(ApiError::invalid(format!(
            "limits.window.seconds: {} is outside 60 (a minute) ..= 2592000 (30 days)",
            w.seconds
        )));
    }
    if let Some(family) = limits
        .weekly_family_cost_nanousd
        .keys()
        // The exact name: a request's family is `family_of(model)`, so `claude-opus` (which
        // contains a family) would be accepted and never met.
        .find(|f| crate::scheduler::health::family_of(f) != Some(f.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "limits.weekly_family_cost_nanousd: unknown model family {family:?} (known: opus, sonnet, haiku)"
        )));
    }
    if limits.active_days == Some(0) {
        return Err(ApiError::invalid("limits.active_days: must be at least 1"));
    }
    // A limit of 0 blocks nothing cleanly: no concurrency refuses every request with a 429 that
    // clients retry forever, and a counter reserves at most its limit, so with 0 the first
    // request of each period still passes before the rest are refused.
    let window = limits.window.as_ref();
    let zero = [
        ("max_concurrency", limits.max_concurrency.map(u64::from)),
        ("window.requests", window.and_then(|w| w.requests)),
        ("window.tokens", window.and_then(|w| w.tokens)),
        ("window.cost_nanousd", window.and_then(|w| w.cost_nanousd)),
        ("daily_cost_nanousd", limits.daily_cost_nanousd),
        ("weekly_cost_nanousd", limits.weekly_cost_nanousd),
        ("total_cost_nanousd", limits.total_cost_nanousd),
    ]
    .into_iter()
    .find(|(_, limit)| *limit == Some(0))
    .map(|(field, _)| field.to_owned())
    .or_else(|| {
        limits
            .weekly_family_cost_nanousd
            .iter()
            .find(|(_, limit)| **limit == 0)
            .map(|(family, _)| format!("weekly_family_cost_nanousd.{family}"))
    });
    if let Some(field) = zero {
        return Err(ApiError::invalid(format!(
            "limits.{field}: must be at least 1; to block the key, set `enabled: false` \
             (to block models, `blocked_models`)"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn recognises_the_captured_clients() {
        let cc = headers(&[
            ("user-agent", "claude-cli/2.1.197 (external, sdk-cli)"),
            ("x-app", "cli"),
        ]);
        assert_eq!(client_of(&cc), Some("claude-code"));
        let gem = headers(&[(
            "user-agent",
            "GeminiCLI-tui/0.61.0/gemini-2.5-flash (linux; x64; terminal)",
        )]);
        assert_eq!(client_of(&gem), Some("gemini-cli"));
        let codex = headers(&[
            ("user-agent", "codex_exec/0.169.0 (Debian 12.0.0; x86_64)"),
            ("originator", "codex_exec"),
        ]);
        assert_eq!(client_of(&codex), Some("codex"));
        assert_eq!(
            client_of(&headers(&[("user-agent", "OpenAI/Python 3.54.0")])),
            None
        );
    }

    #[test]
    fn checks_dates_surfaces_clients_and_models() {
        let now: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let mut limits = KeyLimits {
            allowed_models: vec!["claude-*".into()],
            blocked_models: vec!["claude-opus-*".into()],
            allowed_clients: vec!["claude-code".into()],
            allowed_surfaces: vec!["anthropic".into()],
            ..KeyLimits::default()
        };
        let ok = |l: &KeyLimits, s, c, m| check(l, now, s, c, m);
        assert!(
            ok(
                &limits,
                "anthropic",
                Some("claude-code"),
                Some("claude-sonnet-4-5")
            )
            .is_ok()
        );
        let e = ok(
            &limits,
            "anthropic",
            Some("claude-code"),
            Some("claude-opus-4-5"),
        )
        .unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code),
            (403, Some("model_not_allowed"))
        );
        assert!(e.message.contains("claude-opus-4-5"));
        let e = ok(&limits, "anthropic", Some("claude-code"), Some("gpt-5")).unwrap_err();
        assert_eq!(e.code, Some("model_not_allowed"));
        let e = ok(
            &limits,
            "openai",
            Some("claude-code"),
            Some("claude-sonnet-4-5"),
        )
        .unwrap_err();
        assert_eq!(e.code, Some("surface_not_allowed"));
        let e = ok(&limits, "anthropic", None, Some("claude-sonnet-4-5")).unwrap_err();
        assert_eq!(e.code, Some("client_not_allowed"));
        limits.expires_at = Some("2026-11-22T12:00:00Z".parse().unwrap());
        let e = ok(&limits, "anthropic", Some("claude-code"), None).unwrap_err();
        assert_eq!(e.code, Some("key_expired"));
        assert!(e.message.contains("2026-11-22T12:00:00Z"));
        limits.expires_at = None;
        limits.starts_at = Some("2026-11-23T00:00:00Z".parse().unwrap());
        let e = ok(&limits, "anthropic", Some("claude-code"), None).unwrap_err();
        assert_eq!(e.code, Some("key_not_yet_valid"));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let bad = KeyLimits {
            allowed_clients: vec!["curl".into()],
            ..KeyLimits::default()
        };
        assert!(
            validate(&bad)
                .unwrap_err()
                .message
                .contains("allowed_clients")
        );
        let bad = KeyLimits {
            blocked_models: vec!["[".into()],
            ..KeyLimits::default()
        };
        assert!(validate(&bad).unwrap_err().message.contains("glob"));
        let bad = KeyLimits {
            window: Some(crate::store::WindowLimit {
                seconds: 59,
                ..Default::default()
            }),
            ..KeyLimits::default()
        };
        assert!(
            validate(&bad)
                .unwrap_err()
                .message
                .contains("window.seconds")
        );
        for family in ["gpt", "claude-opus", "opus-4", "Opus", "opus;h=1"] {
            let bad = KeyLimits {
                weekly_family_cost_nanousd: [(family.to_owned(), 1)].into(),
                ..KeyLimits::default()
            };
            assert!(validate(&bad).is_err(), "{family}");
        }
        let zeros = [
            KeyLimits {
                max_concurrency: Some(0),
                ..KeyLimits::default()
            },
            KeyLimits {
                window: Some(crate::store::WindowLimit {
                    seconds: 60,
                    requests: Some(0),
                    ..Default::default()
                }),
                ..KeyLimits::default()
            },
            KeyLimits {
                window: Some(crate::store::WindowLimit {
                    seconds: 60,
                    tokens: Some(0),
                    ..Default::default()
                }),
                ..KeyLimits::default()
            },
            KeyLimits {
                daily_cost_nanousd: Some(0),
                ..KeyLimits::default()
            },
            KeyLimits {
                weekly_family_cost_nanousd: [("opus".to_owned(), 0)].into(),
                ..KeyLimits::default()
            },
        ];
        for (limits, field) in zeros.iter().zip([
            "limits.max_concurrency",
            "limits.window.requests",
            "limits.window.tokens",
            "limits.daily_cost_nanousd",
            "limits.weekly_family_cost_nanousd.opus",
        ]) {
            let e = validate(limits).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains(field), "{}", e.message);
            assert!(e.message.contains("enabled: false"), "{}", e.message);
        }
        let good = KeyLimits {
            weekly_family_cost_nanousd: [("opus".to_owned(), 1), ("haiku".to_owned(), 2)].into(),
            ..KeyLimits::default()
        };
        assert!(validate(&good).is_ok());
        assert!(validate(&KeyLimits::default()).is_ok());
    }
}
