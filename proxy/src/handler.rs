//! The request handler: access checks, routing, and the cache decision for each request —
//! hit, revalidate, join a download under way, start one, or pass through uncached.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::access::Access;
use crate::catalog::{now_secs, Catalog, Entry, Expected};
use crate::config::Config;
use crate::download::{Fetcher, Job, STORE_FULL};
use crate::error::{Error, Result};
use crate::flight::{answer, Flights, Joined, Progress};
use crate::metrics::{Metrics, Source};
use crate::respond::{self, Body};
use crate::store::Store;
use crate::target::{route, Route, Target};
use crate::verify::Verifier;

/// How a request was answered, for the log line and the counters.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Hit,
    Revalidated,
    Miss,
    Joined,
    Pass,
    Internal,
    Refused,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Revalidated => "revalidated",
            Outcome::Miss => "miss",
            Outcome::Joined => "joined",
            Outcome::Pass => "pass",
            Outcome::Internal => "internal",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

pub struct Proxy {
    pub(crate) config: Config,
    access: Arc<Access>,
    pub(crate) store: Arc<Store>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) flights: Arc<Flights>,
    pub(crate) fetcher: Arc<Fetcher>,
    verifier: Arc<Verifier>,
    pub(crate) metrics: Arc<Metrics>,
    started: Instant,
    /// Held for the proxy's life: one proxy per cache directory.
    _lock: File,
}

impl Proxy {
    /// Opens the cache (recovering from any crash) and prepares the upstream client.
    pub fn open(config: Config) -> Result<Arc<Proxy>> {
        config.validate().map_err(Error::Config)?;
        let lock = crate::admin::lock(&config.cache_dir)?;
        let store =
            Arc::new(Store::open_with_hot_cache(&config.cache_dir, config.hot_cache_size).map_err(Error::Store)?);
        let catalog =
            Arc::new(Catalog::open(&config.cache_dir.join("index.sqlite"), |blob| store.blob_path(blob).exists())?);
        store.seed_access(catalog.take_access_times());
        let cap = config.max_cache_size.map(|limit| crate::prune::Cap::new(limit, store.clone(), catalog.clone()));
        let metrics = Arc::new(Metrics::new());
        let access = Arc::new(Access::new(&config));
        // The keyrings this machine's own apt sources name, unless the config names one for
        // that upstream.
        let mut keyrings =
            if config.system_keyrings { crate::access::system_keyrings(&config.cache_dir) } else { Default::default() };
        // A remap NAME whose upstreams all have one gets theirs too.
        for (name, bases) in &config.remap {
            let mut union: Vec<PathBuf> = Vec::new();
            let every = bases.iter().all(|base| {
                let Some(found) = url::Url::parse(base).ok().and_then(|u| {
                    let host = u.host_str()?.to_ascii_lowercase();
                    let authority = u.port().map_or(host.clone(), |p| format!("{host}:{p}"));
                    keyrings.get(&authority).cloned()
                }) else {
                    return false;
                };
                union.extend(found);
                true
            });
            if every && !union.is_empty() {
                union.dedup();
                keyrings.insert(name.clone(), union);
            }
        }
        for (name, keyring) in &keyrings {
            let files: Vec<String> = keyring.iter().map(|k| k.display().to_string()).collect();
            tracing::info!(upstream = %name, keyrings = %files.join(", "), "signatures checked with this machine's apt keyring");
        }
        for (name, keyring) in &config.keyrings {
            keyrings.insert(name.clone(), vec![keyring.clone()]);
        }
        let verifier = Arc::new(Verifier::new(keyrings));
        let fetcher = Arc::new(Fetcher::new(
            &config,
            access.clone(),
            store.clone(),
            catalog.clone(),
            metrics.clone(),
            verifier.clone(),
            cap,
        )?);
        Ok(Arc::new(Proxy {
            access,
            config,
            store,
            catalog,
            flights: Arc::new(Flights::default()),
            fetcher,
            verifier,
            metrics,
            started: Instant::now(),
            _lock: lock,
        }))
    }

    pub fn allowed_hosts(&self) -> usize {
        self.access.allowed_hosts()
    }

