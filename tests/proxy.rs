//! The proxy's cache behaviour over real HTTP: single flight with streaming, crash safety,
//! Range and conditional requests, revalidation of indexes, and chaining through a parent.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::util::repo::noise;
use crate::util::upstream::Slow;
use crate::util::{check_store, counter, eventually, http, http_via, sha256, tmp_files, ProxyProcess, Upstream};

const DEB: &str = "/debian/pool/main/big_1.0_all.deb";

/// An upstream tree with one package file of `size` bytes at `DEB`.
fn upstream_with_deb(dir: &std::path::Path, size: usize) -> (Upstream, Vec<u8>) {
    let content = noise(size, 42);
    let file = dir.join("upstream").join(DEB.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &content).unwrap();
    (Upstream::start(&dir.join("upstream")), content)
}

fn remap(upstream: &Upstream) -> String {
    format!("debian={}/debian", upstream.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clients_share_one_download_and_get_bytes_before_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, content) = upstream_with_deb(tmp.path(), 6 * 1024 * 1024);
    // Upstream sends 256 KiB, then holds the rest until every client has had bytes.
    let gate = upstream.gate(DEB, 256 * 1024);
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), "", &["--remap", &remap(&upstream)]);
    let url = format!("{}{DEB}", proxy.url());

    let (got_first_bytes, mut first_bytes) = mpsc::channel(50);
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (url, got_first_bytes) = (url.clone(), got_first_bytes.clone());
        clients.push(tokio::spawn(async move {
            let mut resp = http().get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.chunk().await.unwrap().expect("a first chunk").to_vec();
            got_first_bytes.send(()).await.unwrap();
            while let Some(chunk) = resp.chunk().await.unwrap() {
                body.extend_from_slice(&chunk);
            }
            body
        }));
    }
    for n in 0..50 {
        // A bound on failure, not a synchronisation: the gate is still closed here.
        tokio::time::timeout(Duration::from_secs(60), first_bytes.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} of 50 clients got bytes while upstream was still sending"));
    }
    assert_eq!(upstream.count(DEB), 1, "one upstream GET for 50 clients");
    gate.open();
    let want = sha256(&content);
    for client in clients {
        assert_eq!(sha256(&client.await.unwrap()), want);
    }
    assert_eq!(upstream.count(DEB), 1);
    assert_eq!(counter(&proxy, "cache_misses").await, 1);
    assert_eq!(counter(&proxy, "joined_downloads").await, 49);
    assert_eq!(check_store(&proxy.cache_dir), [want]);
}

/// The line the proxy logs once a request for `path` has ended, its client gone or served.
fn request_logged(path: &str, cache: &str) -> String {
    format!("url={path} status=200 cache=\"{cache}\"")
}

