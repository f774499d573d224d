//! The proxy under faults and hostile load: an upstream that breaks off, stalls, answers 5xx,
//! sends wrong bytes or a login page; clients that crawl, vanish or stop reading; a SIGKILL in
//! the middle of 20 downloads; a full cache filesystem; a thousand idle connections, connection
//! caps, and 300 half-sent requests. After each: every blob in the store is named by its own
//! hash, nothing is left half-written, the proxy still answers, and the next request is right.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::util::clients::{Apt, Via};
use crate::util::repo::{deb_repo, noise, Pkg};
use crate::util::upstream::Slow;
use crate::util::{check_store, counter, eventually, http, sha256, tmp_files, ProxyProcess, Upstream};

/// An upstream tree with one package file per `(path, size)`, each of its own content.
fn upstream_with(dir: &std::path::Path, files: &[(&str, usize)]) -> (Upstream, Vec<Vec<u8>>) {
    let mut contents = Vec::new();
    for (seed, (path, size)) in files.iter().enumerate() {
        let content = noise(*size, 1000 + seed as u64);
        let file = dir.join("upstream").join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &content).unwrap();
        contents.push(content);
    }
    (Upstream::start(&dir.join("upstream")), contents)
}

fn remap(upstream: &Upstream) -> String {
    format!("debian={}/debian", upstream.url())
}

/// A client from another loopback address: the proxy counts connections per address.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder().no_proxy().local_address(IpAddr::V4(Ipv4Addr::from(ip))).build().unwrap()
}

/// A raw connection to `addr` from loopback address `ip`.
async fn connect_from(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((ip, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until the proxy closes the connection (EOF or reset); the bytes it sent, or `None`
/// if it was still open at `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// GETs `url` and checks the whole body against `want`; returns how it was answered.
async fn get_right(client: &reqwest::Client, url: &str, want: &[u8]) -> String {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    let cache = resp.headers()["x-vzpkg-cache"].to_str().unwrap().to_string();
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(want), "{url}");
    cache
}

/// What a client gets: the status, and the body or the error that cut it.
async fn fetch(url: &str) -> (u16, Result<Vec<u8>, String>) {
    let resp = http().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.map(|b| b.to_vec()).map_err(|e| e.to_string()))
}

/// Lets the test process hold thousands of sockets.
fn raise_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(hard >= 4096, "the open-file limit ({hard}) is too low for this test");
}

/// Each upstream fault in turn — a reset mid-body, a stall, a 5xx, a redirect to a login page —
/// leaves no blob and no temporary file, and once upstream is healthy again the same URL is
/// answered whole and stored.
///
/// What breaks it: a partial body committed at a reset or stall, an error status or an HTML
/// page stored as the package, a temporary file left behind, a failure remembered after the
/// fault is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_store_nothing_and_the_next_request_is_right() {
    const CUT: &str = "/debian/pool/main/cut_1.0_all.deb";
    const STALL: &str = "/debian/pool/main/stall_1.0_all.deb";
    const FAIL: &str = "/debian/pool/main/fail_1.0_all.deb";
    const LOGIN: &str = "/debian/pool/main/login_1.0_all.deb";
    let tmp = tempfile::tempdir().unwrap();
    let files = [(CUT, 1 << 20), (STALL, 1 << 20), (FAIL, 100_000), (LOGIN, 100_000), ("/login.html", 2000)];
    let (upstream, contents) = upstream_with(tmp.path(), &files);
    let config =
        "[proxy.upstream]\nlow_speed_secs = 1\nmin_rate_bytes = 100000\nresume_attempts = 0\nbackoff_secs = 0\n";
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), config, &["--remap", &remap(&upstream)]);
    let url = |path: &str| format!("{}{path}", proxy.url());

    upstream.cut_once(CUT, 300_000);
    let (status, body) = fetch(&url(CUT)).await;
    assert!(status != 200 || body.is_err(), "a reset transfer was answered whole");
    upstream.slow_once(STALL, 64 * 1024, Slow::Stall);
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), fetch(&url(STALL))).await.unwrap();
    assert!(status != 200 || body.is_err(), "a stalled transfer was answered whole");
    upstream.fail(FAIL, 503);
    let (status, _) = fetch(&url(FAIL)).await;
    assert_eq!(status, 503, "upstream's 5xx is passed on");
    upstream.redirect(LOGIN, &format!("{}/login.html", upstream.url()));
    let (status, body) = fetch(&url(LOGIN)).await;
    assert_eq!(
        status,
        502,
        "a login page is not a package: {:?}",
        body.map(|b| String::from_utf8_lossy(&b).into_owned())
    );

    assert!(check_store(&proxy.cache_dir).is_empty(), "a fault left a blob");
    eventually("no temporary file is left", || async { tmp_files(&proxy.cache_dir) == 0 }).await;
    proxy.log_with("answered an HTML page");

    upstream.heal(FAIL);
    upstream.unredirect(LOGIN);
    for ((path, _), content) in files.iter().zip(&contents).take(4) {
        assert_eq!(get_right(&http(), &format!("{}{path}", proxy.url()), content).await, "miss", "{path}");
        assert_eq!(get_right(&http(), &format!("{}{path}", proxy.url()), content).await, "hit", "{path}");
    }
    let mut stored = check_store(&proxy.cache_dir);
    stored.sort();
    let mut want: Vec<String> = contents[..4].iter().map(|c| sha256(c)).collect();
    want.sort();
    assert_eq!(stored, want);
}

