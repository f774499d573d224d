//! Nothing unverified enters the shared cache: tampered packages and indexes are refused,
//! index roots must carry a good signature when a keyring is configured, and apt never sees a
//! hash mismatch while upstream switches generations.

use crate::util::clients::{Apt, Dnf, Via};
use crate::util::gpg::Gpg;
use crate::util::repo::{deb_index_with, deb_repo, noise, rpm_repo, IndexOptions, Pkg};
use crate::util::{check_store, get, sha256, status_json, ProxyProcess, Upstream};

/// Retries at once after a failure, so a test can fix upstream and ask again.
const NO_BACKOFF: &str = "[proxy.upstream]\nbackoff_secs = 0\n";

fn packages() -> Vec<Pkg> {
    vec![Pkg::new("vzt-alpha", "1.0", 200_000).depends("vzt-beta"), Pkg::new("vzt-beta", "2.1", 900_000)]
}

/// Same size, different bytes: what apt's size-only check would let through.
fn tamper(path: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let good = std::fs::read(path).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle..middle + 64].copy_from_slice(&noise(64, 777));
    assert_ne!(good, bad);
    std::fs::write(path, &bad).unwrap();
    (good, bad)
}

/// A client asking directly must never receive a complete copy of `bad`.
fn assert_never_served(url: &str, bad: &[u8]) {
    let (status, body) = get(url);
    if let (200, Ok(body)) = (status, &body) {
        assert_ne!(sha256(body), sha256(bad), "a complete tampered file was served");
        panic!("a tampered file was answered 200 with a complete body");
    }
}

#[test]
fn a_tampered_deb_is_refused_and_the_fixed_one_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let debs = deb_repo(&tmp.path().join("upstream/debian"), &packages());
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let remap = format!("debian={}/debian", upstream.url());
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), NO_BACKOFF, &["--remap", &remap]);
    let base = format!("{}/debian", proxy.url());
    let apt = Apt::new(&tmp.path().join("apt"), Via::Remap { base: &base });
    apt.get(&["update"]);

    let beta = upstream.root.join("debian").join(&debs[1]);
    let (good, bad) = tamper(&beta);
    let (ok, out) = apt.try_get(&["install", "--download-only", "vzt-beta"]);
    assert!(!ok, "apt accepted a tampered package:\n{out}");
    assert_never_served(&format!("{base}/{}", debs[1]), &bad);
    assert!(!check_store(&proxy.cache_dir).contains(&sha256(&bad)), "the tampered blob reached the store");
    assert!(status_json(&proxy)["counters"]["verify_failures"].as_u64().unwrap() >= 1);

    std::fs::write(&beta, &good).unwrap();
    apt.get(&["install", "--download-only", "vzt-beta"]);
    let got = std::fs::read(apt.dir.join("var/cache/apt/archives").join(debs[1].rsplit('/').next().unwrap())).unwrap();
    assert_eq!(sha256(&got), sha256(&good));
    assert!(check_store(&proxy.cache_dir).contains(&sha256(&good)));
    assert_eq!(status_json(&proxy)["unverified_entries"], 0, "everything stored was verified");
}

#[test]
fn a_packages_file_that_does_not_match_its_release_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("upstream/debian");
    deb_repo(&root, &packages());
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let remap = format!("debian={}/debian", upstream.url());
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), NO_BACKOFF, &["--remap", &remap]);
    // The Packages files change after Release was written: they no longer match it.
    let bin = root.join("dists/stable/main/binary-amd64");
    tamper(&bin.join("Packages"));
    tamper(&bin.join("Packages.gz"));
    let (_, bad) = tamper(&bin.join("Packages.xz"));

    let base = format!("{}/debian", proxy.url());
    let apt = Apt::new(&tmp.path().join("apt"), Via::Remap { base: &base });
    // apt reports the failed index, and ends up without the packages it lists.
    let (_, out) = apt.try_get(&["update"]);
    assert!(out.contains("Err:"), "apt update saw no error:\n{out}");
    let (ok, out) = apt.try_get(&["install", "--download-only", "vzt-alpha"]);
    assert!(!ok, "apt found packages listed by an index that does not match Release:\n{out}");
    assert!(!check_store(&proxy.cache_dir).contains(&sha256(&bad)));
    // A small index is verified before its first byte: the client gets a clean 502.
    let (status, body) = get(&format!("{base}/dists/stable/main/binary-amd64/Packages.xz"));
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body.unwrap()).contains("verification failed"));
}

