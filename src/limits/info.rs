//! The key-info view: a key's limits, its use of each, what remains and when it resets. Served
//! to the key itself (`GET /v1/key-info`) and to the admin (`GET /admin/keys/{id}`).

use serde_json::{Value, json};

use super::json_time;
use super::meters::{self, Estimate, Families, Measure};
use crate::app::App;
use crate::error::ApiError;
use crate::store::{KeyRecord, SmolStr};

/// The view of `key` now; `base` is the key's own JSON (without secrets), extended here.
pub async fn view(app: &App, key: &KeyRecord, mut base: Value) -> Result<Value, ApiError> {
    let now_ms = app.clock.now_ms();
    let planned = meters::plan(
        &key.limits,
        now_ms,
        &app.calendar,
        Families::All,
        Estimate::default(),
        0,
    )?;
    let buckets: Vec<SmolStr> = planned.iter().map(|p| p.meter.bucket.clone()).collect();
    let state = app
        .store()
        .key_state(&key.id, &buckets)
        .await
        .map_err(ApiError::store)?;
    let tz = app.calendar.tz();
    let mut usage = serde_json::Map::new();
    for (p, used) in planned.iter().zip(&state.meters) {
        let unit = match p.measure {
            Measure::Requests => "requests",
            Measure::Tokens => "tokens",
            Measure::Cost => "nanousd",
        };
        usage.insert(
            p.name.to_string(),
            json!({
                "unit": unit,
                "limit": p.meter.limit,
                "used": used.used,
                "reserved": used.held,
                "remaining": p.meter.limit.saturating_sub(used.used.saturating_add(used.held)),
                "period_start": p.period.map(|(start, _)| json_time(start, tz)),
                "resets_at": p.period.map(|(_, end)| json_time(end, tz)),
            }),
        );
    }
    let activation_expiry = match (key.limits.active_days, state.first_used_at) {
        (Some(days), Some(first)) => {
            Some(first.saturating_add(i64::from(days).saturating_mul(86_400_000)))
        }
        _ => None,
    };
    let fixed_expiry = key.limits.expires_at.map(|t| t.as_millisecond());
    let expires = match (activation_expiry, fixed_expiry) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    base["limits"] = serde_json::to_value(&key.limits).unwrap_or(Value::Null);
    base["in_flight"] = json!(state.in_flight);
    base["usage"] = Value::Object(usage);
    base["first_used_at"] = json!(state.first_used_at.map(|ms| json_time(ms, tz)));
    base["expires_at"] = json!(expires.map(|ms| json_time(ms, tz)));
    base["expired"] = json!(expires.is_some_and(|e| e <= now_ms));
    base["timezone"] = json!(app.config.limits.timezone);
    Ok(base)
}
