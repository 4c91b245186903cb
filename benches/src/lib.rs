//! Benchmarks for Sluice. [`streaming`] times large results sent to a client.
//! [`tpch`] generates TPC-H data, holds the 22 queries
//! and their reference answers, and checks results against them.

pub mod streaming;
pub mod tpch;
