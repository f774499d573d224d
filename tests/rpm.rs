//! `vzpkg install` and friends in rpm roots driven by dnf and zypper, as root: the container's
//! own dnf or zypper and rpm in the sandbox (Debian's, in a Debian root with rpm's database where rpm-based systems
//! keep it), a test repository built with rpmbuild and createrepo_c on a loopback upstream.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::cli::Served;
use crate::util::inside::{assert_only_the_relay_answers, store_snapshot, NETWORK_PROBE};
use crate::util::repo::{rpm_repo, Pkg};
use crate::util::rootfs::Rootfs;
use crate::util::{counter, run, vzpkg};

/// What every wrapper test starts from, vzpkg with `--backend dnf` (the test roots are Debian
/// roots with dnf and zypper added, which vzpkg would take for apt ones), and the repository.
struct Setup {
    served: Served,
    repo: PathBuf,
}

impl std::ops::Deref for Setup {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.served
    }
}

impl Setup {
    fn new(tmp: &Path) -> Setup {
        let repo = tmp.join("upstream/el");
        rpm_repo(&repo, &packages());
        // Revalidate repomd.xml at every run, so that the repository's change is seen at once.
        let mut served = Served::start(tmp, "[proxy]\nindex_ttl_secs = 0\n");
        served.cli = served.cli.backend("dnf");
        Setup { served, repo }
    }

    fn root(&self, dir: &Path) -> Rootfs {
        Rootfs::rpm(dir, &format!("{}/el/", self.upstream.url()))
    }
}

fn packages() -> Vec<Pkg> {
    vec![
        Pkg::new("vzt-alpha", "1.0", 300_000).depends("vzt-beta"),
        Pkg::new("vzt-beta", "2.1", 1_200_000),
        Pkg::new("vzt-gamma", "0.3", 40_000),
    ]
}

#[test]
fn install_remove_upgrade_update_and_list_through_dnf() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    let ct = root.ct();
    let repo_file = root.path.join("etc/yum.repos.d/test.repo");
    let repo_text = std::fs::read(&repo_file).unwrap();

    setup.ok("update", &[&ct]);
    // The repository's own `proxy=` leads nowhere: only vzpkg's setting for every repository
    // brings dnf to the proxy.
    let out = setup.ok("install", &[&ct, "vzt-alpha", "vzt-gamma"]);
    assert!(out.contains("installed vzt-alpha:noarch 1.0-1"), "{out}");
    assert!(out.contains("installed vzt-beta:noarch 2.1-1"), "{out}");
    assert_eq!(root.rpm_version("vzt-alpha").as_deref(), Some("1.0-1"));
    assert_eq!(setup.upstream.count_ending(".rpm"), 3);

    let listed = setup.ok("list", &[&ct]);
    assert!(listed.lines().any(|l| l == "vzt-gamma\t0.3-1\tnoarch"), "{listed}");

    let out = setup.ok("remove", &[&ct, "vzt-gamma"]);
    assert!(out.contains("removed vzt-gamma:noarch 0.3-1"), "{out}");
    assert_eq!(root.rpm_version("vzt-gamma"), None);

    rpm_repo(&setup.repo, &[Pkg::new("vzt-alpha", "1.1", 300_000).depends("vzt-beta")]);
    setup.ok("update", &[&ct]);
    let out = setup.ok("upgrade", &[&ct]);
    assert!(out.contains("changed vzt-alpha:noarch 1.0-1 -> 1.1-1"), "{out}");
    assert_eq!(root.rpm_version("vzt-alpha").as_deref(), Some("1.1-1"));

    assert_eq!(std::fs::read(&repo_file).unwrap(), repo_text, "the container's repository file changed");
    let kept: Vec<_> = crate::util::walk(&root.path.join("var/cache/dnf"), &[])
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "rpm"))
        .collect();
    assert!(kept.is_empty(), "packages were left in the container's cache: {kept:?}");
}

