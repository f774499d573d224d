//! A catalog of a million known packages: generated Packages files of a few suites, updated
//! by a real apt-get through the proxy in forward mode. The proxy learns every hash into its
//! catalog on disk, its memory stays bounded while it does, and a package only the last suite
//! names is verified and served, before and after a restart. The memory and time figures
//! themselves are the benchmark's (contrib/bench/catalog.sh); here only a bound far below what
//! holding the catalog in memory costs. Runs as root or not.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::util::clients::{Apt, Via};
use crate::util::repo::noise;
use crate::util::{check_store, http_via, run, sha256, status_json, ProxyProcess, Upstream};

const SUITES: [&str; 4] = ["one", "two", "three", "four"];
const PER_SUITE: usize = 250_000;

/// The proxy's peak resident memory so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A real .deb named `name` in the pool; returns its pool path and its stanza (whose hash
/// is `listed_sha`, or the file's own).
fn real_deb(root: &Path, name: &str, listed_sha: Option<&str>) -> (String, String) {
    let build = root.join(".build").join(name);
    std::fs::create_dir_all(build.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(build.join("usr/share").join(name)).unwrap();
    std::fs::write(
        build.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: {name}\n"
        ),
    )
    .unwrap();
    std::fs::write(build.join("usr/share").join(name).join("data"), noise(3000, name.len() as u64)).unwrap();
    let file = format!("pool/main/r/{name}/{name}_1.0_all.deb");
    std::fs::create_dir_all(root.join(&file).parent().unwrap()).unwrap();
    run(Command::new("dpkg-deb").args(["-Znone", "--root-owner-group", "--build"]).arg(&build).arg(root.join(&file)));
    let bytes = std::fs::read(root.join(&file)).unwrap();
    let sha = listed_sha.map(str::to_string).unwrap_or_else(|| sha256(&bytes));
    let stanza = format!(
        "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nFilename: {file}\n\
         Size: {}\nSHA256: {sha}\nDescription: {name}\n\n",
        bytes.len()
    );
    (file, stanza)
}

/// Hashes what goes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `dists/SUITE/main/binary-amd64/Packages.gz` with `PER_SUITE` generated stanzas
/// (plus `extra`), and the suite's Release, which lists the uncompressed Packages too (apt
/// looks for that name) without it being served.
fn suite(root: &Path, index: usize, extra: &str) {
    let name = SUITES[index];
    let dists = root.join("dists").join(name);
    let bin = dists.join("main/binary-amd64");
    std::fs::create_dir_all(&bin).unwrap();
    let file = Hashing { inner: std::fs::File::create(bin.join("Packages.gz")).unwrap(), sha: Sha256::new(), len: 0 };
    let gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
    let mut gz = Hashing { inner: gz, sha: Sha256::new(), len: 0 };
    for n in 0..PER_SUITE {
        // Package names shared across suites, as Debian's are; each suite its own version.
        let version = format!("{}.{n}-1", index + 1);
        let sha = hex::encode(Sha256::digest(format!("{name} {n}")));
        write!(
            gz,
            "Package: pkg{n}\nVersion: {version}\nArchitecture: amd64\nMaintainer: t <t@example.org>\n\
             Installed-Size: 10\nFilename: pool/main/p/src{}/pkg{n}_{version}_amd64.deb\nSize: {}\n\
             SHA256: {sha}\nDescription: synthetic package {n}\n\n",
            n / 4,
            1000 + n
        )
        .unwrap();
    }
    gz.write_all(extra.as_bytes()).unwrap();
    let (plain_sha, plain_len) = (hex::encode(gz.sha.finalize_reset()), gz.len);
    let file = gz.inner.finish().unwrap().into_inner().map_err(|e| e.into_error()).unwrap();
    let (gz_sha, gz_len) = (hex::encode(file.sha.finalize()), file.len);
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let release = format!(
        "Suite: {name}\nCodename: {name}\nDate: {date}\nArchitectures: amd64\nComponents: main\nSHA256:\n \
         {plain_sha} {plain_len} main/binary-amd64/Packages\n {gz_sha} {gz_len} main/binary-amd64/Packages.gz\n"
    );
    std::fs::write(dists.join("Release"), release).unwrap();
}

