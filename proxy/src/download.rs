//! The download task that fills a flight: it streams upstream's body into a temporary file while
//! followers read it, resumes an interrupted transfer, gives up on a stalled one, checks the
//! bytes against the repository's metadata and commits the blob only when every byte has
//! arrived and verified. It also owns the per-URL backoff: a URL that keeps failing is refused
//! here, before any download starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio_util::task::TaskTracker;

use vzpkg_adapters::FileKind;

use crate::access::Access;
use crate::backoff::Backoff;
use crate::catalog::{now_secs, Catalog, Entry, Expected, Role};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::flight::{Head, Lead, Progress};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::target::Target;
use crate::upstream::{chain, Upstream};
use crate::verify::{Root, Trusted, Verifier};

/// Index files up to this size are verified before their first byte is sent.
const HOLD_WHOLE_MAX: u64 = 4 << 20;

/// The status a flight fails with when the store had no room: its clients pass the file
/// through from upstream themselves (507 Insufficient Storage, never sent to a client).
pub const STORE_FULL: u16 = 507;

/// A detached signature is a few hundred bytes per key; anything far larger is not one.
const SIGNATURE_MAX: usize = 1 << 20;

/// Everything a download task needs, shared by all of them.
pub struct Fetcher {
    pub upstream: Upstream,
    /// Download tasks, so that a graceful stop can let them finish.
    pub downloads: TaskTracker,
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
    verifier: Arc<Verifier>,
    backoff: Backoff,
    /// Do not store packages that no index vouches for.
    strict: bool,
    /// Keeps the store under `max_cache_size`, when set.
    cap: Option<Arc<crate::prune::Cap>>,
}

/// What a fetch is asked to do.
pub struct Job {
    pub target: Target,
    /// A cached copy whose validators make the request conditional.
    pub cached: Option<Entry>,
    /// What the hash chain says the file must be.
    pub expected: Option<Expected>,
}

impl Fetcher {
    /// The upstream client and the backoff come from `config`.
    pub fn new(
        config: &Config,
        access: Arc<Access>,
        store: Arc<Store>,
        catalog: Arc<Catalog>,
        metrics: Arc<Metrics>,
        verifier: Arc<Verifier>,
        cap: Option<Arc<crate::prune::Cap>>,
    ) -> Result<Fetcher> {
        Ok(Fetcher {
            upstream: Upstream::new(config, access, metrics.clone())?,
            downloads: TaskTracker::new(),
            store,
            catalog,
            metrics,
            verifier,
            backoff: Backoff::new(&config.upstream),
            strict: config.strict,
            cap,
        })
    }

    /// Starts the download `lead` stands for, as a task of its own so that no client can cancel
    /// it; or, while its URL is backing off, fails the flight at once.
    pub fn start(self: &Arc<Self>, lead: Lead, job: Job) -> Result<()> {
        if let Err(e) = self.backoff.check(&job.target.key) {
            self.metrics.backoff_refusals.inc();
            lead.finish(Progress::Failed { status: 502, reason: e.to_string().into() });
            return Err(e);
        }
        self.downloads.spawn(self.clone().run(lead, job));
        Ok(())
    }

    /// Drives one flight to its end.
    async fn run(self: Arc<Self>, lead: Lead, job: Job) {
        let started = Instant::now();
        let key = job.target.key.clone();
        // An index that cannot be refreshed holds prune off until it can (see prune.rs).
        let index = matches!(job.target.kind, FileKind::Index | FileKind::ByHash);
        let last = match self.fetch(&lead, job).await {
            Ok(last) => {
                if index {
                    self.catalog.refresh_succeeded(&key);
                }
                self.backoff.succeeded(&key);
                tracing::debug!(%key, ms = started.elapsed().as_millis() as u64, "fetch done");
                last
            }
            Err(Error::StoreFull(e)) => {
                self.metrics.store_full.inc();
                if self.store.mark_full() {
                    tracing::warn!(
                        %key, error = %e,
                        "cache filesystem full: stored files are still served, the rest is passed through uncached"
                    );
                }
                Progress::Failed { status: STORE_FULL, reason: e.to_string().into() }
            }
            Err(e) => {
                match &e {
                    Error::Verify(_) => self.metrics.verify_failures.inc(),
                    _ => self.metrics.upstream_failures.inc(),
                };
                if e.status().is_server_error() {
                    self.backoff.failed(&key);
                    if index {
                        self.catalog.refresh_failed(&key, &e.to_string());
                    }
                }
                tracing::warn!(%key, error = %e, "download failed; nothing stored");
                Progress::Failed { status: e.status().as_u16(), reason: e.to_string().into() }
            }
        };
        lead.finish(last);
    }