#[test]
fn a_second_rpm_container_installs_from_its_view_without_downloading() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let first = setup.root(&tmp.path().join("ct1"));
    setup.ok("install", &[&first.ct(), "vzt-alpha"]);
    let fetched = setup.upstream.count_ending(".rpm");
    assert_eq!(fetched, 2, "alpha and beta, once each");

    let second = setup.root(&tmp.path().join("ct2"));
    // dnf's metadata cache, which names the packages the view offers, comes with an update.
    setup.ok("update", &[&second.ct()]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let requests = |name| runtime.block_on(counter(&setup.proxy, name));
    let (hits, misses) = (requests("cache_hits"), requests("cache_misses"));
    setup.ok("install", &[&second.ct(), "vzt-alpha"]);
    assert_eq!(second.rpm_version("vzt-alpha").as_deref(), Some("1.0-1"));
    assert_eq!(setup.upstream.count_ending(".rpm"), fetched, "no upstream package download");
    assert_eq!(requests("cache_hits"), hits, "dnf read the packages from the view, not over HTTP");
    assert_eq!(requests("cache_misses"), misses);
}

#[test]
fn zypper_installs_removes_upgrades_and_a_second_container_reads_its_view() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    let ct = root.ct();
    let zypper_cli = setup.cli.backend("zypper");
    let zypper = |command: &str, args: &[&str]| zypper_cli.ok(command, args);

    zypper("update", &[&ct]);
    let out = zypper("install", &[&ct, "vzt-alpha", "vzt-gamma"]);
    assert!(
        out.contains("installed vzt-alpha:noarch 1.0-1") && out.contains("installed vzt-beta:noarch 2.1-1"),
        "{out}"
    );
    assert_eq!(root.rpm_version("vzt-gamma").as_deref(), Some("0.3-1"));
    assert!(zypper("list", &[&ct]).lines().any(|l| l == "vzt-alpha\t1.0-1\tnoarch"));
    let out = zypper("remove", &[&ct, "vzt-gamma"]);
    assert!(out.contains("removed vzt-gamma:noarch 0.3-1"), "{out}");
    let fetched = setup.upstream.count_ending(".rpm");
    assert_eq!(fetched, 3);

    // A second container, its metadata refreshed: the packages come from its view.
    let second = setup.root(&tmp.path().join("ct2"));
    zypper("update", &[&second.ct()]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let requests = |name| runtime.block_on(counter(&setup.proxy, name));
    let (hits, misses) = (requests("cache_hits"), requests("cache_misses"));
    zypper("install", &[&second.ct(), "vzt-alpha"]);
    assert_eq!(second.rpm_version("vzt-alpha").as_deref(), Some("1.0-1"));
    assert_eq!(requests("cache_hits"), hits, "zypper read the packages from the view, not over HTTP");
    assert_eq!(requests("cache_misses"), misses);

    rpm_repo(&setup.repo, &[Pkg::new("vzt-alpha", "1.1", 300_000).depends("vzt-beta")]);
    zypper("update", &[&ct]);
    let out = zypper("upgrade", &[&ct]);
    assert!(out.contains("changed vzt-alpha:noarch 1.0-1 -> 1.1-1"), "{out}");
    assert_eq!(setup.upstream.count_ending(".rpm"), fetched + 1, "only the new build came from upstream");
    let kept: Vec<_> = crate::util::walk(&root.path.join("var/cache/zypp/packages"), &[])
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "rpm"))
        .collect();
    assert!(kept.is_empty(), "packages were left in the container's cache: {kept:?}");
}

