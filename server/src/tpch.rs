//! `sluice tpch gen|register` and `sluice bench tpch`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use sluice_benches::tpch::bench::{self, LocalDataFusion, QueryResult};
use sluice_benches::tpch::{
    generate, shipped_dir, Compression, GenerateOptions, ReferenceAnswer, QUERY_COUNT,
};
use sluice_engine::storage::runtime_env_with;
use sluice_engine::{StorageOptions, StorageService};
use sluice_jobs::cli_progress::Progress;
use tokio::io::AsyncWriteExt;
use tokio_postgres::Client;
use url::Url;

use crate::client::TargetServer;
use crate::config::storage_options;
use crate::error::{Result, ServerError};
use sluice_jobs::connection::{connect, ServerAddress};

/// Rows per Parquet row group `sluice tpch gen` writes by default.
const DEFAULT_ROW_GROUP_ROWS: usize = 262_144;

/// `sluice tpch …`
#[derive(Debug, clap::Subcommand)]
pub enum TpchCommand {
    /// Generate the eight TPC-H tables as Parquet, one directory per table.
    Gen(GenArgs),
    /// Create the eight tables over generated data in a running server.
    Register(RegisterArgs),
}

/// `sluice bench …`
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Run the 22 TPC-H queries over the Postgres protocol and check every answer.
    Tpch(BenchArgs),
    /// Time how fast a server streams one large result, text and binary.
    Stream(crate::bench_stream::StreamArgs),
}

/// Flags of `sluice tpch gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Scale factor (1 ≈ 1 GB of raw data; fractions such as 0.01 work).
    #[arg(long = "sf", value_name = "SF")]
    pub scale_factor: f64,
    /// Output directory or URL (`file://`, `s3://bucket/prefix`, `gs://…`,
    /// `az://…`); receives `<table>/part-N.parquet`.
    #[arg(long, value_name = "URL")]
    pub out: String,
    /// Files per table [default: number of cores]; nation and region get one.
    #[arg(long, value_name = "N")]
    pub files_per_table: Option<usize>,
    /// Rows per Parquet row group. A reader holds a whole row group's column
    /// chunks while it decodes them: 256 Ki rows keeps that near 9 MB per
    /// lineitem scan while still pruning by row-group statistics.
    #[arg(long, value_name = "R", default_value_t = DEFAULT_ROW_GROUP_ROWS)]
    pub row_group_rows: usize,
    /// Parquet compression: zstd, snappy or none.
    #[arg(long, default_value = "snappy")]
    pub compression: Compression,
    /// Config file whose `[storage.*]` sections reach object storage (the
    /// `AWS_*`, `GOOGLE_*` and `AZURE_*` environment variables work too).
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Flags of `sluice tpch register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// Directory (or URL) the data was generated into.
    #[arg(long, value_name = "URL")]
    pub data: String,
    /// The server to connect to.
    #[command(flatten)]
    pub server: ServerAddress,
}

/// Flags of `sluice bench tpch`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Directory (or URL) the data was generated into [default with `--sf`:
    /// `tpch-data/sf<SF>`].
    #[arg(long, value_name = "URL", required_unless_present = "scale_factor")]
    pub data: Option<String>,
    /// Scale factor of the data; a local `--data` directory without the
    /// tables is generated first (as `sluice tpch gen` does, a file per core).
    #[arg(long = "sf", value_name = "SF")]
    pub scale_factor: Option<f64>,
    /// The server to connect to.
    #[command(flatten)]
    pub server: ServerAddress,
    /// Start an embedded server (2 executors) instead of connecting to one.
    #[arg(long, conflicts_with_all = ["host", "port"])]
    pub embedded: bool,
    /// Queries to run, e.g. `1,3,18` [default: all 22].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub queries: Vec<usize>,
    /// Runs of each query.
    #[arg(long, default_value_t = 1)]
    pub iterations: usize,
    /// Directory of reference answers (`qNN.csv`) [default: the
    /// repository's for the data's scale factor, `benches/tpch/answers/sf<SF>`
    /// under the current directory, when it is 0.01, 0.1 or 1].
    #[arg(long, value_name = "DIR")]
    pub answers: Option<PathBuf>,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also run each query on single-node, in-process DataFusion over the same
    /// files and print the ratio.
    #[arg(long)]
    pub compare_local: bool,
    /// A session setting for the benchmark connection, `KEY=VALUE`
    /// (e.g. `datafusion.optimizer.prefer_hash_join=true`); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// Config file for `--embedded` (its `[storage.*]` sections also serve
    /// `--compare-local`).
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where TPC-H data lives.
#[derive(Debug, Clone)]
enum DataLocation {
    /// A local directory (absolute).
    Local(PathBuf),
    /// An object storage URL such as `s3://bucket/tpch/sf1`.
    Remote(Url),
}

