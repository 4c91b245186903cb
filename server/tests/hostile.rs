//! Hostile input, bounded and reproducible (a seeded generator, a fixed
//! number of cases; `SLUICE_FUZZ_CASES` and `SLUICE_FUZZ_SEED` change them):
//! malformed startup packets, wrong and huge declared lengths, truncated
//! frames, random message bytes, and a corpus of generated and mutated SQL.
//! The server must answer each with an error or by closing that one
//! connection: never crash, hang, or disturb a session that is open beside.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use sluice_sql_tests::{connect, SluiceServer};
use tokio_postgres::{Client, SimpleQueryMessage};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// xorshift64*: small, seeded, good enough to pick cases.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A startup packet for user `sluice` on database `sluice`.
fn startup_packet() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for part in ["user", "sluice", "database", "sluice"] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

/// A typed message: its type byte, a declared length and a body.
fn message(kind: u8, declared: u32, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![kind];
    packet.extend_from_slice(&declared.to_be_bytes());
    packet.extend_from_slice(body);
    packet
}

/// The bytes of one hostile connection.
fn hostile_bytes(random: &mut Random) -> Vec<u8> {
    let startup = startup_packet();
    let body_len = random.below(64);
    let body = random.bytes(body_len);
    let kind = *random.pick(b"QPBEDSHCXpdcfF\0\xff");
    let right = (body.len() + 4) as u32;
    let (longer, shorter) = (random.below(100) as u32, random.below(4) as u32);
    let lengths = [
        right,
        right + 1 + longer,
        right.saturating_sub(1 + shorter),
        0,
        3,
        0x7fff_ffff,
        u32::MAX,
        1 << 30,
    ];
    let declared = *random.pick(&lengths);
    match random.below(9) {
        // Noise instead of a startup packet.
        0 => {
            let n = 1 + random.below(300);
            random.bytes(n)
        }
        // A startup packet whose length lies.
        1 => {
            let mut packet = startup.clone();
            packet[..4].copy_from_slice(&declared.to_be_bytes());
            packet
        }
        // A startup packet cut short.
        2 => startup[..random.below(startup.len())].to_vec(),
        // SSLRequest or GSSENCRequest, then noise.
        3 => {
            let code: u32 = *random.pick(&[80_877_103, 80_877_104]);
            let mut packet = 8u32.to_be_bytes().to_vec();
            packet.extend_from_slice(&code.to_be_bytes());
            let n = random.below(64);
            packet.extend(random.bytes(n));
            packet
        }
        // A cancel request for a made-up backend.
        4 => {
            let mut packet = 16u32.to_be_bytes().to_vec();
            packet.extend_from_slice(&80_877_102u32.to_be_bytes());
            packet.extend(random.bytes(8));
            packet
        }
        // A good startup, then a message whose length lies.
        5 | 6 => {
            let mut packet = startup;
            packet.extend(message(kind, declared, &body));
            packet
        }
        // A good startup, then a frame cut short.
        7 => {
            let mut packet = startup;
            let frame = message(kind, right, &body);
            packet.extend_from_slice(&frame[..random.below(frame.len())]);
            packet
        }
        // A good startup, then a protocol version from the future or past.
        _ => {
            let mut packet = startup;
            let version: u32 = *random.pick(&[0, 1 << 16, 4 << 16, 196_609, u32::MAX]);
            packet[4..8].copy_from_slice(&version.to_be_bytes());
            packet
        }
    }
}

/// Sends `bytes` on a new connection and reads what comes back until the
/// server closes it or goes quiet.
fn send_hostile(port: u16, bytes: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the server accepts");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while let Ok(n) = stream.read(&mut buf) {
        read += n;
        if n == 0 || read > 1 << 20 {
            break;
        }
    }
}

/// A session that made table `numbers` (1 to 100).
async fn numbers_session(port: u16) -> Client {
    let client = connect(port).await.expect("a well-behaved client connects");
    client
        .batch_execute("CREATE TABLE numbers AS SELECT i AS n FROM generate_series(1, 100) AS t(i)")
        .await
        .unwrap();
    client
}

/// The open session beside the fuzzing still answers, with the same rows.
async fn bystander_answers(client: &Client) {
    let row = client
        .query_one("SELECT count(*), sum(n) FROM numbers", &[])
        .await
        .expect("the bystander's query runs");
    assert_eq!(row.get::<_, i64>(0), 100);
}

#[test]
fn malformed_protocol_input_never_disturbs_the_server() {
    let cases = env_number("SLUICE_FUZZ_CASES", 1500);
    let seed = env_number("SLUICE_FUZZ_SEED", 0x5eed_cafe);
    let server = SluiceServer::start_with_args(Path::new(BINARY), &["--max-connections", "2000"])
        .expect("starts");
    let port = server.port();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bystander = runtime.block_on(numbers_session(port));
    // Four connections at a time, each thread with its own stream of cases.
    const THREADS: u64 = 4;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            scope.spawn(move || {
                let mut random = Random((seed + thread) | 1);
                for _ in 0..cases / THREADS {
                    let bytes = hostile_bytes(&mut random);
                    send_hostile(port, &bytes);
                }
            });
        }
        // Meanwhile the open session keeps answering.
        for _ in 0..10 {
            runtime.block_on(bystander_answers(&bystander));
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    runtime.block_on(async {
        bystander_answers(&bystander).await;
        bystander_answers(&connect(port).await.expect("a well-behaved client connects")).await;
    });
    server
        .stop()
        .expect("the server is alive and stops cleanly");
}

