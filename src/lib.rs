//! Switchyard: a relay for LLM and image-generation APIs.
//!
//! # Layout
//!
//! The data path of one request, and the module that does each step:
//!
//! - [`server`]: the hyper accept loop, HTTP/1.1 and h2c, graceful shutdown.
//! - [`router`]: path → handler; decides the surface (and so the error shape).
//! - [`relay`]: the data path, step by step: auth → admit → pick → send → tap → settle.
//! - [`auth`]: key format and hashing; [`catalog`]: cached key and account records.
//! - [`limits`]: admission and the lease guard; [`scheduler`]: choosing the account.
//! - [`providers`]: one file per vendor: the upstream request.
//! - [`stream`]: SSE framing, usage extraction, and the tap body.
//! - [`images`]: image generation: its own buffered path, storage, `/files/{id}`, result cache.
//! - [`pricing`]: prices and integer nano-dollar cost; [`stats`]: batched usage writes;
//!   [`budget`]: what an account may cost per day and month.
//! - [`store`]: the `Store` trait and its embedded implementation.
//! - [`translate`]: one protocol to another (OpenAI chat ⇄ Anthropic, Gemini).
//! - [`admin`]: the admin API; [`notify`]: notices to the operators about accounts;
//!   [`config`], [`crypto`], [`logging`], [`metrics`], [`error`], [`body`]: support.
pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod budget;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod error;
pub mod images;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod oauth;
pub mod pricing;
pub mod providers;
pub mod relay;
pub mod router;
pub mod scheduler;
pub mod server;
pub mod stats;
pub mod store;
pub mod stream;
pub mod translate;
pub mod upstream_client;
pub mod usage;

/// Helpers for the unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A captured upstream answer from `tests/fixtures/clients/responses/`.
    #[allow(clippy::panic)]
    pub fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/clients/responses/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// An error with a chain of sources: `Layer("outer", Some(Box::new(Layer("inner", None))))`.
    #[derive(Debug)]
    pub struct Layer(pub &'static str, pub Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }
}
