//! Integration tests: one binary (one link) for the whole suite.
mod anthropic;
mod cli;
mod store_conformance;
mod support;
