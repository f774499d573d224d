//! Running containers (`pid:N`), as root: a Debian root started by the test with pid, mount,
//! network and uts namespaces of its own and an init that sleeps. vzpkg joins its namespaces
//! where it must and keeps the view and the relay in a mount and network namespace of its own.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::util::cli::Served;
use crate::util::inside::{assert_only_the_relay_answers, store_snapshot, NETWORK_PROBE};
use crate::util::repo::{deb_repo, Pkg};
use crate::util::rootfs::Rootfs;
use crate::util::running::{Running, CONTAINER_IDS};
use crate::util::{try_run, vzpkg};

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
        deb_repo(
            &tmp.join("upstream/debian"),
            &[Pkg::new("vzt-alpha", "1.0", 300_000).depends("vzt-beta"), Pkg::new("vzt-beta", "2.1", 1_200_000)],
        );
        let served = Served::start(tmp, "");
        Setup { source: format!("deb [trusted=yes] {}/debian stable main", served.upstream.url()), served }
    }

    fn container(&self, dir: &Path) -> Running {
        Running::start(Rootfs::new(dir, &self.source))
    }

    /// `vzpkg COMMAND ARGS`, not started; its stdin a pipe.
    fn command(&self, command: &str, args: &[&str]) -> Command {
        let mut vzpkg = Command::new(env!("CARGO_BIN_EXE_vzpkg"));
        vzpkg.args(self.cli.argv(command, args)).stdin(Stdio::piped()).stdout(Stdio::piped());
        vzpkg
    }

    /// Runs `vzpkg COMMAND ARGS` to its end, whatever the outcome: its pid, status and all it
    /// printed.
    fn attempt(&self, command: &str, args: &[&str]) -> (u32, std::process::ExitStatus, String) {
        let child = self.command(command, args).stderr(Stdio::piped()).spawn().unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (pid, out.status, text)
    }

    /// `vzpkg exec CT -- sh -c SCRIPT`, held open inside after `script` ran until told to go on.
    fn held(&self, ct: &Running, script: &str) -> Held {
        let script = format!("{script}; echo READY; read go; echo DONE");
        let mut child = self.command("exec", &[&ct.ct(), "--", "sh", "-c", &script]).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        while !seen.ends_with("READY\n") {
            assert_ne!(out.read_line(&mut seen).unwrap(), 0, "the run ended early: {seen}");
        }
        Held { child, out, seen }
    }

    /// What runs of vzpkg process `pid` left: views in the shared cache, cgroups.
    fn leftovers(&self, pid: u32) -> Vec<std::path::PathBuf> {
        let prefix = format!("run-{pid}-");
        let mut left: Vec<_> = std::fs::read_dir(self.proxy.cache_dir.join("views"))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
            .collect();
        let mut todo = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if entry.file_name().to_string_lossy().starts_with(&prefix) {
                        left.push(entry.path());
                    }
                    todo.push(entry.path());
                }
            }
        }
        left
    }
}

/// A `vzpkg exec` waiting inside for a line on its stdin.
struct Held {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    /// What it printed up to READY.
    seen: String,
}

impl Held {
    /// Lets the run go on to its end: its status and what it printed after READY.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        // The run may be gone already: then nobody reads.
        let _ = self.child.stdin.take().unwrap().write_all(b"go\n");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest).unwrap();
        (self.child.wait().unwrap(), rest)
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
    let script = "ls /var/cache/apt/archives; cat /proc/1/cmdline; echo; echo READY; read go; echo DONE";
    let mut run = Command::new(env!("CARGO_BIN_EXE_vzpkg"))
        .args(setup.cli.argv("exec", &[&ct.ct(), "--", "sh", "-c", script]))
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
    let before = store_snapshot(&setup.proxy.cache_dir);
    let script = r#"cd /var/cache/apt/archives || exit 9
        for f in *.deb; do echo junk >> "$f"; chmod 777 "$f"; rm -f "$f"; echo replaced > "$f"; done
        true"#;
    setup.ok("exec", &[&ct.ct(), "--", "sh", "-c", script]);
    assert_eq!(store_snapshot(&setup.proxy.cache_dir), before, "the shared store changed");

    let (up, proxy) = (setup.upstream.addr.port().to_string(), setup.proxy.addr.port().to_string());
    let out = setup.ok("exec", &[&ct.ct(), "--", "perl", "-e", NETWORK_PROBE, &up, &proxy]);
    assert_only_the_relay_answers(&out, &[&up, &proxy]);
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

