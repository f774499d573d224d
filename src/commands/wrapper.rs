//! `vzpkg install|remove|upgrade|update|list|exec CT …`: the container's own package manager,
//! run in a sandbox whose only way out is the proxy and whose archive directory is a read-only
//! view of the shared cache. Takes the host-side container lock, waits out the container's own
//! dpkg locks (never deleting them), repairs an interrupted dpkg first, and reports what changed.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vzpkg_adapters::apt::dpkg::{self, Changes, Installed, Operation};

use crate::cli::WrapperArgs;
use crate::config::FileConfig;
use crate::container::locks::{host_lock, wait_for_guest_locks};
use crate::container::sandbox::{self, Spec, RELAY_PORT};
use crate::container::Container;

/// What the operator asked for.
pub enum Request {
    Apt(Operation),
    List,
    Exec(Vec<String>),
}

pub fn run(ct: &str, request: Request, args: &WrapperArgs, file: &FileConfig) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("vzpkg {ct}: wrapper commands need root (they create namespaces and mounts)");
    }
    let container = Container::resolve(ct, &file.containers)?;
    let Some(status) = container.read(dpkg::STATUS)? else {
        bail!(
            "container root {} has no dpkg database (/{}): only apt/dpkg containers are supported so far",
            container.root_path.display(),
            dpkg::STATUS
        );
    };
    let before = dpkg::installed(&status);
    if let Request::List = request {
        // Written, not println!'d: `vzpkg list CT | head` must end quietly on a closed pipe.
        let mut out = std::io::stdout().lock();
        for p in &before {
            writeln!(out, "{}\t{}\t{}", p.name, p.version, p.arch)?;
        }
        out.flush()?;
        return Ok(0);
    }
    let timeout = Duration::from_secs(args.timeout);
    let _lock = host_lock(&file.state_dir, &container, timeout)?;
    wait_for_guest_locks(&container, dpkg::LOCKS, timeout)?;

    let proxy = proxy_addr(&args.proxy)?;
    let view = ViewDir::build(&file.cache_dir, &container)?;
    let scratch = file.state_dir.join("scratch");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;

    let run_tag =
        format!("vzpkg/{} run/{}-{}", env!("CARGO_PKG_VERSION"), std::process::id(), crate::commands::now_millis());
    let mut commands = Vec::new();
    if container.dir_has_entries(dpkg::UPDATES_DIR)? {
        eprintln!("vzpkg: dpkg was interrupted in {ct}; running dpkg --configure -a first");
        commands.push(dpkg::configure_pending());
    }
    let inside_proxy = format!("http://127.0.0.1:{RELAY_PORT}");
    match &request {
        Request::Apt(op) => commands.push(dpkg::apt_get(op, args.assume_yes, &inside_proxy, &run_tag)),
        Request::Exec(argv) => commands.push(argv.clone()),
        Request::List => unreachable!("answered above"),
    }
    let spec = Spec {
        container: &container,
        view: Some(view.path()),
        archives: dpkg::ARCHIVES,
        scratch: &scratch,
        commands,
        env: guest_env(args.assume_yes, &inside_proxy),
        proxy,
        pty: std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
    };
    let code = sandbox::run(&spec)?;

    let after = dpkg::installed(&container.read(dpkg::STATUS)?.unwrap_or_default());
    report(&Changes::between(&before, &after));
    Ok(code)
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

fn guest_env(assume_yes: bool, proxy: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
        ("HOME".to_string(), "/root".to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("http_proxy".to_string(), proxy.to_string()),
    ];
    if assume_yes || !std::io::stdin().is_terminal() {
        env.push(("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string()));
    }
    if let Ok(term) = std::env::var("TERM") {
        env.push(("TERM".to_string(), term));
    }
    env
}

fn report(changes: &Changes) {
    let show = |p: &Installed| format!("{}:{} {}", p.name, p.arch, p.version);
    for p in &changes.installed {
        eprintln!("vzpkg: installed {}", show(p));
    }
    for (old, new) in &changes.changed {
        eprintln!("vzpkg: changed {} -> {}", show(old), new.version);
    }
    for p in &changes.removed {
        eprintln!("vzpkg: removed {}", show(p));
    }
    if changes.is_empty() {
        eprintln!("vzpkg: no package changed");
    }
}

/// The view's files for one run: hard links to verified blobs under apt's names, on the
/// cache's own filesystem (an overlay layer cannot be assembled from scattered files). Only
/// root can read the directory; it is mounted read-only inside the sandbox alone, and removed
/// when the run ends (or, after a crash, by the next run).
struct ViewDir(PathBuf);

impl ViewDir {
    /// The archives this container's own package lists name, whose exact content (by sha256)
    /// the shared cache holds verified. Two repositories that build the same
    /// name_version_arch differently never mix: each container sees only its own.
    fn build(cache_dir: &Path, container: &Container) -> Result<ViewDir> {
        let views = cache_dir.join("views");
        std::fs::create_dir_all(&views).with_context(|| format!("creating {}", views.display()))?;
        remove_stale_views(&views);
        let dir = views.join(format!("run-{}-{}", std::process::id(), crate::commands::now_millis()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let view = ViewDir(dir);
        let verified = vzpkg_proxy::view::Verified::read(cache_dir).context("reading the cache index for the view")?;
        if verified.is_empty() {
            return Ok(view);
        }
        for list in container.files_in(dpkg::LISTS, "_Packages")? {
            let Some(text) = container.read(&list)? else { continue };
            // A list the container mangled only narrows what it sees of the shared cache.
            let parsed = vzpkg_adapters::apt::packages::parse_matching(&text, |sha| verified.contains(sha));
            let Ok(debs) = parsed else { continue };
            for deb in debs {
                let (Some(name), Some(blob)) = (deb.archive_name, verified.blob(&deb.file.sha256)) else { continue };
                match std::fs::hard_link(&blob, view.0.join(&name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e).with_context(|| format!("linking {} into the view", blob.display())),
                }
            }
        }
        Ok(view)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ViewDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Views left by runs whose process is gone.
fn remove_stale_views(views: &Path) {
    let Ok(entries) = std::fs::read_dir(views) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix("run-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