/// GET through the proxy: the status and the whole body, or None if the body broke off.
fn get_via(via: &reqwest::Client, url: &str) -> (u16, Option<Vec<u8>>) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let resp = via.get(url).send().await.unwrap();
        (resp.status().as_u16(), resp.bytes().await.ok().map(|b| b.to_vec()))
    })
}

#[test]
fn a_million_known_packages_are_learned_on_disk_and_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    // Only the last suite names these: one good, one whose bytes upstream are not what the
    // index says, one fetched only after the restart.
    let (good, good_stanza) = real_deb(&root, "real-good", None);
    let (bad, bad_stanza) = real_deb(&root, "real-bad", Some(&"0".repeat(64)));
    let (later, later_stanza) = real_deb(&root, "real-later", None);
    for i in 0..SUITES.len() {
        let extra =
            if i == SUITES.len() - 1 { format!("{good_stanza}{bad_stanza}{later_stanza}") } else { String::new() };
        suite(&root, i, &extra);
    }
    let upstream = Upstream::start(&root);
    let cache = dir.path().join("cache");
    let args = ["--allow-host", &upstream.host()];
    let mut proxy = ProxyProcess::start(&cache, "[proxy]\nstrict = true\n", &args);
    let repo = upstream.url();
    let apt = Apt::new(&dir.path().join("apt"), Via::Forward { proxy: &proxy.url(), repo: &repo });
    let sources: String = SUITES.iter().map(|s| format!("deb [trusted=yes] {repo} {s} main\n")).collect();
    std::fs::write(apt.dir.join("etc/apt/sources.list"), sources).unwrap();

    apt.get(&["update"]);
    let status = status_json(&proxy);
    let listed = SUITES.len() * PER_SUITE + 3;
    // Every .deb, and each suite's Packages and Packages.gz from its Release.
    let known = listed + 2 * SUITES.len();
    assert_eq!(status["known_hashes"].as_u64().unwrap() as usize, known, "{status}");
    // Holding the catalog in memory took over a kilobyte per package: a million of them
    // would be more than a gigabyte. On disk it is a bounded page cache and a batch: about
    // 50 MiB here, against the bound of 128 MiB.
    let peak = peak_rss(proxy.pid());
    assert!(peak <= 128 << 20, "peak RSS {} MiB while learning a million packages", peak >> 20);

    let via = http_via(&proxy.url());
    let fetch = |path: &str| get_via(&via, &format!("{repo}/{path}"));
    apt.get(&["install", "--download-only", "real-good"]);
    let good_bytes = std::fs::read(root.join(&good)).unwrap();
    let archives = apt.archives();
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert_eq!(sha256(&std::fs::read(&archives[0]).unwrap()), sha256(&good_bytes));
    assert_eq!(fetch(&good), (200, Some(good_bytes.clone())));
    // Strict: stored only because the last suite's index vouches for it.
    assert!(check_store(&cache).contains(&sha256(&good_bytes)));
    // Bytes that disagree with the learned hash never reach a client whole, nor the store.
    let bad_bytes = std::fs::read(root.join(&bad)).unwrap();
    assert_ne!(fetch(&bad), (200, Some(bad_bytes.clone())));
    assert!(!check_store(&cache).contains(&sha256(&bad_bytes)));
    assert_eq!(status_json(&proxy)["unverified_entries"], 0);

    proxy.stop();
    drop(proxy);
    let proxy = ProxyProcess::start(&cache, "[proxy]\nstrict = true\n", &args);
    let via = http_via(&proxy.url());
    let fetch = |path: &str| get_via(&via, &format!("{repo}/{path}"));
    let later_bytes = std::fs::read(root.join(&later)).unwrap();
    assert_eq!(fetch(&later), (200, Some(later_bytes.clone())));
    assert!(check_store(&cache).contains(&sha256(&later_bytes)), "verified after the restart, so stored");
    assert_eq!(fetch(&good), (200, Some(good_bytes)));
    assert_ne!(fetch(&bad), (200, Some(bad_bytes.clone())));
    assert!(!check_store(&cache).contains(&sha256(&bad_bytes)));
    let status = status_json(&proxy);
    assert_eq!(status["known_hashes"].as_u64().unwrap() as usize, known);
    assert_eq!(status["unverified_entries"], 0);
}