    /// Commits pending catalog writes. Blocking.
    pub fn flush(&self) {
        self.catalog.flush();
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        self.metrics.requests.inc();
        let run = run_tag(req.headers());
        if let Some(tag) = &run {
            self.metrics.runs.request(tag);
        }
        let (resp, outcome) = match self.respond(&req, client).await {
            Ok(answer) => answer,
            Err(e) => {
                let outcome = if e.status().is_client_error() && !matches!(e, Error::UpstreamStatus { .. }) {
                    self.metrics.refused.inc();
                    Outcome::Refused
                } else {
                    Outcome::Failed
                };
                (respond::error_page(&e), outcome)
            }
        };
        match outcome {
            Outcome::Hit => self.metrics.hits.inc(),
            Outcome::Miss => self.metrics.misses.inc(),
            Outcome::Joined => self.metrics.joined.inc(),
            Outcome::Pass => self.metrics.passed_through.inc(),
            _ => 0,
        };
        let log = RequestLog {
            client,
            method: req.method().clone(),
            uri: req.uri().to_string(),
            status: resp.status(),
            outcome,
            started,
            bytes: 0,
            run,
            metrics: self.metrics.clone(),
        };
        resp.map(|body| log.count(body))
    }

    async fn respond(&self, req: &Request<Incoming>, client: SocketAddr) -> Result<(Response<Body>, Outcome)> {
        if !self.access.client_allowed(client.ip()) {
            return Err(Error::Forbidden(format!(
                "client {} may not use this proxy: add its network to allow_clients in the config",
                client.ip()
            )));
        }
        if req.method() == Method::CONNECT {
            return Err(Error::Forbidden(
                "CONNECT is refused: vzpkg caches plain http:// requests; for an https:// upstream use `--remap NAME=https://…` and point clients at http://PROXY/NAME/".into(),
            ));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(Error::Method(req.method().to_string()));
        }
        let head_only = req.method() == Method::HEAD;
        let target = match route(req.uri(), &self.config.remap)? {
            Route::Internal(endpoint) => return Ok((self.internal(&endpoint)?, Outcome::Internal)),
            Route::Fetch(target) => target,
        };
        if let Some((host, port)) = &target.host {
            if !self.access.host_allowed(host, *port) {
                let name = if matches!(port, 80 | 443) { host.clone() } else { format!("{host}:{port}") };
                if let Some(tag) = run_tag(req.headers()) {
                    self.metrics.runs.refused(&tag, &name);
                }
                return Err(Error::Forbidden(format!(
                    "upstream host {name} is not allowed: add `--allow-host {name}` (or allow_hosts in the config), or name it in this machine's apt/dnf sources"
                )));
            }
        }
        if !target.kind.is_cached() {
            return self.pass_through(&target, head_only).await;
        }
        self.cached(&target, req.headers(), head_only).await
    }

    async fn cached(
        &self,
        target: &Target,
        headers: &hyper::HeaderMap,
        head_only: bool,
    ) -> Result<(Response<Body>, Outcome)> {
        let expected = self.verifier.expected(&self.catalog, &target.key, target.kind);
        // A copy the chain pins by hash cannot be stale, and one that disagrees with the chain's
        // current word (an older generation, say) is never served for this URL.
        let agrees = |e: &Entry| expected.as_ref().is_none_or(|x| x.sha256 == e.blob);
        let cached = self.catalog.get(&target.key).filter(|e| agrees(e));
        if let Some(entry) = &cached {
            let fresh = target.kind.is_immutable()
                || expected.is_some()
                || now_secs().saturating_sub(entry.validated_at) < self.config.index_ttl_secs;
            if fresh {
                if let Some(resp) = self.stored(target, entry, headers, head_only).await? {
                    return Ok((resp, Outcome::Hit));
                }
            }
        }
        // The store may hold the pinned content already, under another URL or an older
        // generation's name: that is a hit too.
        if let (None, Some(want)) = (&cached, &expected) {
            if let Some(resp) = self.stored_by_hash(target, want, headers, head_only).await? {
                return Ok((resp, Outcome::Hit));
            }
        }
        // A HEAD of a file not stored is answered by upstream's HEAD: no download for it.
        if head_only && cached.is_none() {
            let upstream = self.fetcher.upstream.head(&target.upstreams).await?;
            return Ok((respond::passthrough(upstream, true), Outcome::Pass));
        }
        // With the filesystem full, nothing new can be stored: pass it through.
        if self.store.is_full() {
            self.metrics.store_full.inc();
            return self.pass_through(target, head_only).await;
        }
        let (mut rx, joined) = match self.flights.join(&target.key) {
            Joined::Leader(lead) => {
                let rx = lead.flight.subscribe();
                let job = Job {
                    target: target.clone(),
                    cached: cached.clone().filter(|_| !target.kind.is_immutable()),
                    expected: expected.clone(),
                };
                self.fetcher.start(lead, job)?;
                (rx, false)
            }
            Joined::Follower(flight) => (flight.subscribe(), true),
        };
        self.metrics.waiting.inc();
        let answered = answer(&mut rx).await;
        self.metrics.waiting.dec();
        match answered {
            Progress::NotModified => {
                // Upstream confirmed the copy the revalidation was asked about.
                let vanished = || Error::Upstream("cached copy vanished during revalidation; retry".into());
                let entry = cached.clone().or_else(|| self.catalog.get(&target.key).filter(|e| agrees(e)));
                let entry = entry.ok_or_else(vanished)?;
                self.stored(target, &entry, headers, head_only)
                    .await?
                    .map(|r| (r, Outcome::Revalidated))
                    .ok_or_else(vanished)
            }
            Progress::Body { head, file, .. } => {
                let (label, outcome) = if joined { ("joined", Outcome::Joined) } else { ("miss", Outcome::Miss) };
                Ok((respond::flight(rx, &head, file, head_only, label), outcome))
            }
            Progress::Failed { status: STORE_FULL, .. } => self.pass_through(target, head_only).await,
            Progress::Failed { status, reason } => {
                // An index that upstream cannot confirm right now is still better than nothing,
                // as long as it agrees with the chain.
                if let (true, Some(entry)) = (status >= 500, &cached) {
                    tracing::warn!(key = %target.key, %reason, "upstream failed; serving the cached copy");
                    if let Some(resp) = self.stored(target, entry, headers, head_only).await? {
                        return Ok((resp, Outcome::Hit));
                    }
                }
                Err(match status {
                    502 => Error::Upstream(reason.to_string()),
                    _ => Error::UpstreamStatus { status, reason: reason.to_string() },
                })
            }
            Progress::Asking => unreachable!("answer() waits past Asking"),
        }
    }

