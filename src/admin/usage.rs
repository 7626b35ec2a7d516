//! `/admin/usage`, `/admin/requests` and `/admin/pricing/import`.

use std::collections::HashMap;
use std::sync::Arc;

use http::{Response, StatusCode};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use serde_json::{Value, json};

use super::{ok, rfc3339, store_error};
use crate::app::{App, IMPORTED_PRICES_FILE};
use crate::body::Body;
use crate::error::ApiError;
use crate::pricing::{PriceTable, Pricing};
use crate::store::{Bucket, Counters, Dimension, Granularity, RequestFilter, UsageQuery};

/// At most this many buckets in one series.
const MAX_BUCKETS: usize = 10_000;
const DEFAULT_REQUESTS: usize = 100;
const MAX_REQUESTS: usize = 1_000;

/// Totals (and a series, with `granularity`) for one key, account or model, or everything.
pub async fn usage(
    app: &Arc<App>,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let dimension = dimension(q)?;
    let granularity = match q.get("granularity").map(String::as_str) {
        None | Some("") => None,
        Some("hour") => Some(Granularity::Hour),
        Some("day") => Some(Granularity::Day),
        Some("month") => Some(Granularity::Month),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "granularity: {other:?} is not hour, day or month"
            )));
        }
    };
    let from = q
        .get("from")
        .filter(|s| !s.is_empty())
        .map(|s| parse_time(s, "from"))
        .transpose()?;
    let to = q
        .get("to")
        .filter(|s| !s.is_empty())
        .map(|s| parse_time(s, "to"))
        .transpose()?;
    // Usage still in the aggregator is part of the answer.
    app.stats.flush().await;

    let mut body = json!({});
    let totals = if granularity.is_none() && from.is_none() && to.is_none() {
        let query = UsageQuery {
            dimension: dimension.clone(),
            buckets: vec![Bucket::Total],
        };
        app.store()
            .usage(&query)
            .await
            .map_err(store_error)?
            .first()
            .copied()
            .unwrap_or_default()
    } else {
        let to = to.unwrap_or_else(|| Timestamp::now().to_zoned(TimeZone::UTC));
        let from = match from {
            Some(f) => f,
            None => default_from(&to, granularity.unwrap_or(Granularity::Hour))?,
        };
        if from >= to {
            return Err(ApiError::invalid("from: must be before to"));
        }
        // A series reads one bucket per step; totals alone read the coarsest buckets that cover
        // the range, which are few and kept longest.
        let starts = match granularity {
            Some(g) => bucket_starts(&from, &to, g)?
                .into_iter()
                .map(|start| (start, g))
                .collect(),
            None => tiling(&from, &to)?,
        };
        let buckets = starts
            .iter()
            .map(|(start, g)| bucket_of(start, *g))
            .collect();
        let counters = app
            .store()
            .usage(&UsageQuery {
                dimension: dimension.clone(),
                buckets,
            })
            .await
            .map_err(store_error)?;
        let mut totals = Counters::default();
        counters.iter().for_each(|c| totals.add(c));
        body["from"] = json!(from.timestamp().to_string());
        body["to"] = json!(to.timestamp().to_string());
        if let Some(g) = granularity {
            body["granularity"] = json!(g);
            body["series"] = starts
                .iter()
                .zip(&counters)
                .map(|((start, _), c)| {
                    let mut point = counters_json(c);
                    point["start"] = json!(start.timestamp().to_string());
                    point
                })
                .collect();
        }
        totals
    };
    let totals_json = counters_json(&totals);
    if let (Value::Object(out), Value::Object(fields)) = (&mut body, &totals_json) {
        for (k, v) in fields {
            out.insert(k.clone(), v.clone());
        }
    }
    body["totals"] = totals_json;
    body["filter"] = match &dimension {
        Dimension::All => json!({}),
        Dimension::Key(id) => json!({ "key_id": id }),
        Dimension::Account(id) => json!({ "account_id": id }),
        Dimension::Model(m) => json!({ "model": m }),
    };
    ok(StatusCode::OK, &body)
}