#[test]
fn a_tampered_rpm_is_refused_and_the_fixed_one_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let rpms = rpm_repo(&tmp.path().join("upstream/el"), &packages());
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let remap = format!("el={}/el", upstream.url());
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), NO_BACKOFF, &["--remap", &remap]);
    let base = format!("{}/el/", proxy.url());
    let dnf = Dnf::new(&tmp.path().join("dnf"), Via::Remap { base: &base });
    dnf.run(&["makecache"]);

    let beta = upstream.root.join("el").join(&rpms[1]);
    let (good, bad) = tamper(&beta);
    let (ok, out) = dnf.try_run(&["install", "--downloadonly", "vzt-beta"]);
    assert!(!ok, "dnf accepted a tampered package:\n{out}");
    assert_never_served(&format!("{base}{}", rpms[1]), &bad);
    assert!(!check_store(&proxy.cache_dir).contains(&sha256(&bad)));

    std::fs::write(&beta, &good).unwrap();
    dnf.run(&["install", "--downloadonly", "vzt-beta"]);
    assert!(dnf.packages().iter().any(|p| sha256(&std::fs::read(p).unwrap()) == sha256(&good)));
    assert!(check_store(&proxy.cache_dir).contains(&sha256(&good)));
    assert_eq!(status_json(&proxy)["unverified_entries"], 0);
}

/// Must-show 5: with no configuration at all, the keyring this machine's own apt sources name
/// for an upstream (`Signed-By`, in a deb822 file with an armored key, and a one-line file with
/// a binary one) is the one its roots must verify with. Root: the proxy runs in a mount
/// namespace of its own where the test's directory is /etc/apt.
#[test]
fn the_hosts_signed_by_keyring_is_used_with_no_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let archive_key = Gpg::new(&tmp.path().join("gpg-archive"), "archive");
    let other_key = Gpg::new(&tmp.path().join("gpg-other"), "intruder");
    let keyring = tmp.path().join("archive-keyring.gpg");
    archive_key.export_keyring(&keyring);
    let armored = tmp.path().join("archive-keyring.asc");
    crate::util::run(
        std::process::Command::new("gpg")
            .args(["--batch", "--yes", "--enarmor", "--output"])
            .arg(&armored)
            .arg(&keyring),
    );
    let armored_text = std::fs::read_to_string(&armored).unwrap().replace("ARMORED FILE", "PUBLIC KEY BLOCK");
    for (name, signer) in [("deb822", &other_key), ("oneline", &other_key)] {
        let root = tmp.path().join("upstream").join(name);
        deb_repo(&root, &packages());
        deb_index_with(&root, &IndexOptions { signer: Some(signer), ..Default::default() });
    }
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    // Two upstream authorities, so that each sources format is what names the keyring for one.
    let second = Upstream::start(&tmp.path().join("upstream"));
    let etc_apt = tmp.path().join("etc-apt");
    std::fs::create_dir_all(etc_apt.join("sources.list.d")).unwrap();
    let inline: String =
        armored_text.lines().map(|l| if l.is_empty() { " .\n".to_string() } else { format!(" {l}\n") }).collect();
    std::fs::write(
        etc_apt.join("sources.list.d/test.sources"),
        format!("Types: deb\nURIs: {}/deb822\nSuites: stable\nComponents: main\nSigned-By:\n{inline}", upstream.url()),
    )
    .unwrap();
    std::fs::write(
        etc_apt.join("sources.list"),
        format!("deb [signed-by={}] {}/oneline stable main\n", keyring.display(), second.url()),
    )
    .unwrap();
    // No config, no --allow-host, no keyring option: the sources alone allow the hosts and
    // name their keyrings.
    let proxy = ProxyProcess::start_with_host_apt(&tmp.path().join("cache"), NO_BACKOFF, &[], &etc_apt);
    proxy.log_with("signatures checked with this machine's apt keyring");

    for (name, up) in [("deb822", &upstream), ("oneline", &second)] {
        let dists = format!("{}/{name}/dists/stable", up.url());
        let via = crate::util::http_via(&proxy.url());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let get_via = |url: String| {
            runtime.block_on(async {
                let resp = via.get(&url).send().await.unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap())
            })
        };
        let (status, body) = get_via(format!("{dists}/InRelease"));
        assert_eq!(status, 502, "{name}: an InRelease signed by another key was served: {body}");
        assert!(body.contains("signature does not verify with keyring"), "{name}: {body}");
        let (status, body) = get_via(format!("{dists}/Release"));
        assert_eq!(status, 502, "{name}: a Release whose Release.gpg is by another key was served: {body}");
        let forged = std::fs::read(tmp.path().join("upstream").join(name).join("dists/stable/InRelease")).unwrap();
        assert!(!check_store(&proxy.cache_dir).contains(&sha256(&forged)), "{name}: a badly signed root was stored");

        // Signed by the key the sources name: served.
        deb_index_with(
            &tmp.path().join("upstream").join(name),
            &IndexOptions { signer: Some(&archive_key), ..Default::default() },
        );
        let (status, body) = get_via(format!("{dists}/InRelease"));
        assert_eq!(status, 200, "{name}: {body}");
    }
    assert!(status_json(&proxy)["known_hashes"].as_u64().unwrap() > 0);
}

