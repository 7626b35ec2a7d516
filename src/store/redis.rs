//! The Redis store (fred).