/// A package whose bytes differ from what its index says is refused, not stored, and the right
/// bytes are stored once upstream has them.
#[test]
fn wrong_bytes_from_upstream_are_refused_and_the_right_ones_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let debs = deb_repo(&tmp.path().join("upstream/debian"), &[Pkg::new("vzt-wrong", "1.0", 50_000)]);
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let proxy = ProxyProcess::start(
        &tmp.path().join("cache"),
        "[proxy.upstream]\nbackoff_secs = 0\n",
        &["--remap", &remap(&upstream)],
    );
    let base = format!("{}/debian", proxy.url());
    let apt = Apt::new(&tmp.path().join("apt"), Via::Remap { base: &base });
    apt.get(&["update"]);
    let deb = upstream.root.join("debian").join(&debs[0]);
    let good = std::fs::read(&deb).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(&deb, &bad).unwrap();
    let url = format!("{base}/{}", debs[0]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, body) = runtime.block_on(fetch(&url));
    assert!(status != 200 || body.is_err(), "wrong bytes were answered whole");
    assert!(!check_store(&proxy.cache_dir).contains(&sha256(&bad)), "wrong bytes reached the store");

    std::fs::write(&deb, &good).unwrap();
    runtime.block_on(async {
        assert_eq!(get_right(&http(), &url, &good).await, "miss");
        assert_eq!(get_right(&http(), &url, &good).await, "hit");
    });
    assert!(check_store(&proxy.cache_dir).contains(&sha256(&good)));
}

