//! Accepting connections: HTTP/1.1 with keep-alive and pipelining on already-bound listeners,
//! held to the limits of `[proxy.connections]` — a header-read timeout (which also closes a
//! kept-alive connection left idle), an idle timeout for connections where no byte moves, a cap
//! on connections and one per client address — and a graceful stop: no new connections, then a
//! bounded wait for requests and downloads.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::config::ConnectionConfig;
use crate::handler::Proxy;
use crate::metrics::Metrics;

/// How long a stop waits for running requests and downloads before abandoning them.
const DRAIN: Duration = Duration::from_secs(20);

/// What a connection refused at a cap is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 52\r\n\r\nvzpkg: too many connections; retry in a few seconds\n";

/// Serves until `shutdown` resolves, then drains. Tests hand in listeners bound to port 0.
pub async fn listen(proxy: Arc<Proxy>, listeners: Vec<TcpListener>, shutdown: impl Future<Output = ()>) {
    let graceful = Arc::new(GracefulShutdown::new());
    let limits = Arc::new(Limits::new(&proxy.config.connections, proxy.metrics.clone()));
    let mut acceptors = tokio::task::JoinSet::new();
    for listener in listeners {
        let (proxy, graceful, limits) = (proxy.clone(), graceful.clone(), limits.clone());
        acceptors.spawn(async move {
            loop {
                let (stream, client) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(slot) = limits.admit(client.ip()) else {
                    // Best effort: a client whose socket buffer is full gets the close alone.
                    let _ = stream.try_write(BUSY);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let activity = Activity::new();
                let stream = Watched { inner: stream, activity: activity.clone() };
                let (handler, busy) = (proxy.clone(), activity.clone());
                let service = service_fn(move |req| {
                    let (handler, busy) = (handler.clone(), busy.clone());
                    async move {
                        // Waiting for upstream's answer is not idleness: the clock stops meanwhile.
                        let _busy = busy.handling();
                        Ok::<_, std::convert::Infallible>(handler.handle(req, client).await)
                    }
                });
                // Pipelined requests are answered in order either way; `pipeline_flush` is left
                // off because with it hyper drops the automatic 400 for an unparsable request.
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                let (idle, metrics) = (limits.idle_timeout, proxy.metrics.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    tokio::select! {
                        ended = conn => match ended {
                            Err(e) if e.is_timeout() => {
                                metrics.header_timeouts.inc();
                                tracing::debug!(%client, "request headers not received in time: closed");
                            }
                            Err(e) => tracing::debug!(%client, error = %e, "connection ended"),
                            Ok(()) => {}
                        },
                        () = activity.idle_for(idle) => {
                            metrics.idle_timeouts.inc();
                            tracing::info!(%client, secs = idle.as_secs(), "no bytes moved on the connection: closed");
                        }
                    }
                });
            }
        });
    }
    shutdown.await;
    acceptors.shutdown().await;
    // Said once the listeners are closed, so that whoever reads it knows new connections fail.
    tracing::info!("stopping: listeners closed; waiting for running requests and downloads");
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| unreachable!("acceptors are gone"));
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}: closing them");
    }
    proxy.fetcher.downloads.close();
    if tokio::time::timeout(DRAIN, proxy.fetcher.downloads.wait()).await.is_err() {
        tracing::warn!(
            "downloads still running after {DRAIN:?}: abandoned (their partial files are removed at next start)"
        );
    }
    let flushing = proxy.clone();
    let _ = tokio::task::spawn_blocking(move || flushing.flush()).await;
}

/// The connection caps, and who holds how many connections.
struct Limits {
    max: usize,
    max_per_client: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    open: AtomicUsize,
    /// Open connections per client address, and whether its refusal was logged.
    per_client: Mutex<HashMap<IpAddr, (usize, bool)>>,
    /// Whether the refusal at the overall cap was logged; cleared when below it again.
    at_cap: AtomicBool,
    metrics: Arc<Metrics>,
}

/// One admitted connection; frees its place when dropped.
struct Slot {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Limits {
    fn new(config: &ConnectionConfig, metrics: Arc<Metrics>) -> Limits {
        Limits {
            max: config.max,
            max_per_client: config.max_per_client,
            header_timeout: config.header_timeout(),
            idle_timeout: config.idle_timeout(),
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            at_cap: AtomicBool::new(false),
            metrics,
        }
    }

    /// A place for a new connection from `client`, or `None` (logged once per episode) at a cap.
    fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Slot> {
        let mut per_client = self.per_client.lock().unwrap();
        if self.open.load(Ordering::Relaxed) >= self.max {
            self.metrics.connections_refused.inc();
            if !self.at_cap.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max = self.max,
                    "connection cap reached: new connections are answered 503 until some close \
                     (raise [proxy.connections] max if this load is expected)"
                );
            }
            return None;
        }
        let (held, warned) = per_client.entry(client).or_insert((0, false));
        if *held >= self.max_per_client {
            self.metrics.connections_refused.inc();
            if !*warned {
                *warned = true;
                tracing::warn!(
                    %client,
                    max_per_client = self.max_per_client,
                    "per-client connection cap reached: this client's new connections are answered 503 until some close"
                );
            }
            return None;
        }
        *held += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections_open.inc();
        Some(Slot { limits: self.clone(), client })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let limits = &self.limits;
        let mut per_client = limits.per_client.lock().unwrap();
        if let Some((held, warned)) = per_client.get_mut(&self.client) {
            *held -= 1;
            *warned = false;
            if *held == 0 {
                per_client.remove(&self.client);
            }
        }
        limits.open.fetch_sub(1, Ordering::Relaxed);
        if limits.at_cap.swap(false, Ordering::Relaxed) {
            tracing::info!(max = limits.max, "below the connection cap again");
        }
        limits.metrics.connections_open.dec();
    }
}

/// Whether bytes moved on a connection, and whether a request is being handled on it. A count,
/// not a time: noting a move costs one atomic add, no clock read, on every read and write.
struct Activity {
    moves: AtomicU64,
    handling: AtomicUsize,
}

/// Marks a request as being handled until dropped.
struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.moved();
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity { moves: AtomicU64::new(0), handling: AtomicUsize::new(0) })
    }

    fn moved(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    fn handling(self: &Arc<Self>) -> Handling {
        self.handling.fetch_add(1, Ordering::Relaxed);
        Handling(self.clone())
    }

    /// Resolves once a whole `limit` went by with no byte moving and no request being handled:
    /// so between `limit` and twice that after the last byte.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let before = self.moves.load(Ordering::Relaxed);
            tokio::time::sleep(limit).await;
            if self.handling.load(Ordering::Relaxed) == 0 && self.moves.load(Ordering::Relaxed) == before {
                return;
            }
        }
    }
}

/// A client's stream that notes when bytes move.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
