//! The `vzpkg` binary: parses the command line, sets up logging, runs the subcommand, and
//! prints any error as a chain of causes with a non-zero exit.

mod admin;
mod audit;
mod backend;
mod cli;
mod commands;
mod config;
mod container;
mod image;
mod template;
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
    if let Some(dir) = cli.global.cache_dir.clone() {
        file.cache_dir = dir;
    }
    if let Some(dir) = cli.global.state_dir.clone() {
        file.state_dir = dir;
    }
    // Containers `vzpkg create` made are found by name, after the config's.
    for (name, root) in commands::create::created(&file.state_dir) {
        file.containers.entry(name).or_insert(root);
    }
    use backend::Operation;
    use commands::wrapper::Request;
    let global = &cli.global;
    let templates = template::Templates::new(global.templates.as_deref());
    match cli.command {
        Command::Proxy(args) => commands::proxy::run(args, file).map(|()| 0),
        Command::Install { ct, packages, args } => {
            wrapper(global, &file, &ct, args, Request::Package(Operation::Install(packages)))
        }
        Command::Remove { ct, packages, args } => {
            wrapper(global, &file, &ct, args, Request::Package(Operation::Remove(packages)))
        }
        Command::Upgrade { ct, packages, args } => {
            wrapper(global, &file, &ct, args, Request::Package(Operation::Upgrade(packages)))
        }
        Command::Update { ct, args } => wrapper(global, &file, &ct, args, Request::Package(Operation::Update)),
        Command::List { ct, json, backend, max_time } => {
            // The proxy is never reached by a list; the sandbox a query runs in still wants one.
            let proxy = "http://127.0.0.1:3142".to_string();
            let args = cli::WrapperArgs { json, backend, proxy, max_time, ..Default::default() };
            wrapper(global, &file, &ct, args, Request::List)
        }
        Command::Exec { ct, command, args } => wrapper(global, &file, &ct, args, Request::Exec(command)),
        Command::Audit(args) => commands::audit::run(args, &file),
        Command::Prune(args) => commands::prune::run(args, &file),
        Command::Status { json } => commands::status::run(json, &file),
        Command::Containers { json } => commands::containers::run(json, &file),
        Command::Template { action: cli::TemplateAction::Show { name, json } } => {
            commands::create::show(&name, json, &templates)
        }
        Command::Cache { template, force, list, proxy } => {
            commands::create::cache(template.as_deref(), force, list, &proxy, &templates, &file)
        }
        Command::Flatten { ct, to } => commands::create::flatten(&ct, to.as_deref(), &file),
        Command::Create { ct, template, apps, root, layered, proxy } => {
            let args = commands::create::CreateArgs {
                ct: &ct,
                template: &template,
                apps: &apps,
                root: root.as_deref(),
                layered,
                proxy: &proxy,
                child_global: child_global(global, &file),
            };
            commands::create::create(args, &templates, &file)
        }
    }
}

/// A wrapper command on one container, or on each of several (a list, @GROUP, @all, or any of
/// the options that ask for a summary), each then in a vzpkg process of its own.
fn wrapper(
    global: &cli::Global,
    file: &config::FileConfig,
    ct: &str,
    mut args: cli::WrapperArgs,
    request: commands::wrapper::Request,
) -> anyhow::Result<i32> {
    use commands::fleet;
    args.record_to = global.record_to.clone();
    if !container::discover::is_many(ct) && !args.many.any() {
        return commands::wrapper::run(ct, request, &args, file);
    }
    let containers = container::discover::expand(ct, file)?;
    let (subcommand, trailing) = (request.name(), request.arguments());
    if matches!(subcommand, "install" | "remove" | "upgrade") && !args.assume_yes {
        anyhow::bail!(
            "vzpkg {subcommand} on several containers needs -y: the package managers cannot ask each of them a question"
        );
    }
    let mut child_args = Vec::new();
    if subcommand == "list" {
        if args.json {
            child_args.push("--json".to_string());
        }
    } else {
        if args.assume_yes {
            child_args.push("-y".to_string());
        }
        child_args.extend(["--timeout".into(), args.timeout.to_string(), "--proxy".into(), args.proxy.clone()]);
        if args.privileged {
            child_args.push("--privileged".into());
        }
    }
    if let Some(max_time) = args.max_time {
        child_args.extend(["--max-time".into(), max_time.to_string()]);
    }
    if let Some(backend) = &args.backend {
        child_args.extend(["--backend".into(), backend.clone()]);
    }
    if !trailing.is_empty() {
        child_args.push("--".into());
        child_args.extend(trailing.iter().cloned());
    }
    let job = fleet::Job { global: child_global(global, file), subcommand, args: child_args };
    fleet::run(&containers, &job, &args.many, file)
}

/// The global options a vzpkg run for one container is started with: the same config, cache,
/// state and log format as this one.
fn child_global(global: &cli::Global, file: &config::FileConfig) -> Vec<String> {
    let mut child_global: Vec<String> = vec![
        "--cache-dir".into(),
        file.cache_dir.display().to_string(),
        "--state-dir".into(),
        file.state_dir.display().to_string(),
        "--log-format".into(),
        clap::ValueEnum::to_possible_value(&global.log_format).map(|v| v.get_name().to_string()).unwrap_or_default(),
    ];
    if let Some(config) = &global.config {
        child_global.extend(["--config".into(), config.display().to_string()]);
    }
    child_global
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