fn counters_json(c: &Counters) -> Value {
    json!({
        "requests": c.requests,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "cache_creation_input_tokens": c.cache_creation_input_tokens,
        "cache_creation_5m_input_tokens": c.cache_creation_5m_input_tokens,
        "cache_creation_1h_input_tokens": c.cache_creation_1h_input_tokens,
        "cache_read_input_tokens": c.cache_read_input_tokens,
        "cost_nanousd": c.cost_nanousd,
        "images": c.images,
        "last_request_at": (c.last_at > 0).then(|| rfc3339(c.last_at)),
    })
}

fn dimension(q: &HashMap<String, String>) -> Result<Dimension, ApiError> {
    let given: Vec<Dimension> = [
        q.get("key_id")
            .filter(|s| !s.is_empty())
            .map(|s| Dimension::Key(s.clone())),
        q.get("account_id")
            .filter(|s| !s.is_empty())
            .map(|s| Dimension::Account(s.clone())),
        q.get("model")
            .filter(|s| !s.is_empty())
            .map(|s| Dimension::Model(s.clone())),
    ]
    .into_iter()
    .flatten()
    .collect();
    match given.len() {
        0 => Ok(Dimension::All),
        1 => Ok(given.into_iter().next().unwrap_or(Dimension::All)),
        _ => Err(ApiError::invalid(
            "give at most one of key_id, account_id and model",
        )),
    }
}

/// RFC 3339 (`2026-11-22T08:00:00Z`) or a date (`2026-11-22`, midnight UTC).
fn parse_time(s: &str, field: &str) -> Result<Zoned, ApiError> {
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts.to_zoned(TimeZone::UTC));
    }
    s.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(TimeZone::UTC).ok())
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{field}: {s:?} is not an RFC 3339 time or a YYYY-MM-DD date"
            ))
        })
}

fn default_from(to: &Zoned, g: Granularity) -> Result<Zoned, ApiError> {
    let span = match g {
        Granularity::Hour => 24.hours(),
        Granularity::Day => 30.days(),
        Granularity::Month => 12.months(),
    };
    to.checked_sub(span)
        .map_err(|e| ApiError::invalid(format!("to: {e}")))
}

/// The start of the bucket containing `z`.
fn floor(z: &Zoned, g: Granularity) -> Result<Zoned, jiff::Error> {
    let day = z.start_of_day()?;
    match g {
        Granularity::Hour => day.checked_add(i64::from(z.hour()).hours()),
        Granularity::Day => Ok(day),
        Granularity::Month => z.first_of_month()?.start_of_day(),
    }
}

/// The start of the first bucket that starts at or after `z`.
fn ceil(z: &Zoned, g: Granularity) -> Result<Zoned, jiff::Error> {
    let start = floor(z, g)?;
    if start == *z {
        Ok(start)
    } else {
        start.checked_add(step(g))
    }
}

fn step(g: Granularity) -> jiff::Span {
    match g {
        Granularity::Hour => 1.hour(),
        Granularity::Day => 1.day(),
        Granularity::Month => 1.month(),
    }
}

fn bad_range(e: jiff::Error) -> ApiError {
    ApiError::invalid(format!("time range: {e}"))
}

/// Starts of every bucket overlapping `[from, to)`.
fn bucket_starts(from: &Zoned, to: &Zoned, g: Granularity) -> Result<Vec<Zoned>, ApiError> {
    let mut starts = Vec::new();
    let mut at = floor(from, g).map_err(bad_range)?;
    while at < *to {
        if starts.len() == MAX_BUCKETS {
            return Err(ApiError::invalid(format!(
                "time range: more than {MAX_BUCKETS} buckets; use a coarser granularity"
            )));
        }
        let next = at.checked_add(step(g)).map_err(bad_range)?;
        starts.push(at);
        at = next;
    }
    Ok(starts)
}

