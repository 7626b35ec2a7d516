//! Errors that reach a client, each rendered in the shape of the surface it came in on.
//!
//! Every failure Switchyard itself produces (as opposed to an upstream answer passed through)
//! is an `ApiError`: a status, a kind, a message that never contains a secret, and an optional
//! `Retry-After`. The router decides the surface; the error renders itself.

use http::{HeaderValue, StatusCode};
use serde_json::json;

use crate::body::{self, Body};

/// The API family a request came in on; decides the shape of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Anthropic,
    OpenAi,
    Gemini,
    Admin,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Anthropic => "anthropic",
            Surface::OpenAi => "openai",
            Surface::Gemini => "gemini",
            Surface::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    /// The admin API refuses a change that would break what depends on the record (409).
    Conflict,
    RequestTooLarge,
    RateLimited,
    /// A budget of the key is spent (it resets later, or never): retrying now cannot help.
    QuotaExceeded,
    /// Switchyard or its store failed.
    Internal,
    /// The upstream could not be reached or broke.
    BadGateway,
    /// The upstream did not answer in time.
    GatewayTimeout,
    /// No upstream account can take the request now.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub status: StatusCode,
    pub message: String,
    /// Seconds the client should wait before retrying.
    pub retry_after: Option<u64>,
    /// A machine-readable reason (OpenAI's `error.code`), e.g. `daily_cost_limit`.
    pub code: Option<&'static str>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        let status = match kind {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Authentication => StatusCode::UNAUTHORIZED,
            ErrorKind::Permission => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            // Not 429: every SDK retries a 429, and a spent budget stays spent.
            ErrorKind::QuotaExceeded => StatusCode::FORBIDDEN,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError {
            kind,
            status,
            message: message.into(),
            retry_after: None,
            code: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Internal, message)
    }

    /// A store call failed: 503, in the API's shape, with the code [`ApiError::STORE_CODE`].
    pub fn store(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            ErrorKind::Unavailable,
            format!("the store is unavailable: {error}"),
        )
        .with_code(ApiError::STORE_CODE)
    }

    /// The code of [`ApiError::store`]'s errors.
    pub const STORE_CODE: &'static str = "store_unavailable";

    pub fn with_retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// Anthropic's `error.type` for this error.
    fn anthropic_type(&self) -> &'static str {
        match self.kind {
            // Anthropic has no type of its own for a conflict.
            ErrorKind::InvalidRequest | ErrorKind::Conflict => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission | ErrorKind::QuotaExceeded => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Internal
            | ErrorKind::BadGateway
            | ErrorKind::GatewayTimeout
            | ErrorKind::Unavailable => "api_error",
        }
    }

    fn openai_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidRequest
            | ErrorKind::RequestTooLarge
            | ErrorKind::NotFound
            | ErrorKind::Conflict => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::QuotaExceeded => "insufficient_quota",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Internal
            | ErrorKind::BadGateway
            | ErrorKind::GatewayTimeout
            | ErrorKind::Unavailable => "api_error",
        }
    }

    /// Google's canonical status name for this error.
    fn gemini_status(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "INVALID_ARGUMENT",
            ErrorKind::Authentication => "UNAUTHENTICATED",
            ErrorKind::Permission | ErrorKind::QuotaExceeded => "PERMISSION_DENIED",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::Conflict => "ABORTED",
            ErrorKind::RateLimited => "RESOURCE_EXHAUSTED",
            ErrorKind::Internal => "INTERNAL",
            ErrorKind::BadGateway | ErrorKind::Unavailable => "UNAVAILABLE",
            ErrorKind::GatewayTimeout => "DEADLINE_EXCEEDED",
        }
    }

    pub fn render(&self, surface: Surface) -> http::Response<Body> {
        let value = match surface {
            Surface::Anthropic => json!({
                "type": "error",
                "error": { "type": self.anthropic_type(), "message": self.message },
            }),
            Surface::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": self.openai_type(),
                    "param": null,
                    "code": self.code,
                },
            }),
            Surface::Gemini => json!({
                "error": {
                    "code": self.status.as_u16(),
                    "message": self.message,
                    "status": self.gemini_status(),
                },
            }),
            Surface::Admin => json!({
                "error": { "type": self.anthropic_type(), "message": self.message },
            }),
        };
        let mut resp = body::json(self.status, &value);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.kind == ErrorKind::Authentication && surface == Surface::Admin {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(resp: http::Response<Body>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn each_surface_gets_its_own_shape() {
        let err = ApiError::new(ErrorKind::RateLimited, "slow down").with_retry_after(7);
        let resp = err.render(Surface::Anthropic);
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        let v = body_json(resp).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "slow down");

        let v = body_json(err.render(Surface::OpenAi)).await;
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let v = body_json(err.render(Surface::Gemini)).await;
        assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(v["error"]["code"], 429);
    }
}
