//! The proxy's admin side. A running proxy holds an exclusive lock on its cache directory, so
//! whatever must change the cache while it serves is asked of the proxy itself, over a unix
//! socket at `CACHE/admin/vzpkg.sock`: the directory is 0700 and the socket 0600, and a peer
//! whose uid is neither root nor the proxy's own is refused. (Not an HTTP endpoint on the
//! proxy's port: every sandbox reaches that port, from loopback, through its relay.)
//!
//! Endpoints, HTTP/1 over the socket:
//! - `GET /status`: the proxy's status as JSON (store usage, hit ratio, downloads in flight,
//!   last prune, failed index refreshes, counters);
//! - `GET /runs/TAG`: one wrapper run's bytes by source and refused hosts;
//! - `POST /prune?max_size=BYTES&max_age=SECS&grace=SECS&dry_run=1`: prunes while serving and
//!   streams JSON lines: `{"progress":{"done":N,"total":M}}`…, then `{"report":{…}}` or
//!   `{"error":"…","status":409}`.
//!
//! When no proxy runs, [`prune_cache`] and [`cache_status`] open the cache themselves, under
//! the same lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fs2::FileExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::handler::Proxy;
use crate::prune::{self, Options, Report};
use crate::respond::{self, Body};
use crate::store::Store;

/// The socket, relative to the cache directory.
pub const SOCKET: &str = "admin/vzpkg.sock";

pub fn socket_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(SOCKET)
}

/// Takes the cache directory's lock: one proxy (or one offline prune) per cache.
pub(crate) fn lock(cache_dir: &Path) -> Result<File> {
    std::fs::create_dir_all(cache_dir).map_err(Error::Store)?;
    let path = cache_dir.join("lock");
    let lock = File::create(&path).map_err(Error::Store)?;
    lock.try_lock_exclusive().map_err(|_| {
        Error::Busy(format!("{} is in use by a vzpkg proxy (lock file {})", cache_dir.display(), path.display()))
    })?;
    Ok(lock)
}

/// A listener on the admin socket. Call it while holding the cache's lock (after
/// [`Proxy::open`]): a socket file left there is then a dead proxy's and is replaced.
pub fn bind(cache_dir: &Path) -> io::Result<Listener> {
    let path = socket_path(cache_dir);
    let dir = path.parent().expect("the socket path has a parent");
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let owner = std::fs::metadata(&path)?.uid();
    listener.set_nonblocking(true)?;
    Ok(Listener { listener, owner })
}

pub struct Listener {
    listener: std::os::unix::net::UnixListener,
    /// The proxy's own uid, which may connect besides root.
    owner: u32,
}

/// Only one prune at a time.
static PRUNING: AtomicBool = AtomicBool::new(false);

/// Serves the admin socket for as long as the task runs.
pub async fn listen(proxy: Arc<Proxy>, listener: Listener) {
    let owner = listener.owner;
    let listener = match tokio::net::UnixListener::from_std(listener.listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin socket unusable");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if !uid.is_some_and(|uid| uid == 0 || uid == owner) {
            tracing::warn!(uid, "admin socket: refused a peer that is neither root nor the proxy's user");
            continue;
        }
        let proxy = proxy.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(proxy, req).await) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(proxy: Arc<Proxy>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let json =
        |status: StatusCode, value: serde_json::Value| respond::text(status, "application/json", format!("{value}\n"));
    match (req.method(), path.as_str()) {
        (&Method::GET, "/status") => json(StatusCode::OK, proxy.status()),
        (&Method::GET, p) if p.starts_with("/runs/") => match proxy.metrics.runs.get(&p["/runs/".len()..]) {
            Some(run) => json(StatusCode::OK, serde_json::json!(run)),
            None => {
                json(StatusCode::NOT_FOUND, serde_json::json!({"error": "no request of this run reached the proxy"}))
            }
        },
        (&Method::POST, "/prune") => match options_from_query(req.uri().query().unwrap_or("")) {
            Ok(options) => prune_streamed(proxy, options),
            Err(e) => json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e })),
        },
        _ => json(StatusCode::NOT_FOUND, serde_json::json!({"error": "try GET /status, GET /runs/TAG or POST /prune"})),
    }
}

