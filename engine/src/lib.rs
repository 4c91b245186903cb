//! Everything every Sluice role needs to plan and run the same SQL: the session
//! template (configuration, functions, shared catalog), the query planner that
//! decides what runs on the cluster and what stays in the frontend, and the
//! `sluice` system schema.

pub mod aggregate_key_filter;
pub mod atomic_copy;
pub mod catalog;
pub mod codec;
pub mod compact;
pub mod complexity;
pub mod copy_from;
pub mod current_tables;
pub mod cursor_rows;
pub mod decoded_files;
pub mod directory_sink;
pub mod error;
pub mod explain_analyze;
pub mod file_caches;
pub mod frontend_compute;
pub mod information_schema;
pub mod inner_metrics;
pub mod insert_values;
pub mod kept_plan;
pub mod live_result;
pub mod live_results;
pub mod local_walk;
pub mod managed_write;
pub mod optimizer_rules;
pub mod options;
pub mod parallel_write;
pub mod pending_inserts;
pub mod pg_catalog_columns;
pub mod pg_cursors;
pub mod pg_functions;
pub mod pg_rewrite;
pub mod pg_settings;
pub mod planner;
pub mod planning_interrupt;
pub mod queued_writer;
pub mod recovery;
pub mod roles;
pub mod sandbox;
pub mod segment_compaction;
pub mod segment_sink;
pub mod semi_join_pushdown;
pub mod session;
pub mod session_view;
pub mod setting_statements;
pub mod single_stage;
pub mod small_queries;
pub mod sqlstate;
pub mod staged_join_order;
pub mod storage;
pub mod system;
pub mod value_limits;
pub mod yielding;

pub use error::{EngineError, Result};
pub use options::SluiceOptions;
pub use pg_settings::PgSettings;
pub use session::{SessionFactory, SessionOptions, DEFAULT_CATALOG, DEFAULT_SCHEMA};
pub use storage::{StorageOptions, StorageService};
