//! Running containers (`pid:N`), as root: a Debian root started by the test with pid, mount,
//! network and uts namespaces of its own and an init that sleeps. vzpkg joins its namespaces
//! where it must and keeps the view and the relay in a mount and network namespace of its own.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::util::repo::{deb_repo, Pkg};
use crate::util::rootfs::Rootfs;
use crate::util::{vzpkg, ProxyProcess, Upstream};

/// A container started with unshare(1): its init is `sleep infinity`, pid 1 of its namespace.
struct Running {
    unshare: Child,
    /// The init's host pid.
    pid: i32,
    root: Rootfs,
}

impl Running {
    fn start(root: Rootfs) -> Running {
        let mut unshare = Command::new("unshare")
            // Shared mounts, as LXC and systemd hosts have them: a mount made on a clone of one
            // would show in the container unless the sandbox makes its copies private.
            .args(["--pid", "--mount", "--net", "--uts", "--fork", "--mount-proc", "--propagation", "shared"])
            .arg(format!("--root={}", root.path.display()))
            .args(["/bin/sh", "-c", "echo started; exec sleep infinity"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(unshare.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "started\n");
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
        let pid = children.trim().parse().unwrap();
        Running { unshare, pid, root }
    }

    fn ct(&self) -> String {
        format!("pid:{}", self.pid)
    }

    fn mountinfo(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid)).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
        let _ = self.unshare.wait();
    }
}

struct Setup {
    upstream: Upstream,
    proxy: ProxyProcess,
    config: String,
    state: String,
    source: String,
}

impl Setup {
    fn new(tmp: &Path) -> Setup {
        deb_repo(
            &tmp.join("upstream/debian"),
            &[Pkg::new("vzt-alpha", "1.0", 300_000).depends("vzt-beta"), Pkg::new("vzt-beta", "2.1", 1_200_000)],
        );
        let upstream = Upstream::start(&tmp.join("upstream"));
        let proxy = ProxyProcess::start(&tmp.join("cache"), "", &["--allow-host", &upstream.host()]);
        std::fs::write(tmp.join("vzpkg.toml"), "").unwrap();
        Setup {
            source: format!("deb [trusted=yes] {}/debian stable main", upstream.url()),
            config: tmp.join("vzpkg.toml").display().to_string(),
            state: tmp.join("state").display().to_string(),
            upstream,
            proxy,
        }
    }

    fn container(&self, dir: &Path) -> Running {
        Running::start(Rootfs::new(dir, &self.source))
    }

    fn argv<'a>(&'a self, cache: &'a str, proxy: &'a str, command: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec!["--config", &self.config, "--cache-dir", cache, "--state-dir", &self.state, command];
        argv.extend(["-y", "--proxy", proxy]);
        argv.extend(args);
        argv
    }

    fn ok(&self, command: &str, args: &[&str]) -> String {
        let (cache, proxy) = (self.proxy.cache_dir.display().to_string(), self.proxy.url());
        let (code, out, err) = vzpkg(&self.argv(&cache, &proxy, command, args));
        assert_eq!(code, 0, "vzpkg {command} {args:?} failed:\nstdout:\n{out}\nstderr:\n{err}");
        format!("{out}{err}")
    }
}

#[test]
fn a_running_container_gets_the_package_and_never_sees_the_view() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let ct = setup.container(&tmp.path().join("ct"));
    let mounts_before = ct.mountinfo();
    let host_mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();

    setup.ok("update", &[&ct.ct()]);
    let out = setup.ok("install", &[&ct.ct(), "vzt-alpha"]);
    assert!(out.contains("installed vzt-alpha:all 1.0"), "{out}");
    assert_eq!(ct.root.installed_version("vzt-alpha").as_deref(), Some("1.0"));
    assert_eq!(setup.upstream.count_ending(".deb"), 2);

    // A run held open: inside, the view shows the verified archives; from the container's own
    // side at that moment, its mount table is untouched and its archive directory is its own.
    let (cache, proxy) = (setup.proxy.cache_dir.display().to_string(), setup.proxy.url());
    let script = "ls /var/cache/apt/archives; cat /proc/1/cmdline; echo; echo READY; read go; echo DONE";
    let mut run = Command::new(env!("CARGO_BIN_EXE_vzpkg"))
        .args(setup.argv(&cache, &proxy, "exec", &[&ct.ct(), "--", "sh", "-c", script]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut inside = BufReader::new(run.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.ends_with("READY\n") {
        assert_ne!(inside.read_line(&mut seen).unwrap(), 0, "the run ended early: {seen}");
    }
    assert!(seen.contains("vzt-alpha_1.0_all.deb"), "the view was not visible inside: {seen}");
    assert!(seen.contains("sleep\0infinity"), "the run is not in the container's pid namespace: {seen:?}");
    assert_eq!(ct.mountinfo(), mounts_before, "the container's mount table changed during the run");
    let archives: Vec<_> = std::fs::read_dir(format!("/proc/{}/root/var/cache/apt/archives", ct.pid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!archives.iter().any(|a| a.ends_with(".deb")), "the container saw the view: {archives:?}");
    run.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut inside, &mut rest).unwrap();
    assert!(run.wait().unwrap().success() && rest.contains("DONE"), "{rest}");

    assert_eq!(ct.mountinfo(), mounts_before, "the container's mount table changed");
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), host_mounts_before, "a host mount was left");
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(ct.pid), None).is_ok(), "the container's init died");
}

