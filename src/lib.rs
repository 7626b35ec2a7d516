//! Switchyard: a relay for LLM and image-generation APIs.
pub mod pricing;
pub mod store;
pub mod stream;
pub mod usage;