fn options_from_query(query: &str) -> std::result::Result<Options, String> {
    let mut options = Options::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || value.parse::<u64>().map_err(|_| format!("{name}={value:?} is not a number"));
        match name {
            "max_size" => options.max_size = Some(number()?),
            "max_age" => options.max_age = Some(Duration::from_secs(number()?)),
            "grace" => options.grace = Duration::from_secs(number()?),
            "dry_run" => options.dry_run = value == "1" || value == "true",
            _ => return Err(format!("unknown parameter {name:?}")),
        }
    }
    Ok(options)
}

/// Runs prune on a blocking thread, streaming its progress and its report as JSON lines.
fn prune_streamed(proxy: Arc<Proxy>, options: Options) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let line = |value: serde_json::Value| Bytes::from(format!("{value}\n"));
    if PRUNING.swap(true, Ordering::SeqCst) {
        let _ = tx.try_send(line(serde_json::json!({"error": "a prune is already running", "status": 409})));
    } else {
        tokio::task::spawn_blocking(move || {
            // Cleared however the prune ends, a panic included.
            struct Running;
            impl Drop for Running {
                fn drop(&mut self) {
                    PRUNING.store(false, Ordering::SeqCst);
                }
            }
            let running = Running;
            let mut last = Instant::now();
            let mut progress = |done: u64, total: u64| {
                if done == 0 || done == total || last.elapsed() >= Duration::from_millis(100) {
                    last = Instant::now();
                    let _ = tx.blocking_send(line(serde_json::json!({"progress": {"done": done, "total": total}})));
                }
            };
            let result = prune::prune(&proxy.store, &proxy.catalog, &options, &mut progress);
            drop(running);
            let last = match result {
                Ok(report) => {
                    log_report(&report, "proxy");
                    serde_json::json!({ "report": report })
                }
                Err(e) => serde_json::json!({"error": e.to_string(), "status": e.status().as_u16()}),
            };
            let _ = tx.blocking_send(line(last));
        });
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, io::Error>(Frame::data(bytes)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/x-ndjson"));
    resp
}

fn log_report(report: &Report, via: &str) {
    tracing::info!(
        via,
        dry_run = report.dry_run,
        files = report.removed.files,
        bytes = report.removed.bytes,
        kept_in_use = report.kept_in_use,
        expected_removed = report.expected_removed,
        ms = report.elapsed_ms,
        "prune"
    );
}

/// Prunes a cache no proxy holds, taking its lock for the duration; blocking.
pub fn prune_cache(cache_dir: &Path, options: &Options, progress: &mut dyn FnMut(u64, u64)) -> Result<Report> {
    let _lock = lock(cache_dir)?;
    let store = Store::open(cache_dir).map_err(Error::Store)?;
    let catalog = Catalog::open(&cache_dir.join("index.sqlite"), |blob| store.blob_path(blob).exists())?;
    store.seed_access(catalog.take_access_times());
    let report = prune::prune(&store, &catalog, options, progress)?;
    log_report(&report, "cache");
    Ok(report)
}

/// The status of a cache no proxy holds (the counters of a running proxy are not there);
/// takes its lock for the duration; blocking.
pub fn cache_status(cache_dir: &Path) -> Result<serde_json::Value> {
    let _lock = lock(cache_dir)?;
    let store = Store::open(cache_dir).map_err(Error::Store)?;
    let db = cache_dir.join("index.sqlite");
    let catalog = Catalog::open(&db, |blob| store.blob_path(blob).exists())?;
    catalog.flush();
    // Hits times size: what serving from the store saved upstream, over the catalog's life.
    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let (hits, saved): (u64, u64) =
        conn.query_row("SELECT COALESCE(SUM(hits), 0), COALESCE(SUM(hits * size), 0) FROM entries", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(serde_json::json!({
        "cache_dir": cache_dir,
        "running": false,
        "entries": catalog.entry_count(),
        "store": store.usage(),
        "known_hashes": catalog.expected_count(),
        "unverified_entries": catalog.unverified_count(),
        "stored_hits": hits,
        "bytes_saved": saved,
        "last_prune": catalog.last_prune(),
        "refresh_failures": catalog.refresh_failures(),
    }))
}
