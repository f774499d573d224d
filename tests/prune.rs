//! `vzpkg prune` and `vzpkg status` against a real proxy: pruning through the running proxy
//! while twenty clients download (every download whole and correct, only blobs in use left,
//! an in-flight download untouched), a dry run that changes nothing, and pruning a cache no
//! proxy holds — which goes by what the current indexes reference, and waits out a failed index
//! refresh.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::util::repo::{deb_index, deb_repo, noise, Pkg};
use crate::util::{check_store, eventually, http_via, sha256, status_json, tmp_files, vzpkg, ProxyProcess, Upstream};

/// Sorted hashes of the blobs in the store.
fn listing(cache: &Path) -> Vec<String> {
    let mut blobs = check_store(cache);
    blobs.sort();
    blobs
}

fn prune(cache: &Path, args: &[&str]) -> (i32, String, String) {
    let cache = cache.display().to_string();
    let mut argv = vec!["--cache-dir", cache.as_str(), "prune"];
    argv.extend(args);
    vzpkg(&argv)
}

/// `vzpkg prune ARGS --json`, which must succeed; its report.
fn prune_json(cache: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = prune(cache, &all);
    assert_eq!(code, 0, "prune {args:?}:\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("prune --json printed no JSON ({e}): {out}"))
}

/// GETs `url` through the proxy and checks the whole body against `sha`; the number of bytes.
async fn download(via: &reqwest::Client, url: &str, sha: &str) -> Result<u64, String> {
    let resp = via.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if resp.status() != 200 {
        return Err(format!("{url}: status {}", resp.status()));
    }
    let mut hasher = Sha256::new();
    let mut body = resp.bytes_stream();
    let mut n = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("{url}: cut after {n} bytes: {e}"))?;
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let got = hex::encode(hasher.finalize());
    if got != sha {
        return Err(format!("{url}: {n} bytes with sha256 {got}, expected {sha}"));
    }
    Ok(n)
}

