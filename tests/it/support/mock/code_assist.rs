//! The Code Assist API (`/v1internal:{method}`), as Gemini CLI logged in with Google meets it:
//! generations wrapped (`{"model", "project", "request"}` in, `{"response", "traceId"}` out,
//! `gemini::code_assist_events`), token counts (`{"request": {"model", "contents"}}`), and the
//! setup calls (`loadCodeAssist`, `onboardUser`). Credentials: `Authorization: Bearer`.

use http::{HeaderMap, Response};

use super::body::Guard;
use super::gemini::{self, error_json};
use super::{Behavior, Ctx, GeminiOp, MockBody, Vendor, lock, vendor_json};

/// The project `onboardUser` sets a login up with.
pub const ONBOARDED_PROJECT: &str = "mock-onboarded-project";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CodeAssistOp {
    Call(GeminiOp),
    Load,
    Onboard,
}

impl CodeAssistOp {
    pub(super) fn of(method: &str) -> Option<CodeAssistOp> {
        Some(match method {
            "generateContent" => CodeAssistOp::Call(GeminiOp::Generate),
            "streamGenerateContent" => CodeAssistOp::Call(GeminiOp::Stream),
            "countTokens" => CodeAssistOp::Call(GeminiOp::CountTokens),
            "loadCodeAssist" => CodeAssistOp::Load,
            "onboardUser" => CodeAssistOp::Onboard,
            _ => return None,
        })
    }
}

/// A missing or wrong bearer token: Google's 401.
pub(super) fn precheck(headers: &HeaderMap, key: Option<&str>) -> Option<(u16, String)> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let refused = match (presented, key) {
        (None, _) => true,
        (Some(p), Some(k)) => p != k,
        (Some(_), None) => false,
    };
    refused.then(|| {
        let message = "Request had invalid authentication credentials. Expected OAuth 2 access \
                       token, login cookie or other valid authentication credential.";
        (401, error_json(401, message, None))
    })
}

fn invalid(message: &str, guard: Guard) -> Response<MockBody> {
    vendor_json(Vendor::Gemini, 400, error_json(400, message, None), guard)
}

pub(super) async fn handle(
    op: CodeAssistOp,
    behavior: Option<Behavior>,
    ctx: &Ctx,
    guard: Guard,
) -> Response<MockBody> {
    let body = ctx.json().unwrap_or_default();
    if op == CodeAssistOp::Load {
        tokio::time::sleep(ctx.options.load_delay).await;
    }
    match (op, behavior) {
        (CodeAssistOp::Call(GeminiOp::CountTokens), Some(b)) => {
            let request = &body.get("request").cloned().unwrap_or_default();
            let named = request["model"]
                .as_str()
                .is_some_and(|m| m.starts_with("models/"));
            if !named || !request["contents"].is_array() || body.len() != 1 {
                return invalid("Invalid countTokens request.", guard);
            }
            let model = request["model"].as_str().unwrap_or_default();
            let model = model.trim_start_matches("models/").to_owned();
            gemini::handle(GeminiOp::CountTokens, &model, b, ctx, guard, false).await
        }
        (CodeAssistOp::Call(op), Some(b)) => {
            let project = body.get("project").and_then(|p| p.as_str());
            let model = body.get("model").and_then(|m| m.as_str());
            let (Some(_), Some(model), Some(request)) = (project, model, body.get("request"))
            else {
                return invalid(
                    "Request contains an invalid argument: model, project and request are required.",
                    guard,
                );
            };
            // The generation as Gemini's API would take it.
            let inner = Ctx {
                method: ctx.method.clone(),
                path: ctx.path.clone(),
                body: bytes::Bytes::from(request.to_string()),
                headers: ctx.headers.clone(),
                query: ctx.query.clone(),
                index: ctx.index,
                options: ctx.options.clone(),
                shared: ctx.shared.clone(),
            };
            gemini::handle(op, model, b, &inner, guard, true).await
        }
        (CodeAssistOp::Load, _) if ctx.options.load_fails.is_some() => {
            let status = ctx.options.load_fails.unwrap_or(500);
            let body = error_json(status, "The service is currently unavailable.", None);
            vendor_json(Vendor::Gemini, status, body, guard)
        }
        (CodeAssistOp::Load, _) => {
            let free = serde_json::json!({
                "id": "free-tier",
                "name": "Gemini Code Assist for individuals",
                "isDefault": true,
                "userDefinedCloudaicompanionProject": false,
            });
            let standard = serde_json::json!({
                "id": "standard-tier",
                "name": "Gemini Code Assist",
                "userDefinedCloudaicompanionProject": true,
            });
            let answer = match &ctx.options.code_assist_project {
                Some(project) => serde_json::json!({
                    "currentTier": free,
                    "allowedTiers": [free, standard],
                    "cloudaicompanionProject": project,
                }),
                None => serde_json::json!({ "allowedTiers": [free, standard] }),
            };
            vendor_json(Vendor::Gemini, 200, answer.to_string(), guard)
        }
        (CodeAssistOp::Onboard, _) => {
            if body.get("tierId").and_then(|t| t.as_str()) != Some("free-tier") {
                return invalid("onboardUser: unknown tierId.", guard);
            }
            let asked = lock(&ctx.shared)
                .requests
                .iter()
                .filter(|r| r.path == "/v1internal:onboardUser")
                .count();
            let answer = if asked <= ctx.options.onboard_pending {
                serde_json::json!({ "name": "operations/onboard-1", "done": false })
            } else {
                serde_json::json!({
                    "name": "operations/onboard-1",
                    "done": true,
                    "response": {
                        "@type": "type.googleapis.com/google.internal.cloud.code.v1internal.OnboardUserResponse",
                        "cloudaicompanionProject": { "id": ONBOARDED_PROJECT, "name": "Mock project" },
                    },
                })
            };
            vendor_json(Vendor::Gemini, 200, answer.to_string(), guard)
        }
        (CodeAssistOp::Call(_), None) => unreachable!("a call takes a behaviour"),
    }
}
