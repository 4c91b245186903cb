//! The catalog outlives the server: schemas, tables over files and views
//! created over the wire are there after a `kill -9` and after a clean stop,
//! renames and drops included.

use std::path::Path;

use sluice_sql_tests::{psql, SluiceServer};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

const USER_RELATIONS: &str = "SELECT table_schema || '.' || table_name || ' ' || table_type \
     FROM information_schema.tables \
     WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'sluice') \
     ORDER BY 1";

#[test]
fn schemas_tables_and_views_survive_kill_and_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let f = files.path().display();
    std::fs::write(files.path().join("codes.csv"), "code,label\n1,one\n2,two\n").unwrap();

    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("starts");
    psql(
        server.port(),
        &[
            &format!(
                "COPY (SELECT i AS id, i % 2 + 1 AS code FROM generate_series(1, 100) AS t(i)) \
                 TO '{f}/facts/part-0.parquet' (FORMAT parquet)"
            ),
            &format!("CREATE EXTERNAL TABLE facts STORED AS PARQUET LOCATION '{f}/facts/'"),
            "CREATE SCHEMA ref",
            &format!(
                "CREATE EXTERNAL TABLE ref.codes STORED AS CSV LOCATION '{f}/codes.csv' \
                 OPTIONS ('format.has_header' 'true')"
            ),
            "CREATE VIEW ref.labelled AS SELECT c.label, count(*) AS n \
             FROM facts JOIN ref.codes c ON facts.code = c.code GROUP BY c.label",
            "CREATE VIEW dropped_later AS SELECT 1 AS one",
            "CREATE VIEW renamed_before AS SELECT 2 AS two",
            "ALTER TABLE renamed_before RENAME TO renamed_after",
            "DROP VIEW dropped_later",
            "CREATE TABLE managed AS SELECT id FROM facts WHERE id <= 10",
        ],
    );
    // A crash: nothing is flushed at shutdown.
    drop(server);

    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("restarts");
    assert_eq!(
        psql(server.port(), &[USER_RELATIONS]),
        "public.facts BASE TABLE\npublic.managed BASE TABLE\npublic.renamed_after VIEW\n\
         ref.codes BASE TABLE\nref.labelled VIEW\n"
    );
    assert_eq!(
        psql(server.port(), &["SELECT sum(id) FROM managed"]),
        "55\n"
    );
    assert_eq!(
        psql(server.port(), &["SELECT two FROM renamed_after"]),
        "2\n"
    );
    assert_eq!(
        psql(
            server.port(),
            &["SELECT label, n FROM ref.labelled ORDER BY label"]
        ),
        "one|50\ntwo|50\n"
    );
    // Drops are recorded too, and a clean stop keeps the rest.
    psql(
        server.port(),
        &[
            "DROP SCHEMA ref CASCADE",
            "DROP VIEW renamed_after",
            "DROP TABLE managed",
        ],
    );
    server.stop().expect("stops");

    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("restarts");
    assert_eq!(
        psql(server.port(), &[USER_RELATIONS]),
        "public.facts BASE TABLE\n"
    );
    assert_eq!(
        psql(
            server.port(),
            &["SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'ref'"]
        ),
        "0\n"
    );
    assert_eq!(
        psql(server.port(), &["SELECT sum(id) FROM facts"]),
        "5050\n"
    );
    server.stop().expect("stops");
}
