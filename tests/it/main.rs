//! Integration tests: one binary (one link) for the whole suite.
mod store_conformance;
mod support;
