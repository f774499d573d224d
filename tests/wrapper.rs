//! `vzpkg install` and friends against real Debian roots (mmdebstrap), as root: the container's
//! own apt in the sandbox, downloading through the proxy from a test upstream on loopback.

use std::path::{Path, PathBuf};

use crate::util::cli::Served;
use crate::util::inside::{assert_only_the_relay_answers, store_snapshot, NETWORK_PROBE};
use crate::util::repo::{deb_repo, Pkg};
use crate::util::rootfs::Rootfs;
use crate::util::{counter, Upstream};

/// What every wrapper test starts from, and the apt source line of its repository.
struct Setup {
    served: Served,
    source: String,
}

impl std::ops::Deref for Setup {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.served
    }
}

impl Setup {
    fn new(tmp: &Path) -> Setup {
        Self::with_proxy_config(tmp, "")
    }

    fn with_proxy_config(tmp: &Path, proxy_config: &str) -> Setup {
        deb_repo(&tmp.join("upstream/debian"), &packages());
        let served = Served::start(tmp, proxy_config);
        Setup { source: format!("deb [trusted=yes] {}/debian stable main", served.upstream.url()), served }
    }

    fn root(&self, dir: &Path) -> Rootfs {
        Rootfs::new(dir, &self.source)
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
fn install_remove_upgrade_update_and_list_in_a_debian_root() {
    let tmp = tempfile::tempdir().unwrap();
    // Revalidate Release at every update, so that the repository's change is seen at once.
    let setup = Setup::with_proxy_config(tmp.path(), "[proxy]\nindex_ttl_secs = 0\n");
    let root = setup.root(&tmp.path().join("ct"));
    let ct = root.ct();

    setup.ok("update", &[&ct]);
    let out = setup.ok("install", &[&ct, "vzt-alpha", "vzt-gamma"]);
    assert!(out.contains("installed vzt-alpha:all 1.0"), "{out}");
    assert_eq!(root.installed_version("vzt-alpha").as_deref(), Some("1.0"));
    assert_eq!(root.installed_version("vzt-beta").as_deref(), Some("2.1"), "its dependency came along");
    assert!(root.path.join("usr/share/vzt-alpha/data").is_file());

    let list = setup.ok("list", &[&ct]);
    assert!(list.lines().any(|l| l == "vzt-alpha\t1.0\tall"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("dpkg\t")), "{list}");
    // A name from the config's [containers] reaches the same root.
    std::fs::write(&setup.cli.config, format!("[containers]\nweb = {:?}\n", root.path.display().to_string())).unwrap();
    assert_eq!(setup.ok("list", &["web"]), list);

    // The exit status is apt's own.
    let (code, _, err) = setup.run("install", &[&ct, "no-such-package"]);
    assert_eq!(code, 100, "{err}");
    assert!(err.contains("Unable to locate package no-such-package"), "{err}");

    setup.ok("remove", &[&ct, "vzt-gamma"]);
    assert_eq!(root.installed_version("vzt-gamma"), None);

    // The repository gains a newer alpha: update, then upgrade.
    // Added to the pool, which is indexed anew.
    deb_repo(&setup.upstream.root.join("debian"), &[Pkg::new("vzt-alpha", "1.1", 310_000).depends("vzt-beta")]);
    setup.ok("update", &[&ct]);
    let out = setup.ok("upgrade", &[&ct]);
    assert!(out.contains("changed vzt-alpha:all 1.0 -> 1.1"), "{out}");
    assert_eq!(root.installed_version("vzt-alpha").as_deref(), Some("1.1"));
}

#[test]
fn a_second_container_installs_from_the_view_without_downloading() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let first = setup.root(&tmp.path().join("ct1"));
    setup.ok("update", &[&first.ct()]);
    setup.ok("install", &[&first.ct(), "vzt-alpha"]);
    let debs_fetched = setup.upstream.count_ending(".deb");
    assert_eq!(debs_fetched, 2, "alpha and beta, once each");
    let log = setup.proxy.log_with("vzt-alpha_1.0_all.deb status=200");
    let request = log.lines().find(|l| l.contains("vzt-alpha_1.0_all.deb") && l.contains("status=200")).unwrap();
    assert!(
        request.contains("run=\"") && !request.contains("run=\"-\""),
        "the run's request carries its tag: {request}"
    );

    let second = setup.root(&tmp.path().join("ct2"));
    setup.ok("update", &[&second.ct()]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let requests = |name| runtime.block_on(counter(&setup.proxy, name));
    let (hits, misses) = (requests("cache_hits"), requests("cache_misses"));
    setup.ok("install", &[&second.ct(), "vzt-alpha"]);
    assert_eq!(second.installed_version("vzt-alpha").as_deref(), Some("1.0"));
    assert_eq!(setup.upstream.count_ending(".deb"), debs_fetched, "no upstream package download");
    assert_eq!(requests("cache_hits"), hits, "apt read the archives from the view, not over HTTP");
    assert_eq!(requests("cache_misses"), misses);
}

#[test]
fn the_container_cannot_change_the_shared_store_or_remount_the_view() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    setup.ok("update", &[&root.ct()]);
    setup.ok("install", &[&root.ct(), "vzt-alpha"]);
    let before = store_snapshot(&setup.proxy.cache_dir);
    assert_eq!(before.len(), 4, "Release, Packages.gz and two packages");

    // The real mount tools, so that the attempts below are real attempts.
    for tool in ["mount", "umount"] {
        std::fs::copy(Path::new("/usr/bin").join(tool), root.path.join("usr/local/bin").join(tool)).unwrap();
    }
    let script = r#"cd /var/cache/apt/archives || exit 9
        ls *.deb
        for f in *.deb; do
            echo junk >> "$f"; chmod 777 "$f"; truncate -s 0 "$f"
            mv "$f" "$f.moved"; echo replaced > "$f"; rm -f "$f.moved" "$f"
        done
        echo planted > planted_1.0_all.deb
        mount -o remount,rw /var/cache/apt/archives && echo REMOUNTED
        umount -l /var/cache/apt/archives && echo UNMOUNTED
        mount -t tmpfs none /mnt && echo MOUNTED
        true"#;
    let out = setup.ok("exec", &[&root.ct(), "--", "sh", "-c", script]);
    assert!(out.contains("vzt-alpha_1.0_all.deb"), "the view was not visible:\n{out}");
    assert!(out.contains("mount: "), "mount did not run:\n{out}");
    for done in ["REMOUNTED", "UNMOUNTED", "MOUNTED"] {
        assert!(!out.lines().any(|l| l == done), "{done}:\n{out}");
    }
    assert_eq!(store_snapshot(&setup.proxy.cache_dir), before, "the shared store changed");
    // What the container wrote went to its private layer: the next run sees the view again.
    let out = setup.ok("exec", &[&root.ct(), "--", "ls", "/var/cache/apt/archives"]);
    assert!(out.contains("vzt-alpha_1.0_all.deb") && !out.contains("planted"), "{out}");
    let views: Vec<_> = std::fs::read_dir(setup.proxy.cache_dir.join("views")).unwrap().collect();
    assert!(views.is_empty(), "a run's view files were left behind");
}

#[test]
fn a_symlinked_archive_directory_never_reaches_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let host_target = tmp.path().join("host-target");
    std::fs::create_dir(&host_target).unwrap();
    let relative = format!("../../../../../../../..{}", host_target.display());
    for (i, link) in [host_target.display().to_string(), relative].iter().enumerate() {
        let root = setup.root(&tmp.path().join(format!("ct{i}")));
        let archives = root.path.join("var/cache/apt/archives");
        std::fs::remove_dir_all(&archives).unwrap();
        std::os::unix::fs::symlink(link, &archives).unwrap();
        // The same path inside the root exists, so the run goes all the way through.
        std::fs::create_dir_all(root.path.join(host_target.strip_prefix("/").unwrap())).unwrap();
        let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();

        setup.ok("update", &[&root.ct()]);
        setup.ok("install", &[&root.ct(), "vzt-gamma"]);

        assert_eq!(root.installed_version("vzt-gamma").as_deref(), Some("0.3"));
        assert_eq!(std::fs::read_dir(&host_target).unwrap().count(), 0, "something was written on the host via {link}");
        assert_eq!(
            std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
            mounts_before,
            "a mount was left on the host"
        );
    }
}