/// Whether the process `pid` is alive.
fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

// Attacks of an unprivileged running container (a user namespace of its own) on the run.

#[test]
fn a_container_sharing_its_mounts_gets_none_of_the_runs_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = Rootfs::new(&tmp.path().join("ct"), &setup.source);
    // The shared cache gets the packages, and the root the lists its view is made from.
    setup.ok("update", &[&root.ct()]);
    setup.ok("install", &[&root.ct(), "vzt-alpha"]);
    // A copy of a shared mount is its peer: what is mounted on the copy appears on the
    // original. The container makes its archive directory's mount and its /proc shared.
    let ct = Running::unprivileged(
        root,
        "busybox mount -t tmpfs tmpfs /var/cache/apt && mkdir -p /var/cache/apt/archives/partial \
         && busybox mount --make-shared /var/cache/apt && busybox mount --make-shared /proc",
    );
    let mounts_before = ct.mountinfo();

    let run = setup.held(&ct, "ls /var/cache/apt/archives");
    assert!(run.seen.contains("vzt-alpha_1.0_all.deb"), "the view was not visible inside: {}", run.seen);
    assert_eq!(ct.mountinfo(), mounts_before, "the run's mounts reached the container");
    let archives = std::fs::read_dir(format!("/proc/{}/root/var/cache/apt/archives", ct.pid)).unwrap();
    let names: Vec<_> = archives.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["partial"], "the container saw the view");
    let (status, rest) = run.finish();
    assert!(status.success() && rest.contains("DONE"), "{rest}");
    assert_eq!(ct.mountinfo(), mounts_before, "the run left mounts in the container");
}

#[test]
fn a_device_node_on_a_containers_own_bind_mount_does_not_open_in_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = Rootfs::new(&tmp.path().join("ct"), &setup.source);
    // A device node in the container's image (it cannot make one, but its root came from
    // somewhere), its own: a loop device whose content the test knows.
    let secret = format!("disk-secret-{}", std::process::id());
    std::fs::write(tmp.path().join("disk.img"), format!("{secret}{}", "\0".repeat(4096 - secret.len()))).unwrap();
    let disk = LoopDevice::new(&tmp.path().join("disk.img"));
    let node = root.path.join("srv/disk");
    let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&disk.path).unwrap());
    nix::sys::stat::mknod(&node, nix::sys::stat::SFlag::S_IFBLK, nix::sys::stat::Mode::from_bits(0o600).unwrap(), rdev)
        .unwrap();
    std::os::unix::fs::chown(&node, Some(CONTAINER_IDS), Some(CONTAINER_IDS)).unwrap();
    // The root mount of the run is nodev; the container binds part of it elsewhere, a mount of
    // its own that the run copies. Its device cgroup (LXC's) would keep the container itself
    // from the disk, but the run is not in that cgroup.
    let ct = Running::unprivileged(root, "busybox mount --bind /srv /mnt");

    let (_, _, out) = setup.attempt("exec", &[&ct.ct(), "--", "sh", "-c", "head -c 64 /mnt/disk; echo; echo tried"]);
    assert!(out.contains("tried"), "the command did not run: {out}");
    assert!(!out.contains(&secret), "a device node of the container opened in the run:\n{out}");
}

/// A loop device over `backing`, detached when dropped.
struct LoopDevice {
    path: String,
}

impl LoopDevice {
    fn new(backing: &Path) -> LoopDevice {
        let path = crate::util::run(Command::new("losetup").args(["--find", "--show"]).arg(backing));
        LoopDevice { path: path.trim().to_string() }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("--detach").arg(&self.path).output();
    }
}