/// A client that crawls gets every byte; one that vanishes mid-download cancels nothing; one
/// that stops reading is cut off after the idle timeout; the proxy serves on.
///
/// What breaks it: no idle timeout (the stuck connection stays open, and the wait for its
/// close times out), or a download that dies with its client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_vanishing_and_stuck_clients() {
    const BIG: &str = "/debian/pool/main/big_1.0_all.deb";
    const COLD: &str = "/debian/pool/main/cold_1.0_all.deb";
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, contents) = upstream_with(tmp.path(), &[(BIG, 16 << 20), (COLD, 4 << 20)]);
    let config = "[proxy.connections]\nidle_timeout_secs = 1\n";
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), config, &["--remap", &remap(&upstream)]);
    let url = |path: &str| format!("{}{path}", proxy.url());
    get_right(&http(), &url(BIG), &contents[0]).await;

    // A crawling reader: paced like a slow link, never stopped for a whole second.
    let mut resp = http().get(url(BIG)).send().await.unwrap();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
        if body.len() < (2 << 20) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(sha256(&body), sha256(&contents[0]), "the crawling client got the file whole");

    // A client that vanishes after the first bytes of a cold file.
    let gate = upstream.gate(COLD, 256 * 1024);
    let mut resp = http().get(url(COLD)).send().await.unwrap();
    resp.chunk().await.unwrap().expect("a first chunk");
    drop(resp);
    gate.open();
    let want = sha256(&contents[1]);
    eventually("the vanished client's download is stored", || async { check_store(&proxy.cache_dir).contains(&want) })
        .await;

    // A client that asks for 16 MiB and reads nothing: the socket buffers fill, no byte moves.
    let mut stuck = TcpStream::connect(proxy.addr).await.unwrap();
    stuck.write_all(format!("GET {BIG} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
    eventually("the stuck client is cut off", || async { counter(&proxy, "idle_timeouts").await == 1 }).await;
    let got = closed_by(&mut stuck, Instant::now() + Duration::from_secs(10)).await;
    let got = got.expect("the stuck connection was closed");
    assert!(got.len() < contents[0].len(), "the stuck client cannot have had it all");
    proxy.log_with("no bytes moved on the connection: closed");

    assert_eq!(get_right(&http(), &url(BIG), &contents[0]).await, "hit");
    assert_eq!(get_right(&http(), &url(COLD), &contents[1]).await, "hit");
    assert_eq!(check_store(&proxy.cache_dir).len(), 2);
    assert_eq!(upstream.count(COLD), 1, "the vanished client's download went on");
}

/// SIGKILL while 20 downloads are under way: nothing partial is in the store, the restart
/// removes the temporary files, and all 20 are then served whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_during_twenty_downloads_leaves_a_clean_store() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let paths: Vec<String> = (0..20).map(|i| format!("/debian/pool/main/f{i}_1.0_all.deb")).collect();
    let files: Vec<(&str, usize)> = paths.iter().map(|p| (p.as_str(), 1 << 20)).collect();
    let (upstream, contents) = upstream_with(tmp.path(), &files);
    let gates: Vec<_> = paths.iter().map(|p| upstream.gate(p, 128 * 1024)).collect();
    let proxy = ProxyProcess::start(&cache, "", &["--remap", &remap(&upstream)]);
    let mut responses = Vec::new();
    for path in &paths {
        let mut resp = http().get(format!("{}{path}", proxy.url())).send().await.unwrap();
        resp.chunk().await.unwrap().expect("a first chunk");
        responses.push(resp);
    }
    assert_eq!(tmp_files(&cache), 20, "20 downloads under way");
    proxy.kill_hard();
    for resp in responses {
        assert!(resp.bytes().await.is_err(), "a killed proxy cannot have sent a whole file");
    }
    assert!(check_store(&cache).is_empty(), "nothing partial reached the store");

    let proxy = ProxyProcess::start(&cache, "", &["--remap", &remap(&upstream)]);
    assert_eq!(tmp_files(&cache), 0, "the restart removed the unfinished downloads");
    drop(gates);
    for (path, content) in paths.iter().zip(&contents) {
        assert_eq!(get_right(&http(), &format!("{}{path}", proxy.url()), content).await, "miss");
    }
    assert_eq!(check_store(&cache).len(), 20);
}

