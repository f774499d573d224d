//! `vzpkg proxy`: applies command-line overrides to the config, binds the listeners and the
//! admin socket, and serves until SIGTERM or SIGINT.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use crate::cli::ProxyArgs;
use crate::config::FileConfig;

pub fn run(args: ProxyArgs, file: FileConfig) -> Result<()> {
    let mut config = file.proxy;
    config.cache_dir = file.cache_dir;
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.allow_hosts.extend(args.allow_host);
    // A NAME given on the command line replaces that name's URLs from the file.
    let mut remap: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for spec in &args.remap {
        let Some((name, url)) = spec.split_once('=') else {
            bail!("--remap {spec:?}: expected NAME=URL, e.g. --remap debian=http://mirror.example.org/debian");
        };
        remap.entry(name.to_string()).or_default().push(url.to_string());
    }
    config.remap.extend(remap);
    if args.parent.is_some() {
        config.parent = args.parent;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    raise_file_limit(config.connections.max);

    give_large_blocks_back();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

/// glibc raises its mmap threshold each time a large block is freed, after which blocks that
/// size (an xz decoder's window of 4 to 64 MiB) come from the heap and stay resident once
/// freed. A fixed threshold gives them back, so the proxy's memory at rest is what it holds,
/// not what learning an index once needed (contrib/bench/catalog.sh: a million known
/// packages, 60 MiB at rest with the sliding threshold, 40 MiB with this). It stays above the
/// buffers a request allocates (256 KiB to serve a stored file): mapping and unmapping one per
/// hit halved the rate of small hits.
fn give_large_blocks_back() {
    #[cfg(target_env = "gnu")]
    // SAFETY: changes one malloc parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
    }
}

/// Each connection and each download holds a descriptor: the soft limit (often 1024) goes up to
/// the hard one, and a hard limit below the connection cap is said at start.
fn raise_file_limit(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft < hard {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
        }
    }
    // Connections, their downloads' files, and some to spare for the store and the catalog.
    let needed = (max_connections as u64).saturating_mul(2).saturating_add(256);
    if hard < needed {
        tracing::warn!(
            limit = hard,
            max_connections,
            "the open-file limit is low for [proxy.connections] max: accepting may fail before the cap \
             (raise LimitNOFILE, or lower max)"
        );
    }
}

async fn serve(config: vzpkg_proxy::Config) -> Result<()> {
    let cache_dir = config.cache_dir.clone();
    let proxy = vzpkg_proxy::Proxy::open(config.clone())
        .with_context(|| format!("opening the cache in {}", cache_dir.display()))?;
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (is another proxy running there?)"))?;
        // Tests and scripts read this line to learn a port chosen with :0.
        println!("vzpkg proxy listening on {}", listener.local_addr()?);
        listeners.push(listener);
    }
    // Bound while the proxy holds the cache's lock: a socket left there is a dead proxy's.
    let admin = vzpkg_proxy::admin::bind(&cache_dir).with_context(|| {
        format!("binding the admin socket {}", vzpkg_proxy::admin::socket_path(&cache_dir).display())
    })?;
    let admin = tokio::spawn(vzpkg_proxy::admin::listen(proxy.clone(), admin));
    tracing::info!(
        cache_dir = %cache_dir.display(),
        allowed_hosts = proxy.allowed_hosts(),
        remaps = config.remap.len(),
        parent = config.parent.as_deref().unwrap_or("none"),
        "proxy ready"
    );
    vzpkg_proxy::listen(proxy, listeners, stop_signal()).await;
    admin.abort();
    let _ = std::fs::remove_file(vzpkg_proxy::admin::socket_path(&cache_dir));
    tracing::info!("stopped");
    Ok(())
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
