//! Accepting connections: HTTP/1.1 with keep-alive and pipelining on already-bound listeners,
//! and a graceful stop — no new connections, then a bounded wait for requests and downloads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::handler::Proxy;

/// How long a stop waits for running requests and downloads before abandoning them.
const DRAIN: Duration = Duration::from_secs(20);

/// Serves until `shutdown` resolves, then drains. Tests hand in listeners bound to port 0.
pub async fn listen(proxy: Arc<Proxy>, listeners: Vec<TcpListener>, shutdown: impl Future<Output = ()>) {
    let graceful = Arc::new(GracefulShutdown::new());
    let mut acceptors = tokio::task::JoinSet::new();
    for listener in listeners {
        let (proxy, graceful) = (proxy.clone(), graceful.clone());
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
                let _ = stream.set_nodelay(true);
                let proxy = proxy.clone();
                let service = service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, client).await) }
                });
                // Pipelined requests are answered in order either way; `pipeline_flush` is left
                // off because with it hyper drops the automatic 400 for an unparsable request.
                let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%client, error = %e, "connection ended");
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
