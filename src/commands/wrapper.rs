//! `vzpkg install|remove|upgrade|update|list|exec CT …`: the container's own package manager,
//! run in a sandbox whose only way out is the proxy and whose cache directory is a read-only
//! view of the shared cache. Takes the host-side container lock, waits out the container's own
//! locks (never deleting them), repairs an interrupted run first, and reports what changed.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::audit;
use crate::backend::{self, Changes, Installed, Operation};
use crate::cli::WrapperArgs;
use crate::config::FileConfig;
use crate::container::idmap::IdRange;
use crate::container::locks::{host_lock, wait_for_guest_locks};
use crate::container::sandbox::{self, Confinement, GuestCommand, Spec, ViewMount, RELAY_PORT};
use crate::container::Container;
use crate::untrusted::printable;

/// The longest a `list` that runs the container's own query may take.
const LIST_MAX_SECS: u64 = 300;

/// What the operator asked for.
pub enum Request {
    Package(Operation),
    List,
    Exec(Vec<String>),
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Package(Operation::Install(_)) => "install",
            Request::Package(Operation::Remove(_)) => "remove",
            Request::Package(Operation::Upgrade(_)) => "upgrade",
            Request::Package(Operation::Update) => "update",
            Request::List => "list",
            Request::Exec(_) => "exec",
        }
    }

    /// What follows the container on the command line: the packages, or the command.
    pub fn arguments(&self) -> &[String] {
        match self {
            Request::Package(Operation::Install(p) | Operation::Remove(p) | Operation::Upgrade(p)) => p,
            Request::Exec(argv) => argv,
            Request::Package(Operation::Update) | Request::List => &[],
        }
    }
}

pub fn run(ct: &str, request: Request, args: &WrapperArgs, file: &FileConfig) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("vzpkg {ct}: wrapper commands need root (they create namespaces and mounts)");
    }
    // Opened first, so that a command whose record could not be written never runs.
    audit::Log::open(&file.state_dir).context("opening the audit log")?;
    let mut record = audit::Pending::start(ct, request.name());
    record.copy_to(args.record_to.clone());
    let result = run_recorded(ct, request, args, file, &mut record);
    record.finish(&file.state_dir, &file.cache_dir, result)
}

