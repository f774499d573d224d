//! A real HTTP upstream on 127.0.0.1:0 serving a directory, recording every request (path,
//! method, Range and If-Range), with Last-Modified/ETag validators, conditional GETs and Range.
//! A path can be gated: its body stops after a first part until the test opens the gate, which
//! makes "bytes reached the client before upstream finished" provable without sleeping. A path
//! can also be answered with an error status, cut, stalled or slowed to a trickle; files the
//! test deletes from the directory are gone upstream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

type Body = BoxBody<Bytes, std::io::Error>;

struct Gate {
    first_part: usize,
    open: watch::Receiver<bool>,
}

/// How the next response for a path goes slow after its first part.
#[derive(Clone, Copy)]
pub enum Slow {
    /// Nothing more is sent, and the connection stays open.
    Stall,
    /// `bytes` more every `every`, until the body is complete.
    Trickle { bytes: usize, every: std::time::Duration },
}

#[derive(Default)]
struct State {
    /// GET and HEAD requests per path, conditional ones included.
    requests: HashMap<String, u64>,
    /// Every request in order: (path, method).
    methods: Vec<(String, String)>,
    /// If-Range headers received, with their paths.
    if_ranges: Vec<(String, String)>,
    /// Paths answered with this status, whatever the directory holds.
    failures: HashMap<String, StatusCode>,
    /// Paths whose next response goes slow after a first part of so many bytes.
    slow: HashMap<String, (usize, Slow)>,
    gates: HashMap<String, Gate>,
    /// Paths whose next response breaks off after this many body bytes.
    cuts: HashMap<String, usize>,
    /// Range headers received, with their paths.
    ranges: Vec<(String, String)>,
    /// Paths answered with a redirect to a URL.
    redirects: HashMap<String, String>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub root: PathBuf,
    scheme: &'static str,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Opens a gated path's body when dropped or `open`ed.
pub struct GateKey(watch::Sender<bool>);

impl GateKey {
    pub fn open(&self) {
        self.0.send_replace(true);
    }
}

impl Drop for GateKey {
    fn drop(&mut self) {
        self.open();
    }
}

impl Upstream {
    pub fn start(root: &Path) -> Upstream {
        Self::start_with(root, None)
    }