/// Statements to start from: valid ones over every corner of the dialect.
const SEEDS: &[&str] = &[
    "SELECT n, n * 2 AS twice FROM numbers WHERE n > 10 ORDER BY n DESC LIMIT 5",
    "SELECT count(*), sum(n), avg(n), min(n), max(n) FROM numbers",
    "SELECT n % 7 AS k, count(*) FROM numbers GROUP BY n % 7 HAVING count(*) > 1",
    "WITH a AS (SELECT n FROM numbers) SELECT * FROM a JOIN numbers b ON a.n = b.n",
    "SELECT CAST('12' AS INT) + 1, '2024-01-01'::date, 1.5::double precision",
    "SELECT upper('abc'), substr('hello', 2, 3), length('xyz'), 'a' || 'b'",
    "SELECT CASE WHEN n > 50 THEN 'big' ELSE 'small' END FROM numbers",
    "SELECT * FROM numbers WHERE n IN (SELECT n FROM numbers WHERE n < 5)",
    "SELECT row_number() OVER (ORDER BY n) FROM numbers",
    "SELECT 1 / 0",
    "SELECT * FROM pg_catalog.pg_class LIMIT 1",
    "SHOW search_path",
    "SET search_path = public",
    "EXPLAIN SELECT * FROM numbers",
    "CREATE VIEW v AS SELECT n FROM numbers",
    "DROP VIEW IF EXISTS v",
    "BEGIN",
    "COMMIT",
    "SELECT NULL IS NULL, NOT TRUE, 3 BETWEEN 1 AND 5",
    "SELECT array[1, 2, 3], to_timestamp(0), now() > '2000-01-01'",
];

/// Tokens mutations splice in.
const NOISE: &[&str] = &[
    "(",
    ")",
    ",",
    "'",
    "\"",
    ";",
    "--",
    "/*",
    "*/",
    "SELECT",
    "FROM",
    "WHERE",
    "JOIN",
    "NULL",
    "1e308",
    "-9223372036854775808",
    "99999999999999999999999",
    "'\u{1}'",
    "E'\\x'",
    "$1",
    "::",
    "[",
    "]",
    "*",
    "%",
    "||",
    "ORDER BY",
    "GROUP BY",
    "UNION ALL",
    "nosuchtable",
    "nosuchfunc()",
    "\u{feff}",
    "ü",
    "\\",
    "=",
    "<>",
    "LIMIT -1",
    "OFFSET 1e9",
    "CAST(",
    "AS",
    "INTERVAL '1'",
    "repeat('x', 100000)",
];

fn mutate(random: &mut Random, seed: &str) -> String {
    let mut tokens: Vec<String> = seed.split(' ').map(str::to_string).collect();
    for _ in 0..1 + random.below(4) {
        let at = random.below(tokens.len() + 1);
        match random.below(6) {
            0 if !tokens.is_empty() => {
                tokens.remove(at.min(tokens.len() - 1));
            }
            1 => tokens.insert(at, random.pick(NOISE).to_string()),
            2 if !tokens.is_empty() => {
                let copy = tokens[at.min(tokens.len() - 1)].clone();
                tokens.insert(at, copy);
            }
            3 => {
                let other = *random.pick(SEEDS);
                tokens.insert(at, other.to_string());
            }
            4 if !tokens.is_empty() => {
                let i = at.min(tokens.len() - 1);
                let word = &tokens[i];
                let cut = random.below(word.len() + 1);
                let cut = (0..=cut)
                    .rev()
                    .find(|&c| word.is_char_boundary(c))
                    .unwrap_or(0);
                tokens[i] = word[..cut].to_string();
            }
            _ => tokens.insert(at, (random.next() as i64).to_string()),
        }
    }
    tokens.join(" ")
}

#[test]
fn a_thousand_mutated_statements_each_get_rows_or_an_sqlstate() {
    let count = env_number("SLUICE_SQL_CORPUS", 1000) as usize;
    let seed = env_number("SLUICE_FUZZ_SEED", 0x5eed_cafe);
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let port = server.port();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = numbers_session(port).await;
        let mut random = Random(seed | 1);
        let (mut answered, mut refused, mut internal) = (0, 0, Vec::new());
        for i in 0..count {
            // The seeds as they are first, then mutants of them.
            let sql = match SEEDS.get(i) {
                Some(seed) => seed.to_string(),
                None => {
                    let seed = *random.pick(SEEDS);
                    mutate(&mut random, seed)
                }
            };
            // Half over the simple protocol, half prepared (extended).
            let outcome = if i % 2 == 0 {
                client.simple_query(&sql).await.map(|messages| {
                    messages
                        .iter()
                        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
                        .count()
                })
            } else {
                match client.prepare(&sql).await {
                    Ok(statement) if statement.params().is_empty() => {
                        client.query(&statement, &[]).await.map(|rows| rows.len())
                    }
                    Ok(_) => Ok(0),
                    Err(e) => Err(e),
                }
            };
            match outcome {
                Ok(_) => answered += 1,
                Err(e) => {
                    let code = e.code().unwrap_or_else(|| {
                        panic!("statement {i} {sql:?} ended without an SQLSTATE: {e:?}")
                    });
                    if code.code() == "XX000" {
                        internal.push(format!("{sql} -> {e}"));
                    }
                    refused += 1;
                }
            }
            // Leave no transaction open for the next statement.
            let _ = client.simple_query("ROLLBACK").await;
            assert!(
                !client.is_closed(),
                "statement {i} {sql:?} dropped the connection"
            );
        }
        println!(
            "{count} statements: {answered} answered, {refused} refused with a SQLSTATE \
             ({} of them XX000)",
            internal.len()
        );
        for line in internal.iter().take(20) {
            println!("XX000: {line}");
        }
        let row = client
            .query_one("SELECT count(*) FROM numbers", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 100);
    });
    server
        .stop()
        .expect("the server is alive and stops cleanly");
}
