//! Integration tests: one binary (one link) for the whole suite.
mod anthropic;
mod bedrock;
mod cli;
mod connections;
mod failover;
mod images;
mod limits;
mod mocks;
mod proxy;
mod redis;
mod responses;
mod scheduler;
mod store_conformance;
mod support;
mod surfaces;
mod translate;
mod usage;