#[test]
fn inrelease_must_verify_with_the_configured_keyring() {
    let tmp = tempfile::tempdir().unwrap();
    let archive_key = Gpg::new(&tmp.path().join("gpg-archive"), "archive");
    let other_key = Gpg::new(&tmp.path().join("gpg-other"), "intruder");
    let keyring = tmp.path().join("archive-keyring.gpg");
    archive_key.export_keyring(&keyring);
    let root = tmp.path().join("upstream/debian");
    deb_repo(&root, &packages());
    deb_index_with(&root, &IndexOptions { signer: Some(&other_key), ..Default::default() });
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let remap = format!("debian={}/debian", upstream.url());
    let config = format!("{NO_BACKOFF}\n[proxy.keyrings]\ndebian = {:?}\n", keyring.display().to_string());
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), &config, &["--remap", &remap]);
    let inrelease = format!("{}/debian/dists/stable/InRelease", proxy.url());

    let (status, body) = get(&inrelease);
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body.unwrap()).contains("signature"));
    let forged = std::fs::read(root.join("dists/stable/InRelease")).unwrap();
    assert!(!check_store(&proxy.cache_dir).contains(&sha256(&forged)), "a badly signed index was stored");
    let (status, _) = get(&format!("{}/debian/dists/stable/Release", proxy.url()));
    assert_eq!(status, 502, "a Release is checked with the Release.gpg beside it, by another key here");
    let (status, signature) = get(&format!("{}/debian/dists/stable/Release.gpg", proxy.url()));
    assert_eq!(status, 200, "with no Release stored to check it against, a signature is passed through");
    assert!(!check_store(&proxy.cache_dir).contains(&sha256(&signature.unwrap())), "and not stored");
    assert_eq!(status_json(&proxy)["known_hashes"], 0, "nothing was learned from unverified roots");

    deb_index_with(&root, &IndexOptions { signer: Some(&archive_key), ..Default::default() });
    let (status, body) = get(&inrelease);
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), std::fs::read(root.join("dists/stable/InRelease")).unwrap());
    assert!(status_json(&proxy)["known_hashes"].as_u64().unwrap() > 0, "a good InRelease is learned from");

    // And apt, which checks the same signature itself, installs through the chain: everything
    // it brings into the store is verified.
    let base = format!("{}/debian", proxy.url());
    let apt = Apt::new(&tmp.path().join("apt"), Via::Remap { base: &base });
    apt.get(&["update"]);
    apt.get(&["install", "--download-only", "vzt-alpha"]);
    assert_eq!(apt.archives().len(), 2);
    assert_eq!(status_json(&proxy)["unverified_entries"], 0);
}