#[test]
fn only_the_proxy_is_reachable_from_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    let (up_port, proxy_port) = (setup.upstream.addr.port().to_string(), setup.proxy.addr.port().to_string());
    let out = setup.ok("exec", &[&root.ct(), "--", "perl", "-e", NETWORK_PROBE, &up_port, &proxy_port, "22", "80"]);
    assert_only_the_relay_answers(&out, &[&up_port, &proxy_port, "22", "80"]);
}

#[test]
fn dpkg_locks_are_probed_never_deleted_and_an_interrupted_dpkg_is_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    setup.ok("update", &[&root.ct()]);

    // Lock files nobody holds are harmless: the install goes ahead and leaves them in place.
    let frontend = root.path.join("var/lib/dpkg/lock-frontend");
    std::fs::write(&frontend, "").unwrap();
    std::fs::write(root.path.join("var/lib/dpkg/lock"), "").unwrap();
    setup.ok("install", &[&root.ct(), "vzt-gamma"]);
    assert!(frontend.exists(), "a lock file was deleted");

    // A held lock: vzpkg waits, then fails naming the holder.
    let mut holder = crate::util::hold_lock(&frontend);
    let (code, _, err) = setup.run("install", &["--timeout", "1", &root.ct(), "vzt-alpha"]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("held by pid {}", holder.id())) && err.contains("for 1 s"), "{err}");
    drop(holder.stdin.take());
    holder.wait().unwrap();
    assert_eq!(root.installed_version("vzt-alpha"), None);

    // An interrupted dpkg: its journal says gamma was only unpacked.
    let status = std::fs::read_to_string(root.path.join("var/lib/dpkg/status")).unwrap();
    let gamma = status.split("\n\n").find(|s| s.starts_with("Package: vzt-gamma\n")).unwrap();
    let journal = gamma.replace("Status: install ok installed", "Status: install ok unpacked");
    std::fs::write(root.path.join("var/lib/dpkg/updates/0001"), format!("{journal}\n")).unwrap();
    assert_eq!(root.installed_version("vzt-gamma"), None, "the journal makes gamma unconfigured");
    let out = setup.ok("install", &[&root.ct(), "vzt-alpha"]);
    assert!(out.contains("running dpkg --configure -a first"), "{out}");
    assert_eq!(root.installed_version("vzt-gamma").as_deref(), Some("0.3"), "gamma was configured");
    assert_eq!(root.installed_version("vzt-alpha").as_deref(), Some("1.0"));
    assert_eq!(std::fs::read_dir(root.path.join("var/lib/dpkg/updates")).unwrap().count(), 0);
}

