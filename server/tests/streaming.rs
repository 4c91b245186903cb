//! Results that leave while their job runs (`sluice_engine::live_results`):
//! slow readers do not hold task slots, every row arrives once, and a query
//! whose rows had started to leave fails with SQLSTATE 40001 when the
//! executor holding the rest dies, instead of starting over.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_sql_tests::process::{start_executor, start_scheduler};
use sluice_sql_tests::{connect, SluiceServer};
use tokio_postgres::{Client, SimpleQueryMessage};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Rows of the test table: about 45 MB of Arrow data, more than a result
/// partition queues in memory (4 MiB).
const ROWS: i64 = 400_000;

/// The test table: `v` 1..=ROWS, and 100 bytes of padding per row.
const CREATE_BIG: &str = "CREATE TABLE big AS SELECT value AS v, repeat('x', 100) AS pad \
                          FROM generate_series(1, 400000)";

/// A metric's value in the Prometheus text `exposed` (0 when not served).
fn metric(exposed: &str, name: &str) -> f64 {
    exposed
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(server: &SluiceServer) -> String {
    let http = server.http_port().expect("the HTTP endpoint is on");
    reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// `(v, pad)` of each row `sql` returns over the simple protocol (what psql
/// sends a cursor's FETCH over).
async fn fetch(client: &Client, sql: &str) -> Result<Vec<(i64, String)>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some((
                row.get(0).expect("v").parse().expect("v is a number"),
                row.get(1).unwrap_or_default().to_string(),
            )),
            _ => None,
        })
        .collect())
}

/// Opens cursor `name` over the whole test table on a new connection and
/// reads its first row; the connection stays in the cursor's transaction.
async fn open_cursor(port: u16, name: &str) -> (Client, i64) {
    let client = connect(port).await.expect("connects");
    client
        .batch_execute(&format!(
            "BEGIN; DECLARE {name} CURSOR FOR SELECT v, pad FROM big"
        ))
        .await
        .expect("cursor declared");
    let first = fetch(&client, &format!("FETCH 1 FROM {name}"))
        .await
        .expect("first row fetched");
    assert_eq!(first.len(), 1);
    (client, first[0].0)
}

/// The rest of cursor `name` on `client`: its row count and the sum of `v`,
/// checking every padding.
async fn read_rest(client: &Client, name: &str) -> (i64, i64) {
    let rows = fetch(client, &format!("FETCH ALL FROM {name}"))
        .await
        .expect("the rest fetched");
    let mut sum = 0;
    for (v, pad) in &rows {
        assert_eq!(pad.len(), 100, "padding of row {v}");
        sum += v;
    }
    (rows.len() as i64, sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_cursors_free_their_slots_and_read_every_row_once() {
    // Two task slots in all: two cursors whose tasks waited for their
    // readers would leave none for a third query.
    let server = SluiceServer::start_with_args(binary(), &["--executors", "2", "--slots", "1"])
        .expect("sluice serve starts");
    let client = connect(server.port()).await.expect("connects");
    client.batch_execute(CREATE_BIG).await.expect("table made");
    let before = scrape(&server).await;

    let (a, first_a) = open_cursor(server.port(), "a").await;
    let (b, first_b) = open_cursor(server.port(), "b").await;
    let third = tokio::time::timeout(
        Duration::from_secs(120),
        client.query_one("SELECT count(*) FROM big WHERE v % 2 = 0", &[]),
    )
    .await
    .expect("a third query runs while both cursors wait for their readers")
    .expect("third query");
    assert_eq!(third.get::<_, i64>(0), ROWS / 2);

    let total = ROWS * (ROWS + 1) / 2;
    for (cursor, name, first) in [(&a, "a", first_a), (&b, "b", first_b)] {
        let (count, sum) = read_rest(cursor, name).await;
        assert_eq!(count + 1, ROWS, "cursor {name} reads every row");
        assert_eq!(sum + first, total, "cursor {name} reads each row once");
        cursor.batch_execute("COMMIT").await.expect("commit");
    }
    // The rows were handed over as the tasks made them, and what the slow
    // readers had not taken yet waited on disk, not in memory.
    let after = scrape(&server).await;
    let handed = metric(&after, "sluice_live_result_rows_total")
        - metric(&before, "sluice_live_result_rows_total");
    assert!(handed >= (2 * ROWS) as f64, "rows handed over: {handed}");
    let spilled = metric(&after, "sluice_live_result_spilled_bytes_total")
        - metric(&before, "sluice_live_result_spilled_bytes_total");
    assert!(spilled > 0.0, "the slow readers' rows went to disk");
    server.stop().expect("server stops");
}

/// Waits until the frontend lists `count` executors.
async fn wait_for_executors(client: &Client, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed: i64 = client
            .query_one("SELECT count(*) FROM sluice.executors", &[])
            .await
            .expect("executors listed")
            .get(0);
        if listed == count {
            return;
        }
        assert!(Instant::now() < deadline, "{listed} executors, not {count}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_rows_left_fails_with_40001_when_its_executor_dies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_scheduler, scheduler_port) =
        start_scheduler(binary(), 0, None).expect("scheduler starts");
    let work: PathBuf = dir.path().join("work");
    let executor =
        start_executor(binary(), scheduler_port, 2, &work, None).expect("executor starts");
    let frontend = SluiceServer::start_with_args(
        binary(),
        &["--scheduler", &format!("127.0.0.1:{scheduler_port}")],
    )
    .expect("frontend starts");
    let client = connect(frontend.port()).await.expect("connects");
    wait_for_executors(&client, 1).await;
    client.batch_execute(CREATE_BIG).await.expect("table made");

    // The executor is another process: the result is fetched from it over
    // Flight once the job has finished, as the client reads.
    let (reader, _) = open_cursor(frontend.port(), "c").await;
    let some = fetch(&reader, "FETCH 10 FROM c")
        .await
        .expect("rows fetched");
    assert_eq!(some.len(), 10);
    executor.kill();
    let error = fetch(&reader, "FETCH ALL FROM c")
        .await
        .expect_err("the rest of the result is gone with its executor");
    let db_error = error.as_db_error().expect("a server error");
    assert_eq!(db_error.code().code(), "40001", "{}", db_error.message());
    assert!(
        db_error.message().contains("run the query again"),
        "{}",
        db_error.message()
    );
    // The connection stays usable.
    reader.batch_execute("ROLLBACK").await.expect("rollback");
    let one: i64 = reader
        .query_one("SELECT 1", &[])
        .await
        .expect("SELECT 1")
        .get(0);
    assert_eq!(one, 1);
    frontend.stop().expect("frontend stops");
}