/// Must-show 4.
#[test]
fn prune_through_the_running_proxy_under_load() {
    const CLIENTS: usize = 20;
    const BIG: usize = 8 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("upstream/debian/pool");
    std::fs::create_dir_all(&pool).unwrap();
    let mut big = Vec::new();
    let mut junk = Vec::new();
    for i in 0..4 {
        let bytes = noise(BIG, 1000 + i);
        std::fs::write(pool.join(format!("big{i}_1_all.deb")), &bytes).unwrap();
        big.push((format!("big{i}_1_all.deb"), sha256(&bytes)));
    }
    for i in 0..6 {
        let bytes = noise(1 << 20, 2000 + i);
        std::fs::write(pool.join(format!("old{i}_1_all.deb")), &bytes).unwrap();
        junk.push((format!("old{i}_1_all.deb"), sha256(&bytes)));
    }
    // Larger than what the sockets between proxy and client can hold: a reader that stops
    // after its first part keeps the response unfinished.
    let held_bytes = noise(32 << 20, 4000);
    std::fs::write(pool.join("held_1_all.deb"), &held_bytes).unwrap();
    let held = ("held_1_all.deb".to_string(), sha256(&held_bytes));
    let slow_bytes = noise(4 << 20, 3000);
    std::fs::write(pool.join("slow_1_all.deb"), &slow_bytes).unwrap();
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let cache = tmp.path().join("cache");
    let proxy = ProxyProcess::start(&cache, "", &["--allow-host", &upstream.host()]);
    let url = |name: &str| format!("{}/debian/pool/{name}", upstream.url());

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let via = http_via(&proxy.url());
    runtime.block_on(async {
        for (name, sha) in junk.iter().chain(&big).chain([&held]) {
            download(&via, &url(name), sha).await.unwrap();
        }
    });
    assert_eq!(listing(&cache).len(), 11);

    // Twenty clients download the big files in a loop, each checking every byte.
    let stop = Arc::new(AtomicBool::new(false));
    let downloads = Arc::new(AtomicU64::new(0));
    let targets: Arc<Vec<(String, String)>> = Arc::new(big.iter().map(|(n, s)| (url(n), s.clone())).collect());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (via, stop, downloads, targets) =
                (http_via(&proxy.url()), stop.clone(), downloads.clone(), targets.clone());
            runtime.spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(300);
                let mut i = id;
                while !stop.load(Ordering::SeqCst) {
                    if Instant::now() > deadline {
                        return Err("the test ran out of time".to_string());
                    }
                    let (url, sha) = &targets[i % targets.len()];
                    download(&via, url, sha).await?;
                    downloads.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    let counted = |n: u64| {
        let downloads = downloads.clone();
        runtime.block_on(eventually(&format!("{n} downloads are done"), || {
            let d = downloads.load(Ordering::SeqCst);
            async move { d >= n }
        }))
    };
    counted(2 * CLIENTS as u64);

    // A download in flight: upstream holds the body after its first 64 KiB.
    let gate = upstream.gate("/debian/pool/slow_1_all.deb", 64 * 1024);
    let slow_sha = sha256(&slow_bytes);
    let slow = {
        let (via, url) = (http_via(&proxy.url()), url("slow_1_all.deb"));
        let sha = slow_sha.clone();
        runtime.spawn(async move { download(&via, &url, &sha).await })
    };
    runtime.block_on(eventually("the slow download is in flight", || async {
        tmp_files(&cache) >= 1 && crate::util::counter(&proxy, "cache_misses").await >= 12
    }));
    // A client in the middle of a stored file: it has read its first part only.
    let (reader_status, mut reader) = runtime.block_on(async {
        let resp = http_via(&proxy.url()).get(url(&held.0)).send().await.unwrap();
        let status = resp.status().as_u16();
        let mut body = resp.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        let mut hasher = Sha256::new();
        hasher.update(&first);
        (status, (body, hasher))
    });
    assert_eq!(reader_status, 200);

    let started = Instant::now();
    let report = prune_json(&cache, &["--max-size", "0"]);
    let took = started.elapsed();
    let after = listing(&cache);
    assert_eq!(report["via"], "proxy", "{report}");
    assert!(report["kept_in_use"].as_u64().unwrap() >= 1, "the blob being read was left alone: {report}");
    let junk_gone = junk.iter().all(|(_, sha)| !after.contains(sha));
    assert!(junk_gone, "blobs nobody uses survived a prune to size 0: {after:?}");
    let in_use: Vec<&String> = big.iter().chain([&held]).map(|(_, s)| s).collect();
    assert!(after.iter().all(|b| in_use.contains(&b)), "only blobs in use remain: {after:?}");
    assert!(after.contains(&held.1), "the blob a client is reading is still there");
    assert!(tmp_files(&cache) >= 1, "the in-flight download was touched");
    assert!(report["removed"]["files"].as_u64().unwrap() >= 6, "{report}");

    // The reader in the middle of the held file gets the rest, and it is right.
    runtime.block_on(async {
        let (body, hasher) = &mut reader;
        while let Some(chunk) = body.next().await {
            hasher.update(chunk.unwrap());
        }
    });
    assert_eq!(hex::encode(reader.1.finalize()), held.1);
    // The download in flight completes whole, and is stored after the prune.
    gate.open();
    let slow_got = runtime.block_on(slow).unwrap().unwrap();
    assert_eq!(slow_got, slow_bytes.len() as u64);
    runtime.block_on(eventually("the slow download is stored", || async { listing(&cache).contains(&slow_sha) }));

    // More prunes while the clients go on: a big file between two readers goes and is fetched
    // again (its next readers join that download), one being read stays.
    let (mut prunes, mut freed) = (1, report["removed"]["bytes"].as_u64().unwrap());
    for _ in 0..4 {
        let again = prune_json(&cache, &["--max-size", "0"]);
        freed += again["removed"]["bytes"].as_u64().unwrap();
        prunes += 1;
        counted(downloads.load(Ordering::SeqCst) + CLIENTS as u64);
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        runtime.block_on(client).unwrap().unwrap_or_else(|e| panic!("a client got a bad download: {e}"));
    }
    let total = downloads.load(Ordering::SeqCst);
    let refetched: u64 = big.iter().map(|(n, _)| upstream.count(&format!("/debian/pool/{n}"))).sum();
    eprintln!(
        "prune under load: {CLIENTS} clients, {total} downloads of 8 MiB files, all whole and correct; the first prune \
         took {} ms end to end (the proxy says {} ms), freed {} files / {} bytes, kept {} in use; {prunes} prunes freed \
         {freed} bytes in all; the 4 big files were fetched upstream {refetched} times",
        took.as_millis(),
        report["elapsed_ms"],
        report["removed"]["files"],
        report["removed"]["bytes"],
        report["kept_in_use"]
    );

    // A dry run changes nothing, and says what would go: everything, nothing being in use now.
    let before = listing(&cache);
    let dry = prune_json(&cache, &["--max-size", "0", "--dry-run"]);
    assert_eq!(listing(&cache), before, "a dry run changed the store");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["removed"]["files"].as_u64().unwrap(), before.len() as u64, "{dry}");
    assert_eq!(dry["after"]["blobs"], 0);
    // With no client left, nothing is pinned: everything goes, and the proxy still serves.
    let last = prune_json(&cache, &["--max-size", "0"]);
    assert_eq!(last["kept_in_use"], 0, "pins outlived their readers: {last}");
    assert_eq!(listing(&cache), Vec::<String>::new());
    let status = status_json(&proxy);
    assert_eq!(status["store"]["blobs"], 0);
    assert_eq!(status["last_prune"]["files"], last["removed"]["files"]);
    runtime.block_on(async { download(&via, &url(&big[1].0), &big[1].1).await.unwrap() });
}

