//! Test support: mock upstreams, the relay under test, client fixtures.
pub mod faulty_store;
pub mod mock;
pub mod relay;
pub mod token_endpoint;

use serde_json::Value;

/// One captured client request (`tests/fixtures/clients/*.requests.jsonl`, copied from
/// `shared/fixtures/clients`).
pub struct Captured {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

#[allow(clippy::unwrap_used)]
pub fn captured(file: &str) -> Vec<Captured> {
    let path = format!(
        "{}/tests/fixtures/clients/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            Captured {
                method: v["method"].as_str().unwrap().to_owned(),
                path: v["path"].as_str().unwrap().to_owned(),
                query: v["query"].as_str().unwrap_or("").to_owned(),
                headers: v["headers"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect(),
                body: Some(v["body"].clone()).filter(|b| !b.is_null()),
            }
        })
        .collect()
}