    /// Relays `target` from upstream without storing it.
    async fn pass_through(&self, target: &Target, head_only: bool) -> Result<(Response<Body>, Outcome)> {
        let upstream = self.fetcher.upstream.get(&target.upstreams, None).await?;
        Ok((respond::passthrough(upstream, head_only), Outcome::Pass))
    }

    /// Serves the blob the chain pins for `target` if the store has it, recording it as this
    /// URL's content.
    async fn stored_by_hash(
        &self,
        target: &Target,
        want: &Expected,
        headers: &hyper::HeaderMap,
        head_only: bool,
    ) -> Result<Option<Response<Body>>> {
        let path = self.store.blob_path(&want.sha256);
        let Ok(meta) = tokio::fs::metadata(&path).await else {
            return Ok(None);
        };
        let entry = Entry {
            blob: want.sha256.clone(),
            size: meta.len(),
            etag: None,
            last_modified: None,
            content_type: None,
            validated_at: now_secs(),
            verified: true,
        };
        self.catalog.put(&target.key, entry.clone());
        self.stored(target, &entry, headers, head_only).await
    }

    /// Serves `entry`, the copy the caller checked, as `target`; `None` when its blob is gone
    /// (removed behind our back), which also drops the entry so that the file is fetched again.
    async fn stored(
        &self,
        target: &Target,
        entry: &Entry,
        headers: &hyper::HeaderMap,
        head_only: bool,
    ) -> Result<Option<Response<Body>>> {
        // A hot small blob costs no trip to the blocking pool; anything else costs one.
        let content = match self.store.hot(&entry.blob) {
            Some(content) => Some(content),
            None => {
                let (store, blob) = (self.store.clone(), entry.blob.clone());
                tokio::task::spawn_blocking(move || store.load(&blob)).await?.map_err(Error::Store)?
            }
        };
        let Some(content) = content else {
            tracing::warn!(key = %target.key, blob = %entry.blob, "blob missing from the store; fetching again");
            self.catalog.remove(&target.key);
            return Ok(None);
        };
        self.catalog.hit(&target.key);
        self.store.touch(&entry.blob);
        let small = content.len() as u64 <= crate::store::SMALL_BLOB_MAX;
        let resp = respond::blob(content, entry, headers, head_only);
        // A large blob is pinned for as long as its body is being sent: prune leaves it alone
        // meanwhile. A small one goes out in one write.
        if small {
            return Ok(Some(resp));
        }
        let pin = self.store.pin(&entry.blob);
        Ok(Some(resp.map(|body| {
            body.map_frame(move |frame| {
                let _held = &pin;
                frame
            })
            .boxed_unsync()
        })))
    }

