//! TPC-H: the eight tables, generated with tpchgen; the 22 queries with the
//! specification's validation parameters; reference answers and the TPC-H
//! tolerances to check results against them.

pub mod answers;
pub mod bench;
pub mod generate;
pub mod queries;

pub use answers::{compare, shipped_dir, ReferenceAnswer};
pub use generate::{generate, Compression, GenerateOptions, GenerateSummary};
pub use queries::{query, QUERY_COUNT};

/// The eight TPC-H tables, largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `lineitem`, ~6M rows per unit of scale factor.
    LineItem,
    /// `orders`, 1.5M rows per unit of scale factor.
    Orders,
    /// `partsupp`, 800k rows per unit of scale factor.
    PartSupp,
    /// `part`, 200k rows per unit of scale factor.
    Part,
    /// `customer`, 150k rows per unit of scale factor.
    Customer,
    /// `supplier`, 10k rows per unit of scale factor.
    Supplier,
    /// `nation`, 25 rows.
    Nation,
    /// `region`, 5 rows.
    Region,
}

impl Table {
    /// All tables, largest first (the order generation starts them in).
    pub const ALL: [Table; 8] = [
        Table::LineItem,
        Table::Orders,
        Table::PartSupp,
        Table::Part,
        Table::Customer,
        Table::Supplier,
        Table::Nation,
        Table::Region,
    ];

    /// The table's SQL name, also its directory name.
    pub fn name(self) -> &'static str {
        match self {
            Table::LineItem => "lineitem",
            Table::Orders => "orders",
            Table::PartSupp => "partsupp",
            Table::Part => "part",
            Table::Customer => "customer",
            Table::Supplier => "supplier",
            Table::Nation => "nation",
            Table::Region => "region",
        }
    }

    /// Whether the table has a fixed size, independent of the scale factor
    /// (it is then written as a single file).
    pub fn is_fixed_size(self) -> bool {
        matches!(self, Table::Nation | Table::Region)
    }
}

/// `CREATE EXTERNAL TABLE` statements for the eight tables under `data`
/// (a directory path or URL holding one directory per table).
pub fn register_statements(data: &str) -> Vec<String> {
    let data = data.trim_end_matches('/');
    Table::ALL
        .iter()
        .map(|table| {
            format!(
                "CREATE EXTERNAL TABLE IF NOT EXISTS {name} STORED AS PARQUET LOCATION '{data}/{name}/'",
                name = table.name()
            )
        })
        .collect()
}