/// A package whose install waits, inside rpm's transaction, until `gate` (a FIFO inside the
/// root) is written: an rpm process that holds the database for as long as the test wants.
fn blocking_rpm(dir: &Path) -> PathBuf {
    let top = dir.join("build");
    std::fs::create_dir_all(top.join("SPECS")).unwrap();
    let spec = top.join("SPECS/vzt-blocker.spec");
    std::fs::write(
        &spec,
        "Name: vzt-blocker\nVersion: 1\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n\
         %description\nt\n%pre\nread line < /gate\n%files\n",
    )
    .unwrap();
    run(Command::new("rpmbuild")
        .args(["-bb", "--quiet", "--define"])
        .arg(format!("_topdir {}", top.display()))
        .arg("--define")
        .arg(format!("_rpmdir {}", dir.display()))
        .arg(&spec));
    dir.join("noarch/vzt-blocker-1-1.noarch.rpm")
}

#[test]
fn rpm_locks_are_waited_for_and_stale_berkeley_db_files_cleared_when_nothing_holds_them() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    let db = root.path.join("var/lib/rpm");

    // Leftovers of an EL7-era rpm that crashed; the SQLite database's write-ahead log beside.
    std::fs::write(db.join("__db.001"), "stale").unwrap();
    std::fs::write(db.join("__db.002"), "stale").unwrap();
    let wal = db.join("rpmdb.sqlite-wal");
    let wal_before = (std::fs::read(&wal).unwrap(), std::os::unix::fs::MetadataExt::ino(&wal.metadata().unwrap()));
    let out = setup.ok("install", &[&root.ct(), "vzt-gamma"]);
    assert!(out.contains("removed stale Berkeley DB environment files"), "{out}");
    assert!(!db.join("__db.001").exists() && !db.join("__db.002").exists());
    let wal_after = (std::fs::read(&wal).unwrap(), std::os::unix::fs::MetadataExt::ino(&wal.metadata().unwrap()));
    assert_eq!(wal_after, wal_before, "the SQLite write-ahead log was touched");
    assert_eq!(root.rpm_version("vzt-gamma").as_deref(), Some("0.3-1"));

    // A real rpm in the middle of a transaction holds the lock: vzpkg waits, then names it.
    let blocker = blocking_rpm(tmp.path());
    run(Command::new("mkfifo").arg(root.path.join("gate")));
    let mut rpm = Command::new("rpm")
        .arg("--root")
        .arg(&root.path)
        .args(["--dbpath", "/var/lib/rpm", "-i", "--nodeps"])
        .arg(&blocker)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The writer end opens once the scriptlet opened the FIFO to read: rpm is inside its
    // transaction, holding the lock.
    let mut gate = std::fs::OpenOptions::new().write(true).open(root.path.join("gate")).unwrap();
    std::fs::write(db.join("__db.003"), "stale").unwrap();
    let (code, _, err) = setup.run("install", &["--timeout", "1", &root.ct(), "vzt-alpha"]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("held by pid {} (rpm)", rpm.id())) && err.contains("for 1 s"), "{err}");
    assert!(db.join("__db.003").exists(), "a database file was removed while rpm held the database");
    std::io::Write::write_all(&mut gate, b"go\n").unwrap();
    drop(gate);
    assert!(rpm.wait().unwrap().success());
    assert_eq!(root.rpm_version("vzt-alpha"), None);
    assert_eq!(root.rpm_version("vzt-blocker").as_deref(), Some("1-1"));
}