#[test]
fn unverified_packages_are_marked_then_verified_and_strict_mode_stores_none() {
    let tmp = tempfile::tempdir().unwrap();
    let debs = deb_repo(&tmp.path().join("upstream/debian"), &packages());
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let remap = format!("debian={}/debian", upstream.url());
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), "", &["--remap", &remap]);
    let deb_url = format!("{}/debian/{}", proxy.url(), debs[0]);
    let content = std::fs::read(upstream.root.join("debian").join(&debs[0])).unwrap();

    // No index seen yet: served and stored, but marked unverified.
    let (status, body) = get(&deb_url);
    assert_eq!((status, sha256(&body.unwrap())), (200, sha256(&content)));
    assert_eq!(status_json(&proxy)["unverified_entries"], 1);
    // Its index arrives: the stored copy matches and becomes verified.
    let base = format!("{}/debian", proxy.url());
    Apt::new(&tmp.path().join("apt"), Via::Remap { base: &base }).get(&["update"]);
    assert_eq!(status_json(&proxy)["unverified_entries"], 0);

    let strict =
        ProxyProcess::start(&tmp.path().join("strict-cache"), "[proxy]\nstrict = true\n", &["--remap", &remap]);
    let (status, body) = get(&format!("{}/debian/{}", strict.url(), debs[1]));
    assert_eq!(status, 200, "strict mode still passes the file through");
    let want = sha256(&std::fs::read(upstream.root.join("debian").join(&debs[1])).unwrap());
    assert_eq!(sha256(&body.unwrap()), want);
    assert!(check_store(&strict.cache_dir).is_empty(), "strict mode stored a package no index vouches for");
}

#[test]
fn a_url_that_keeps_failing_is_backed_off() {
    let tmp = tempfile::tempdir().unwrap();
    let debs = deb_repo(&tmp.path().join("upstream/debian"), &packages());
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let remap = format!("debian={}/debian", upstream.url());
    let config = "[proxy.upstream]\nbackoff_secs = 600\n";
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), config, &["--remap", &remap]);
    let base = format!("{}/debian", proxy.url());
    Apt::new(&tmp.path().join("apt"), Via::Remap { base: &base }).get(&["update"]);
    tamper(&upstream.root.join("debian").join(&debs[0]));
    let url = format!("{base}/{}", debs[0]);
    let path = format!("/debian/{}", debs[0]);

    let (first, _) = get(&url);
    assert_eq!(upstream.count(&path), 1);
    let (second, body) = get(&url);
    assert_eq!(second, 502);
    assert!(String::from_utf8_lossy(&body.unwrap()).contains("next attempt in"));
    assert_eq!(upstream.count(&path), 1, "the failing URL was not asked again during its backoff");
    assert_eq!(status_json(&proxy)["counters"]["backoff_refusals"], 1);
    assert_eq!(first, 200, "the first client saw the headers, then a cut body");
}

/// Copies a generation into the live tree the way a mirror does: packages and by-hash files
/// first (old ones stay), then the index files, then Release, each by an atomic rename.
fn publish_generation(from: &std::path::Path, live: &std::path::Path) {
    let copy = |rel: &std::path::Path| {
        let (src, dst) = (from.join(rel), live.join(rel));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let tmp = dst.with_extension("new");
        std::fs::copy(&src, &tmp).unwrap();
        std::fs::rename(&tmp, &dst).unwrap();
    };
    let bin = std::path::Path::new("dists/stable/main/binary-amd64");
    for dir in [std::path::Path::new("pool/main").to_path_buf(), bin.join("by-hash/SHA256")] {
        for entry in std::fs::read_dir(from.join(&dir)).unwrap() {
            copy(&dir.join(entry.unwrap().file_name()));
        }
    }
    copy(&bin.join("Packages"));
    copy(&bin.join("Packages.gz"));
    copy(&bin.join("Packages.xz"));
    copy(std::path::Path::new("dists/stable/Release"));
}

