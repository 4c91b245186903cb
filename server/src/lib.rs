//! The `sluice` binary's commands over the libraries: configuration, the
//! cluster roles, `sluice serve` (the frontend of [`sluice_frontend`] with
//! an embedded or remote cluster), scheduled jobs and the script runner,
//! client commands, the web UI and the benchmarks' commands.

pub mod bench_stream;
pub mod client;
pub mod config;
pub mod error;
pub mod http;
pub mod roles;
pub mod run_command;
pub mod serve;
pub mod tpch;
pub mod users_file;
pub mod web_ui;
