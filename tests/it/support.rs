//! Test support: mock upstreams.
pub mod mock;
