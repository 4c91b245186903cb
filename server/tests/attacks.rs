//! The attacks of issue 18, run against a server with users (admin, writer,
//! reader) and an allowed location: each is answered with its SQLSTATE (or a
//! refused connection), nothing outside the allowed roots is read, written,
//! moved or deleted, and throughout another session's `select 1` answers
//! within a second; the server and both executors are up at the end.
//! Every listener added later joins this suite.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_sql_tests::{users, SluiceServer};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// Logged-in connections the server allows in this suite.
const MAX_CONNECTIONS: usize = 12;

async fn connect_as(
    port: u16,
    user: &str,
    database: &str,
) -> Result<Client, tokio_postgres::Error> {
    let config = format!(
        "host=127.0.0.1 port={port} user={user} password={user}-pw dbname={database} \
         connect_timeout=30"
    );
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The SQLSTATE `result` failed with; panics when it succeeded.
fn code<T: std::fmt::Debug>(result: Result<T, tokio_postgres::Error>, what: &str) -> String {
    match result {
        Ok(rows) => panic!(
            "{what} succeeded: {}",
            format!("{rows:?}").chars().take(300).collect::<String>()
        ),
        Err(e) => e
            .code()
            .map(|code| code.code().to_string())
            .unwrap_or_else(|| panic!("{what} failed without a SQLSTATE: {e}")),
    }
}

/// Runs `sql` over the simple protocol and expects `expected`.
async fn refused(client: &Client, sql: &str, expected: &SqlState) {
    let shown: String = sql.chars().take(120).collect();
    let got = code(client.simple_query(sql).await, &shown);
    assert_eq!(got, expected.code(), "{shown}");
}

/// Runs `sql` over the extended protocol and expects `expected`.
async fn refused_extended(client: &Client, sql: &str, expected: &SqlState) {
    let shown: String = sql.chars().take(120).collect();
    let got = code(client.query(sql, &[]).await, &shown);
    assert_eq!(got, expected.code(), "{shown} (extended)");
}

/// A session that runs `select 1` every 50 ms and keeps the slowest answer
/// (in milliseconds) until told to stop.
struct Watch {
    slowest: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    async fn start(port: u16) -> Self {
        let client = connect_as(port, "rita", "sluice").await.unwrap();
        let slowest = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (slowest, stop) = (slowest.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    client.simple_query("select 1").await.expect("select 1");
                    let took = started.elapsed().as_millis() as u64;
                    slowest.fetch_max(took, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Self {
            slowest,
            stop,
            task,
        }
    }

    /// The slowest `select 1`, once the watch has stopped.
    async fn finish(self) -> Duration {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the watching session kept working");
        Duration::from_millis(self.slowest.load(Ordering::SeqCst))
    }
}

#[test]
fn attacks_are_refused_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    users::add_users(Path::new(BINARY), &config);
    let allowed = dir.path().join("allowed");
    let outside = dir.path().join("outside");
    let data = dir.path().join("data");
    std::fs::create_dir_all(allowed.join("d")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.csv"), "secret\nroot:x:0:0\n").unwrap();
    std::fs::write(allowed.join("d/ok.csv"), "a\n1\n").unwrap();
    let server = SluiceServer::start_in(
        Path::new(BINARY),
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--allow-location",
            allowed.to_str().unwrap(),
            "--max-connections",
            &MAX_CONNECTIONS.to_string(),
        ],
    )
    .expect("starts");
    let port = server.port();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let watch = Watch::start(port).await;
        let writer = connect_as(port, "wes", "sluice").await.unwrap();
        let reader = connect_as(port, "rita", "sluice").await.unwrap();
        let (d, o, a) = (data.display(), outside.display(), allowed.display());
        // The queries so far are in the history the attacks go after.
        reader
            .simple_query("select 'a secret query'")
            .await
            .unwrap();

        // 1. The server's own files: journal, histories, catalog, work dirs.
        for sql in [
            format!(
                "COPY (SELECT 'file://{o}/' AS target, 'file://{o}/' AS staging, \
                 false AS publishing) TO '{d}/copies/aaaa.json' (FORMAT json)"
            ),
            format!("CREATE EXTERNAL TABLE h STORED AS JSON LOCATION '{d}/queries.jsonl'"),
            format!("CREATE EXTERNAL TABLE h STORED AS JSON LOCATION 'file://{d}/job_runs.jsonl'"),
            format!("CREATE EXTERNAL TABLE h STORED AS JSON LOCATION '{d}/catalog/'"),
            format!("CREATE EXTERNAL TABLE h STORED AS CSV LOCATION '{d}/work/'"),
            format!("CREATE EXTERNAL TABLE h STORED AS JSON LOCATION '{d}/'"),
            format!("CREATE EXTERNAL TABLE h STORED AS JSON LOCATION '{d}/*.jsonl'"),
            format!("CREATE EXTERNAL TABLE h STORED AS JSON LOCATION 'FILE://{d}/queries.jsonl'"),
            format!("COPY (SELECT 1 AS a) TO '{d}/queries.jsonl' (FORMAT json)"),
            format!("COPY (SELECT 1 AS a) TO '{d}/catalog/x.json' (FORMAT json)"),
        ] {
            refused(&writer, &sql, &SqlState::INSUFFICIENT_PRIVILEGE).await;
        }
        // 5. Other spellings of file URLs, outside the allowed roots.
        for target in [
            format!("FILE://{o}/x.csv"),
            format!("File:{o}/x.csv"),
            format!("file:{o}/x.csv"),
            format!("{a}/../outside/x.csv"),
        ] {
            let sql = format!("COPY (SELECT 1 AS a) TO '{target}'");
            refused(&writer, &sql, &SqlState::INSUFFICIENT_PRIVILEGE).await;
        }
        // 6. A symlinked file inside an allowed directory.
        std::os::unix::fs::symlink(outside.join("secret.csv"), allowed.join("d/p.csv")).unwrap();
        refused(
            &writer,
            &format!("CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '{a}/d/'"),
            &SqlState::INSUFFICIENT_PRIVILEGE,
        )
        .await;
        std::fs::remove_file(allowed.join("d/p.csv")).unwrap();
        writer
            .simple_query(&format!(
                "CREATE EXTERNAL TABLE fine STORED AS CSV LOCATION '{a}/d/' \
                 OPTIONS ('format.has_header' 'true')"
            ))
            .await
            .unwrap();
        std::os::unix::fs::symlink(data.join("queries.jsonl"), allowed.join("d/q.csv")).unwrap();
        refused(
            &reader,
            "SELECT * FROM fine",
            &SqlState::INSUFFICIENT_PRIVILEGE,
        )
        .await;
        std::fs::remove_file(allowed.join("d/q.csv")).unwrap();
        // 6b. COPY FROM a file the server reads: only inside the allowed
        // locations, never its own state (nor through a symlink to it), and
        // only for writers. Nothing of a refused COPY is loaded.
        writer
            .simple_query("CREATE TABLE loaded (line varchar)")
            .await
            .unwrap();
        std::fs::write(allowed.join("lines.csv"), "one\ntwo\nthree\n").unwrap();
        std::os::unix::fs::symlink(data.join("queries.jsonl"), allowed.join("q.csv")).unwrap();
        for source in [
            format!("{d}/queries.jsonl"),
            format!("file://{d}/queries.jsonl"),
            format!("{d}/copies/../queries.jsonl"),
            format!("{o}/secret.csv"),
            format!("{a}/../outside/secret.csv"),
            format!("{a}/q.csv"),
        ] {
            let sql = format!("COPY loaded FROM '{source}' (FORMAT csv)");
            refused(&writer, &sql, &SqlState::INSUFFICIENT_PRIVILEGE).await;
        }
        let load = format!("COPY loaded FROM '{a}/lines.csv' (FORMAT csv)");
        refused(&reader, &load, &SqlState::INSUFFICIENT_PRIVILEGE).await;
        let rows = writer.simple_query(&load).await.unwrap();
        assert!(
            matches!(
                rows.last(),
                Some(tokio_postgres::SimpleQueryMessage::CommandComplete(3))
            ),
            "{rows:?}"
        );
        let count = writer
            .query_one("SELECT count(*) FROM loaded", &[])
            .await
            .unwrap();
        assert_eq!(count.get::<_, i64>(0), 3);
        std::fs::remove_file(allowed.join("q.csv")).unwrap();
        // 7. A table whose plan a connection keeps (a prepared query, a
        // text sent again) over a file that becomes a symlink out of the
        // allowed directory, with the same name, size and modification time
        // (what a kept plan compares): its next run is refused, and it runs
        // again once the file is back.
        let secret = outside.join("secret.csv");
        let copy = allowed.join("d/q.csv");
        let same_version = || {
            std::fs::copy(&secret, &copy).unwrap();
            let modified = std::fs::metadata(&secret).unwrap().modified().unwrap();
            let file = std::fs::File::options().write(true).open(&copy).unwrap();
            file.set_modified(modified).unwrap();
        };
        same_version();
        // Small queries run in the frontend, where plans are kept.
        writer
            .simple_query("SET sluice.frontend_max_bytes = 1048576")
            .await
            .unwrap();
        let count = "SELECT count(*) AS n FROM fine";
        let prepared = writer.prepare(count).await.unwrap();
        for _ in 0..3 {
            writer.query(&prepared, &[]).await.unwrap();
            writer.simple_query(count).await.unwrap();
        }
        std::fs::remove_file(&copy).unwrap();
        std::os::unix::fs::symlink(&secret, &copy).unwrap();
        let got = code(writer.query(&prepared, &[]).await, count);
        assert_eq!(
            got,
            SqlState::INSUFFICIENT_PRIVILEGE.code(),
            "{count} (prepared)"
        );
        refused(&writer, count, &SqlState::INSUFFICIENT_PRIVILEGE).await;
        std::fs::remove_file(&copy).unwrap();
        same_version();
        writer.query(&prepared, &[]).await.unwrap();
        std::fs::remove_file(&copy).unwrap();
        writer
            .simple_query("RESET sluice.frontend_max_bytes")
            .await
            .unwrap();

        // 2. Statements too deep to plan.
        let sum = |terms: usize| format!("select 1{}", "+1".repeat(terms));
        let union = |ways: usize| vec!["select 1"; ways].join(" union all ");
        for sql in [
            sum(2000),
            sum(200_000),
            union(5000),
            union(2000),
            format!("select {}1{}", "abs(".repeat(3000), ")".repeat(3000)),
            format!("select 1 where {}", vec!["1 = 1"; 5000].join(" or ")),
        ] {
            refused(&reader, &sql, &SqlState::STATEMENT_TOO_COMPLEX).await;
            refused_extended(&reader, &sql, &SqlState::STATEMENT_TOO_COMPLEX).await;
        }

        // statement_timeout while a statement plans (a long UNION chain
        // optimizes without yielding): a quarter of the way in, it ends it.
        // The chain timed first is another text: a connection keeps the
        // plans of the texts it ran.
        let planned = Instant::now();
        reader
            .simple_query(&union(900).replacen("select 1", "select 2", 1))
            .await
            .unwrap();
        let full = planned.elapsed();
        let timeout = (full / 4).max(Duration::from_millis(20));
        reader
            .simple_query(&format!(
                "SET statement_timeout = '{}ms'",
                timeout.as_millis()
            ))
            .await
            .unwrap();
        let started = Instant::now();
        refused(&reader, &union(900), &SqlState::QUERY_CANCELED).await;
        let took = started.elapsed();
        reader
            .simple_query("RESET statement_timeout")
            .await
            .unwrap();
        assert!(
            took < full,
            "the timeout ({timeout:?}) ended the statement after {took:?}, when planning and \
             running all of it took {full:?}"
        );

        // 3. Values too large to build.
        let alternation = (0..100_000)
            .map(|i| format!("a{i}"))
            .collect::<Vec<_>>()
            .join("|");
        for sql in [
            "select length(repeat('x', 1000000000))".to_string(),
            "select repeat('x', 2147483647)".to_string(),
            "select lpad('x', 2147483647)".to_string(),
            "select rpad('x', 1000000000, 'yz')".to_string(),
            "select array_repeat('x', 2147483647)".to_string(),
            "select range(0, 10000000000)".to_string(),
            "select length(replace(repeat('x', 1000000), 'x', repeat('y', 1000)))".to_string(),
            format!("select regexp_like('a1', '{alternation}')"),
            // One value under the cap, aggregated past Arrow's 2 GiB.
            "select length(string_agg(repeat('x', 1000000), ',')) \
             from generate_series(1, 100000)"
                .to_string(),
        ] {
            refused(&reader, &sql, &SqlState::PROGRAM_LIMIT_EXCEEDED).await;
        }

        // 4. set_config() under the rules of SET; storage settings are the
        // server's alone.
        for (client, name, expected) in [
            (
                &reader,
                "storage.s3.aws_endpoint",
                SqlState::FEATURE_NOT_SUPPORTED,
            ),
            (
                &writer,
                "storage.s3.aws_endpoint",
                SqlState::FEATURE_NOT_SUPPORTED,
            ),
            (
                &reader,
                "datafusion.execution.batch_size",
                SqlState::INSUFFICIENT_PRIVILEGE,
            ),
            (
                &reader,
                "sluice.single_stage_max_bytes",
                SqlState::INSUFFICIENT_PRIVILEGE,
            ),
            (
                &reader,
                "datafusion.execution.target_partitions",
                SqlState::INSUFFICIENT_PRIVILEGE,
            ),
        ] {
            let sql = format!("select set_config('{name}', 'http://127.0.0.1:9', false)");
            refused(client, &sql, &expected).await;
        }
        for sql in [
            "SET \"storage.s3.aws_endpoint\" = 'http://127.0.0.1:9'",
            "SET storage.\"s3\".\"aws_endpoint\" = 'http://127.0.0.1:9'",
            "RESET \"storage.s3.aws_endpoint\"",
        ] {
            refused(&writer, sql, &SqlState::FEATURE_NOT_SUPPORTED).await;
        }
        let shown = reader
            .query_one("select set_config('search_path', 'public', false)", &[])
            .await
            .unwrap();
        assert_eq!(shown.get::<_, String>(0), "public");

        // 8. Prepared statements, capped per connection.
        let mut prepared = Vec::new();
        let refusal = loop {
            match reader.prepare("select 1").await {
                Ok(statement) => prepared.push(statement),
                Err(e) => break e,
            }
            assert!(prepared.len() <= 1000, "no cap on prepared statements");
        };
        assert_eq!(refusal.code(), Some(&SqlState::PROGRAM_LIMIT_EXCEEDED));
        // 9. What a pooled connection's reset sends closes them all.
        reader.simple_query("DEALLOCATE ALL").await.unwrap();
        reader.prepare("select 1").await.expect("room again");
        drop(prepared);
        // The same over SQL: PREPARE, and cursors.
        for (make, closed) in [
            ("PREPARE p{} AS SELECT 1", "DEALLOCATE ALL"),
            ("DECLARE c{} CURSOR FOR SELECT 1", "CLOSE c7"),
        ] {
            let mut refusal = None;
            for i in 0..=1000 {
                let sql = make.replace("{}", &i.to_string());
                if let Err(e) = reader.simple_query(&sql).await {
                    refusal = Some(e);
                    break;
                }
            }
            let refusal = refusal.unwrap_or_else(|| panic!("no cap on {make}"));
            assert_eq!(refusal.code(), Some(&SqlState::PROGRAM_LIMIT_EXCEEDED));
            reader.simple_query(closed).await.unwrap();
            let sql = make.replace("{}", "_again");
            reader.simple_query(&sql).await.expect("room again");
        }
        // 9. current_user is the login.
        let who = reader.query_one("select current_user", &[]).await.unwrap();
        assert_eq!(who.get::<_, String>(0), "rita");

        // 7. Sockets that never log in lock nobody out, and are closed after
        // the authentication timeout; admins keep reserved slots.
        let idle: Vec<_> =
            connected((0..150).map(|_| tokio::net::TcpStream::connect(("127.0.0.1", port)))).await;
        let mut logged_in = Vec::new();
        let full = loop {
            match connect_as(port, "rita", "sluice").await {
                Ok(client) => logged_in.push(client),
                Err(e) => break e,
            }
            assert!(logged_in.len() <= MAX_CONNECTIONS, "no connection limit");
        };
        assert_eq!(full.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{full}");
        let admin = connect_as(port, "ada", "sluice")
            .await
            .expect("an admin slot");
        admin.simple_query("select 1").await.unwrap();
        drop((admin, logged_in));
        // 9. The database is named only to clients that logged in.
        let wrong = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=rita password=nope dbname=elsewhere"),
            NoTls,
        )
        .await;
        assert_eq!(code(wrong.map(|_| ()), "a wrong password"), "28P01");
        let elsewhere = connect_as(port, "rita", "elsewhere").await;
        assert_eq!(code(elsewhere.map(|_| ()), "another database"), "3D000");
        tokio::time::sleep(Duration::from_secs(11)).await;
        for mut socket in idle {
            use tokio::io::AsyncReadExt;
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut byte)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "an idle socket was kept open: {read:?}"
            );
        }

        // Nothing outside the roots changed; the cluster is whole.
        let mut left: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["secret.csv"]);
        let slowest = watch.finish().await;
        eprintln!("the slowest select 1 of another session during the attacks: {slowest:?}");
        assert!(
            slowest < Duration::from_secs(1),
            "select 1 took {slowest:?}"
        );
        let fresh = connect_as(port, "ada", "sluice").await.unwrap();
        let executors = fresh
            .query_one("select count(*) from sluice.executors", &[])
            .await
            .unwrap();
        assert_eq!(executors.get::<_, i64>(0), 2);
    });
}

/// Awaits every future, in order, and keeps the successful results.
async fn connected<T, E>(
    futures: impl Iterator<Item = impl std::future::Future<Output = Result<T, E>>>,
) -> Vec<T> {
    let mut done = Vec::new();
    for future in futures {
        if let Ok(value) = future.await {
            done.push(value);
        }
    }
    done
}