impl DataLocation {
    /// A path, `file://` URL or object storage URL.
    fn parse(text: &str) -> Result<Self> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Self::Local(absolute_path(PathBuf::from(text))?));
        };
        if scheme == "file" {
            return Ok(Self::Local(absolute_path(PathBuf::from(rest))?));
        }
        if StorageService::for_scheme(scheme).is_none() {
            return Err(ServerError::Config(format!(
                "{scheme}:// is not a supported location (use a directory, file://, s3://, \
                 gs:// or az://)"
            )));
        }
        let url = Url::parse(text)
            .map_err(|e| ServerError::Config(format!("{text:?} is not a valid URL: {e}")))?;
        Ok(Self::Remote(url))
    }

    /// The location as `CREATE EXTERNAL TABLE … LOCATION` takes it.
    fn sql(&self) -> String {
        match self {
            Self::Local(path) => path.display().to_string(),
            Self::Remote(url) => url.as_str().trim_end_matches('/').to_string(),
        }
    }
}

fn absolute_path(path: PathBuf) -> Result<PathBuf> {
    Ok(if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map_err(|e| ServerError::io("reading the current directory", e))?
            .join(path)
    })
}

/// `sluice tpch gen`.
pub async fn gen(args: GenArgs) -> Result<()> {
    let location = DataLocation::parse(&args.out)?;
    // Object storage output is written file by file to a local staging
    // directory and uploaded as each file is finished.
    let staging = tempfile::tempdir().map_err(|e| ServerError::io("creating a staging dir", e))?;
    let (out, upload) = match &location {
        DataLocation::Local(path) => (path.clone(), None),
        DataLocation::Remote(url) => {
            let storage = storage_options(args.config.as_deref())?;
            let store = storage
                .build_store(url)
                .map_err(|e| ServerError::Config(e.to_string()))?;
            (staging.path().to_path_buf(), Some((store, url.clone())))
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = GenerateOptions {
        scale_factor: args.scale_factor,
        out,
        files_per_table: args.files_per_table.unwrap_or(threads),
        row_group_rows: args.row_group_rows,
        compression: args.compression,
        threads,
    };
    let progress = Progress::rows(&format!("TPC-H SF {}", args.scale_factor));
    let runtime = tokio::runtime::Handle::current();
    let file_done = |local: &Path, name: &str| -> std::result::Result<(), String> {
        let Some((store, url)) = &upload else {
            return Ok(());
        };
        runtime.block_on(upload_file(store.clone(), local, url, name))?;
        std::fs::remove_file(local).map_err(|e| format!("removing {}: {e}", local.display()))
    };
    let summary = tokio::task::block_in_place(|| {
        generate(&options, &|rows| progress.set_rows(rows), &file_done)
    })
    .map_err(ServerError::Config)?;
    progress.finish();
    println!(
        "generated TPC-H SF {} in {:.1} s: {} rows, {} files, {:.1} MB in {}",
        args.scale_factor,
        summary.elapsed.as_secs_f64(),
        summary.rows,
        summary.files,
        summary.bytes as f64 / 1_000_000.0,
        location.sql()
    );
    Ok(())
}

/// Copies the local file `local` to `name` under `url`.
async fn upload_file(
    store: Arc<dyn ObjectStore>,
    local: &Path,
    url: &Url,
    name: &str,
) -> std::result::Result<(), String> {
    let target = format!("{}/{name}", url.path().trim_matches('/'));
    let target = object_store::path::Path::parse(&target)
        .map_err(|e| format!("{url}/{name} is not a valid object path: {e}"))?;
    let failed = |e: &dyn std::fmt::Display| format!("uploading {name} to {url}: {e}");
    let mut file = tokio::fs::File::open(local).await.map_err(|e| failed(&e))?;
    let mut writer = object_store::buffered::BufWriter::new(store, target);
    tokio::io::copy(&mut file, &mut writer)
        .await
        .map_err(|e| failed(&e))?;
    writer.shutdown().await.map_err(|e| failed(&e))
}

/// `sluice tpch register`.
pub async fn register(args: RegisterArgs) -> Result<()> {
    let data = DataLocation::parse(&args.data)?.sql();
    let client = connect(&args.server).await?;
    bench::register(&client, &data)
        .await
        .map_err(ServerError::Config)?;
    println!("registered the 8 TPC-H tables over {data}");
    Ok(())
}

/// `sluice bench tpch`.
pub async fn bench(args: BenchArgs) -> Result<()> {
    let data = match (&args.data, args.scale_factor) {
        (Some(data), _) => data.clone(),
        (None, Some(scale_factor)) => format!("tpch-data/sf{scale_factor}"),
        (None, None) => {
            return Err(ServerError::Config("--data or --sf is required".into()));
        }
    };
    let location = DataLocation::parse(&data)?;
    if let (DataLocation::Local(path), Some(scale_factor)) = (&location, args.scale_factor) {
        if !path.join("lineitem").is_dir() {
            gen(GenArgs {
                scale_factor,
                out: path.display().to_string(),
                files_per_table: None,
                row_group_rows: DEFAULT_ROW_GROUP_ROWS,
                compression: Compression::default(),
                config: args.config.clone(),
            })
            .await?;
        }
    }
    let data = location.sql();
    let target = TargetServer::start(&args.server, args.embedded, args.config.clone()).await?;
    let outcome = run_bench(&target.address, &data, &args).await;
    target.stop().await;
    let results = outcome?;
    let failed = results.iter().filter(|r| !r.passed()).count();
    if failed > 0 {
        return Err(ServerError::Bench(format!(
            "{failed} of {} TPC-H queries failed or returned wrong answers",
            results.len()
        )));
    }
    Ok(())
}

async fn run_bench(
    address: &ServerAddress,
    data: &str,
    args: &BenchArgs,
) -> Result<Vec<QueryResult>> {
    let client = connect(address).await?;
    for setting in &args.settings {
        let (key, value) = setting.split_once('=').ok_or_else(|| {
            ServerError::Config(format!("--set takes KEY=VALUE, got '{setting}'"))
        })?;
        let statement = format!(
            "SET {} = '{}'",
            key.trim(),
            value.trim().replace('\'', "''")
        );
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| ServerError::Config(format!("--set {setting}: {e}")))?;
    }
    bench::register(&client, data)
        .await
        .map_err(ServerError::Config)?;
    let scale_factor = detect_scale_factor(&client).await?;
    let queries: Vec<usize> = if args.queries.is_empty() {
        (1..=QUERY_COUNT).collect()
    } else {
        args.queries.clone()
    };
    // The answers are files of the repository, not part of the binary.
    let answers_dir = args
        .answers
        .clone()
        .or_else(|| shipped_dir(Path::new("."), scale_factor));
    if answers_dir.is_none() {
        eprintln!(
            "no reference answers for SF {scale_factor} here (benches/tpch/answers/sf{scale_factor}; \
             give --answers DIR): answers are not checked"
        );
    }
    let answers = move |query: usize| {
        answers_dir
            .as_deref()
            .and_then(|dir| ReferenceAnswer::load(dir, query).ok())
    };
    eprintln!(
        "TPC-H SF {scale_factor} on {}:{}",
        address.host, address.port
    );
    let local = if args.compare_local {
        let storage: StorageOptions = storage_options(args.config.as_deref())?;
        let runtime = runtime_env_with(storage, None, None)
            .map_err(|e| ServerError::Config(format!("creating the local runtime: {e}")))?;
        let local = LocalDataFusion::new(data, runtime)
            .await
            .map_err(|e| ServerError::Config(format!("single-node DataFusion: {e}")))?;
        Some(local)
    } else {
        None
    };
    let progress = Progress::steps("TPC-H", queries.len() as u64);
    let on_result = |result: &QueryResult| {
        progress.println(&format!(
            "q{:02} {:>6} rows  {}",
            result.query,
            result.rows,
            result.status.lines().next().unwrap_or("")
        ));
        progress.inc();
    };
    let results = bench::run(
        &client,
        local.as_ref(),
        &queries,
        args.iterations,
        &answers,
        &on_result,
    )
    .await;
    print!("{}", bench::report(&results));
    if let Some(path) = &args.json {
        write_json(path, scale_factor, &results)?;
    }
    Ok(results)
}

/// The scale factor of the registered data: `supplier` has 10,000 rows per unit.
async fn detect_scale_factor(client: &Client) -> Result<f64> {
    let row = client
        .query_one("SELECT count(*) FROM supplier", &[])
        .await
        .map_err(|e| ServerError::Config(format!("counting suppliers: {e}")))?;
    let suppliers: i64 = row.get(0);
    Ok(suppliers as f64 / 10_000.0)
}

fn write_json(path: &Path, scale_factor: f64, results: &[QueryResult]) -> Result<()> {
    let document = serde_json::json!({
        "benchmark": "tpch",
        "scale_factor": scale_factor,
        "queries": results,
    });
    let text = serde_json::to_string_pretty(&document)
        .map_err(|e| ServerError::Config(format!("encoding JSON: {e}")))?;
    std::fs::write(path, text)
        .map_err(|e| ServerError::io(format!("writing {}", path.display()), e))
}