#[test]
fn a_running_container_reaches_only_the_proxy_and_cannot_change_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let ct = setup.container(&tmp.path().join("ct"));
    setup.ok("update", &[&ct.ct()]);
    setup.ok("install", &[&ct.ct(), "vzt-alpha"]);
    let blobs = |cache: &Path| {
        let mut all: Vec<_> = crate::util::walk(&cache.join("blobs"), &[])
            .into_iter()
            .filter(|(_, m)| m.is_file())
            .map(|(p, _)| (p.clone(), crate::util::sha256(&std::fs::read(&p).unwrap())))
            .collect();
        all.sort();
        all
    };
    let before = blobs(&setup.proxy.cache_dir);
    let script = r#"cd /var/cache/apt/archives || exit 9
        for f in *.deb; do echo junk >> "$f"; chmod 777 "$f"; rm -f "$f"; echo replaced > "$f"; done
        true"#;
    setup.ok("exec", &[&ct.ct(), "--", "sh", "-c", script]);
    assert_eq!(blobs(&setup.proxy.cache_dir), before, "the shared store changed");

    let (up, proxy) = (setup.upstream.addr.port().to_string(), setup.proxy.addr.port().to_string());
    let probe = r#"use IO::Socket::INET;
        for my $p (@ARGV) {
            my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $p, Timeout => 5);
            print "port $p ", ($s ? "open" : "closed"), "\n";
        }
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => 3142) or die "relay: $!";
        print $s "GET /_vzpkg/status HTTP/1.0\r\n\r\n";
        my $line = <$s>;
        print "relay says $line";
        open(my $dev, "<", "/proc/net/dev") or die;
        while (<$dev>) { print "iface $1\n" if /^\s*(\w+):/ }"#;
    let out = setup.ok("exec", &[&ct.ct(), "--", "perl", "-e", probe, &up, &proxy]);
    assert!(out.contains(&format!("port {up} closed")) && out.contains(&format!("port {proxy} closed")), "{out}");
    assert!(out.contains("relay says HTTP/1.0 200"), "{out}");
    let interfaces: Vec<_> = out.lines().filter_map(|l| l.strip_prefix("iface ")).collect();
    assert_eq!(interfaces, ["lo"], "{out}");
}

#[test]
fn a_running_containers_symlinked_archive_directory_never_reaches_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let host_target = tmp.path().join("host-target");
    std::fs::create_dir(&host_target).unwrap();
    let root = Rootfs::new(&tmp.path().join("ct"), &setup.source);
    let archives = root.path.join("var/cache/apt/archives");
    std::fs::remove_dir_all(&archives).unwrap();
    std::os::unix::fs::symlink(&host_target, &archives).unwrap();
    std::fs::create_dir_all(root.path.join(host_target.strip_prefix("/").unwrap())).unwrap();
    let ct = Running::start(root);
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    setup.ok("update", &[&ct.ct()]);
    setup.ok("install", &[&ct.ct(), "vzt-alpha"]);
    assert_eq!(ct.root.installed_version("vzt-alpha").as_deref(), Some("1.0"));
    assert_eq!(std::fs::read_dir(&host_target).unwrap().count(), 0, "something was written on the host");
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), host_mounts, "a mount was left");
}

#[test]
fn a_pid_that_is_not_running_or_reused_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state").display().to_string();
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let (code, _, err) = vzpkg(&["--state-dir", &state, "list", &format!("pid:{pid}")]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("no process {pid}")), "{err}");
    for bad in ["pid:1", "pid:0", "pid:x", "lxc:-h", "nspawn:../x"] {
        let (code, _, err) = vzpkg(&["--state-dir", &state, "list", bad]);
        assert_ne!(code, 0, "{bad}");
        assert!(!err.is_empty(), "{bad}");
    }
}

/// An LXC container under LXC's default path, started with lxc-start; stopped and removed
/// however the test ends.
struct Lxc {
    name: String,
    dir: std::path::PathBuf,
    root: Rootfs,
}

impl Lxc {
    fn start(source: &str) -> Lxc {
        let name = format!("vzpkg-test-{}", std::process::id());
        let dir = Path::new("/var/lib/lxc").join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        let root = Rootfs::new(&dir.join("rootfs"), source);
        std::fs::write(
            dir.join("config"),
            format!(
                "lxc.uts.name = {name}\nlxc.rootfs.path = dir:{}\nlxc.net.0.type = empty\n\
                 lxc.init.cmd = /bin/sleep infinity\nlxc.mount.auto = proc:mixed sys:ro\nlxc.apparmor.profile = unconfined\n",
                root.path.display()
            ),
        )
        .unwrap();
        crate::util::run(Command::new("lxc-start").args(["-n", &name, "-d"]));
        Lxc { name, dir, root }
    }

    fn pid(&self) -> i32 {
        crate::util::run(Command::new("lxc-info").args(["-n", &self.name, "-p", "-H"])).trim().parse().unwrap()
    }
}

impl Drop for Lxc {
    fn drop(&mut self) {
        let _ = Command::new("lxc-stop").args(["-n", &self.name, "-k"]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn an_lxc_container_by_name_gets_the_package_and_keeps_its_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let lxc = Lxc::start(&setup.source);
    let ct = format!("lxc:{}", lxc.name);
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", lxc.pid())).unwrap();
    setup.ok("update", &[&ct]);
    let out = setup.ok("install", &[&ct, "vzt-alpha"]);
    assert!(out.contains("installed vzt-alpha:all 1.0"), "{out}");
    assert_eq!(lxc.root.installed_version("vzt-alpha").as_deref(), Some("1.0"));
    // The hostname the package manager saw is the container's.
    let out = setup.ok("exec", &[&ct, "--", "hostname"]);
    assert!(out.lines().any(|l| l == lxc.name), "{out}");
    assert_eq!(std::fs::read_to_string(format!("/proc/{}/mountinfo", lxc.pid())).unwrap(), mounts);
}