/// A client that leaves mid-download cancels nothing: with no client left at all, the download
/// runs to its end and is stored, and the next request is a hit.
///
/// The gate opens only once the proxy has seen the client go, and no other request comes
/// until the file is stored, so nothing can join the download and keep it alive.
///
/// What breaks it: a download that ends when its last client leaves (aborted once nobody
/// follows its flight) never reaches the store, and the wait for it times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_does_not_cancel_the_download() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, content) = upstream_with_deb(tmp.path(), 2 * 1024 * 1024);
    let gate = upstream.gate(DEB, 64 * 1024);
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), "", &["--remap", &remap(&upstream)]);
    let url = format!("{}{DEB}", proxy.url());
    let mut resp = http().get(&url).send().await.unwrap();
    resp.chunk().await.unwrap().expect("a first chunk");
    drop(resp);
    let left = request_logged(DEB, "miss");
    eventually("the proxy has seen its only client leave", || async { proxy.log_text().contains(&left) }).await;
    gate.open();
    let want = sha256(&content);
    eventually("the download is stored with no client", || async { check_store(&proxy.cache_dir) == [want.clone()] })
        .await;
    let resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.headers()["x-vzpkg-cache"], "hit");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    assert_eq!(upstream.count(DEB), 1, "the download went on without its client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_mid_download_serves_the_whole_file_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (upstream, content) = upstream_with_deb(tmp.path(), 4 * 1024 * 1024);
    let gate = upstream.gate(DEB, 1024 * 1024);
    let proxy = ProxyProcess::start(&cache, "", &["--remap", &remap(&upstream)]);
    let mut resp = http().get(format!("{}{DEB}", proxy.url())).send().await.unwrap();
    resp.chunk().await.unwrap().expect("a first chunk");
    assert_eq!(tmp_files(&cache), 1, "the download is under way in tmp/");
    proxy.kill_hard();
    assert!(resp.bytes().await.is_err(), "a killed proxy cannot have sent the whole file");
    assert!(check_store(&cache).is_empty(), "nothing partial may reach the store");

    let proxy = ProxyProcess::start(&cache, "", &["--remap", &remap(&upstream)]);
    assert_eq!(tmp_files(&cache), 0, "the restart removed the unfinished download");
    gate.open();
    let resp = http().get(format!("{}{DEB}", proxy.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&content));
    assert_eq!(check_store(&cache), [sha256(&content)]);
    assert_eq!(upstream.count(DEB), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upstream_transfer_is_resumed_where_it_broke_off() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, content) = upstream_with_deb(tmp.path(), 3 * 1024 * 1024);
    upstream.cut_once(DEB, 1024 * 1024);
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), "", &["--remap", &remap(&upstream)]);
    let body = http().get(format!("{}{DEB}", proxy.url())).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&body), sha256(&content));
    assert_eq!(upstream.ranges(DEB), ["bytes=1048576-"], "the second request asked only for the rest");
    assert_eq!(check_store(&proxy.cache_dir), [sha256(&content)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_download_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, content) = upstream_with_deb(tmp.path(), 2 * 1024 * 1024);
    let gate = upstream.gate(DEB, 64 * 1024);
    let mut proxy = ProxyProcess::start(&tmp.path().join("cache"), "", &["--remap", &remap(&upstream)]);
    let mut resp = http().get(format!("{}{DEB}", proxy.url())).send().await.unwrap();
    let mut body = resp.chunk().await.unwrap().expect("a first chunk").to_vec();
    proxy.signal_stop();
    gate.open();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(sha256(&body), sha256(&content), "the running request was served to its end");
    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.stop();
        (status, proxy)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "graceful stop exits 0: {:?}", status.0);
    assert_eq!(check_store(&status.1.cache_dir), [sha256(&content)], "the download was committed before exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_and_conditional_requests_are_answered_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, content) = upstream_with_deb(tmp.path(), 100_000);
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), "", &["--remap", &remap(&upstream)]);
    let url = format!("{}{DEB}", proxy.url());
    let client = http();
    let first = client.get(&url).send().await.unwrap();
    let last_modified = first.headers()["last-modified"].to_str().unwrap().to_string();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(first.bytes().await.unwrap().len(), content.len());

    let part = client.get(&url).header("range", "bytes=1000-1999").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(part.bytes().await.unwrap(), &content[1000..2000]);

    let tail = client.get(&url).header("range", "bytes=-10").send().await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), &content[content.len() - 10..]);

    let open = client.get(&url).header("range", "bytes=99990-").send().await.unwrap();
    assert_eq!(open.bytes().await.unwrap(), &content[99_990..]);

    let beyond = client.get(&url).header("range", "bytes=100000-").send().await.unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], "bytes */100000");

    let stale_if_range =
        client.get(&url).header("range", "bytes=0-9").header("if-range", "\"another\"").send().await.unwrap();
    assert_eq!(stale_if_range.status(), 200, "If-Range that does not match means the whole file");

    let same = client.get(&url).header("if-modified-since", &last_modified).send().await.unwrap();
    assert_eq!(same.status(), 304);
    assert!(same.bytes().await.unwrap().is_empty());
    let older = client.get(&url).header("if-modified-since", "Thu, 01 Jan 1998 00:00:00 GMT").send().await.unwrap();
    assert_eq!(older.status(), 200);
    assert_eq!(older.bytes().await.unwrap().len(), content.len());
    let tagged = client.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(tagged.status(), 304);

    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "100000");
    assert_eq!(head.headers()["x-vzpkg-cache"], "hit");
    assert_eq!(upstream.count(DEB), 1, "everything after the first GET came from the cache");
    assert_eq!(counter(&proxy, "cache_hits").await, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_are_revalidated_after_the_ttl_and_packages_never() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, _) = upstream_with_deb(tmp.path(), 10_000);
    let release = upstream.root.join("debian/dists/stable/Release");
    std::fs::create_dir_all(release.parent().unwrap()).unwrap();
    std::fs::write(&release, "Suite: stable\n").unwrap();
    let proxy = ProxyProcess::start(
        &tmp.path().join("cache"),
        "[proxy]\nindex_ttl_secs = 0\n",
        &["--remap", &remap(&upstream)],
    );
    let client = http();
    let get = |path: &str| client.get(format!("{}{path}", proxy.url())).send();

    assert_eq!(get("/debian/dists/stable/Release").await.unwrap().text().await.unwrap(), "Suite: stable\n");
    assert_eq!(get("/debian/dists/stable/Release").await.unwrap().text().await.unwrap(), "Suite: stable\n");
    assert_eq!(upstream.count("/debian/dists/stable/Release"), 2, "an expired index is asked about again");
    assert_eq!(counter(&proxy, "revalidations").await, 1, "and upstream's 304 is served from the cache");

    // A new generation upstream (new mtime, so new validators) replaces the cached one.
    std::fs::write(&release, "Suite: stable\nVersion: 2\n").unwrap();
    let file = std::fs::File::options().write(true).open(&release).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
    assert_eq!(get("/debian/dists/stable/Release").await.unwrap().text().await.unwrap(), "Suite: stable\nVersion: 2\n");

    for _ in 0..3 {
        assert_eq!(get(DEB).await.unwrap().status(), 200);
    }
    assert_eq!(upstream.count(DEB), 1, "package files are immutable: never revalidated");

    // Files that are neither packages nor indexes pass through uncached.
    std::fs::write(upstream.root.join("debian/README"), "hello\n").unwrap();
    for _ in 0..2 {
        assert_eq!(get("/debian/README").await.unwrap().text().await.unwrap(), "hello\n");
    }
    assert_eq!(upstream.count("/debian/README"), 2);
    assert_eq!(get("/debian/missing_1_all.deb").await.unwrap().status(), 404, "upstream's 404 is relayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_revalidations_is_one_upstream_request() {
    const RELEASE: &str = "/debian/dists/stable/InRelease";
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, _) = upstream_with_deb(tmp.path(), 10);
    let file = upstream.root.join(RELEASE.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "Suite: stable\n").unwrap();
    let config = "[proxy]\nindex_ttl_secs = 0\n";
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), config, &["--remap", &remap(&upstream)]);
    let url = format!("{}{RELEASE}", proxy.url());
    assert_eq!(http().get(&url).send().await.unwrap().status(), 200);

    let gate = upstream.gate(RELEASE, 0);
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { http().get(&url).send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    eventually("all 10 clients wait on one revalidation", || async {
        counter(&proxy, "waiting_on_upstream").await == 10
    })
    .await;
    gate.open();
    for client in clients {
        assert_eq!(client.await.unwrap(), "Suite: stable\n");
    }
    assert_eq!(upstream.count(RELEASE), 2, "the first fetch and one revalidation for ten clients");
    assert_eq!(counter(&proxy, "revalidations").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_edge_gets_the_file_from_the_parent_without_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, content) = upstream_with_deb(tmp.path(), 500_000);
    let parent = ProxyProcess::start(&tmp.path().join("parent"), "", &["--allow-host", &upstream.host()]);
    let edge_args = ["--allow-host", &upstream.host(), "--parent", &parent.url()];
    let edge1 = ProxyProcess::start(&tmp.path().join("edge1"), "", &edge_args);
    let edge2 = ProxyProcess::start(&tmp.path().join("edge2"), "", &edge_args);
    let url = format!("{}{DEB}", upstream.url());

    let via1 = http_via(&edge1.url()).get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&via1), sha256(&content));
    assert_eq!(upstream.count(DEB), 1);
    let via2 = http_via(&edge2.url()).get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&via2), sha256(&content));
    assert_eq!(upstream.count(DEB), 1, "the second edge was served by the parent");
    assert_eq!(counter(&parent, "cache_hits").await, 1);
    assert_eq!(counter(&edge2, "cache_misses").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_endpoints_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, _) = upstream_with_deb(tmp.path(), 1000);
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), "", &["--remap", &remap(&upstream)]);
    http().get(format!("{}{DEB}", proxy.url())).send().await.unwrap().bytes().await.unwrap();
    http().get(format!("{}{DEB}", proxy.url())).send().await.unwrap().bytes().await.unwrap();
    let metrics = http().get(format!("{}/_vzpkg/metrics", proxy.url())).send().await.unwrap().text().await.unwrap();
    for line in [
        "vzpkg_cache_hits_total 1",
        "vzpkg_cache_misses_total 1",
        "vzpkg_bytes_from_cache_total 1000",
        "vzpkg_bytes_from_upstream_total 1000",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from\n{metrics}");
    }
    let text = http().get(format!("{}/_vzpkg/status", proxy.url())).send().await.unwrap().text().await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["entries"], 1);
    assert_eq!(status["stored_bytes"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_fetched_with_tls_and_served_as_plain_http() {
    let tmp = tempfile::tempdir().unwrap();
    let content = noise(300_000, 9);
    let file = tmp.path().join("upstream").join(DEB.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &content).unwrap();
    let (upstream, ca_pem) = Upstream::start_tls(&tmp.path().join("upstream"));
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let remap = remap(&upstream);
    assert!(remap.contains("=https://"), "{remap}");

    // Without the CA the certificate is refused: nothing is served or stored.
    let untrusting = ProxyProcess::start(&tmp.path().join("cache1"), "", &["--remap", &remap]);
    let refused = http().get(format!("{}{DEB}", untrusting.url())).send().await.unwrap();
    assert_eq!(refused.status(), 502);
    assert!(refused.text().await.unwrap().contains("certificate"));

    let config = format!("[proxy.upstream]\nca_file = {:?}\n", ca.display().to_string());
    let proxy = ProxyProcess::start(&tmp.path().join("cache2"), &config, &["--remap", &remap]);
    for _ in 0..2 {
        let body = http().get(format!("{}{DEB}", proxy.url())).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(sha256(&body), sha256(&content));
    }
    assert_eq!(upstream.count(DEB), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_only_to_allowed_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let (mirror, content) = upstream_with_deb(&tmp.path().join("mirror"), 20_000);
    std::fs::create_dir_all(tmp.path().join("front")).unwrap();
    let front = Upstream::start(&tmp.path().join("front"));
    front.redirect(DEB, &format!("{}{DEB}", mirror.url()));
    let remap = remap(&front);

    let strict = ProxyProcess::start(&tmp.path().join("cache1"), "", &["--remap", &remap]);
    let refused = http().get(format!("{}{DEB}", strict.url())).send().await.unwrap();
    assert_eq!(refused.status(), 502);
    let why = refused.text().await.unwrap();
    assert!(why.contains(&format!("--allow-host {}", mirror.host())), "{why}");
    assert_eq!(mirror.count(DEB), 0, "a redirect to a host not allowed was followed");

    let allowing =
        ProxyProcess::start(&tmp.path().join("cache2"), "", &["--remap", &remap, "--allow-host", &mirror.host()]);
    let body = http().get(format!("{}{DEB}", allowing.url())).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&body), sha256(&content));
    assert_eq!(mirror.count(DEB), 1);
}

/// HEAD of a file not stored is answered with upstream's HEAD and starts no download.
///
/// What breaks it: a HEAD that starts a download, even in the background after answering:
/// upstream records a GET, and the GET below finds the download under way or done instead of
/// starting it (`joined` or `hit`, not `miss`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_a_file_not_stored_costs_no_download() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream, content) = upstream_with_deb(tmp.path(), 300_000);
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), "", &["--remap", &remap(&upstream)]);
    let head = http().head(format!("{}{DEB}", proxy.url())).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "300000");
    assert_eq!(upstream.methods(DEB), ["HEAD"], "upstream was asked for more than a HEAD");
    assert_eq!(counter(&proxy, "bytes_from_upstream").await, 0, "a HEAD downloaded the file");
    assert!(check_store(&proxy.cache_dir).is_empty());

    let get = http().get(format!("{}{DEB}", proxy.url())).send().await.unwrap();
    assert_eq!(get.headers()["x-vzpkg-cache"], "miss", "the HEAD had started a download");
    assert_eq!(sha256(&get.bytes().await.unwrap()), sha256(&content));
    assert_eq!(upstream.methods(DEB), ["HEAD", "GET"]);
}

