//! The Sluice server: the Postgres-wire frontend and the commands of the
//! `sluice` binary.

pub mod auth;
pub mod bench_stream;
pub mod catalog_table;
pub mod cli_progress;
pub mod client;
pub mod config;
pub mod error;
pub mod frontend;
pub mod http;
pub mod jobs;
pub mod json_lines;
pub mod metrics;
pub mod query_log;
pub mod roles;
pub mod script;
pub mod serve;
pub mod system_tables;
pub mod tpch;
pub mod web_ui;