/// Unmounts the tmpfs a test mounted, however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// On a full filesystem the proxy serves what it has and passes the rest through uncached,
/// says so once in its log and counts it; the store holds nothing partial.
///
/// What breaks it: a download that fails (or is cut) when the store has no room, a partial
/// blob or temporary file, or no word of it in the log and metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_filesystem_serves_what_it_has_and_passes_the_rest_through() {
    crate::util::rootfs::require_root();
    const SMALL: &str = "/debian/pool/main/small_1.0_all.deb";
    const BIG: &str = "/debian/pool/main/big_1.0_all.deb";
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, contents) = upstream_with(tmp.path(), &[(SMALL, 200_000), (BIG, 6 << 20)]);
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    nix::mount::mount(Some("tmpfs"), &cache, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=4m")).unwrap();
    let _mounted = Mounted(cache.clone());
    let proxy = ProxyProcess::start(&cache, "", &["--remap", &remap(&upstream)]);
    let url = |path: &str| format!("{}{path}", proxy.url());

    assert_eq!(get_right(&http(), &url(SMALL), &contents[0]).await, "miss");
    assert_eq!(get_right(&http(), &url(BIG), &contents[1]).await, "pass", "too big to store: passed through");
    assert_eq!(get_right(&http(), &url(SMALL), &contents[0]).await, "hit", "what is stored is still served");
    assert_eq!(get_right(&http(), &url(BIG), &contents[1]).await, "pass");
    assert!(counter(&proxy, "store_full").await >= 2, "both passes are counted");
    // The last request's own line comes after any warning it caused: lines keep their order.
    let pass_line = format!("url={BIG} status=200 cache=\"pass\"");
    eventually("both passes are logged", || async { proxy.log_text().matches(&pass_line).count() == 2 }).await;
    let log = proxy.log_text();
    assert_eq!(log.matches("cache filesystem full").count(), 1, "said once, not per request:\n{log}");
    assert_eq!(check_store(&cache), [sha256(&contents[0])]);
    assert_eq!(tmp_files(&cache), 0);
}

/// A thousand connections held open and silent: normal clients are still served, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_normal_clients() {
    raise_file_limit();
    const DEB: &str = "/debian/pool/main/a_1.0_all.deb";
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, contents) = upstream_with(tmp.path(), &[(DEB, 42_000)]);
    let config = "[proxy.connections]\nheader_timeout_secs = 120\n";
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), config, &["--remap", &remap(&upstream)]);
    let url = format!("{}{DEB}", proxy.url());
    get_right(&http(), &url, &contents[0]).await;

    let mut held = Vec::new();
    for i in 0..1000u32 {
        // 250 per address, under the per-client cap.
        held.push(connect_from([127, 0, 0, 2 + (i / 250) as u8], proxy.addr).await);
        // In hundreds, each taken before the next: a connection the kernel's accept queue had
        // no room for would wait for a retransmission, on a loaded machine for longer than the
        // test waits.
        if held.len() % 100 == 0 {
            let n = held.len() as u64;
            eventually("the proxy takes the connections", || async { counter(&proxy, "connections_open").await >= n })
                .await;
        }
    }
    let client = http();
    for _ in 0..50 {
        assert_eq!(get_right(&client, &url, &contents[0]).await, "hit");
    }
    assert_eq!(counter(&proxy, "connections_refused").await, 0);
    // Shut down, not only dropped: a descriptor a child process of another test inherited
    // would keep a dropped socket open.
    for mut stream in held {
        let _ = stream.shutdown().await;
    }
    drop(client);
    eventually("the connections are let go", || async { counter(&proxy, "connections_open").await < 10 }).await;
    assert_eq!(check_store(&proxy.cache_dir), [sha256(&contents[0])]);
}