/// A graceful stop closes the listeners at once, lets a download that no client waits for any
/// more run to its end, commits it and exits 0; a proxy restarted on the same cache serves the
/// file as a hit, with no upstream request.
///
/// What breaks it: listeners left open during the drain fail the refused-connection assertion;
/// a stop that does not wait for downloads exits before the gate opens, so the restart asks
/// upstream again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_refuses_new_connections_and_a_restart_serves_hits() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (upstream, content) = upstream_with_deb(tmp.path(), 2 * 1024 * 1024);
    let gate = upstream.gate(DEB, 64 * 1024);
    let proxy = ProxyProcess::start(&cache, "", &["--remap", &remap(&upstream)]);
    let mut resp = http().get(format!("{}{DEB}", proxy.url())).send().await.unwrap();
    resp.chunk().await.unwrap().expect("a first chunk");
    drop(resp);
    let left = request_logged(DEB, "miss");
    eventually("the proxy has seen its client leave", || async { proxy.log_text().contains(&left) }).await;

    proxy.signal_stop();
    eventually("the proxy has closed its listeners", || async { proxy.log_text().contains("listeners closed") }).await;
    assert!(std::net::TcpStream::connect(proxy.addr).is_err(), "a new connection was accepted during the stop");
    gate.open();
    let (status, proxy) = tokio::task::spawn_blocking(move || {
        let mut proxy = proxy;
        (proxy.stop(), proxy)
    })
    .await
    .unwrap();
    assert!(status.success(), "graceful stop exits 0: {status:?}\n{}", proxy.log_text());
    assert_eq!(check_store(&cache), [sha256(&content)], "the download was committed before exit");
    drop(proxy);

    let restarted = ProxyProcess::start(&cache, "", &["--remap", &remap(&upstream)]);
    let resp = http().get(format!("{}{DEB}", restarted.url())).send().await.unwrap();
    assert_eq!(resp.headers()["x-vzpkg-cache"], "hit");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&content));
    assert_eq!(upstream.total(), 1, "the restarted proxy asked upstream");
}

