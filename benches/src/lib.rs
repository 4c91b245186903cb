//! Sluice benchmarks. TPC-H (generation, the 22 queries over the wire, and the
//! comparison with single-node DataFusion) lands here; see README.md.