#[test]
fn apt_never_sees_a_hash_mismatch_while_upstream_switches_generations() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("upstream/debian");
    let build = |g: usize| {
        let dir = tmp.path().join(format!("gen{g}"));
        let version: &'static str = Box::leak(format!("1.{g}").into_boxed_str());
        deb_repo(&dir, &[Pkg::new("vzt-alpha", version, 2_000 + g), Pkg::new("vzt-beta", version, 3_000 + g)]);
        deb_index_with(&dir, &IndexOptions { by_hash: true, ..Default::default() });
        dir
    };
    publish_generation(&build(0), &live);
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let remap = format!("debian={}/debian", upstream.url());
    let config = "[proxy]\nindex_ttl_secs = 0\n[proxy.upstream]\nbackoff_secs = 0\n";
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), config, &["--remap", &remap]);
    let base = format!("{}/debian", proxy.url());

    const CLIENTS: usize = 20;
    const ROUNDS: usize = 10;
    let finished = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let apt = Apt::new(&tmp.path().join(format!("apt{i}")), Via::Remap { base: &base });
            let finished = finished.clone();
            std::thread::spawn(move || {
                let runs: Vec<(bool, String)> = (0..ROUNDS).map(|_| apt.try_get(&["update"])).collect();
                finished.fetch_add(1, Ordering::SeqCst);
                runs
            })
        })
        .collect();
    // Switch generations for as long as the clients run: every switch is a real rebuild.
    let mut generation = 0;
    while finished.load(Ordering::SeqCst) < CLIENTS && generation < 200 {
        generation += 1;
        publish_generation(&build(generation), &live);
    }
    for client in clients {
        for (ok, out) in client.join().unwrap() {
            assert!(ok && !out.contains("Hash Sum mismatch") && !out.contains("Err:"), "apt update failed:\n{out}");
        }
    }
    eprintln!("upstream switched generations {generation} times under {CLIENTS} clients");
    assert!(generation >= 2, "upstream switched only {generation} times while the clients ran");
    assert!(upstream.count_ending("/Release") > CLIENTS as u64, "the clients revalidated Release");
}

/// Tampered roots for `text_outside_a_signature_is_refused_and_nothing_it_names_is_learned`:
/// (what is wrong, the InRelease, the Release and Release.gpg, what the 502 must say).
type Forgery = (&'static str, Option<Vec<u8>>, Option<(Vec<u8>, Vec<u8>)>, &'static str);

