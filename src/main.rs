//! The `vzpkg` binary: parses the command line, sets up logging, runs the subcommand, and
//! prints any error as a chain of causes with a non-zero exit.

mod admin;
mod audit;
mod backend;
mod cli;
mod commands;
mod config;
mod container;
mod untrusted;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the proxy writes through a logging thread: wrapper commands fork before any thread
    // exists. Held to the end so that the last lines are flushed.
    let _flush_on_exit = init_logging(cli.global.log_format, matches!(cli.command, Command::Proxy(_)));
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let broken_pipe = e
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
            if !broken_pipe {
                eprintln!("vzpkg: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; the exit status is the package manager's for wrapper commands.
fn run(cli: Cli) -> anyhow::Result<i32> {
    let mut file = config::FileConfig::load(cli.global.config.as_deref())?;
    if let Some(dir) = cli.global.cache_dir {
        file.cache_dir = dir;
    }
    if let Some(dir) = cli.global.state_dir {
        file.state_dir = dir;
    }
    use backend::Operation;
    use commands::wrapper::{self, Request};
    match cli.command {
        Command::Proxy(args) => commands::proxy::run(args, file).map(|()| 0),
        Command::Install { ct, packages, args } => {
            wrapper::run(&ct, Request::Package(Operation::Install(packages)), &args, &file)
        }
        Command::Remove { ct, packages, args } => {
            wrapper::run(&ct, Request::Package(Operation::Remove(packages)), &args, &file)
        }
        Command::Upgrade { ct, packages, args } => {
            wrapper::run(&ct, Request::Package(Operation::Upgrade(packages)), &args, &file)
        }
        Command::Update { ct, args } => wrapper::run(&ct, Request::Package(Operation::Update), &args, &file),
        Command::List { ct, json, backend, max_time } => {
            // The proxy is never reached by a list; the sandbox a query runs in still wants one.
            let proxy = "http://127.0.0.1:3142".to_string();
            wrapper::run(
                &ct,
                Request::List,
                &cli::WrapperArgs { json, backend, proxy, max_time, ..Default::default() },
                &file,
            )
        }
        Command::Exec { ct, command, args } => wrapper::run(&ct, Request::Exec(command), &args, &file),
        Command::Audit(args) => commands::audit::run(args, &file),
        Command::Prune(args) => commands::prune::run(args, &file),
        Command::Status { json } => commands::status::run(json, &file),
    }
}

/// Logs to stderr; with `background`, through a thread of its own, so that a request's log
/// line never waits on a slow terminal or pipe (lines are dropped, not waited for, if that
/// thread falls far behind).
fn init_logging(format: LogFormat, background: bool) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = if background {
        let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
        (tracing_subscriber::fmt::writer::BoxMakeWriter::new(writer), Some(guard))
    } else {
        (tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr), None)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}
