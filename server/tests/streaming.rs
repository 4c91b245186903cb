//! Results that leave while their job runs (`sluice_engine::live_results`,
//! and from executors in other processes `sluice_scheduler::live_follow`):
//! slow readers do not hold task slots, every row arrives once, and a query
//! whose rows had started to leave fails with SQLSTATE 40001 when the
//! executor making the rest dies, instead of starting over.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_sql_tests::process::{start_executor_with_http, start_scheduler, ChildProcess};
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
    scrape_port(server.http_port().expect("the HTTP endpoint is on")).await
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

/// Two cursors over the test table on the server at `port`, each left
/// after its first row, while `client` runs a third query (which needs a
/// task slot); then each cursor reads the rest, every row exactly once.
async fn two_slow_cursors_and_a_third_query(port: u16, client: &Client) {
    let (a, first_a) = open_cursor(port, "a").await;
    let (b, first_b) = open_cursor(port, "b").await;
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

    two_slow_cursors_and_a_third_query(server.port(), &client).await;
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

/// A scheduler and an executor (with `slots` slots, its HTTP endpoint on
/// `http`) in processes of their own, and a frontend started with
/// `--scheduler`, connected, the test table made.
async fn separate_cluster(work: &Path, http: u16) -> (Vec<ChildProcess>, SluiceServer, Client) {
    let (scheduler, scheduler_port) = start_scheduler(binary(), 0, None).expect("scheduler starts");
    let http = format!("127.0.0.1:{http}");
    let executor = start_executor_with_http(binary(), scheduler_port, 2, work, None, &http)
        .expect("executor starts");
    let frontend = SluiceServer::start_with_args(
        binary(),
        &["--scheduler", &format!("127.0.0.1:{scheduler_port}")],
    )
    .expect("frontend starts");
    let client = connect(frontend.port()).await.expect("connects");
    wait_for_executors(&client, 1).await;
    client.batch_execute(CREATE_BIG).await.expect("table made");
    (vec![scheduler, executor], frontend, client)
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The Prometheus text of the process whose HTTP endpoint is on `port`.
async fn scrape_port(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_an_executor_in_another_process_flow_while_its_job_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = free_port();
    let (_processes, frontend, client) = separate_cluster(&dir.path().join("work"), http).await;
    let before = scrape_port(http).await;

    // The executor hands the final stage's rows to the frontend's stream as
    // its tasks make them: two cursors left unread hold no slot (the
    // executor has two), and every row arrives once.
    two_slow_cursors_and_a_third_query(frontend.port(), &client).await;
    let after = scrape_port(http).await;
    let handed = metric(&after, "sluice_live_result_rows_total")
        - metric(&before, "sluice_live_result_rows_total");
    assert!(
        handed >= (2 * ROWS) as f64,
        "rows handed over by the executor: {handed}"
    );

    // Over the extended protocol too, with values typed.
    let rows = client
        .query("SELECT v, pad FROM big WHERE v % 1000 = 0 ORDER BY v", &[])
        .await
        .expect("a query over the cluster");
    let values: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(
        values,
        (1..=ROWS / 1000).map(|n| n * 1000).collect::<Vec<_>>()
    );
    frontend.stop().expect("frontend stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_rows_left_fails_with_40001_when_its_executor_dies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut processes, frontend, _client) =
        separate_cluster(&dir.path().join("work"), free_port()).await;

    // A result of 8,000,000 rows, still being made when the executor dies.
    let reader = connect(frontend.port()).await.expect("connects");
    reader
        .batch_execute(
            "BEGIN; DECLARE c CURSOR FOR SELECT big.v, big.pad FROM big \
             CROSS JOIN (SELECT v AS n FROM big WHERE v <= 20) AS copies",
        )
        .await
        .expect("cursor declared");
    let some = fetch(&reader, "FETCH 10 FROM c")
        .await
        .expect("rows fetched");
    assert_eq!(some.len(), 10);
    let executor = processes.pop().expect("the executor");
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

/// What anyone who reaches an executor's Flight port can ask of results:
/// a sync of a result nobody reads there is refused, a key that is not text
/// is refused, and a stream opened for a made-up key carries nothing of the
/// queries that run meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executors_result_streams_give_strangers_nothing() {
    use arrow_flight::error::FlightError;
    use arrow_flight::{Action, FlightClient};
    use futures::StreamExt;
    use tonic::Code;

    let dir = tempfile::tempdir().expect("temp dir");
    let (processes, frontend, client) =
        separate_cluster(&dir.path().join("work"), free_port()).await;
    let flight = processes[1]
        .ready_line
        .split("flight ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("the executor's Flight address");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{flight}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects to the executor");
    let mut stranger = FlightClient::new(channel);
    let code = |result: Result<_, FlightError>| match result {
        Err(FlightError::Tonic(status)) => Some(status.code()),
        _ => None,
    };
    let sync = stranger
        .do_action(Action::new("sluice.live_result_sync", "nobody/reads-this"))
        .await;
    assert_eq!(code(sync.map(|_| ())), Some(Code::NotFound));
    let not_text = Action {
        r#type: "sluice.live_result".into(),
        body: vec![0xff, 0xfe].into(),
    };
    assert_eq!(
        code(stranger.do_action(not_text).await.map(|_| ())),
        Some(Code::InvalidArgument)
    );
    let mut made_up = stranger
        .do_action(Action::new("sluice.live_result", "made/up"))
        .await
        .expect("a stream for any key");
    let total: i64 = client
        .query_one(
            "SELECT sum(v) FROM (SELECT v FROM big ORDER BY v DESC)",
            &[],
        )
        .await
        .expect("a query while the stranger listens")
        .get(0);
    assert_eq!(total, ROWS * (ROWS + 1) / 2);
    let heard = tokio::time::timeout(Duration::from_millis(500), made_up.next()).await;
    assert!(heard.is_err(), "the made-up key's stream carried {heard:?}");
    drop(made_up);
    let one: i64 = client
        .query_one("SELECT 1::BIGINT", &[])
        .await
        .expect("usable")
        .get(0);
    assert_eq!(one, 1);
    frontend.stop().expect("frontend stops");
}