#[test]
fn commands_on_one_container_queue_and_on_two_containers_overlap() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let (a, b) = (setup.root(&tmp.path().join("a")), setup.root(&tmp.path().join("b")));
    let gate = a.path.join("tmp/go");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let cache = setup.proxy.cache_dir.display().to_string();
    let spawn = |ct: &str, script: &str| {
        Command::new(env!("CARGO_BIN_EXE_vzpkg"))
            .args(["--config", &setup.cli.config, "--cache-dir", &cache, "--state-dir", &setup.cli.state, "exec"])
            .args(["--proxy", &setup.proxy.url(), ct, "--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // The first command holds container a until the test opens the gate.
    let mut first = spawn(&a.ct(), "echo first-started; read line < /tmp/go; echo first-done");
    let mut first_out = BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    first_out.read_line(&mut line).unwrap();
    assert_eq!(line, "first-started\n");

    // A second command on a queues behind it, and says so.
    let mut second = spawn(&a.ct(), "echo second-ran");
    let mut second_err = BufReader::new(second.stderr.take().unwrap());
    line.clear();
    second_err.read_line(&mut line).unwrap();
    assert!(line.contains("waiting for another vzpkg command"), "{line}");

    // Meanwhile a command on container b runs from start to end.
    let out = setup.ok("exec", &[&b.ct(), "--", "echo", "other-ran"]);
    assert!(out.contains("other-ran"));
    assert!(
        first.try_wait().unwrap().is_none() && second.try_wait().unwrap().is_none(),
        "a finished before the gate opened"
    );

    std::fs::OpenOptions::new().write(true).open(&gate).unwrap().write_all(b"go\n").unwrap();
    assert!(first.wait().unwrap().success());
    line.clear();
    first_out.read_line(&mut line).unwrap();
    assert_eq!(line, "first-done\n");
    let second = second.wait_with_output().unwrap();
    assert!(second.status.success());
    assert_eq!(String::from_utf8_lossy(&second.stdout), "second-ran\n");
}

#[test]
fn on_a_terminal_the_command_gets_a_pty_of_its_own_and_no_host_descriptors() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    let cache = setup.proxy.cache_dir.display().to_string();
    let inner = "test -t 0 && echo INNER-TTY; echo inner $(readlink /proc/self/fd/0); echo $(ls /proc/self/fd)";
    let vzpkg_exec = format!(
        "echo outer $(readlink /proc/self/fd/0); {} --config {} --cache-dir {cache} --state-dir {} exec --proxy {} {} -- sh -c '{inner}'",
        env!("CARGO_BIN_EXE_vzpkg"),
        setup.cli.config,
        setup.cli.state,
        setup.proxy.url(),
        root.ct(),
    );
    // `script` runs it on a pty of its own, as an operator's terminal would.
    let out = crate::util::run(std::process::Command::new("script").args(["-qec", &vzpkg_exec, "/dev/null"]));
    let field = |name: &str| out.lines().find_map(|l| l.trim().strip_prefix(name).map(str::trim).map(str::to_string));
    assert!(out.contains("INNER-TTY"), "{out}");
    let (outer, inner) = (field("outer ").unwrap(), field("inner ").unwrap());
    assert!(outer.starts_with("/dev/pts/") && inner.starts_with("/dev/pts/"), "{out}");
    assert_ne!(outer, inner, "the command got the operator's terminal itself:\n{out}");
    // stdin, stdout, stderr and the descriptor ls itself opens: nothing inherited from the host.
    let fds = out.lines().find(|l| l.trim_start().starts_with("0 1 2")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(fds.split_whitespace().count(), 4, "{fds}");
}

/// Every process below `pid`, from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

#[test]
fn killing_vzpkg_ends_the_sandbox_and_leaves_no_mount() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    nix::unistd::mkfifo(&root.path.join("tmp/go"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cache = setup.proxy.cache_dir.display().to_string();
    let mut run = Command::new(env!("CARGO_BIN_EXE_vzpkg"))
        .args(["--config", &setup.cli.config, "--cache-dir", &cache, "--state-dir", &setup.cli.state, "exec"])
        .args(["--proxy", &setup.proxy.url(), &root.ct(), "--", "sh", "-c", "echo started; read line < /tmp/go"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(run.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    let sandbox = descendants(run.id());
    assert!(sandbox.len() >= 3, "keeper, pid 1 and the shell: {sandbox:?}");
    let namespace = std::fs::read_link(format!("/proc/{}/ns/mnt", sandbox.last().unwrap())).unwrap();

    run.kill().unwrap();
    run.wait().unwrap();
    // The kernel delivers the sandbox's parent-death signal asynchronously: look until it is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sandbox.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) {
        assert!(std::time::Instant::now() < deadline, "sandbox processes outlived vzpkg: {sandbox:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let still_in_namespace = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path().join("ns/mnt")).ok())
        .any(|ns| ns == namespace);
    assert!(!still_in_namespace, "a process still holds the sandbox's mount namespace");
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), mounts_before);
}

#[test]
fn a_lock_file_planted_as_a_device_is_never_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    let lock = root.path.join("var/lib/dpkg/lock");
    let _ = std::fs::remove_file(&lock);
    // A character device (here the host's /dev/zero numbers) where dpkg's lock file should be.
    nix::sys::stat::mknod(
        &lock,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
    let (code, _, err) = setup.run("install", &[&root.ct(), "vzt-gamma"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a regular file"), "{err}");
    assert_eq!(root.installed_version("vzt-gamma"), None);
}

#[test]
fn a_broken_root_gets_an_error_that_says_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    std::fs::remove_dir(root.path.join("proc")).unwrap();
    let (code, _, err) = setup.run("exec", &[&root.ct(), "--", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("setting up the sandbox") && err.contains("has no /proc"), "{err}");

    std::fs::remove_file(root.path.join("var/lib/dpkg/status")).unwrap();
    let (code, _, err) = setup.run("install", &[&root.ct(), "vzt-gamma"]);
    assert_ne!(code, 0);
    assert!(err.contains("has neither a dpkg database") && err.contains("--backend"), "{err}");
}

#[test]
fn each_container_sees_only_the_builds_its_own_lists_name() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    // Two repositories with the same name, version, architecture and size, built differently.
    let up = setup.upstream.root.clone();
    deb_repo(&up.join("x"), &[Pkg::new("vzt-same", "1.0", 50_000)]);
    deb_repo(&up.join("y"), &[Pkg::new("vzt-filler", "1", 10), Pkg::new("vzt-same", "1.0", 50_000)]);
    let deb = "pool/main/vzt-same_1.0_all.deb";
    let (x, y) = (std::fs::read(up.join("x").join(deb)).unwrap(), std::fs::read(up.join("y").join(deb)).unwrap());
    assert_eq!(x.len(), y.len());
    assert_ne!(x, y);

    let url = setup.upstream.url();
    let ct_x = Rootfs::new(&tmp.path().join("ctx"), &format!("deb [trusted=yes] {url}/x stable main"));
    let ct_y = Rootfs::new(&tmp.path().join("cty"), &format!("deb [trusted=yes] {url}/y stable main"));
    setup.ok("update", &[&ct_x.ct()]);
    setup.ok("install", &[&ct_x.ct(), "vzt-same"]);
    setup.ok("update", &[&ct_y.ct()]);
    setup.ok("install", &[&ct_y.ct(), "vzt-same"]);

    let data = |root: &Rootfs| std::fs::read(root.path.join("usr/share/vzt-same/data")).unwrap();
    assert_ne!(data(&ct_x), data(&ct_y), "the second container got the first one's build");
    assert_eq!(setup.upstream.count(&format!("/y/{deb}")), 1, "y's build came from y");
}

/// Every file under `dir` with its content, for byte-for-byte comparison.
fn tree_snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let files = crate::util::walk(dir, &[]).into_iter().filter(|(_, m)| m.is_file());
    files.map(|(p, _)| (p.clone(), std::fs::read(p).unwrap())).collect()
}

#[test]
fn proxy_settings_left_in_the_container_cannot_steer_apt_away_from_the_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let host = setup.upstream.addr.ip().to_string();
    // Each leads nowhere (the discard port on the sandbox's own loopback).
    let detect = "#!/bin/sh\necho http://127.0.0.1:9\n";
    let settings = [
        ("per-host proxy", format!("Acquire::http::Proxy::{host} \"http://127.0.0.1:9\";\n")),
        ("DIRECT", format!("Acquire::http::Proxy::{host} \"DIRECT\";\n")),
        ("auto-detect", "Acquire::http::Proxy-Auto-Detect \"/usr/local/bin/detect-proxy\";\n".to_string()),
    ];
    for (i, (what, conf)) in settings.iter().enumerate() {
        let root = setup.root(&tmp.path().join(format!("ct{i}")));
        std::fs::write(root.path.join("etc/apt/apt.conf.d/01proxy"), conf).unwrap();
        let script = root.path.join("usr/local/bin/detect-proxy");
        std::fs::write(&script, detect).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let before = tree_snapshot(&root.path.join("etc/apt"));

        let (code, out, err) = setup.run("update", &[&root.ct()]);
        assert_eq!(code, 0, "{what}: update failed:\n{out}{err}");
        setup.ok("install", &[&root.ct(), "vzt-gamma"]);
        assert_eq!(root.installed_version("vzt-gamma").as_deref(), Some("0.3"), "{what}");
        assert!(
            tree_snapshot(&root.path.join("etc/apt")) == before,
            "{what}: the container's apt configuration changed"
        );
    }
}

#[test]
fn a_failed_package_manager_run_says_so_with_its_status() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    setup.ok("update", &[&root.ct()]);
    let (code, _, err) = setup.run("install", &[&root.ct(), "no-such-package"]);
    assert_eq!(code, 100, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("apt in") && last.contains("failed with exit status 100"), "last line: {last}\n{err}");

    // A source the proxy is not allowed to reach: the last words name it, what the proxy
    // answered, and the setting that would allow it.
    let other = Upstream::start(&tmp.path().join("upstream"));
    std::fs::write(
        root.path.join("etc/apt/sources.list.d/other.list"),
        format!("deb [trusted=yes] {}/debian stable main\n", other.url()),
    )
    .unwrap();
    let (code, _, err) = setup.run("update", &[&root.ct()]);
    assert_eq!(code, 100, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let status = lines.iter().rposition(|l| l.contains("failed with exit status 100")).expect(&err);
    let failed = format!("vzpkg: failed: {}/debian", other.url());
    assert!(lines[..status].iter().rev().take(4).any(|l| l.starts_with(&failed) && l.contains("403")), "{err}");
    let allow = format!("start the proxy with `--allow-host {}`", other.host());
    assert!(lines[status..].iter().any(|l| l.contains(&allow)), "{err}");
    assert!(!lines[status..].iter().any(|l| l.contains("no package changed")), "{err}");
    assert_eq!(other.total(), 0, "the refused host was reached");
}

#[test]
fn guest_files_are_read_up_to_a_bound_and_guest_text_is_printed_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = crate::util::rootfs::Rootfs::busybox(&tmp.path().join("ct"));
    let status = root.path.join("var/lib/dpkg/status");
    // Escape sequences that would retitle and clear the operator's terminal, and 1 MB of text.
    let hostile = format!(
        "Package: evil\x1b]0;pwned\x07\x1b[2J\nStatus: install ok installed\nArchitecture: all\nVersion: 1\x1b[31m{}\n",
        "x".repeat(1_000_000)
    );
    std::fs::write(&status, hostile).unwrap();
    let (code, out, err) = setup.run("list", &[&root.ct()]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "a control character reached the terminal");
    assert!(out.contains("evil\\x{1b}]0;pwned\\x{7}"), "{}", &out[..200.min(out.len())]);
    assert!(out.len() < 2000, "the version was not cut: {} bytes", out.len());

    // A sparse 300 MB status file is refused by size, not read whole.
    let file = std::fs::OpenOptions::new().write(true).truncate(true).open(&status).unwrap();
    file.set_len(300 << 20).unwrap();
    let (code, _, err) = setup.run("list", &[&root.ct()]);
    assert_ne!(code, 0);
    assert!(err.contains("is larger than 64 MiB"), "{err}");
}
