//! `GET /admin/usage` over long ranges, on every store; imported prices.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use serde_json::json;
use switchyard::store::{Bucket, Dimension, RequestLogEntry, UsageQuery};
use switchyard::usage::TokenUsage;

use crate::support::mock::{Behavior, MockUpstream, MockUsage};
use crate::support::relay::{Backend, Relay, backends};

fn entry(n: u64, at: &Zoned) -> RequestLogEntry {
    RequestLogEntry {
        request_id: format!("req-{n}"),
        at: at.timestamp().as_millisecond(),
        key_id: "key_old".to_owned(),
        account_id: None,
        model: "claude-sonnet-4-5".to_owned(),
        surface: "messages".to_owned(),
        status: 200,
        latency_ms: 10,
        ttfb_ms: None,
        usage: TokenUsage {
            input_tokens: n,
            ..TokenUsage::default()
        },
        cost_nanousd: 0,
        cache_hit: false,
        estimated: false,
    }
}

fn rfc3339(z: &Zoned) -> String {
    z.timestamp().to_string()
}

/// Totals with no series over a range of months are what was recorded in it: read from whole
/// months, days and hours, not from hour buckets the store has already let go (35 days), and
/// not refused for spanning more than 10,000 hours.
#[tokio::test]
async fn totals_over_months_are_what_was_recorded_in_the_range() {
    for backend in backends() {
        let relay = Relay::start_on(&backend, |_| {}).await;
        let now = Timestamp::now().to_zoned(TimeZone::UTC);
        // From a day about three months ago to an hour of the day before yesterday.
        let from = now
            .first_of_month()
            .unwrap()
            .start_of_day()
            .unwrap()
            .checked_sub(3.months())
            .unwrap()
            .checked_add(9.days())
            .unwrap();
        // 13:00 two days ago: inside its day whatever the time now (at midnight, the record
        // just before it would fall on the day before).
        let to = now
            .start_of_day()
            .unwrap()
            .checked_sub(2.days())
            .unwrap()
            .checked_add(13.hours())
            .unwrap();
        let just_before = |z: &Zoned| z.checked_sub(1.millisecond()).unwrap();
        let recorded = [
            (1, just_before(&from)),
            (2, from.clone()),
            (
                4,
                from.checked_add(40.days())
                    .unwrap()
                    .checked_add(5.hours())
                    .unwrap(),
            ),
            (8, just_before(&to)),
            (16, to.clone()),
        ];
        for (n, at) in &recorded {
            relay.app.stats.record(entry(*n, at), true);
        }
        relay.app.stats.flush().await;
        if matches!(backend, Backend::Embedded) {
            // A day on, as the stats task would have done by then: the hours of the range's
            // first weeks are gone, its last days' are not.
            let later = now.timestamp().as_millisecond() + 86_400_000;
            relay.app.store().prune_usage(later).await.unwrap();
            let hours = relay
                .app
                .store()
                .usage(&UsageQuery {
                    dimension: Dimension::Key("key_old".to_owned()),
                    buckets: [&from, &just_before(&to)]
                        .map(|z| {
                            let hour = z.strftime("%Y-%m-%dT%H").to_string();
                            Bucket::Hour(hour)
                        })
                        .to_vec(),
                })
                .await
                .unwrap();
            assert_eq!((hours[0].requests, hours[1].requests), (0, 1));
        }

        let query = format!("key_id=key_old&from={}&to={}", rfc3339(&from), rfc3339(&to));
        let u = relay.usage(&query).await;
        assert_eq!(u["input_tokens"], 2 + 4 + 8, "{backend:?} {query}: {u}");
        assert_eq!(u["requests"], 3);
        // The newest request in the range, not the newest at all.
        assert_eq!(u["last_request_at"], rfc3339(&just_before(&to)));
        assert!(u.get("series").is_none());
        // Dates: from midnight to midnight.
        let day = |z: &Zoned| z.strftime("%Y-%m-%d").to_string();
        let query = format!("key_id=key_old&from={}&to={}", day(&from), day(&to));
        let u = relay.usage(&query).await;
        assert_eq!(u["input_tokens"], 2 + 4, "{query}");
        assert_eq!(u["last_request_at"], rfc3339(&recorded[2].1));
        let all_time = relay.usage("key_id=key_old").await;
        assert_eq!(all_time["last_request_at"], rfc3339(&to), "{all_time}");
        assert_eq!(all_time["totals"]["last_request_at"], rfc3339(&to));
        let unused = relay.usage("key_id=key_never_used").await;
        assert_eq!(
            unused["last_request_at"],
            serde_json::Value::Null,
            "{unused}"
        );
        // More than 10,000 hours.
        let query = format!("key_id=key_old&from=2000-01-01&to={}", rfc3339(&to));
        assert_eq!(relay.usage(&query).await["input_tokens"], 1 + 2 + 4 + 8);
    }
}

/// An imported price file prices the next request, is kept in the data dir of an embedded
/// store, and prices requests after a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_price_file_applies_at_once_and_after_a_restart() {
    let relay = Relay::start().await;
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Ok(MockUsage::new(10, 20)));
    relay.add_account(&mock, "sk-a", json!({})).await;
    let (_, key) = relay.create_key("priced").await;
    let model = "claude-sonnet-4-5";
    let built_in = relay.cost_of_one(&key, model).await;
    let expected = relay.import_test_prices(model).await;
    assert_ne!(built_in, expected);
    assert_eq!(relay.cost_of_one(&key, model).await, expected);
    assert!(
        relay
            .app
            .config
            .data_dir
            .join("imported-prices.json")
            .exists()
    );

    let (config, tmp) = (relay.app.config.clone(), relay.tmp());
    relay.stop().await;
    let relay = Relay::start_with(config, tmp).await;
    assert_eq!(relay.cost_of_one(&key, model).await, expected);
    // A file that is not a price table, or prices no model, changes nothing.
    for file in [
        json!([1, 2]),
        json!({}),
        json!({ "sample_spec": { "mode": "chat" } }),
    ] {
        let (status, v) = relay
            .admin(reqwest::Method::POST, "/admin/pricing/import", Some(file))
            .await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(relay.cost_of_one(&key, model).await, expected);
    }
}