fn run_recorded(
    ct: &str,
    request: Request,
    args: &WrapperArgs,
    file: &FileConfig,
    audit: &mut audit::Pending,
) -> Result<i32> {
    let mut container = Container::resolve(ct, file)?;
    audit.container(&container);
    let backend = backend::detect(&container, args.backend.as_deref())?;
    audit.backend(backend.name());
    let proxy = proxy_addr(&args.proxy)?;
    // A container with a user namespace of its own keeps its mapping (its files carry its
    // ids); any other gets vzpkg's unprivileged range, its root attached idmapped.
    let (confinement, idmap_root) = match container.own_ids {
        Some(ids) => (Confinement::Unprivileged(ids), false),
        None if args.privileged || file.sandbox.privileged => (Confinement::Privileged, false),
        None => (Confinement::Unprivileged(IdRange::resolve(file.sandbox.id_base)?), true),
    };
    let sandbox = |commands: Vec<GuestCommand>,
                   views: &[backend::View],
                   env: Vec<(String, String)>,
                   pty: bool,
                   max_time: Option<u64>| {
        let spec = Spec {
            name: ct,
            kind: container.kind,
            init: container.init.as_ref(),
            root: &container.root,
            layers: container.layers.as_ref().map(|(_, fds)| fds),
            idmap_root,
            confinement,
            views: views.iter().map(|v| ViewMount { source: v.dir.fd(), target: v.target.clone() }).collect(),
            commands,
            env,
            proxy,
            pty,
            limits: file.sandbox.limits(),
            max_time: max_time.map(Duration::from_secs),
        };
        sandbox::run(&spec)
    };
    let inside_proxy = format!("http://127.0.0.1:{RELAY_PORT}");
    if let Request::List = request {
        let installed = match backend.installed(&container)? {
            Some(installed) => installed,
            None => {
                // The sandbox runs once per vzpkg process: a list that needs one is all it does.
                let outcome = sandbox(
                    vec![GuestCommand::query(backend.query())],
                    &[],
                    backend.env(true, false, &inside_proxy),
                    false,
                    // The container's rpm could hang: a list is always bounded in time.
                    Some(args.max_time.unwrap_or(LIST_MAX_SECS)),
                )?;
                match outcome.queries.first() {
                    Some(Some(output)) => backend.parse_query(output),
                    _ if outcome.timed_out => bail!(
                        "{} in {ct} did not list its packages within {} s (--max-time)",
                        backend.query()[0],
                        args.max_time.unwrap_or(LIST_MAX_SECS)
                    ),
                    _ => bail!(
                        "{} in {ct} could not list its packages (exit status {})",
                        backend.query()[0],
                        outcome.code
                    ),
                }
            }
        };
        print_list(&installed, args.json)?;
        return Ok(0);
    }
    let timeout = Duration::from_secs(args.timeout);
    let _lock = audit.refusal(host_lock(&file.state_dir, &container, timeout))?;
    audit.refusal(wait_for_guest_locks(&container, backend.locks(), timeout))?;
    if let Some(done) = audit.refusal(backend.clear_stale(&container))? {
        eprintln!("vzpkg: {ct}: {done}");
        audit.lock_action(done);
    }
    // Read under the lock: a command that queued behind another must not report (or record)
    // the other's changes as its own. A backend whose database only its own tools read lists
    // it from inside the run, before and after.
    let read_before = backend.installed(&container)?;

    let views = backend.views(&container, &file.cache_dir)?;
    let run_tag =
        format!("vzpkg/{} run/{}-{}", env!("CARGO_PKG_VERSION"), std::process::id(), crate::commands::now_millis());
    let mut commands = Vec::new();
    if read_before.is_none() {
        commands.push(GuestCommand::query(backend.query()));
    }
    if let Some((why, command)) = backend.repair(&container)? {
        eprintln!("vzpkg: {why} in {ct}; running {} first", command.join(" "));
        audit.lock_action(format!("{why}: ran {}", command.join(" ")));
        commands.push(GuestCommand::run(command));
    }
    match &request {
        Request::Package(op) => commands.push(GuestCommand::run(backend.command(
            &container,
            op,
            args.assume_yes,
            &inside_proxy,
            &run_tag,
        )?)),
        Request::Exec(argv) => commands.push(GuestCommand::run(argv.clone())),
        Request::List => unreachable!("answered above"),
    }
    if read_before.is_none() {
        commands.push(GuestCommand::query(backend.query()));
    }
    audit.commands(&commands.iter().map(|c| c.argv.clone()).collect::<Vec<_>>());
    audit.run_tag(&run_tag);
    let terminal = [std::io::stdin().is_terminal(), std::io::stdout().is_terminal(), std::io::stderr().is_terminal()];
    let mut env = backend.env(args.assume_yes, terminal[0], &inside_proxy);
    if let Ok(term) = std::env::var("TERM") {
        env.push(("TERM".to_string(), term));
    }
    // Any terminal of the operator's is kept from the guest: it gets a pty of its own.
    let outcome = sandbox(commands, &views, env, terminal.iter().any(|&t| t), args.max_time)?;
    audit.outcome(&outcome);
    audit.views(&views);
    drop(views);
    container.reopen()?;

    if outcome.oom {
        eprintln!(
            "vzpkg: the run in {ct} went over its memory limit ({} MiB, sandbox.memory_max) and the kernel killed it",
            file.sandbox.memory_max >> 20
        );
    }
    if outcome.timed_out {
        eprintln!("vzpkg: the run in {ct} took longer than --max-time and was killed");
    }
    let (before, after) = match read_before {
        Some(before) => (Some(before), backend.installed(&container)?),
        None => {
            let mut queried = outcome.queries.iter().map(|q| q.as_deref().map(|out| backend.parse_query(out)));
            (queried.next().flatten(), queried.next().flatten())
        }
    };
    match (before, after) {
        (Some(before), Some(after)) => {
            let changes = Changes::between(&before, &after);
            report(&changes);
            audit.changes(&changes);
        }
        _ => eprintln!(
            "vzpkg: the installed set of {ct} could not be read ({} failed): what changed is unknown",
            backend.query().join(" ")
        ),
    }
    if outcome.code != 0 {
        let what = match &request {
            Request::Package(_) => backend.name().to_string(),
            _ => "the command".to_string(),
        };
        say_what_failed(&String::from_utf8_lossy(&outcome.tail));
        eprintln!("vzpkg: {what} in {ct} failed with exit status {}", outcome.code);
    }
    Ok(outcome.code)
}

/// The sources the package manager's output names as failed, each with what it said (the
/// proxy's own account of hosts it refused follows, from the audit record).
fn say_what_failed(output: &str) {
    for source in vzpkg_adapters::failed::sources(output) {
        eprintln!("vzpkg: failed: {} ({})", printable(&source.url, 300), printable(&source.reason, 200));
    }
}

/// `vzpkg list`'s output: a line (or a JSON object) per package. Written, not println!'d:
/// `vzpkg list CT | head` must end quietly on a closed pipe.
fn print_list(installed: &[Installed], json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for p in installed {
        if json {
            let line = serde_json::json!({
                "name": audit::bounded(&p.name, audit::MAX_NAME),
                "version": audit::bounded(&p.version, audit::MAX_VERSION),
                "arch": audit::bounded(&p.arch, audit::MAX_ARCH),
            });
            writeln!(out, "{}", crate::untrusted::json_text(&line))?;
        } else {
            writeln!(out, "{}\t{}\t{}", printable(&p.name, 256), printable(&p.version, 256), printable(&p.arch, 64))?;
        }
    }
    out.flush()?;
    Ok(())
}

fn proxy_addr(url: &str) -> Result<SocketAddr> {
    let parsed = url::Url::parse(url).with_context(|| format!("--proxy {url:?} is not a URL"))?;
    let host = parsed.host_str().with_context(|| format!("--proxy {url:?} has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(3142);
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving --proxy {url}"))?
        .next()
        .with_context(|| format!("--proxy {url} resolves to no address"))
}

fn report(changes: &Changes) {
    let show = |p: &Installed| {
        format!("{}:{} {}", printable(&p.name, 256), printable(&p.arch, 64), printable(&p.version, 256))
    };
    for p in &changes.installed {
        eprintln!("vzpkg: installed {}", show(p));
    }
    for (old, new) in &changes.changed {
        eprintln!("vzpkg: changed {} -> {}", show(old), printable(&new.version, 256));
    }
    for p in &changes.removed {
        eprintln!("vzpkg: removed {}", show(p));
    }
    if changes.is_empty() {
        eprintln!("vzpkg: no package changed");
    }
}
