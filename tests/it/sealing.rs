//! Account credentials sealed to where they go: a record whose base URL was changed in the store
//! (by whoever can write it, without the master key) sends its credential nowhere; the admin API
//! moves it with the account; credentials sealed the older way are sealed again at start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use reqwest::Method;
use serde_json::json;

use crate::support::mock::MockUpstream;
use crate::support::relay::{Relay, messages_body};

const MODEL: &str = "claude-sonnet-4-5";

async fn status_of(relay: &Relay, key: &str) -> u16 {
    let resp = relay
        .messages(key, &messages_body(MODEL, false))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    resp.bytes().await.unwrap();
    status
}

#[tokio::test]
async fn a_credential_goes_only_where_its_seal_says() {
    let (home, evil) = (MockUpstream::start().await, MockUpstream::start().await);
    let relay = Relay::start().await;
    let account_id = relay.add_account(&home, "sk-real", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    assert_eq!(status_of(&relay, &key).await, 200);

    // The record's base URL changed in the store, beside its sealed credential.
    let store = relay.app.store();
    let mut record = store.account(&account_id).await.unwrap().unwrap();
    assert!(record.sealed_api_key.starts_with("v2."));
    record.base_url = evil.base_url();
    assert!(store.update_account(&record).await.unwrap());
    relay.app.catalog.reload_accounts().await.unwrap();
    assert_ne!(status_of(&relay, &key).await, 200);
    assert!(evil.requests().is_empty(), "the credential went elsewhere");

    // Moved by the admin API, the credential is sealed again where it goes.
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{account_id}"),
            Some(json!({ "base_url": home.base_url(), "api_key": "sk-real" })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = relay
        .admin(
            Method::PATCH,
            &format!("/admin/accounts/{account_id}"),
            Some(json!({ "base_url": evil.base_url() })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(status_of(&relay, &key).await, 200);
    assert_eq!(evil.requests().len(), 1);
    assert_eq!(evil.requests()[0].credential().as_deref(), Some("sk-real"));
}

/// A credential sealed to its account id alone (`v1.`, before the base URL was in the seal)
/// still serves, and is sealed again, bound to its base URL, when the relay starts.
#[tokio::test]
async fn an_older_seal_is_sealed_again_at_start() {
    let mock = MockUpstream::start().await;
    let relay = Relay::start().await;
    let account_id = relay.add_account(&mock, "sk-old", json!({})).await;
    let (_, key) = relay.create_key("k").await;
    let hex_key = std::fs::read_to_string(relay.data_dir.join("master-key")).unwrap();
    let cipher = Aes256Gcm::new_from_slice(&hex::decode(hex_key.trim()).unwrap()).unwrap();
    let nonce = [7u8; 12];
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: b"sk-old".as_slice(),
                aad: account_id.as_bytes(),
            },
        )
        .unwrap();
    let store = relay.app.store();
    let mut record = store.account(&account_id).await.unwrap().unwrap();
    record.sealed_api_key = format!("v1.{}{}", hex::encode(nonce), hex::encode(sealed));
    assert!(store.update_account(&record).await.unwrap());
    relay.app.catalog.reload_accounts().await.unwrap();
    assert_eq!(status_of(&relay, &key).await, 200, "a v1. seal still opens");

    let (config, tmp) = (relay.app.config.clone(), relay.tmp());
    relay.stop().await;
    let relay = Relay::start_with(config, tmp).await;
    let record = relay
        .app
        .store()
        .account(&account_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        record.sealed_api_key.starts_with("v2."),
        "{}",
        record.sealed_api_key
    );
    assert_eq!(status_of(&relay, &key).await, 200);
    assert_eq!(
        mock.requests().last().unwrap().credential().as_deref(),
        Some("sk-old")
    );
}
