//! Shared helpers for the end-to-end tests: the test upstream, the proxy process, repository
//! builders and real package-manager clients.

#![allow(dead_code)] // each test module uses a different part

pub mod cli;
pub mod clients;
pub mod gpg;
pub mod inside;
pub mod proxy;
pub mod repo;
pub mod rootfs;
pub mod running;
pub mod upstream;

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

pub use proxy::ProxyProcess;
pub use upstream::Upstream;

/// Runs a command to completion; panics with its output if it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? run contrib/test.sh)"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command to completion; returns whether it succeeded and all it printed (stdout, then
/// stderr).
pub fn try_run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? run contrib/test.sh)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every blob in a proxy's store must be named by its own hash; returns their hashes.
pub fn check_store(cache_dir: &Path) -> Vec<String> {
    let mut hashes = Vec::new();
    for shard in std::fs::read_dir(cache_dir.join("blobs")).unwrap() {
        for blob in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let blob = blob.unwrap();
            let name = blob.file_name().to_string_lossy().into_owned();
            assert_eq!(sha256(&std::fs::read(blob.path()).unwrap()), name, "blob content differs from its name");
            hashes.push(name);
        }
    }
    hashes
}

/// Files left in the store's tmp directory.
pub fn tmp_files(cache_dir: &Path) -> usize {
    std::fs::read_dir(cache_dir.join("tmp")).map(|d| d.count()).unwrap_or(0)
}

/// An HTTP client that never uses a proxy from the environment.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// An HTTP client that sends everything through `proxy` in forward-proxy form.
pub fn http_via(proxy: &str) -> reqwest::Client {
    reqwest::Client::builder().proxy(reqwest::Proxy::http(proxy).unwrap()).build().unwrap()
}

/// A proxy counter from `/_vzpkg/status`.
pub async fn counter(proxy: &ProxyProcess, name: &str) -> u64 {
    let text = http().get(format!("{}/_vzpkg/status", proxy.url())).send().await.unwrap().text().await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    status["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {status}"))
}

/// Waits until `check` holds, asking again every few milliseconds; fails after 60 s. For state
/// that a test can only observe from outside (another process), never as a pause.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A blocking GET for tests that drive real package managers: status, and the body or the
/// error that cut it short.
pub fn get(url: &str) -> (u16, Result<Vec<u8>, String>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let resp = http().get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.bytes().await.map(|b| b.to_vec()).map_err(|e| e.to_string()))
    })
}

/// The proxy's `/_vzpkg/status` as JSON, blocking.
pub fn status_json(proxy: &ProxyProcess) -> serde_json::Value {
    let (code, body) = get(&format!("{}/_vzpkg/status", proxy.url()));
    assert_eq!(code, 200);
    serde_json::from_slice(&body.unwrap()).unwrap()
}

/// Runs the `vzpkg` binary with `args`; returns (exit code, stdout, stderr).
/// A process holding an fcntl write lock on `file` (as dpkg and apt hold theirs) until its
/// stdin closes; returned once the lock is held.
pub fn hold_lock(file: &Path) -> std::process::Child {
    use std::io::BufRead;
    let hold = "import fcntl, sys\nf = open(sys.argv[1], 'r+')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()\n";
    let mut holder = Command::new("python3")
        .args(["-c", hold])
        .arg(file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "locked\n");
    holder
}

pub fn vzpkg(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vzpkg")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every entry below `dir`, recursively, without following symlinks, with its metadata; the
/// directories named in `skip` (relative to `dir`) are left out with all they hold. Sorted.
pub fn walk(dir: &Path, skip: &[&str]) -> Vec<(std::path::PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if skip.iter().any(|s| path.strip_prefix(dir).unwrap() == Path::new(s)) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
            }
            found.push((path, meta));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}