/// A remap tries its base URLs in order: one nothing listens on and one that answers 503 are
/// passed over for the next, which serves the file.
///
/// What breaks it: trying only the first base URL, or giving up at the first error status:
/// the client gets 502 or 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remap_fails_over_to_the_next_base_url() {
    let tmp = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (failing, _) = upstream_with_deb(&tmp.path().join("a"), 50_000);
    failing.fail(DEB, 503);
    let (serving, content) = upstream_with_deb(&tmp.path().join("b"), 50_000);
    let unreachable = format!("debian=http://{closed}/debian");
    let args = ["--remap", &unreachable, "--remap", &remap(&failing), "--remap", &remap(&serving)];
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), "", &args);
    let resp = http().get(format!("{}{DEB}", proxy.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&content));
    assert_eq!(failing.methods(DEB), ["GET"]);
    assert_eq!(serving.methods(DEB), ["GET"]);
    assert_eq!(counter(&proxy, "upstream_requests").await, 3, "all three base URLs were tried, in order");
    assert_eq!(check_store(&proxy.cache_dir), [sha256(&content)]);
}

/// A transfer that crawls below `min_rate_bytes` for `low_speed_secs`, or stalls, is broken off
/// and resumed where it stopped, with `Range` and `If-Range` (the ETag); a file that changed
/// upstream in between is not spliced onto the old part: that client's body is cut, nothing is
/// stored, and the next request gets the new file whole.
///
/// What breaks it: without the rate check the crawling transfer runs its course (about ten
/// seconds) and the timeout fails; without resuming, no Range is asked; without If-Range,
/// upstream sends the new file's tail and the proxy serves and stores a spliced file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crawling_or_stalled_transfer_is_cut_and_resumed_with_if_range() {
    const CRAWL: &str = "/debian/pool/main/crawl_1.0_all.deb";
    const STALL: &str = "/debian/pool/main/stall_1.0_all.deb";
    const CHANGE: &str = "/debian/pool/main/change_1.0_all.deb";
    const SIZE: usize = 512 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("upstream");
    std::fs::create_dir_all(root.join("debian/pool/main")).unwrap();
    let file = |path: &str| root.join(path.trim_start_matches('/'));
    for (seed, path) in [CRAWL, STALL, CHANGE].into_iter().enumerate() {
        std::fs::write(file(path), noise(SIZE, seed as u64 + 1)).unwrap();
    }
    let upstream = Upstream::start(&root);
    let every = Duration::from_millis(20);
    upstream.slow_once(CRAWL, 16 * 1024, Slow::Trickle { bytes: 1024, every });
    upstream.slow_once(STALL, 16 * 1024, Slow::Stall);
    upstream.slow_once(CHANGE, 16 * 1024, Slow::Stall);
    let config = "[proxy.upstream]\nlow_speed_secs = 1\nmin_rate_bytes = 200000\nbackoff_secs = 0\n";
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), config, &["--remap", &remap(&upstream)]);

    let resumed = |path: &'static str| {
        let (url, want) = (format!("{}{path}", proxy.url()), sha256(&std::fs::read(file(path)).unwrap()));
        async move {
            let resp = http().get(url).send().await.unwrap();
            let etag = resp.headers()["etag"].to_str().unwrap().to_string();
            let body = tokio::time::timeout(Duration::from_secs(8), resp.bytes()).await;
            let body = body.unwrap_or_else(|_| panic!("{path}: not cut off within 8 s")).unwrap();
            assert_eq!(sha256(&body), want, "{path}");
            (etag, want)
        }
    };
    let changed = async {
        let mut resp = http().get(format!("{}{CHANGE}", proxy.url())).send().await.unwrap();
        let etag = resp.headers()["etag"].to_str().unwrap().to_string();
        resp.chunk().await.unwrap().expect("a first chunk");
        // Upstream publishes a new file of the same size while the transfer stalls.
        let new = noise(SIZE, 99);
        std::fs::write(file(CHANGE), &new).unwrap();
        let mut rest = Ok(());
        while let Some(chunk) = resp.chunk().await.transpose() {
            if let Err(e) = chunk {
                rest = Err(e);
                break;
            }
        }
        assert!(rest.is_err(), "a changed file was completed from the new one's tail");
        (etag, sha256(&new))
    };
    let ((crawl_etag, crawl), (stall_etag, stall), (change_etag, new)) =
        tokio::join!(resumed(CRAWL), resumed(STALL), changed);

    for (path, etag) in [(CRAWL, &crawl_etag), (STALL, &stall_etag), (CHANGE, &change_etag)] {
        let ranges = upstream.ranges(path);
        let offset: usize = match ranges.as_slice() {
            [range] => range.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).unwrap().parse().unwrap(),
            _ => panic!("{path}: not resumed once with a Range: {ranges:?}"),
        };
        assert!((16 * 1024..SIZE).contains(&offset), "{path}: resumed at {offset}");
        assert_eq!(upstream.if_ranges(path), [etag.as_str()], "{path}: resumed only if still the same file");
    }
    let mut stored = check_store(&proxy.cache_dir);
    stored.sort();
    let mut want = vec![crawl, stall];
    want.sort();
    assert_eq!(stored, want, "only the two resumed files are stored");
    let body = http().get(format!("{}{CHANGE}", proxy.url())).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&body), new, "the next request gets the new file whole");
}