/// An upstream whose genuine, signed chain is joined by unsigned text naming an extra index,
/// which lists an extra package. gpgv accepts the genuine signature whatever surrounds it, so
/// a proxy that read the whole file would learn the extra index as trusted, and the extra
/// package with it (stored as verified, even in strict mode). Each forgery is refused with 502
/// and nothing it names is learned, with a keyring, in normal and in strict mode.
///
/// What breaks it: reading the signed part from the whole file (the old `signed_body`, which
/// read unsigned text before the message as part of it) makes "text before" pass with 200;
/// storing what gpgv accepts without the framing check makes "text after" pass with 200.
/// "two messages" and "Release.gpg signs other bytes" are refused by gpgv as well; they are
/// here so that no change of reader lets them through.
#[test]
fn text_outside_a_signature_is_refused_and_nothing_it_names_is_learned() {
    let tmp = tempfile::tempdir().unwrap();
    let archive_key = Gpg::new(&tmp.path().join("gpg-archive"), "archive");
    let keyring = tmp.path().join("archive-keyring.gpg");
    archive_key.export_keyring(&keyring);
    let root = tmp.path().join("upstream/debian");
    deb_repo(&root, &packages());
    deb_index_with(&root, &IndexOptions { signer: Some(&archive_key), ..Default::default() });
    let dists = root.join("dists/stable");
    let (inrelease, release, release_gpg) = (
        std::fs::read(dists.join("InRelease")).unwrap(),
        std::fs::read(dists.join("Release")).unwrap(),
        std::fs::read(dists.join("Release.gpg")).unwrap(),
    );

    // The extra package and an index listing it, beside the genuine ones, named by no signed
    // text: built as a repository of their own, then copied in.
    let extra_repo = tmp.path().join("extra");
    let extra_deb = deb_repo(&extra_repo, &[Pkg::new("vzt-extra", "6.6", 30_000)]).remove(0);
    std::fs::copy(extra_repo.join(&extra_deb), root.join(&extra_deb)).unwrap();
    let extra_index = std::fs::read(extra_repo.join("dists/stable/main/binary-amd64/Packages")).unwrap();
    std::fs::create_dir_all(dists.join("extra/binary-amd64")).unwrap();
    std::fs::write(dists.join("extra/binary-amd64/Packages"), &extra_index).unwrap();
    let entry = format!(" {} {} extra/binary-amd64/Packages\n", sha256(&extra_index), extra_index.len());
    let extra = format!("SHA256:\n{entry}");
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
    let second_message = {
        let (plain, signed) = (tmp.path().join("extra.txt"), tmp.path().join("extra.asc"));
        std::fs::write(&plain, &extra).unwrap();
        archive_key.clearsign(&plain, &signed);
        std::fs::read(signed).unwrap()
    };
    let forgeries: Vec<Forgery> = vec![
        (
            "text before",
            Some(format!("{extra}\n{}", text(&inrelease)).into_bytes()),
            None,
            "text before the signed message",
        ),
        ("text after", Some([&inrelease[..], extra.as_bytes()].concat()), None, "text after the signature"),
        ("two messages", Some([&inrelease[..], &second_message].concat()), None, "more than one signed message"),
        (
            "Release.gpg signs other bytes",
            None,
            Some(([&release[..], entry.as_bytes()].concat(), release_gpg)),
            "signature",
        ),
    ];

    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let remap = format!("debian={}/debian", upstream.url());
    let deb_sha = sha256(&std::fs::read(root.join(&extra_deb)).unwrap());
    for (what, forged_inrelease, forged_release, reason) in forgeries {
        match &forged_inrelease {
            Some(bytes) => std::fs::write(dists.join("InRelease"), bytes).unwrap(),
            None => std::fs::remove_file(dists.join("InRelease")).unwrap_or(()),
        }
        if let Some((release, signature)) = &forged_release {
            std::fs::write(dists.join("Release"), release).unwrap();
            std::fs::write(dists.join("Release.gpg"), signature).unwrap();
        }
        for strict in [false, true] {
            let config = format!(
                "[proxy]\nstrict = {strict}\n[proxy.upstream]\nbackoff_secs = 0\n[proxy.keyrings]\ndebian = {:?}\n",
                keyring.display().to_string()
            );
            let cache = tmp.path().join(format!("cache-{}-{strict}", what.replace(' ', "-")));
            let proxy = ProxyProcess::start(&cache, &config, &["--remap", &remap]);
            let base = format!("{}/debian", proxy.url());
            let name = if forged_inrelease.is_some() { "InRelease" } else { "Release" };
            let (status, body) = get(&format!("{base}/dists/stable/{name}"));
            let body = String::from_utf8_lossy(&body.unwrap()).into_owned();
            assert_eq!(status, 502, "{what} (strict {strict}): {name} was answered {status}: {body}");
            assert!(body.contains(reason), "{what}: the 502 does not say {reason:?}: {body}");
            assert_eq!(body.trim_end().lines().count(), 1, "{what}: the reason is one line: {body}");

            // A client that goes on all the same gets the extra files, but unverified: in strict
            // mode the package is passed through and not stored.
            let (status, _) = get(&format!("{base}/dists/stable/extra/binary-amd64/Packages"));
            assert_eq!(status, 200, "{what}");
            let (status, _) = get(&format!("{base}/{extra_deb}"));
            assert_eq!(status, 200, "{what}");
            let status = status_json(&proxy);
            assert_eq!(status["known_hashes"], 0, "{what} (strict {strict}): something was learned");
            assert_eq!(status["unverified_entries"], if strict { 1 } else { 2 }, "{what} (strict {strict})");
            let stored = check_store(&proxy.cache_dir);
            assert_eq!(stored.contains(&deb_sha), !strict, "{what} (strict {strict}): the extra package");
            let roots = [forged_inrelease.clone(), forged_release.as_ref().map(|(r, _)| r.clone())];
            for root in roots.into_iter().flatten() {
                assert!(!stored.contains(&sha256(&root)), "{what}: the forged root was stored");
            }
        }
    }

    // The genuine root, through the same kind of proxy, is learned from: the refusals above are
    // the forgeries', not the setup's.
    std::fs::write(dists.join("InRelease"), &inrelease).unwrap();
    let config = format!("[proxy]\nstrict = true\n[proxy.keyrings]\ndebian = {:?}\n", keyring.display().to_string());
    let proxy = ProxyProcess::start(&tmp.path().join("cache-genuine"), &config, &["--remap", &remap]);
    let (status, _) = get(&format!("{}/debian/dists/stable/InRelease", proxy.url()));
    assert_eq!(status, 200);
    assert!(status_json(&proxy)["known_hashes"].as_u64().unwrap() > 0);
}