/// Past the per-client cap a client's new connections get 503 while other clients are
/// served; past the overall cap every new connection does, until some close; each cap is
/// said once in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_answer_503_and_say_so() {
    const DEB: &str = "/debian/pool/main/a_1.0_all.deb";
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, contents) = upstream_with(tmp.path(), &[(DEB, 42_000)]);
    let config = "[proxy.connections]\nmax = 40\nmax_per_client = 10\n";
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), config, &["--remap", &remap(&upstream)]);
    let url = format!("{}{DEB}", proxy.url());
    get_right(&http(), &url, &contents[0]).await;

    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from([127, 0, 0, 2], proxy.addr).await);
    }
    // Accepted in order: by the time the proxy takes the 11th, it holds the first ten.
    let mut over = connect_from([127, 0, 0, 2], proxy.addr).await;
    let answer = closed_by(&mut over, Instant::now() + Duration::from_secs(30)).await.expect("refused and closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(get_right(&client_from([127, 0, 0, 9]), &url, &contents[0]).await, "hit", "others are served");
    proxy.log_with("per-client connection cap reached");

    eventually("only the ten held connections (and this question) are open", || async {
        counter(&proxy, "connections_open").await <= 11
    })
    .await;
    for ip in 3..6 {
        for _ in 0..10 {
            held.push(connect_from([127, 0, 0, ip], proxy.addr).await);
        }
    }
    let mut over = connect_from([127, 0, 0, 7], proxy.addr).await;
    let answer = closed_by(&mut over, Instant::now() + Duration::from_secs(30)).await.expect("refused and closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer));
    proxy.log_with("connection cap reached: new connections");

    for mut stream in held.drain(20..) {
        let _ = stream.shutdown().await;
    }
    let client = client_from([127, 0, 0, 8]);
    eventually("served again below the cap", || async {
        matches!(client.get(&url).send().await, Ok(resp) if resp.status() == 200)
    })
    .await;
    assert_eq!(get_right(&client, &url, &contents[0]).await, "hit");
    let log = proxy.log_with("below the connection cap again");
    assert_eq!(log.matches("connection cap reached: new connections").count(), 1, "said once:\n{log}");
    assert!(counter(&proxy, "connections_refused").await >= 2);
    assert_eq!(check_store(&proxy.cache_dir), [sha256(&contents[0])]);
}

/// 300 connections that send half a request are closed within the header timeout, while
/// normal clients are served the whole time.
///
/// What breaks it: no header-read timeout (the connections stay open past the deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_sent_requests_are_closed_within_the_header_timeout() {
    raise_file_limit();
    const DEB: &str = "/debian/pool/main/a_1.0_all.deb";
    const TIMEOUT: Duration = Duration::from_secs(2);
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, contents) = upstream_with(tmp.path(), &[(DEB, 42_000)]);
    let config = format!("[proxy.connections]\nheader_timeout_secs = {}\n", TIMEOUT.as_secs());
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), &config, &["--remap", &remap(&upstream)]);
    let url = format!("{}{DEB}", proxy.url());
    get_right(&http(), &url, &contents[0]).await;

    let served = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    let normal = {
        let (url, want, served) = (url.clone(), contents[0].clone(), served.clone());
        tokio::spawn(async move {
            let client = http();
            let mut n = 0u32;
            loop {
                assert_eq!(get_right(&client, &url, &want).await, "hit");
                n += 1;
                served.store(true, std::sync::atomic::Ordering::SeqCst);
                if stop.try_recv().is_ok() {
                    return n;
                }
            }
        })
    };

    let mut half = Vec::new();
    for i in 0..300u32 {
        let mut stream = connect_from([127, 0, 0, 2 + (i / 100) as u8], proxy.addr).await;
        stream.write_all(format!("GET {DEB} HTTP/1.1\r\nHost: test\r\nX-Half: ").as_bytes()).await.unwrap();
        half.push((stream, Instant::now()));
    }
    let mut closes = Vec::new();
    for (stream, sent) in &mut half {
        // The timeout, plus room for a loaded machine; never early.
        let deadline = *sent + TIMEOUT + Duration::from_secs(5);
        let got = closed_by(stream, deadline).await;
        assert!(got.is_some(), "a half-sent connection was still open {:?} after its first bytes", sent.elapsed());
        closes.push(sent.elapsed());
    }
    stop_tx.send(()).unwrap();
    let normal_served = normal.await.unwrap();
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) && normal_served >= 1);
    let slowest = closes.iter().max().unwrap();
    eprintln!("300 half-sent connections closed, the last {slowest:?} after its bytes; {normal_served} normal requests served meanwhile");
    assert!(counter(&proxy, "header_timeouts").await >= 300);
    assert_eq!(get_right(&http(), &url, &contents[0]).await, "hit");
    assert_eq!(check_store(&proxy.cache_dir), [sha256(&contents[0])]);
}