/// The buckets whose union is exactly `[from, to)` with both ends moved out to whole hours (an
/// hour the range only touches counts whole, as it does in a series): the whole months inside
/// it, whole days in what is left at either end, hours in what is left of those. Coarser buckets
/// are kept longer (README, after the admin API), so the totals of a range long past come from
/// buckets that are still there, as long as its ends are on days (or on months).
fn tiling(from: &Zoned, to: &Zoned) -> Result<Vec<(Zoned, Granularity)>, ApiError> {
    let from = floor(from, Granularity::Hour).map_err(bad_range)?;
    let to = ceil(to, Granularity::Hour).map_err(bad_range)?;
    let mut tiles = Vec::new();
    tile(&from, &to, Granularity::Month, &mut tiles).map_err(bad_range)?;
    if tiles.len() > MAX_BUCKETS {
        return Err(ApiError::invalid(format!(
            "time range: more than {MAX_BUCKETS} buckets"
        )));
    }
    Ok(tiles)
}

/// Adds the buckets of `g` and finer that tile `[from, to)` (both on whole hours) to `tiles`, in
/// time order.
fn tile(
    from: &Zoned,
    to: &Zoned,
    g: Granularity,
    tiles: &mut Vec<(Zoned, Granularity)>,
) -> Result<(), jiff::Error> {
    let finer = match g {
        Granularity::Month => Some(Granularity::Day),
        Granularity::Day => Some(Granularity::Hour),
        Granularity::Hour => None,
    };
    let (first, end) = (ceil(from, g)?, floor(to, g)?);
    match finer {
        Some(finer) if first >= end => return tile(from, to, finer, tiles),
        Some(finer) => tile(from, &first, finer, tiles)?,
        None => {}
    }
    let mut at = first;
    while at < end {
        let next = at.checked_add(step(g))?;
        tiles.push((at, g));
        at = next;
    }
    match finer {
        Some(finer) => tile(&end, to, finer, tiles),
        None => Ok(()),
    }
}

fn bucket_of(start: &Zoned, g: Granularity) -> Bucket {
    let [hour, day, month, _] = crate::store::buckets_of(start.timestamp().as_millisecond());
    match g {
        Granularity::Hour => hour,
        Granularity::Day => day,
        Granularity::Month => month,
    }
}

/// The most recent requests, newest first; a key's, an account's (or a key's with an account).
pub async fn requests(
    app: &Arc<App>,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_REQUESTS).contains(n))
            .ok_or_else(|| ApiError::invalid(format!("limit: must be 1 to {MAX_REQUESTS}")))?,
        None => DEFAULT_REQUESTS,
    };
    let given = |name: &str| q.get(name).map(String::as_str).filter(|s| !s.is_empty());
    let filter = RequestFilter {
        key_id: given("key_id"),
        account_id: given("account_id"),
    };
    app.stats.flush().await;
    let entries = app
        .store()
        .recent_requests(&filter, limit)
        .await
        .map_err(store_error)?;
    let data: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "request_id": e.request_id,
                "time": rfc3339(e.at),
                "key_id": e.key_id,
                "account_id": e.account_id,
                "model": e.model,
                "surface": e.surface,
                "status": e.status,
                "latency_ms": e.latency_ms,
                "ttfb_ms": e.ttfb_ms,
                "input_tokens": e.usage.input_tokens,
                "output_tokens": e.usage.output_tokens,
                "cache_creation_input_tokens": e.usage.cache_creation_input_tokens,
                "cache_read_input_tokens": e.usage.cache_read_input_tokens,
                "cost_nanousd": e.cost_nanousd,
                "images": e.usage.images,
                "web_search_requests": e.usage.web_search_requests,
                "cache_hit": e.cache_hit,
                "estimated": e.estimated,
            })
        })
        .collect();
    ok(StatusCode::OK, &json!({ "data": data }))
}