/// A client that read InRelease before upstream moved on asks, by hash, for index files of that
/// generation after upstream has published the next one and deleted every file of the old one.
/// The proxy holds the content (stored when another client fetched it under its plain name) and
/// serves it by the hash the chain pins: no upstream request, no 404.
///
/// What breaks it: without the lookup of a pinned hash in the store (`stored_by_hash`), the
/// by-hash URL goes upstream, which has removed it: the direct request gets 404, and upstream
/// sees requests after the switch (apt itself then falls back to the plain name).
#[test]
fn a_generation_upstream_removed_is_served_from_the_store_by_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("upstream/debian");
    // Signed, so that apt asks for InRelease only (no 404s for it and Release.gpg to count).
    let archive_key = Gpg::new(&tmp.path().join("gpg"), "archive");
    let build = |g: usize| {
        let dir = tmp.path().join(format!("gen{g}"));
        let version: &'static str = Box::leak(format!("1.{g}").into_boxed_str());
        let debs = deb_repo(&dir, &[Pkg::new("vzt-alpha", version, 20_000 + g), Pkg::new("vzt-beta", version, 30_000)]);
        deb_index_with(&dir, &IndexOptions { by_hash: true, signer: Some(&archive_key) });
        (dir, debs)
    };
    let (gen0, debs) = build(0);
    let publish = |dir: &std::path::Path| {
        let _ = std::fs::remove_dir_all(&live);
        copy_tree(dir, &live);
    };
    publish(&gen0);
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let remap = format!("debian={}/debian", upstream.url());
    // The default index TTL (30 s): within it, InRelease is served without asking upstream, so
    // a second client still gets generation 0's.
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), NO_BACKOFF, &["--remap", &remap]);
    let base = format!("{}/debian", proxy.url());

    // The first client does not use by-hash: the proxy stores the index under its plain name.
    let plain = Apt::new(&tmp.path().join("apt-plain"), Via::Remap { base: &base });
    std::fs::write(plain.dir.join("etc/apt/apt.conf.d/by-hash"), "Acquire::By-Hash \"no\";\n").unwrap();
    plain.get(&["update"]);
    plain.get(&["install", "--download-only", "vzt-alpha"]);
    assert!(upstream.count_ending("/Packages.xz") > 0, "the plain client fetched Packages.xz by name");
    assert_eq!(upstream.count_ending("/by-hash"), 0);

    // Upstream moves to generation 1; nothing of generation 0 is left there.
    let (gen1, _) = build(1);
    publish(&gen1);
    assert!(!live.join(&debs[0]).exists());
    let before = upstream.total();

    // The second client uses by-hash, as apt does by default, with generation 0's InRelease.
    let by_hash = Apt::new(&tmp.path().join("apt-by-hash"), Via::Remap { base: &base });
    let (ok, out) = by_hash.try_get(&["update"]);
    assert!(ok && !out.contains("Err:"), "apt update of the pinned generation failed:\n{out}");
    by_hash.get(&["install", "--download-only", "vzt-alpha"]);
    let got = std::fs::read(&by_hash.archives()[0]).unwrap();
    assert_eq!(sha256(&got), sha256(&std::fs::read(gen0.join(&debs[0])).unwrap()));
    let index = std::fs::read(gen0.join("dists/stable/main/binary-amd64/Packages.xz")).unwrap();
    let (status, body) = get(&format!("{base}/dists/stable/main/binary-amd64/by-hash/SHA256/{}", sha256(&index)));
    assert_eq!((status, sha256(&body.unwrap())), (200, sha256(&index)), "generation 0's index, by hash");
    assert_eq!(upstream.total(), before, "upstream was asked for something after the switch");
}