    /// Fetches into the store, publishing progress; returns the last word for the followers.
    async fn fetch(&self, lead: &Lead, job: Job) -> Result<Progress> {
        let Job { target, cached, expected } = job;
        let mut resp = self.upstream.get(&target.upstreams, cached.as_ref()).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            if cached.is_none() {
                return Err(Error::Upstream("upstream answered 304 to an unconditional request".into()));
            }
            self.catalog.validated(&target.key);
            self.metrics.revalidated.inc();
            return Ok(Progress::NotModified);
        }
        let url = resp.url().to_string();
        let head = Arc::new(Head::of(resp.headers()));
        // No repository file is an HTML page: this is a login page, a captive portal or an
        // error page that a redirect led to, and storing it would serve it for the real file.
        if head.content_type.as_deref().is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html")) {
            return Err(Error::Upstream(format!(
                "{url} answered an HTML page instead of a repository file (a login or captive-portal page?)"
            )));
        }
        if let (Some(want), Some(got)) = (expected.as_ref().and_then(|e| e.size), head.content_length) {
            if want != got {
                return Err(Error::Verify(format!("{url} is {got} bytes; its index says {want}")));
            }
        }
        let store = self.store.clone();
        let size = head.content_length;
        let tmp = tokio::task::spawn_blocking(move || store.new_tmp_for(size)).await?.map_err(Error::store_write)?;
        let file = Arc::new(tmp.as_file().try_clone().map_err(Error::Store)?);
        let mut written = 0u64;
        let mut hasher = Sha256::new();
        let mut resumes = 0;
        // The last byte is held back until the file is verified and committed: a client that has
        // the whole file can rely on it being in the store, and nobody ever gets a complete bad file.
        // Chain roots, which may need a signature check, and small index files are held back
        // whole, so a bad one is answered with a clean 502 instead of a cut body. Large ones
        // stream: a client would time out waiting for the headers of a slow 10 MB index.
        let small_index = matches!(target.kind, FileKind::Index | FileKind::ByHash)
            && expected.as_ref().and_then(|e| e.size).is_some_and(|s| s <= HOLD_WHOLE_MAX);
        let hold_whole = Root::of(&target.key).is_some() || small_index;
        let publish = |written: u64| {
            if hold_whole {
                return;
            }
            let visible = match head.content_length {
                Some(len) => written.min(len.saturating_sub(1)),
                None => written,
            };
            lead.flight.publish(Progress::Body {
                head: head.clone(),
                file: file.clone(),
                written: visible,
                done: false,
            })
        };
        publish(0);
        loop {
            let outcome = self.receive(resp, &file, &mut hasher, &mut written, &publish).await;
            let Err(e) = outcome else { break };
            let validator = head.etag.as_deref().or(head.last_modified.as_deref());
            let Some(validator) = validator.filter(|_| resumes < self.upstream.config.resume_attempts) else {
                return Err(e);
            };
            resumes += 1;
            tracing::info!(%url, offset = written, error = %e, "resuming interrupted download");
            resp = self.upstream.resume(&url, written, validator).await?;
        }
        if let Some(expected) = head.content_length {
            if expected != written {
                return Err(Error::Upstream(format!("{url}: got {written} bytes, expected {expected}")));
            }
        }
        let blob = hex::encode(hasher.finalize());
        if let Some(want) = &expected {
            if want.sha256 != blob {
                return Err(Error::Verify(format!("{url} has sha256 {blob}; {} says {}", want.source, want.sha256)));
            }
        }
        let done = Progress::Body { head: head.clone(), file: file.clone(), written, done: true };
        if self.strict && expected.is_none() && target.kind == FileKind::Package {
            tracing::info!(%url, "strict: no index vouches for this package; passed through, not stored");
            return Ok(done);
        }

        // With a keyring, a Release or repomd.xml is checked against its detached signature
        // before anyone gets it, so that a pair that does not verify is refused as a whole.
        let signature = match Root::of(&target.key) {
            Some(root @ (Root::Release | Root::Repomd)) if self.verifier.has_keyring(&target) => {
                self.signature(&url, root).await
            }
            _ => None,
        };
        let (me, checked_target, tmp_path) = (self.shared(), target.clone(), tmp.path().to_path_buf());
        let signature_bytes = signature.as_ref().map(|(bytes, _)| bytes.clone());
        let trusted = blocking(move || {
            let signature = signature_bytes.as_deref();
            me.verifier.check_root(&me.catalog, &me.store, &checked_target, &tmp_path, signature)
        })
        .await?;
        if let Some((signed_key, signed_blob)) = trusted.as_ref().and_then(|t| t.signed.as_ref()) {
            self.catalog.mark_verified(signed_key, signed_blob);
        }
        let signature_only = matches!(Root::of(&target.key), Some(Root::ReleaseGpg | Root::RepomdAsc));
        if signature_only && trusted.is_none() && self.verifier.has_keyring(&target) {
            tracing::info!(%url, "no stored file to check this signature against; passed through, not stored");
            return Ok(done);
        }
        let store = self.store.clone();
        let hash = blob.clone();
        blocking(move || store.commit(tmp, &hash).map_err(Error::store_write)).await?;
        if let Some(cap) = &self.cap {
            cap.check(&blob);
        }
        self.catalog.put(
            &target.key,
            Entry {
                blob: blob.clone(),
                size: written,
                etag: head.etag.clone(),
                last_modified: head.last_modified.clone(),
                content_type: head.content_type.clone(),
                validated_at: now_secs(),
                verified: expected.is_some() || trusted.is_some(),
            },
        );
        // The signature that vouched for this root is kept beside it, so that clients get the
        // pair that was checked together.
        if let (Some((bytes, head)), Some(_)) = (signature, &trusted) {
            let suffix = if target.key.ends_with("/Release") { ".gpg" } else { ".asc" };
            let key = format!("{}{suffix}", target.key);
            if let Err(e) = self.keep_signature(&key, bytes, &head).await {
                tracing::warn!(%key, error = %e, "checked signature not stored; it is fetched again when asked for");
            }
        }
        // Learned before the last byte goes out: by the time a client asks for what this index
        // lists, the proxy knows what each file must hash to.
        self.learn(&target, &blob, trusted, expected.map(|e| e.role)).await;
        Ok(done)
    }

    /// The detached signature beside the root at `url`, from the same upstream; `None` when
    /// upstream has none or cannot give it now (the root then stays untrusted until a client's
    /// own request for the signature checks it).
    async fn signature(&self, url: &str, root: Root) -> Option<(Vec<u8>, Head)> {
        let suffix = if root == Root::Release { ".gpg" } else { ".asc" };
        let signature_url = format!("{url}{suffix}");
        let mut resp = match self.upstream.get(std::slice::from_ref(&signature_url), None).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::info!(url = %signature_url, error = %e, "no detached signature: the root stays untrusted");
                return None;
            }
        };
        let head = Head::of(resp.headers());
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) if bytes.len() + chunk.len() <= SIGNATURE_MAX => bytes.extend_from_slice(&chunk),
                Ok(Some(_)) => {
                    tracing::warn!(url = %signature_url, "detached signature larger than {SIGNATURE_MAX} bytes: ignored");
                    return None;
                }
                Ok(None) => return Some((bytes, head)),
                Err(e) => {
                    tracing::info!(url = %signature_url, error = %chain(&e), "detached signature broke off: the root stays untrusted");
                    return None;
                }
            }
        }
    }

    /// Stores a checked detached signature under its own key.
    async fn keep_signature(&self, key: &str, bytes: Vec<u8>, head: &Head) -> Result<()> {
        let blob = hex::encode(Sha256::digest(&bytes));
        let (store, hash, size) = (self.store.clone(), blob.clone(), bytes.len() as u64);
        blocking(move || {
            let mut tmp = store.new_tmp().map_err(Error::store_write)?;
            std::io::Write::write_all(&mut tmp, &bytes).map_err(Error::store_write)?;
            store.commit(tmp, &hash).map_err(Error::store_write)?;
            Ok(())
        })
        .await?;
        let entry = Entry {
            blob,
            size,
            etag: head.etag.clone(),
            last_modified: head.last_modified.clone(),
            content_type: head.content_type.clone(),
            validated_at: now_secs(),
            verified: true,
        };
        self.catalog.put(key, entry);
        Ok(())
    }

    /// Records what a stored index vouches for, from its stored blob, off the async workers.
    /// A parse failure is logged, not fatal: the file itself matched its hash; only what it
    /// lists stays unverified.
    async fn learn(&self, target: &Target, blob: &str, trusted: Option<Trusted>, role: Option<Role>) {
        let (me, target, blob) = (self.shared(), target.clone(), blob.to_string());
        let key = target.key.clone();
        let learned =
            blocking(move || me.verifier.learn(&me.store, &me.catalog, &target, &blob, trusted.as_ref(), role)).await;
        match learned {
            Ok(learned) if learned.files == 0 => {}
            Ok(learned) => {
                let (files, verified, dropped) = (learned.files, learned.verified, learned.dropped);
                tracing::info!(%key, files, verified, dropped, "index learned");
            }
            Err(e) => {
                self.metrics.verify_failures.inc();
                tracing::warn!(%key, error = %e, "index could not be read; what it lists stays unverified");
            }
        }
    }

    fn shared(&self) -> Shared {
        Shared { catalog: self.catalog.clone(), store: self.store.clone(), verifier: self.verifier.clone() }
    }

    /// Appends one response body to the file, publishing progress as chunks land.
    async fn receive(
        &self,
        resp: Response,
        file: &Arc<std::fs::File>,
        hasher: &mut Sha256,
        written: &mut u64,
        publish: &impl Fn(u64),
    ) -> Result<()> {
        let window = Duration::from_secs(self.upstream.config.low_speed_secs.max(1));
        let min_bytes = self.upstream.config.min_rate_bytes * window.as_secs();
        let (mut window_start, mut window_bytes) = (Instant::now(), 0u64);
        // Whatever chunks are already waiting go to disk in one blocking call.
        let mut chunks = resp.bytes_stream().ready_chunks(64);
        while let Some(batch) = chunks.next().await {
            let mut good = Vec::with_capacity(batch.len());
            let mut failure = None;
            for chunk in batch {
                match chunk {
                    Ok(bytes) => good.push(bytes),
                    Err(e) => {
                        failure = Some(Error::Upstream(chain(&e)));
                        break;
                    }
                }
            }
            let n: u64 = good.iter().map(|b| b.len() as u64).sum();
            let (writer, mut h, offset) = (file.clone(), std::mem::take(hasher), *written);
            *hasher = tokio::task::spawn_blocking(move || -> std::io::Result<Sha256> {
                use std::os::unix::fs::FileExt;
                let mut at = offset;
                for bytes in good {
                    writer.write_all_at(&bytes, at)?;
                    h.update(&bytes);
                    at += bytes.len() as u64;
                }
                Ok(h)
            })
            .await?
            .map_err(Error::store_write)?;
            *written += n;
            self.metrics.bytes_from_upstream.inc_by(n);
            publish(*written);
            if let Some(e) = failure {
                return Err(e);
            }
            window_bytes += n;
            if window_start.elapsed() >= window {
                if window_bytes < min_bytes {
                    return Err(Error::Upstream(format!(
                        "transfer slower than {} bytes/s for {} s",
                        self.upstream.config.min_rate_bytes,
                        window.as_secs()
                    )));
                }
                (window_start, window_bytes) = (Instant::now(), 0);
            }
        }
        Ok(())
    }
}

/// What blocking verification work needs, owned so it can move to a blocking thread.
struct Shared {
    catalog: Arc<Catalog>,
    store: Arc<Store>,
    verifier: Arc<Verifier>,
}

/// Runs blocking work (gpgv, parsing, fsync) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await?
}