#[test]
fn stale_berkeley_db_files_the_container_could_not_remove_are_not_removed_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = Rootfs::rpm(&tmp.path().join("ct"), "http://127.0.0.1:9/el/");
    // A directory of the host's in the container (a bind mount an operator gave it): its files
    // are host root's, and the container may read but not remove them.
    let shared = root.path.join("srv/shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("__db.001"), "the host's").unwrap();
    // The container binds it where its rpm database would be, for vzpkg to clean up.
    let ct = Running::unprivileged(root, "busybox mount --bind /srv/shared /var/lib/rpm");
    let (removed, why) = try_run(
        Command::new("nsenter")
            .args(["--target", &ct.pid.to_string(), "--user", "--mount", "--root", "--wd"])
            .args(["rm", "/srv/shared/__db.001"]),
    );
    assert!(!removed, "the container could remove the file itself: {why}");

    let (_, _, out) = setup.attempt("exec", &["--backend", "dnf", &ct.ct(), "--", "true"]);
    assert!(shared.join("__db.001").exists(), "vzpkg removed a file the container could not:\n{out}");
}

#[test]
fn the_guest_killing_the_runs_pid_1_ends_the_run_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let ct = Running::unprivileged(Rootfs::new(&tmp.path().join("ct"), &setup.source), "true");
    let (mounts, host_mounts) = (ct.mountinfo(), std::fs::read_to_string("/proc/self/mountinfo").unwrap());

    // The run's pid 1 has the guest's ids: the guest may signal it. What it leaves running
    // must not outlive the run.
    // Said before the kill: once pid 1 is gone the keeper may end the shell at any moment.
    let script = "echo killing; kill -9 $PPID; exec sleep infinity";
    let (pid, status, out) = setup.attempt("exec", &["--max-time", "300", &ct.ct(), "--", "sh", "-c", script]);
    assert!(out.contains("killing"), "{out}");
    assert!(!status.success(), "{out}");
    assert!(!out.contains("--max-time"), "the run went on after its pid 1 was killed:\n{out}");
    assert_eq!(setup.leftovers(pid), Vec::<std::path::PathBuf>::new());
    assert_eq!(ct.mountinfo(), mounts, "the container's mount table changed");
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), host_mounts, "a host mount was left");
    assert!(alive(ct.pid), "the container's init died");
}

#[test]
fn a_container_stopping_during_a_run_ends_it_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let mut ct = Running::unprivileged(Rootfs::new(&tmp.path().join("ct"), &setup.source), "true");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();

    let run = setup.held(&ct, "true");
    let pid = run.child.id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(ct.pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    ct.unshare.wait().unwrap();
    let (status, rest) = run.finish();
    assert!(!status.success() && !rest.contains("DONE"), "the run went on in a stopped container: {rest}");
    assert_eq!(setup.leftovers(pid), Vec::<std::path::PathBuf>::new());
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), host_mounts, "a host mount was left");
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

/// Shifts every owner in `root` up by `base`, as an unprivileged container's root is stored
/// (modes restored: chown clears setuid bits).
fn shift_owners(root: &Path, base: u32) {
    // Each directory once (as it is walked), each file and symlink once.
    let script = r#"
import os, sys
b = int(sys.argv[2])
for d, dirs, files in os.walk(sys.argv[1]):
    links = [x for x in dirs if os.path.islink(os.path.join(d, x))]
    for p in [d] + [os.path.join(d, f) for f in files + links]:
        st = os.lstat(p)
        os.lchown(p, st.st_uid + b, st.st_gid + b)
        if not os.path.islink(p):
            os.chmod(p, st.st_mode & 0o7777)
"#;
    crate::util::run(Command::new("python3").args(["-c", script]).arg(root).arg(base.to_string()));
}

#[test]
fn a_container_with_its_own_user_namespace_keeps_its_id_mapping() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let base = CONTAINER_IDS;
    let root = Rootfs::new(&tmp.path().join("ct"), &setup.source);
    shift_owners(&root.path, base);
    let ct = Running::unprivileged(root, "true");
    setup.ok("update", &[&ct.ct()]);
    let out = setup.ok("install", &[&ct.ct(), "vzt-alpha"]);
    assert!(out.contains("installed vzt-alpha:all 1.0"), "{out}");
    let data = ct.root.path.join("usr/share/vzt-alpha/data");
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (base, base), "the container's root is {base} on disk");
    let status = std::fs::metadata(ct.root.path.join("var/lib/dpkg/status")).unwrap();
    assert_eq!(status.uid(), base);
    let out = setup.ok("exec", &[&ct.ct(), "--", "sh", "-c", "id -u; stat -c %u /usr/share/vzt-alpha/data"]);
    assert!(out.lines().filter(|l| *l == "0").count() == 2, "inside, root and its files are 0:\n{out}");
}