/// Copies a directory tree (the repository builders' output) to `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// With a keyring, a Release checked with its Release.gpg and a repomd.xml checked with its
/// repomd.xml.asc root the chain: in strict mode, which stores only packages the chain vouches
/// for, everything apt and dnf download is stored, verified. The proxy fetches each signature
/// beside its file and keeps it, so the client's copy is the one checked. A repomd.xml whose
/// signature is by another key is refused with 502 and nothing is learned from it.
///
/// What breaks it: without the detached-signature checks (a Release or repomd.xml never trusted
/// with a keyring, Release.gpg and repomd.xml.asc vouching for nothing), strict mode stores no
/// package and the first store assertion fails.
#[test]
fn release_gpg_and_repomd_asc_root_the_chain_with_a_keyring() {
    let tmp = tempfile::tempdir().unwrap();
    let archive_key = Gpg::new(&tmp.path().join("gpg-archive"), "archive");
    let other_key = Gpg::new(&tmp.path().join("gpg-other"), "intruder");
    let keyring = tmp.path().join("archive-keyring.gpg");
    archive_key.export_keyring(&keyring);
    let deb_root = tmp.path().join("upstream/debian");
    let debs = deb_repo(&deb_root, &packages());
    deb_index_with(&deb_root, &IndexOptions { signer: Some(&archive_key), ..Default::default() });
    // No InRelease: apt and the proxy go by Release and Release.gpg.
    std::fs::remove_file(deb_root.join("dists/stable/InRelease")).unwrap();
    let rpm_root = tmp.path().join("upstream/el");
    let rpms = rpm_repo(&rpm_root, &packages());
    let repomd = rpm_root.join("repodata/repomd.xml");
    archive_key.detach_sign(&repomd, &repomd.with_extension("xml.asc"));

    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let (deb_remap, rpm_remap) = (format!("debian={}/debian", upstream.url()), format!("el={}/el", upstream.url()));
    let keyring = keyring.display().to_string();
    let config = format!("[proxy]\nstrict = true\n[proxy.keyrings]\ndebian = {keyring:?}\nel = {keyring:?}\n");
    let args = ["--remap", &deb_remap, "--remap", &rpm_remap];
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), &config, &args);

    let base = format!("{}/debian", proxy.url());
    let apt = Apt::new(&tmp.path().join("apt"), Via::Remap { base: &base });
    apt.get(&["update"]);
    apt.get(&["install", "--download-only", "vzt-alpha"]);
    let stored = check_store(&proxy.cache_dir);
    for deb in &debs {
        let want = sha256(&std::fs::read(deb_root.join(deb)).unwrap());
        assert!(stored.contains(&want), "strict mode did not store {deb}: Release.gpg did not root the chain");
    }
    let base = format!("{}/el/", proxy.url());
    Dnf::new(&tmp.path().join("dnf"), Via::Remap { base: &base }).run(&["install", "--downloadonly", "vzt-alpha"]);
    let stored = check_store(&proxy.cache_dir);
    for rpm in &rpms {
        let want = sha256(&std::fs::read(rpm_root.join(rpm)).unwrap());
        assert!(stored.contains(&want), "strict mode did not store {rpm}: repomd.xml.asc did not root the chain");
    }
    assert_eq!(status_json(&proxy)["unverified_entries"], 0, "everything stored is verified");
    let (status, signature) = get(&format!("{}/debian/dists/stable/Release.gpg", proxy.url()));
    assert_eq!((status, signature.unwrap()), (200, std::fs::read(deb_root.join("dists/stable/Release.gpg")).unwrap()));
    assert_eq!(upstream.count("/debian/dists/stable/Release.gpg"), 1, "the checked signature is kept and served");
    assert_eq!(upstream.count("/el/repodata/repomd.xml.asc"), 1);

    // The same repomd.xml signed by another key: refused whole, nothing learned.
    other_key.detach_sign(&repomd, &repomd.with_extension("xml.asc"));
    let other = ProxyProcess::start(&tmp.path().join("cache-other"), &config, &args);
    let (status, body) = get(&format!("{}/el/repodata/repomd.xml", other.url()));
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body.unwrap()).contains("signature does not verify"));
    assert_eq!(status_json(&other)["known_hashes"], 0);
    assert!(check_store(&other.cache_dir).is_empty());
}