#[test]
fn an_rpm_container_cannot_change_the_store_nor_reach_the_host_through_a_symlinked_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    setup.ok("update", &[&root.ct()]);
    setup.ok("install", &[&root.ct(), "vzt-alpha"]);
    setup.ok("update", &[&root.ct()]);
    let before = store_snapshot(&setup.proxy.cache_dir);
    let script = r#"cd /var/cache/dnf/test-*/packages || exit 9
        ls *.rpm
        for f in *.rpm; do
            echo junk >> "$f"; chmod 777 "$f"; truncate -s 0 "$f"
            mv "$f" "$f.moved"; echo replaced > "$f"; rm -f "$f.moved" "$f"
        done
        echo planted > planted-1-1.noarch.rpm
        true"#;
    let out = setup.ok("exec", &[&root.ct(), "--", "sh", "-c", script]);
    assert!(out.contains("vzt-alpha-1.0-1.noarch.rpm"), "the view was not visible:\n{out}");
    assert_eq!(store_snapshot(&setup.proxy.cache_dir), before, "the shared store changed");

    // dnf's cache directory as a symlink out of the root, absolute and relative.
    let host_target = tmp.path().join("host-target");
    std::fs::create_dir(&host_target).unwrap();
    let relative = format!("../../../../../../../..{}", host_target.display());
    for (i, link) in [host_target.display().to_string(), relative].iter().enumerate() {
        let root = setup.root(&tmp.path().join(format!("ct-link{i}")));
        let cache = root.path.join("var/cache/dnf");
        std::fs::remove_dir_all(&cache).unwrap();
        std::os::unix::fs::symlink(link, &cache).unwrap();
        std::fs::create_dir_all(root.path.join(host_target.strip_prefix("/").unwrap())).unwrap();
        let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        setup.ok("update", &[&root.ct()]);
        setup.ok("install", &[&root.ct(), "vzt-gamma"]);
        assert_eq!(root.rpm_version("vzt-gamma").as_deref(), Some("0.3-1"));
        assert_eq!(std::fs::read_dir(&host_target).unwrap().count(), 0, "something was written on the host via {link}");
        assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), mounts_before, "a mount was left");
    }
}

#[test]
fn from_an_rpm_container_only_the_proxy_is_reachable() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    let (up, proxy) = (setup.upstream.addr.port().to_string(), setup.proxy.addr.port().to_string());
    let out = setup.ok("exec", &[&root.ct(), "--", "perl", "-e", NETWORK_PROBE, &up, &proxy]);
    assert_only_the_relay_answers(&out, &[&up, &proxy]);
}

#[test]
fn a_root_with_no_known_package_manager_is_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    let ct = format!("dir:{}", dir.display());
    let state = tmp.path().join("state").display().to_string();
    let (code, _, err) = vzpkg(&["--state-dir", &state, "list", &ct]);
    assert_ne!(code, 0);
    assert!(err.contains("name one with --backend"), "{err}");
    let (code, _, err) = vzpkg(&["--state-dir", &state, "list", "--backend", "pacman", &ct]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown backend \"pacman\": use one of apt, dnf, dnf5, yum, zypper"), "{err}");
}

#[test]
fn a_lying_flooding_or_hanging_rpm_query_is_bounded_and_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    let rpm = root.path.join("usr/bin/rpm");
    // The container's rpm answers the query with terminal escapes, then hundreds of MiB more
    // than vzpkg keeps: the guest must not block on a full pipe, and the host must not keep it.
    let flood = "#!/bin/sh\n\
        printf 'evil\\033]0;pwned\\007\\033[2J\\tx86_64\\t1-1\\n'\n\
        yes 'vzt-flood\tx86_64\t1.0-1' | head -c 300000000\n\
        echo flood-done >&2\n";
    std::fs::write(&rpm, flood).unwrap();
    std::fs::set_permissions(&rpm, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, out, err) = setup.run("list", &[&root.ct()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("flood-done"), "the guest's rpm did not get to write all it wanted: {err}");
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "raw terminal escapes in the list: {out:?}");
    let names: Vec<_> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(names.len(), 2, "{out:?}");
    assert!(names.contains(&"vzt-flood") && names.iter().any(|n| n.starts_with("evil\\x{1b}")), "{out:?}");

    // An rpm that never answers: the run ends at --max-time, and says the set is unknown.
    std::fs::write(&rpm, "#!/bin/sh\nexec sleep infinity\n").unwrap();
    let (code, _, err) = setup.run("exec", &["--max-time", "5", &root.ct(), "--", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("longer than --max-time") && err.contains("could not be read"), "{err}");
    let (code, _, err) = setup.run("list", &["--max-time", "5", &root.ct()]);
    assert_ne!(code, 0);
    assert!(err.contains("did not list its packages within 5 s"), "{err}");
}
