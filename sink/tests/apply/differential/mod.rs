//! The generators and the writer adapter of `differential_writers.rs`.

pub mod config;
pub mod history;
pub mod writers;
