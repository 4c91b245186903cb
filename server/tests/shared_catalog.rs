//! Two frontends given one catalog and one warehouse in object storage
//! (moto's S3 server) see one catalog: tables one creates or writes the other
//! reads at once, concurrent DDL from both loses no entry, and a restarted
//! frontend comes back with everything. A shared warehouse is not swept of
//! recent files at start: they may be another frontend's write in progress.

use std::path::Path;
use std::thread;

use sluice_sql_tests::process::S3Server;
use sluice_sql_tests::{psql, psql_command, SluiceServer};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

const SALES_RELATIONS: &str = "SELECT count(*) FROM information_schema.tables \
     WHERE table_schema = 'sales'";

/// Creates `count` views named `{prefix}_{i}` in schema sales through the
/// frontend on `port`, one connection each.
fn create_views(port: u16, prefix: &'static str, count: usize) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for i in 0..count {
            psql(
                port,
                &[&format!(
                    "CREATE VIEW sales.{prefix}_{i} AS SELECT count(*) + {i} AS n FROM sales.orders"
                )],
            );
        }
    })
}

#[test]
fn frontends_with_one_catalog_see_each_others_changes() {
    let s3 = S3Server::start().expect("moto S3 server starts");
    s3.create_bucket("lake").expect("bucket created");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\ncatalog = \"s3://lake/sluice/catalog\"\n\
             warehouse = \"s3://lake/sluice/warehouse\"\n\n{}",
            s3.storage_section()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let start = |name: &str| {
        SluiceServer::start_in(Path::new(BINARY), &dir.path().join(name), &args)
            .expect("frontend starts")
    };
    let (a, b) = (start("a"), start("b"));

    psql(
        a.port(),
        &[
            "CREATE SCHEMA sales",
            "CREATE TABLE sales.orders AS SELECT i AS id FROM generate_series(1, 100) AS t(i)",
        ],
    );
    assert_eq!(
        psql(b.port(), &["SELECT count(*) FROM sales.orders"]),
        "100\n"
    );
    psql(
        b.port(),
        &["INSERT INTO sales.orders SELECT id + 100 FROM sales.orders"],
    );
    assert_eq!(
        psql(a.port(), &["SELECT count(*), sum(id) FROM sales.orders"]),
        "200|20100\n"
    );

    // Both frontends create views at once: every one is recorded.
    let writers = [
        create_views(a.port(), "a", 12),
        create_views(b.port(), "b", 12),
    ];
    for writer in writers {
        writer.join().expect("every CREATE VIEW succeeds");
    }
    for port in [a.port(), b.port()] {
        assert_eq!(psql(port, &[SALES_RELATIONS]), "25\n");
    }
    assert_eq!(psql(a.port(), &["SELECT n FROM sales.b_11"]), "211\n");

    // A name taken on one frontend is taken on the other.
    let taken = psql_command(b.port(), &["CREATE VIEW sales.a_0 AS SELECT 1"])
        .output()
        .unwrap();
    assert!(!taken.status.success());
    assert!(
        String::from_utf8_lossy(&taken.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );

    // A stray file as another frontend's write in progress leaves it: a
    // restart must not sweep it, since it is recent.
    psql(
        b.port(),
        &[
            "COPY (SELECT 1 AS x) TO 's3://lake/sluice/warehouse/sales/inflight-1/part-0.parquet' \
           (FORMAT parquet)",
        ],
    );
    drop(a); // kill -9
    let a = start("a");
    assert_eq!(psql(a.port(), &[SALES_RELATIONS]), "25\n");
    assert_eq!(
        psql(a.port(), &["SELECT count(*) FROM sales.orders"]),
        "200\n"
    );
    psql(
        a.port(),
        &[
            "CREATE EXTERNAL TABLE sales.inflight (x BIGINT) STORED AS PARQUET \
           LOCATION 's3://lake/sluice/warehouse/sales/inflight-1/'",
        ],
    );
    assert_eq!(
        psql(b.port(), &["SELECT count(*) FROM sales.inflight"]),
        "1\n"
    );

    // Renames and drops on one frontend reach the other.
    psql(
        a.port(),
        &[
            "ALTER TABLE sales.orders RENAME TO orders_v1",
            "DROP VIEW sales.a_0",
        ],
    );
    assert_eq!(
        psql(b.port(), &["SELECT count(*) FROM sales.orders_v1"]),
        "200\n"
    );
    let gone = psql_command(b.port(), &["SELECT count(*) FROM sales.a_0"])
        .output()
        .unwrap();
    assert!(!gone.status.success());
    assert_eq!(
        psql(
            b.port(),
            &["SELECT count(*) FROM sluice.tables WHERE schema_name = 'sales'"]
        ),
        "25\n"
    );
    b.stop().expect("b stops");
    a.stop().expect("a stops");
}