    /// What `/_vzpkg/status` and the admin socket's `/status` answer.
    pub(crate) fn status(&self) -> serde_json::Value {
        let (hits, misses, joined) = (self.metrics.hits.get(), self.metrics.misses.get(), self.metrics.joined.get());
        let lookups = hits + misses + joined;
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.started.elapsed().as_secs(),
            "cache_dir": self.config.cache_dir,
            "entries": self.catalog.entry_count(),
            "stored_bytes": self.catalog.total_bytes(),
            "store": self.store.usage(),
            "max_cache_size": self.config.max_cache_size,
            "known_hashes": self.catalog.expected_count(),
            "unverified_entries": self.catalog.unverified_count(),
            "downloads_in_flight": self.flights.in_flight(),
            "hit_ratio": if lookups == 0 { None } else { Some(hits as f64 / lookups as f64) },
            "bytes_saved": self.metrics.bytes_from_cache.get(),
            "last_prune": self.catalog.last_prune(),
            "refresh_failures": self.catalog.refresh_failures(),
            "counters": self.metrics.as_json(),
        })
    }

    fn internal(&self, endpoint: &str) -> Result<Response<Body>> {
        match endpoint {
            "metrics" => Ok(respond::text(StatusCode::OK, "text/plain; version=0.0.4", self.metrics.prometheus_text())),
            "status" => {
                let status = self.status();
                Ok(respond::text(StatusCode::OK, "application/json", format!("{status:#}\n")))
            }
            _ => Err(Error::NotFound(format!("no endpoint /_vzpkg/{endpoint}: try /_vzpkg/metrics or /_vzpkg/status"))),
        }
    }
}

/// Writes the request's log line once its body has been sent (or abandoned), with the bytes
/// that actually went out.
struct RequestLog {
    client: SocketAddr,
    method: Method,
    uri: String,
    status: StatusCode,
    outcome: Outcome,
    started: Instant,
    bytes: u64,
    /// The wrapper run that asked, from its User-Agent (`… run/ID`), so that bytes can be
    /// attributed to a container operation.
    run: Option<String>,
    metrics: Arc<Metrics>,
}

/// `run/ID` from a User-Agent such as `vzpkg/0.1.0 run/1234-1700000000000`.
fn run_tag(headers: &hyper::HeaderMap) -> Option<String> {
    let agent = headers.get(hyper::header::USER_AGENT)?.to_str().ok()?;
    let id = agent.split_whitespace().find_map(|word| word.strip_prefix("run/"))?;
    id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-').then(|| id.to_string())
}

impl RequestLog {
    fn count(self, body: Body) -> Body {
        let mut log = self;
        let source = match log.outcome {
            Outcome::Hit | Outcome::Revalidated => Source::Cache,
            Outcome::Miss | Outcome::Joined | Outcome::Pass => Source::Upstream,
            Outcome::Internal | Outcome::Refused | Outcome::Failed => Source::Other,
        };
        body.map_frame(move |frame| {
            // `&mut log` makes the closure own the whole log, so it is dropped with the body.
            let log = &mut log;
            if let Some(data) = frame.data_ref() {
                log.bytes += data.len() as u64;
                // Counted as the bytes go, not when the log line is written: a run that asks
                // right after its client has the last byte must find them all.
                if let Some(tag) = &log.run {
                    log.metrics.runs.bytes(tag, source, data.len() as u64);
                }
            }
            frame
        })
        .boxed_unsync()
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if matches!(self.outcome, Outcome::Hit | Outcome::Revalidated) {
            self.metrics.bytes_from_cache.inc_by(self.bytes);
        }
        tracing::info!(
            client = %self.client,
            method = %self.method,
            url = %self.uri,
            status = self.status.as_u16(),
            cache = self.outcome.as_str(),
            bytes = self.bytes,
            ms = self.started.elapsed().as_millis() as u64,
            run = self.run.as_deref().unwrap_or("-"),
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_tags_come_from_the_user_agent() {
        let mut headers = hyper::HeaderMap::new();
        assert_eq!(run_tag(&headers), None);
        headers.insert(hyper::header::USER_AGENT, "vzpkg/0.1.0 run/42-1700".parse().unwrap());
        assert_eq!(run_tag(&headers).as_deref(), Some("42-1700"));
        headers.insert(hyper::header::USER_AGENT, "evil run/a\"b".parse().unwrap());
        assert_eq!(run_tag(&headers), None);
    }
}