/// Prune on a cache no proxy holds: by the current indexes (an old index generation and the
/// package only it listed go, what the current one lists stays), never right after a failed
/// refresh (in the proxy and after it stopped), and `vzpkg status` without a proxy.
#[test]
fn prune_without_a_proxy_goes_by_the_current_indexes_and_waits_out_a_failed_refresh() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("upstream/debian");
    deb_repo(&repo, &[Pkg::new("vzt-alpha", "1.0", 100_000), Pkg::new("vzt-beta", "2.1", 200_000)]);
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let cache = tmp.path().join("cache");
    let config = "[proxy]\nindex_ttl_secs = 0\n[proxy.upstream]\nbackoff_secs = 0\n";
    let mut proxy = ProxyProcess::start(&cache, config, &["--allow-host", &upstream.host()]);
    let base = format!("{}/debian", upstream.url());
    let via = http_via(&proxy.url());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let get = |path: &str| {
        runtime.block_on(async {
            let resp = via.get(format!("{base}/{path}")).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            resp.bytes().await.unwrap().to_vec()
        })
    };
    let fetch_generation = |debs: &[&str]| {
        get("dists/stable/Release");
        get("dists/stable/main/binary-amd64/Packages.xz");
        for deb in debs {
            get(&format!("pool/main/{deb}"));
        }
    };
    fetch_generation(&["vzt-alpha_1.0_all.deb", "vzt-beta_2.1_all.deb"]);
    let old_alpha = sha256(&std::fs::read(repo.join("pool/main/vzt-alpha_1.0_all.deb")).unwrap());
    let old_release = sha256(&std::fs::read(repo.join("dists/stable/Release")).unwrap());
    // The next generation replaces alpha 1.0 with 1.1.
    std::fs::remove_file(repo.join("pool/main/vzt-alpha_1.0_all.deb")).unwrap();
    deb_repo(&tmp.path().join("newer"), &[Pkg::new("vzt-alpha", "1.1", 110_000)]);
    std::fs::copy(
        tmp.path().join("newer/pool/main/vzt-alpha_1.1_all.deb"),
        repo.join("pool/main/vzt-alpha_1.1_all.deb"),
    )
    .unwrap();
    deb_index(&repo);
    fetch_generation(&["vzt-alpha_1.1_all.deb", "vzt-beta_2.1_all.deb"]);
    assert_eq!(status_json(&proxy)["unverified_entries"], 0);

    // Upstream fails a refresh: prune refuses, through the proxy…
    upstream.fail("/debian/dists/stable/Release", 503);
    get("dists/stable/Release"); // the stored copy is served meanwhile
    let (code, out, err) = prune(&cache, &["--grace", "0s"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("not pruning: the refresh of") && err.contains("dists/stable/Release"), "{err}");
    assert_eq!(status_json(&proxy)["refresh_failures"].as_array().unwrap().len(), 1);
    // …and on the cache itself once the proxy is gone: the failure is remembered.
    proxy.stop();
    let (code, _, err) = prune(&cache, &["--grace", "0s"]);
    assert_ne!(code, 0);
    assert!(err.contains("not pruning"), "{err}");
    // A successful refresh ends the hold.
    let proxy = ProxyProcess::start(&cache, config, &["--allow-host", &upstream.host()]);
    upstream.heal("/debian/dists/stable/Release");
    let via = http_via(&proxy.url());
    runtime.block_on(async {
        assert_eq!(via.get(format!("{base}/dists/stable/Release")).send().await.unwrap().status(), 200);
    });
    drop(proxy);

    let before = listing(&cache);
    let dry = prune_json(&cache, &["--grace", "0s", "--dry-run"]);
    assert_eq!(listing(&cache), before, "a dry run changed the store");
    assert_eq!(dry["via"], "cache", "{dry}");
    // The old Release, the old Packages.xz and alpha 1.0: nothing current references them.
    assert_eq!(dry["unreferenced"]["files"], 3, "{dry}");
    assert!(dry["expected_removed"].as_u64().unwrap() >= 1, "alpha 1.0's expected hash is of an old generation");

    // With the default grace of a day, nothing used just now goes.
    assert_eq!(prune_json(&cache, &[])["removed"]["files"], 0);
    let report = prune_json(&cache, &["--grace", "0s"]);
    assert_eq!(report["unreferenced"]["files"], 3, "{report}");
    let after = listing(&cache);
    assert_eq!(after.len(), before.len() - 3);
    assert!(!after.contains(&old_alpha) && !after.contains(&old_release));
    for current in ["pool/main/vzt-alpha_1.1_all.deb", "pool/main/vzt-beta_2.1_all.deb", "dists/stable/Release"] {
        let sha = sha256(&std::fs::read(repo.join(current)).unwrap());
        assert!(after.contains(&sha), "{current} is current and was removed");
    }

    // Status without a proxy: from the cache itself; the text summary names the prune.
    let dir = cache.display().to_string();
    let (code, out, _) = vzpkg(&["--cache-dir", &dir, "status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["running"], false);
    assert_eq!(status["store"]["blobs"], after.len() as u64);
    assert_eq!(status["last_prune"]["files"], 3);
    let (code, out, _) = vzpkg(&["--cache-dir", &dir, "status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("proxy:       not running") && out.contains("last prune:") && out.contains("3 files"),
        "{out}"
    );

    // The proxy opened on the pruned cache serves the current generation from the store.
    let proxy = ProxyProcess::start(&cache, config, &["--allow-host", &upstream.host()]);
    let before_requests = upstream.count("/debian/pool/main/vzt-beta_2.1_all.deb");
    let via = http_via(&proxy.url());
    runtime.block_on(async {
        let resp = via.get(format!("{base}/pool/main/vzt-beta_2.1_all.deb")).send().await.unwrap();
        assert_eq!(resp.headers()["x-vzpkg-cache"], "hit");
    });
    assert_eq!(upstream.count("/debian/pool/main/vzt-beta_2.1_all.deb"), before_requests);
}

/// The proxy keeps the store under `max_cache_size` by itself, least recently used first.
#[test]
fn the_proxy_keeps_the_store_under_max_cache_size() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("upstream/pool");
    std::fs::create_dir_all(&pool).unwrap();
    let files: Vec<(String, String)> = (0..6)
        .map(|i| {
            let bytes = noise(1 << 20, 5000 + i);
            std::fs::write(pool.join(format!("f{i}_1_all.deb")), &bytes).unwrap();
            (format!("f{i}_1_all.deb"), sha256(&bytes))
        })
        .collect();
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let cache = tmp.path().join("cache");
    let proxy = ProxyProcess::start(&cache, "[proxy]\nmax_cache_size = \"3M\"\n", &["--allow-host", &upstream.host()]);
    let via = http_via(&proxy.url());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (name, sha) in &files {
        runtime.block_on(download(&via, &format!("{}/pool/{name}", upstream.url()), sha)).unwrap();
    }
    let status_url = format!("{}/_vzpkg/status", proxy.url());
    runtime.block_on(eventually("the store is under its cap", || async {
        let text = crate::util::http().get(&status_url).send().await.unwrap().text().await.unwrap();
        let status: serde_json::Value = serde_json::from_str(&text).unwrap();
        listing(&cache).len() <= 3 && status["store"]["bytes"].as_u64().unwrap() <= 3 << 20
    }));
    let left = listing(&cache);
    assert!(left.contains(&files[5].1), "the newest file stays: {left:?}");
    assert!(!left.contains(&files[0].1), "the oldest went first: {left:?}");
    assert_eq!(status_json(&proxy)["max_cache_size"], 3 << 20);
    // What went is fetched again when asked for, and right.
    runtime.block_on(download(&via, &format!("{}/pool/{}", upstream.url(), files[0].0), &files[0].1)).unwrap();
}