/// Imports a LiteLLM `model_prices_and_context_window.json`, applied at once: kept by a shared
/// store for every instance (each takes it up as it hears of it, and at start), else in the
/// data dir (so it survives restarts).
pub async fn import_pricing(app: &Arc<App>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::invalid("the price file is not UTF-8"))?;
    let table =
        PriceTable::from_litellm_json(text).map_err(|e| ApiError::invalid(e.to_string()))?;
    let models = table.len();
    // An import replaces the one before: a file that prices nothing (the wrong file, `{}`) would
    // silently put every model back on the configured prices.
    if models == 0 {
        return Err(ApiError::invalid(
            "the price file prices no model (LiteLLM's model_prices_and_context_window.json maps \
             each model to its input_cost_per_token, output_cost_per_token, …); the prices in \
             use are unchanged",
        ));
    }
    let pricing = Pricing::from_config(&app.config.pricing, Some(table))
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if !app.store().share_prices(text).await.map_err(store_error)? {
        let path = app.config.data_dir.join(IMPORTED_PRICES_FILE);
        let tmp = path.with_extension("json.tmp");
        let written = async {
            tokio::fs::write(&tmp, text).await?;
            tokio::fs::rename(&tmp, &path).await
        };
        written
            .await
            .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", path.display())))?;
    }
    app.set_pricing(pricing);
    ok(StatusCode::OK, &json!({ "imported_models": models }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: &str) -> Zoned {
        parse_time(s, "t").unwrap()
    }

    /// The tiles of `[from, to)`, checked to follow each other without a gap or an overlap from
    /// the hour of `from` to the end of the hour of `to`; as bucket names.
    fn tiles(from: &str, to: &str) -> Vec<Bucket> {
        let tiles = tiling(&at(from), &at(to)).unwrap();
        let mut end = floor(&at(from), Granularity::Hour).unwrap();
        for (start, g) in &tiles {
            assert_eq!(*start, end, "{from}..{to}: {tiles:?}");
            end = start.checked_add(step(*g)).unwrap();
        }
        assert_eq!(end, ceil(&at(to), Granularity::Hour).unwrap());
        tiles
            .iter()
            .map(|(start, g)| bucket_of(start, *g))
            .collect()
    }

    fn hour(s: &str) -> Bucket {
        Bucket::Hour(s.to_owned())
    }

    fn day(s: &str) -> Bucket {
        Bucket::Day(s.to_owned())
    }

    fn month(s: &str) -> Bucket {
        Bucket::Month(s.to_owned())
    }

    /// Totals read whole months inside the range, then whole days at its ends, then hours.
    #[test]
    fn totals_read_the_coarsest_buckets_that_tile_the_range() {
        assert_eq!(
            tiles("2026-01-30T22:00:00Z", "2026-04-02T03:00:00Z"),
            [
                hour("2026-01-30T22"),
                hour("2026-01-30T23"),
                day("2026-01-31"),
                month("2026-02"),
                month("2026-03"),
                day("2026-04-01"),
                hour("2026-04-02T00"),
                hour("2026-04-02T01"),
                hour("2026-04-02T02"),
            ]
        );
        // Dates: days and months only.
        assert_eq!(tiles("2026-08-01", "2026-09-01"), [month("2026-08")]);
        assert_eq!(
            tiles("2028-02-27", "2028-03-02"),
            [
                day("2028-02-27"),
                day("2028-02-28"),
                day("2028-02-29"),
                day("2028-03-01"),
            ]
        );
        // Within one day: hours; an hour the range only touches counts whole, as in a series.
        assert_eq!(
            tiles("2026-11-22T08:30:00Z", "2026-11-22T10:15:00Z"),
            [
                hour("2026-11-22T08"),
                hour("2026-11-22T09"),
                hour("2026-11-22T10"),
            ]
        );
        // Longer than 10,000 hours: a few hundred buckets.
        let long = tiles("2000-01-01", "2026-12-07T05:00:00Z");
        assert_eq!(long.len(), 323 + 6 + 5);
        assert_eq!(long[0], month("2000-01"));
    }
}
