//! `sluice`: a distributed SQL engine speaking the Postgres wire protocol.

use clap::{Parser, Subcommand};
use sluice_server::config::{ExecutorArgs, SchedulerArgs, ServeArgs};
use sluice_server::run_command::RunArgs;
use sluice_server::tpch::{self, BenchCommand, TpchCommand};
use sluice_server::users_file::UserCommand;
use tracing_subscriber::EnvFilter;

/// Log filter when RUST_LOG is unset: Sluice's own lines only. Ballista logs
/// a failed job at ERROR in two places (the query line already reports it with
/// its SQLSTATE), every shuffle spill at WARN, a WARN whenever releasing a
/// job's results races its own removal of the job's intermediate stages, and
/// a WARN for each task of a cancelled query (Sluice logs the cancel once).
const DEFAULT_LOG_FILTER: &str =
    "warn,sluice_server=info,sluice_scheduler=info,sluice_engine=info,\
ballista_scheduler::scheduler_server::query_stage_scheduler=off,\
ballista_scheduler::state::executor_manager=error,\
ballista_core::execution_plans::distributed_query=off,\
ballista_core::execution_plans::sort_shuffle::writer=error,\
ballista_executor::executor=error";

/// mimalloc gives freed memory back, where glibc's malloc let a busy server
/// grow (see `server/tests/soak.rs`). Built without transparent huge pages
/// (`no_thp`): with them every fresh 2 MiB region was zeroed whole when first
/// touched, and an executor spent 35-60% of its CPU in the kernel's
/// `clear_page` during TPC-H SF 10 q7 (`perf record`); without them that
/// query's executors used 26% less CPU and its first run took 4.6 s instead
/// of 7.3 s (2 executors pinned to a core each).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stack of the main runtime's threads (the embedded cluster's, a role's).
const MAIN_STACK_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Distributed SQL over Parquet, spoken over the Postgres wire protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Postgres frontend with an embedded cluster (scheduler +
    /// executors), or with `--scheduler` in front of a separate cluster.
    Serve(Box<ServeArgs>),
    /// Run a cluster scheduler (executors and frontends connect to it).
    Scheduler(SchedulerArgs),
    /// Run a cluster executor that registers with a scheduler.
    Executor(ExecutorArgs),
    /// TPC-H data: generate it, or register it in a running server.
    #[command(subcommand)]
    Tpch(TpchCommand),
    /// Run a SQL script's statements in order, stopping at the first error.
    Run(RunArgs),
    /// Benchmarks run over the Postgres protocol.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Users who may log in (kept in the config file).
    #[command(subcommand)]
    User(UserCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A server logs each query; the client commands only warnings (an embedded
    // benchmark server included).
    let default_filter = match cli.command {
        Command::Serve(_) | Command::Scheduler(_) | Command::Executor(_) => {
            DEFAULT_LOG_FILTER.to_string()
        }
        _ => DEFAULT_LOG_FILTER.replace("=info", "=warn"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A panic is confined to the connection or task it happens in (the
    // protocol decoder of pgwire 0.41 panics on some malformed frames): one
    // log line, with a backtrace only when RUST_BACKTRACE asks for one.
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::capture();
        match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => {
                tracing::error!("panic: {info}\n{backtrace}")
            }
            _ => tracing::error!("panic: {info}"),
        }
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // The scheduler plans and executors evaluate deep expressions
        // (nesting bounded by the frontend): room to recurse.
        .thread_stack_size(MAIN_STACK_BYTES)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => sluice_server::serve::run((*args).resolve()?).await,
            Command::Scheduler(args) => sluice_server::roles::scheduler(args.resolve()?).await,
            Command::Executor(args) => sluice_server::roles::executor(args.resolve()?).await,
            Command::Run(args) => sluice_server::run_command::run(args).await,
            Command::Tpch(TpchCommand::Gen(args)) => tpch::gen(args).await,
            Command::Tpch(TpchCommand::Register(args)) => tpch::register(args).await,
            Command::Bench(BenchCommand::Tpch(args)) => tpch::bench(args).await,
            Command::Bench(BenchCommand::Stream(args)) => {
                sluice_server::bench_stream::run(args).await
            }
            Command::User(command) => sluice_server::users_file::run(command),
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