    /// The same over https, with a throwaway certificate for 127.0.0.1; returns the PEM of
    /// the certificate to trust.
    pub fn start_tls(root: &Path) -> (Upstream, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let pem = cert.cert.pem();
        let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let mut upstream = Self::start_with(root, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))));
        upstream.scheme = "https";
        (upstream, pem)
    }

    fn start_with(root: &Path, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        // Bound here with std, so that starting works from inside an async test too.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (root_owned, shared) = (root.to_path_buf(), state.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (root, state, tls) = (root_owned.clone(), shared.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (root, state) = (root.clone(), state.clone());
                        async move { Ok::<_, Infallible>(answer(&root, &state, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                            Err(_) => return,
                        },
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                    };
                });
            }
        });
        Upstream { addr, root: root.to_path_buf(), scheme: "http", state, runtime: Some(runtime) }
    }

    /// `http://127.0.0.1:PORT` (or https)
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `127.0.0.1:PORT`, as `--allow-host` takes it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Requests so far for exactly this path.
    pub fn count(&self, path: &str) -> u64 {
        self.state.lock().unwrap().requests.get(path).copied().unwrap_or(0)
    }

    /// Requests so far for paths ending in `suffix`.
    pub fn count_ending(&self, suffix: &str) -> u64 {
        let state = self.state.lock().unwrap();
        state.requests.iter().filter(|(p, _)| p.ends_with(suffix)).map(|(_, n)| n).sum()
    }

    pub fn total(&self) -> u64 {
        self.state.lock().unwrap().requests.values().sum()
    }

    /// The next response for `path` breaks off after `at` body bytes, as a dropped connection.
    pub fn cut_once(&self, path: &str, at: usize) {
        self.state.lock().unwrap().cuts.insert(path.to_string(), at);
    }

    /// From now on, `path` is answered `302 Found` to `location`.
    pub fn redirect(&self, path: &str, location: &str) {
        self.state.lock().unwrap().redirects.insert(path.to_string(), location.to_string());
    }

    /// `path` is served as a file again.
    pub fn unredirect(&self, path: &str) {
        self.state.lock().unwrap().redirects.remove(path);
    }

    /// The methods `path` was asked with, in order.
    pub fn methods(&self, path: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.methods.iter().filter(|(p, _)| p == path).map(|(_, m)| m.clone()).collect()
    }

    /// The If-Range headers `path` was asked with, in order.
    pub fn if_ranges(&self, path: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.if_ranges.iter().filter(|(p, _)| p == path).map(|(_, r)| r.clone()).collect()
    }

    /// From now on, `path` is answered with `status` (a 5xx, say) until `heal`ed.
    pub fn fail(&self, path: &str, status: u16) {
        self.state.lock().unwrap().failures.insert(path.to_string(), StatusCode::from_u16(status).unwrap());
    }

    pub fn heal(&self, path: &str) {
        self.state.lock().unwrap().failures.remove(path);
    }

    /// The next response for `path` sends `first_part` bytes, then goes slow as `how` says.
    pub fn slow_once(&self, path: &str, first_part: usize, how: Slow) {
        self.state.lock().unwrap().slow.insert(path.to_string(), (first_part, how));
    }

    /// The Range headers `path` was asked with, in order.
    pub fn ranges(&self, path: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.ranges.iter().filter(|(p, _)| p == path).map(|(_, r)| r.clone()).collect()
    }

    /// From now on, `path`'s body stops after `first_part` bytes until the key is opened; with
    /// `first_part` 0 the whole answer waits.
    pub fn gate(&self, path: &str, first_part: usize) -> GateKey {
        let (key, open) = watch::channel(false);
        self.state.lock().unwrap().gates.insert(path.to_string(), Gate { first_part, open });
        GateKey(key)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn http_date(t: std::time::SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

async fn answer(root: &Path, state: &Mutex<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let (gate, cut, slow) = {
        let mut state = state.lock().unwrap();
        *state.requests.entry(path.clone()).or_default() += 1;
        state.methods.push((path.clone(), req.method().to_string()));
        if let Some(range) = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()) {
            state.ranges.push((path.clone(), range.to_string()));
        }
        if let Some(if_range) = req.headers().get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
            state.if_ranges.push((path.clone(), if_range.to_string()));
        }
        if let Some(code) = state.failures.get(&path) {
            return status(*code);
        }
        if let Some(location) = state.redirects.get(&path) {
            return Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, location)
                .body(empty())
                .unwrap();
        }
        let cut = state.cuts.remove(&path);
        let slow = if req.method() == hyper::Method::GET { state.slow.remove(&path) } else { None };
        (state.gates.get(&path).map(|g| (g.first_part, g.open.clone())), cut, slow)
    };
    // A gate with no first part holds the whole answer, 304 included.
    if let Some((0, mut open)) = gate.clone() {
        let _ = open.wait_for(|o| *o).await;
    }
    let file = root.join(path.trim_start_matches('/'));
    let (Ok(meta), Ok(content)) = (std::fs::metadata(&file), std::fs::read(&file)) else {
        return status(StatusCode::NOT_FOUND);
    };
    if !meta.is_file() {
        return status(StatusCode::NOT_FOUND);
    }
    // Whole seconds, as HTTP dates have them, so a copy's Last-Modified compares equal.
    let mtime = meta.modified().unwrap();
    let secs = mtime.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let last_modified = http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    let etag = format!(
        "\"{:x}-{:x}\"",
        content.len(),
        meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    );
    let header = |name| req.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let unchanged = match (header(header::IF_NONE_MATCH), header(header::IF_MODIFIED_SINCE)) {
        (Some(inm), _) => inm == etag,
        (None, Some(ims)) => ims == last_modified,
        _ => false,
    };
    let mut resp =
        Response::builder().header(header::LAST_MODIFIED, &last_modified).header(header::ETAG, &etag).header(
            header::CONTENT_TYPE,
            if path.ends_with(".html") { "text/html; charset=utf-8" } else { "application/octet-stream" },
        );
    if unchanged {
        return resp.status(StatusCode::NOT_MODIFIED).body(empty()).unwrap();
    }
    let mut body = Bytes::from(content);
    if let Some(range) = header(header::RANGE).and_then(|r| r.strip_prefix("bytes=")) {
        let if_range_ok = header(header::IF_RANGE).is_none_or(|v| v == etag || v == last_modified);
        if let (true, Some((start, ""))) = (if_range_ok, range.split_once('-')) {
            let start: usize = start.parse().unwrap();
            let total = body.len();
            resp = resp
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{}/{total}", total - 1));
            body = body.slice(start..);
        }
    }
    resp = resp.header(header::CONTENT_LENGTH, body.len());
    if req.method() == hyper::Method::HEAD {
        return resp.body(empty()).unwrap();
    }
    if let Some(at) = cut.filter(|at| *at < body.len()) {
        let frames = vec![Ok(Frame::data(body.slice(..at))), Err(std::io::Error::other("cut"))];
        return resp.body(StreamBody::new(futures_util::stream::iter(frames)).boxed()).unwrap();
    }
    if let Some((first_part, how)) = slow.filter(|(at, _)| *at < body.len()) {
        return resp.body(slow_body(body, first_part, how)).unwrap();
    }
    match gate {
        Some((first_part, open)) if !*open.borrow() && body.len() > first_part => {
            let (head, tail) = (body.slice(..first_part), body.slice(first_part..));
            let stream = futures_util::stream::unfold(Some((head, tail)), move |parts| {
                let mut open = open.clone();
                async move {
                    let (head, tail) = parts?;
                    if !head.is_empty() {
                        return Some((Ok::<_, std::io::Error>(Frame::data(head)), Some((Bytes::new(), tail))));
                    }
                    let _ = open.wait_for(|o| *o).await;
                    if tail.is_empty() {
                        return None;
                    }
                    Some((Ok(Frame::data(tail)), None))
                }
            });
            resp.body(StreamBody::new(stream).boxed()).unwrap()
        }
        _ => resp.body(full(body)).unwrap(),
    }
}

/// `body` sent as `first_part` bytes, then slowly: pacing a slow network, not synchronising.
fn slow_body(body: Bytes, first_part: usize, how: Slow) -> Body {
    let first = futures_util::stream::iter([Ok(Frame::data(body.slice(..first_part)))]);
    let rest = body.slice(first_part..);
    match how {
        Slow::Stall => StreamBody::new(futures_util::StreamExt::chain(first, futures_util::stream::pending())).boxed(),
        Slow::Trickle { bytes, every } => {
            let trickle = futures_util::stream::unfold(rest, move |rest| async move {
                if rest.is_empty() {
                    return None;
                }
                tokio::time::sleep(every).await;
                let n = bytes.min(rest.len());
                Some((Ok(Frame::data(rest.slice(..n))), rest.slice(n..)))
            });
            StreamBody::new(futures_util::StreamExt::chain(first, trickle)).boxed()
        }
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn empty() -> Body {
    full(Bytes::new())
}

fn status(code: StatusCode) -> Response<Body> {
    Response::builder().status(code).body(empty()).unwrap()
}
