//! Benchmarks for Sluice. [`tpch`] generates TPC-H data, holds the 22 queries
//! and their reference answers, and checks results against them.

pub mod tpch;
