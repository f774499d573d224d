//! A hostile container against `vzpkg exec`: the attacks that reach through mount and pid
//! namespaces when the guest is real root (file handles, global sysctls, keyrings, device
//! nodes, pid 1 of the sandbox, signals, the caller's terminal, package names) must all fail.
//! Each test runs tests/confinement/probe.c (built once, static) inside a busybox root and
//! reads what it printed; every test first checks that the probe ran at all.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::util::repo::{deb_index, deb_repo, Pkg};
use crate::util::rootfs::{require_root, Rootfs};
use crate::util::running::Running;
use crate::util::{run, sha256, ProxyProcess, Upstream};

/// The probe, compiled with `gcc -static` once per test run.
fn probe_binary() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/confinement/probe.c");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let built = dir.join(format!("confinement-probe.{}", std::process::id()));
        run(Command::new("gcc").args(["-static", "-O1", "-Wall", "-Werror", "-o"]).arg(&built).arg(&source));
        let probe = dir.join("confinement-probe");
        std::fs::rename(&built, &probe).unwrap();
        probe
    })
}

/// Bytes nobody could guess, in hex: what a leak would show.
fn token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let seed = format!("{} {} {:?} {}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed), now, line!());
    sha256(seed.as_bytes())[..24].to_string()
}

/// How vzpkg reaches the hostile container: every attack is tried both ways.
#[derive(Clone, Copy)]
enum Reach {
    /// `dir:ROOT`: the sandbox's own namespaces.
    Stopped,
    /// `pid:N` of the root started in namespaces of its own: the sandbox joins its pid, ipc and
    /// uts namespaces.
    Running,
    /// A layered container (as `vzpkg create --layered` records one) whose image layer is the
    /// root: the sandbox's root is an overlay it builds.
    Layered,
}

/// A busybox root with the probe as /bin/probe and a hostname of its own, stopped or running.
struct Hostile {
    root: Rootfs,
    hostname: String,
    running: Option<Running>,
    /// The name a layered container is known by.
    layered: Option<String>,
}

impl Hostile {
    fn new(dir: &Path, reach: Reach) -> Hostile {
        let root = Rootfs::busybox(dir);
        std::fs::copy(probe_binary(), dir.join("bin/probe")).unwrap();
        let hostname = format!("ct-{}", token());
        std::fs::write(dir.join("etc/hostname"), format!("{hostname}\n")).unwrap();
        let running = match reach {
            Reach::Running => Some(Running::start(Rootfs { path: root.path.clone() })),
            _ => None,
        };
        let layered = matches!(reach, Reach::Layered).then(|| {
            // The record and layers `vzpkg create --layered` would make, beside the root, in
            // the state directory every test here uses (`TMP/state`).
            let name = format!("layered-{}", token());
            let tmp = dir.parent().unwrap();
            let own = tmp.join(&name);
            for sub in ["upper", "work"] {
                std::fs::create_dir_all(own.join(sub)).unwrap();
            }
            std::fs::create_dir_all(tmp.join("state/containers")).unwrap();
            std::fs::write(
                tmp.join(format!("state/containers/{name}.toml")),
                format!(
                    "root = {own:?}\ntemplate = \"test\"\nimage_hash = \"\"\n[layers]\nlower = {dir:?}\ndir = {own:?}\n",
                    own = own.display().to_string(),
                    dir = dir.display().to_string()
                ),
            )
            .unwrap();
            name
        });
        Hostile { root, hostname, running, layered }
    }

    /// As vzpkg takes it.
    fn ct(&self) -> String {
        match (&self.running, &self.layered) {
            (Some(running), _) => running.ct(),
            (None, Some(name)) => name.clone(),
            (None, None) => self.root.ct(),
        }
    }
}

/// How the tests run vzpkg: their own config, cache and state directories, and a proxy (a real
/// one where the test needs it; `vzpkg exec` alone never contacts it).
struct Vzpkg {
    config: PathBuf,
    cache: PathBuf,
    state: PathBuf,
    proxy: String,
}

impl Vzpkg {
    fn new(tmp: &Path) -> Vzpkg {
        Self::with(tmp, tmp.join("cache"), "http://127.0.0.1:9".to_string())
    }

    fn with_proxy(tmp: &Path, proxy: &ProxyProcess) -> Vzpkg {
        Self::with(tmp, proxy.cache_dir.clone(), proxy.url())
    }

    fn with(tmp: &Path, cache: PathBuf, proxy: String) -> Vzpkg {
        let config = tmp.join("vzpkg.toml");
        std::fs::write(&config, "").unwrap();
        Vzpkg { config, cache, state: tmp.join("state"), proxy }
    }

    /// `vzpkg COMMAND -y --proxy … ARGS`, not started; stdin is /dev/null unless the test says.
    fn command(&self, command: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vzpkg"));
        cmd.arg("--config").arg(&self.config).arg("--cache-dir").arg(&self.cache).arg("--state-dir").arg(&self.state);
        cmd.args([command, "-y", "--proxy", &self.proxy]).args(args).stdin(Stdio::null());
        cmd
    }

    /// `vzpkg exec CT -- ARGV`, not started.
    fn exec(&self, ct: &str, argv: &[&str]) -> Command {
        let mut args = vec![ct.to_string(), "--".to_string()];
        args.extend(argv.iter().map(|a| a.to_string()));
        self.command("exec", &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Runs `vzpkg COMMAND ARGS`; panics with its output unless it succeeds.
    fn ok(&self, command: &str, args: &[&str]) -> String {
        output_text(&self.command(command, args).output().unwrap(), true)
    }
}

/// stdout then stderr; with `must_succeed`, panics with both if the command failed.
fn output_text(out: &Output, must_succeed: bool) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!must_succeed || out.status.success(), "vzpkg failed with {}:\n{text}", out.status);
    text
}

/// Runs `probe SUBCOMMAND ARGS` through `vzpkg exec`, returns all it printed, and checks that
/// the probe did start inside.
fn probe(vz: &Vzpkg, root: &Hostile, subcommand: &str, args: &[&str]) -> String {
    let mut argv = vec!["probe", subcommand];
    argv.extend(args);
    let out = output_text(&vz.exec(&root.ct(), &argv).output().unwrap(), false);
    assert_started(&out, subcommand);
    out
}

fn assert_started(out: &str, subcommand: &str) {
    assert!(out.lines().any(|l| l == format!("probe: start {subcommand}")), "the probe did not run inside:\n{out}");
}

/// The result lines `WHAT: …` for one WHAT.
fn results<'a>(out: &'a str, what: &str) -> Vec<&'a str> {
    let prefix = format!("{what}: ");
    out.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).collect()
}

fn assert_nothing_leaked(out: &str) {
    let leaks: Vec<_> = out.lines().filter(|l| l.contains(": LEAKED")).collect();
    assert!(leaks.is_empty(), "the attack worked: {leaks:#?}\nall output:\n{out}");
}

/// Asserts that WHAT was tried and denied (with any errno).
fn assert_denied(out: &str, what: &str) {
    let got = results(out, what);
    assert!(!got.is_empty() && got.iter().all(|r| r.starts_with("denied ")), "{what} was not denied: {got:?}\n{out}");
}

/// The filesystem type of `path`, and `path` relative to that filesystem's own root directory
/// (which may be mounted elsewhere than at `/`), from /proc/self/mountinfo.
fn path_in_filesystem(path: &Path) -> (String, PathBuf) {
    let path = path.canonicalize().unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut best: Option<(PathBuf, String, PathBuf)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (root, mount_point) = (PathBuf::from(fields[3]), PathBuf::from(fields[4]));
        let dash = fields.iter().position(|f| *f == "-").unwrap();
        // The deepest mount point wins; of two on the same point, the later (the one on top).
        let depth = best.as_ref().map_or(0, |(m, _, _)| m.components().count());
        if path.starts_with(&mount_point) && mount_point.components().count() >= depth {
            best = Some((mount_point, fields[dash + 1].to_string(), root));
        }
    }
    let (mount_point, fstype, root) = best.unwrap();
    let relative = root.strip_prefix("/").unwrap().join(path.strip_prefix(&mount_point).unwrap());
    (fstype, relative)
}

fn a_file_handle_does_not_open_the_host_filesystem(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let secret = format!("host-secret-{}", token());
    std::fs::write(tmp.path().join("host-secret"), &secret).unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    let (fstype, relative) = path_in_filesystem(&tmp.path().join("host-secret"));
    assert_eq!(fstype, "ext4", "the probe builds an ext4 file handle: run the tests with TMPDIR on ext4");

    let out = probe(&Vzpkg::new(tmp.path()), &root, "handle", &[relative.to_str().unwrap()]);
    assert!(!out.contains(&secret), "the host's file was read by handle:\n{out}");
    assert_nothing_leaked(&out);
    assert_denied(&out, "open_by_handle_at");
}

fn a_global_sysctl_cannot_be_written(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    let before = std::fs::read("/proc/sys/kernel/core_pattern").unwrap();
    let out = probe(&Vzpkg::new(tmp.path()), &root, "sysctl", &[]);
    assert_nothing_leaked(&out);
    assert_denied(&out, "core_pattern");
    assert_eq!(std::fs::read("/proc/sys/kernel/core_pattern").unwrap(), before, "the host's core_pattern changed");
}

/// A key in the host root's user keyring, unlinked when dropped.
struct HostKey {
    serial: String,
}

impl Drop for HostKey {
    fn drop(&mut self) {
        let _ = Command::new("keyctl").args(["unlink", &self.serial, "@u"]).output();
    }
}

fn the_host_users_keyring_cannot_be_read(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    let (description, secret) = (format!("vzpkg-test-{}", token()), format!("key-secret-{}", token()));
    let serial = run(Command::new("keyctl").args(["add", "user", &description, &secret, "@u"])).trim().to_string();
    let _key = HostKey { serial: serial.clone() };
    assert_eq!(run(Command::new("keyctl").args(["pipe", &serial])), secret, "the host cannot read its own key");

    let out = probe(&Vzpkg::new(tmp.path()), &root, "keys", &[&serial, &description]);
    assert!(!out.contains(&secret), "the host's key was read:\n{out}");
    assert_nothing_leaked(&out);
    for what in ["keyctl read", "keyctl search", "request_key"] {
        assert_denied(&out, what);
    }
}

fn proc_1_exe_is_not_the_host_vzpkg_binary(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    let host = std::fs::metadata(env!("CARGO_BIN_EXE_vzpkg")).unwrap();
    let out = probe(&Vzpkg::new(tmp.path()), &root, "exe", &[]);
    let got = results(&out, "/proc/1/exe");
    assert_eq!(got.len(), 1, "{out}");
    assert_ne!(got[0], format!("dev={} ino={}", host.dev(), host.ino()), "pid 1 inside is the host's vzpkg binary");
}

/// A loop device over a file of the test's, detached when dropped.
struct LoopDevice {
    path: String,
}

impl LoopDevice {
    fn new(backing: &Path) -> LoopDevice {
        let path = run(Command::new("losetup").args(["--find", "--show"]).arg(backing)).trim().to_string();
        LoopDevice { path }
    }

    /// MAJOR, MINOR
    fn numbers(&self) -> [String; 2] {
        device_numbers(std::fs::metadata(&self.path).unwrap().rdev())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("--detach").arg(&self.path).output();
    }
}

fn device_numbers(dev: u64) -> [String; 2] {
    [nix::sys::stat::major(dev).to_string(), nix::sys::stat::minor(dev).to_string()]
}

fn a_block_device_made_inside_cannot_be_read(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    // The disk the host's root filesystem is on (which the host may itself be barred from
    // reading, as in some VMs), and a loop device whose content the test knows.
    let secret = format!("disk-secret-{}", token());
    std::fs::write(tmp.path().join("disk.img"), format!("{secret}{}", "\0".repeat(4096 - secret.len()))).unwrap();
    let disk = LoopDevice::new(&tmp.path().join("disk.img"));
    let mut devices = disk.numbers().to_vec();
    let host_root = std::fs::metadata("/").unwrap().dev();
    if nix::sys::stat::major(host_root) != 0 {
        devices.extend(device_numbers(host_root));
    }

    let args: Vec<&str> = devices.iter().map(String::as_str).collect();
    let out = probe(&Vzpkg::new(tmp.path()), &root, "block", &args);
    assert!(!out.contains(&secret), "a host disk was read inside:\n{out}");
    assert_nothing_leaked(&out);
    for pair in devices.chunks(2) {
        for dir in ["/tmp", "/dev"] {
            assert_denied(&out, &format!("mknod {dir} {}:{}", pair[0], pair[1]));
        }
    }
}

fn sysrq_trigger_cannot_be_written(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    let out = probe(&Vzpkg::new(tmp.path()), &root, "sysrq", &[]);
    assert_nothing_leaked(&out);
    assert_denied(&out, "sysrq-trigger");
}

fn no_host_descriptor_is_visible_inside(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    // A pipe vzpkg inherits at fd 5: whatever the caller had open must not reach the guest.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let pipe = format!("pipe:[{}]", nix::sys::stat::fstat(&write_end).unwrap().st_ino);
    let mut cmd = Vzpkg::new(tmp.path()).exec(&root.ct(), &["probe", "fds"]);
    let fd = write_end.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::dup2(fd, 5) < 0 || nix::libc::fcntl(5, nix::libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = output_text(&cmd.output().unwrap(), false);
    drop((read_end, write_end));
    assert_started(&out, "fds");
    assert_eq!(results(&out, "self fds"), ["0 1 2"], "{out}");
    let host_dir = tmp.path().display().to_string();
    let reachable: Vec<_> =
        out.lines().filter(|l| l.starts_with("fd ") && (l.contains(&pipe) || l.contains(&host_dir))).collect();
    assert!(reachable.is_empty(), "host descriptors inside ({pipe} is the caller's): {reachable:#?}\n{out}");
}

fn pid_1_does_not_lead_to_the_host(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("host-marker-{}", token());
    std::fs::write(tmp.path().join("host-marker"), &marker).unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    let host_path = tmp.path().join("host-marker").display().to_string();
    let out = probe(&Vzpkg::new(tmp.path()), &root, "pid1", &["host-marker", &host_path]);

    assert!(!out.contains(&marker), "a host file was read through pid 1:\n{out}");
    // The container's own files are fair game: /proc/1/root may be the container's root.
    let own_hostname = format!("{}\\x0a", root.hostname);
    let leaks: Vec<_> = out
        .lines()
        .filter(|l| l.contains(": LEAKED"))
        .filter(|l| !(l.ends_with(&format!("/etc/hostname: LEAKED {own_hostname}"))))
        .collect();
    assert!(leaks.is_empty(), "pid 1 leads to the host: {leaks:#?}\nall output:\n{out}");
    assert_denied(&out, "ptrace attach 1");
    assert_denied(&out, "/proc/1/mem");
}

fn the_host_environment_is_not_visible_inside(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    let secret = format!("env-secret-{}", token());
    let mut cmd = Vzpkg::new(tmp.path()).exec(&root.ct(), &["probe", "environ"]);
    let out = output_text(&cmd.env("VZPKG_TEST_SECRET", &secret).output().unwrap(), false);
    assert_started(&out, "environ");
    assert!(out.lines().any(|l| l.starts_with("environ ")), "the probe saw no process at all:\n{out}");
    assert!(!out.contains(&secret), "vzpkg's environment is readable inside:\n{out}");
}

fn signals_from_inside_reach_nothing_outside(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    let vzpkg = Vzpkg::new(tmp.path()).exec(&root.ct(), &["probe", "signals"]);
    // The caller of vzpkg: a shell in a process group of its own (never the test's), which
    // says which signals it got.
    let script = "for s in USR1 USR2 TERM HUP; do trap \"echo got $s\" $s; done
        \"$@\"; echo \"vzpkg exited $?\"; echo survived";
    let out = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(vzpkg.get_program())
        .args(vzpkg.get_args())
        .process_group(0)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = output_text(&out, false);
    assert_started(&out, "signals");
    let got: Vec<_> = out.lines().filter(|l| l.starts_with("got ")).collect();
    assert!(got.is_empty(), "the caller got signals from inside: {got:?}\n{out}");
    assert!(out.lines().any(|l| l == "vzpkg exited 0"), "vzpkg did not end normally:\n{out}");
    assert!(out.lines().any(|l| l == "survived"), "{out}");
}

/// Bytes waiting in a terminal's input queue, read without blocking.
fn pending_input(tty: &OwnedFd) -> Vec<u8> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    fcntl(tty, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let mut buf = [0u8; 256];
    match nix::unistd::read(tty, &mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(nix::errno::Errno::EAGAIN) => Vec::new(),
        Err(e) => panic!("reading the terminal: {e}"),
    }
}

fn keystrokes_cannot_be_pushed_into_the_callers_terminal(reach: Reach) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), reach);
    let pty = nix::pty::openpty(None, None).unwrap();
    // Raw, so that any byte pushed shows, not only whole lines.
    let mut mode = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    nix::sys::termios::cfmakeraw(&mut mode);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &mode).unwrap();

    // The terminal is stdin only, as in `vzpkg exec … | less`.
    let mut cmd = Vzpkg::new(tmp.path()).exec(&root.ct(), &["probe", "tiocsti"]);
    let out = cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap())).output().unwrap();
    let out = output_text(&out, false);
    assert_started(&out, "tiocsti");
    let injected = pending_input(&pty.slave);
    assert!(
        injected.is_empty(),
        "keystrokes were pushed into the caller's terminal: {:?}\n{out}",
        String::from_utf8_lossy(&injected)
    );
    assert_nothing_leaked(&out);
    drop(pty.master);
}

/// A test upstream with `repo` as its `debian` repository, a proxy allowed to reach it, and
/// vzpkg set up to use both.
struct Served {
    _upstream: Upstream,
    proxy: ProxyProcess,
    vz: Vzpkg,
    source: String,
}

impl Served {
    fn new(tmp: &Path) -> Served {
        let upstream = Upstream::start(&tmp.join("upstream"));
        let proxy = ProxyProcess::start(&tmp.join("cache"), "", &["--allow-host", &upstream.host()]);
        Served {
            source: format!("deb [trusted=yes] {}/debian stable main", upstream.url()),
            vz: Vzpkg::with_proxy(tmp, &proxy),
            _upstream: upstream,
            proxy,
        }
    }
}

/// Every path below `dir` (not following symlinks) with its type and size, `tmp` left out.
fn listing(dir: &Path) -> Vec<String> {
    let entries = crate::util::walk(dir, &["tmp"]);
    entries
        .iter()
        .map(|(p, m)| format!("{} {:o} {}", p.strip_prefix(dir).unwrap().display(), m.mode(), m.len()))
        .collect()
}

#[test]
fn hostile_package_names_create_nothing_outside_the_view() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    deb_repo(&tmp.path().join("upstream/debian"), &[Pkg::new("vzt-view", "1.0", 20_000)]);
    let served = Served::new(tmp.path());
    // A first container installs the package: the proxy now holds it verified.
    let first = Rootfs::new(&tmp.path().join("ct1"), &served.source);
    served.vz.ok("update", &[&first.ct()]);
    served.vz.ok("install", &[&first.ct(), "vzt-view"]);
    let deb = std::fs::read(tmp.path().join("upstream/debian/pool/main/vzt-view_1.0_all.deb")).unwrap();
    let sha = sha256(&deb);
    assert!(crate::util::check_store(&served.proxy.cache_dir).contains(&sha), "the package is not in the store");
    let blob = std::fs::read_dir(served.proxy.cache_dir.join("blobs"))
        .unwrap()
        .map(|shard| shard.unwrap().path().join(&sha))
        .find(|path| path.is_file())
        .unwrap();

    // A second container whose lists name that very file under names that are paths.
    let hostile = Hostile::new(&tmp.path().join("ct2"), Reach::Stopped);
    let ct2 = &hostile.root.path;
    let up = "../".repeat(24);
    let names = [
        format!("{up}{}/escape-relative", tmp.path().display().to_string().trim_start_matches('/')),
        format!("{}/escape-absolute", tmp.path().display()),
        format!("{}/etc/planted", ct2.display()),
        ".hidden".to_string(),
        "..".to_string(),
        "a/b".to_string(),
    ];
    let stanzas: Vec<String> = names
        .iter()
        .map(|name| {
            format!(
                "Package: {name}\nVersion: 1.0\nArchitecture: all\nFilename: pool/main/vzt-view_1.0_all.deb\nSize: {}\nSHA256: {sha}\n",
                deb.len()
            )
        })
        .collect();
    std::fs::write(ct2.join("var/lib/apt/lists/x_Packages"), stanzas.join("\n")).unwrap();
    let outside = [tmp.path().join("escape-relative_1.0_all.deb"), tmp.path().join("escape-absolute_1.0_all.deb")];
    let (tmp_before, ct2_before) = (std::fs::read_dir(tmp.path()).unwrap().count(), listing(ct2));
    let blob_before = std::fs::metadata(&blob).unwrap();

    let mut run = served.vz.exec(&hostile.ct(), &["sh", "-c", "echo probe: start view; ls -a /var/cache/apt/archives"]);
    let out = output_text(&run.output().unwrap(), false);
    let mut wrong: Vec<String> =
        outside.iter().filter(|p| p.exists()).map(|p| format!("{} was created on the host", p.display())).collect();
    if std::fs::read_dir(tmp.path()).unwrap().count() != tmp_before {
        wrong.push("something appeared beside the roots".to_string());
    }
    let ct2_after = listing(ct2);
    wrong.extend(ct2_after.iter().filter(|l| !ct2_before.contains(l)).map(|l| format!("{l} appeared in the root")));
    let blob_after = std::fs::metadata(&blob).unwrap();
    if (blob_after.mode(), blob_after.uid(), blob_after.nlink())
        != (blob_before.mode(), blob_before.uid(), blob_before.nlink())
    {
        wrong.push(format!("the blob has {} links (was {})", blob_after.nlink(), blob_before.nlink()));
    }
    if sha256(&std::fs::read(&blob).unwrap()) != sha {
        wrong.push("the blob changed".to_string());
    }
    // The names only narrow what the container sees: the run itself goes ahead.
    if !out.lines().any(|l| l == "probe: start view") {
        wrong.push("the command did not run".to_string());
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n{out}");
}

/// Mode, owner and group of every file the packages installed, and every file capability in
/// the root, as `getcap` on the host shows them.
fn installed_files(root: &Path, packages: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for package in packages {
        let info = root.join("var/lib/dpkg/info");
        let list = [format!("{package}.list"), format!("{package}:amd64.list")]
            .iter()
            .find_map(|name| std::fs::read_to_string(info.join(name)).ok())
            .unwrap_or_else(|| panic!("{package} is not installed in {}", root.display()));
        for path in list.lines().filter(|p| *p != "/.") {
            let meta = std::fs::symlink_metadata(root.join(path.trim_start_matches('/'))).unwrap();
            found.push(format!("{path} {:o} {}:{}", meta.mode(), meta.uid(), meta.gid()));
        }
    }
    let caps = run(Command::new("getcap").arg("-r").arg(root));
    let prefix = root.display().to_string();
    found.extend(caps.lines().map(|l| format!("getcap {}", l.strip_prefix(prefix.as_str()).unwrap_or(l))));
    found.sort();
    found
}

#[test]
fn ownership_and_file_capabilities_on_disk_are_what_the_guest_set() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("upstream/debian");
    std::fs::create_dir_all(repo.join("pool/main")).unwrap();
    let debs = crate::util::rootfs::capability_debs();
    for (deb, name) in debs.iter().zip(["libcap2-bin_amd64.deb", "iputils-ping_amd64.deb"]) {
        // Without the epoch's %3a, which a URL would have to carry encoded.
        std::fs::copy(deb, repo.join("pool/main").join(name)).unwrap();
    }
    deb_index(&repo);
    let served = Served::new(tmp.path());
    let root = Rootfs::new(&tmp.path().join("ct"), &served.source);

    let script = "touch /x && mkdir /d && chown 1234:1234 /d && echo probe: start owners";
    let out = output_text(&served.vz.exec(&root.ct(), &["sh", "-c", script]).output().unwrap(), true);
    assert_started(&out, "owners");
    let owner = |rel: &str| {
        let meta = std::fs::metadata(root.path.join(rel)).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner("x"), (0, 0), "a file root made inside is not root's on disk");
    assert_eq!(owner("d"), (1234, 1234), "chown inside did not give the ids asked for on disk");

    served.vz.ok("update", &[&root.ct()]);
    served.vz.ok("install", &[&root.ct(), "iputils-ping"]);

    // The same packages installed by plain dpkg in a chroot of a second fresh root.
    let reference = Rootfs::new(&tmp.path().join("reference"), &served.source);
    let mut dpkg = Command::new("chroot");
    dpkg.arg(&reference.path).args(["dpkg", "-i"]);
    for deb in &debs {
        let name = deb.file_name().unwrap();
        std::fs::copy(deb, reference.path.join("tmp").join(name)).unwrap();
        dpkg.arg(Path::new("/tmp").join(name));
    }
    run(dpkg.env("DEBIAN_FRONTEND", "noninteractive"));

    let packages = ["iputils-ping", "libcap2-bin"];
    let expected = installed_files(&reference.path, &packages);
    assert!(
        expected.iter().any(|l| l.starts_with("getcap /usr/bin/ping cap_net_raw=ep")),
        "setcap in ping's postinst did not work even in a plain chroot: {expected:#?}"
    );
    assert_eq!(installed_files(&root.path, &packages), expected, "owners, modes or file capabilities differ");
}

#[test]
fn on_a_host_whose_mounts_are_shared_a_run_leaves_no_mount_there() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"), Reach::Stopped);
    // systemd makes every mount shared, and a copy of a shared mount is its peer: what the run
    // mounts on its copy of the root (/proc, /dev, the views) would appear under the root on
    // the host, and stay. The test's host is a mount namespace of its own, made shared.
    let exec = Vzpkg::new(tmp.path()).exec(&root.ct(), &["sh", "-c", "echo inside"]);
    let script = r#"mount --make-rshared / && "$@"; echo "vzpkg exited $?"; cat /proc/self/mountinfo"#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "unchanged", "sh", "-c", script, "sh"])
        .arg(exec.get_program())
        .args(exec.get_args())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = output_text(&out, true);
    assert!(out.contains("inside\n") && out.contains("vzpkg exited 0"), "{out}");
    let root_path = root.root.path.display().to_string();
    let left: Vec<_> = out.lines().filter(|l| l.contains(&root_path)).collect();
    assert!(left.is_empty(), "the run left mounts on the host: {left:#?}");
}

/// Each attack above, against a stopped root, a running container and a layered container.
macro_rules! both_reaches {
    ($($attack:ident),* $(,)?) => {
        mod stopped_root {
            $(#[test]
            fn $attack() {
                super::$attack(super::Reach::Stopped)
            })*
        }
        mod running_container {
            $(#[test]
            fn $attack() {
                super::$attack(super::Reach::Running)
            })*
        }
        mod layered_container {
            $(#[test]
            fn $attack() {
                super::$attack(super::Reach::Layered)
            })*
        }
    };
}

both_reaches!(
    a_file_handle_does_not_open_the_host_filesystem,
    a_global_sysctl_cannot_be_written,
    the_host_users_keyring_cannot_be_read,
    proc_1_exe_is_not_the_host_vzpkg_binary,
    a_block_device_made_inside_cannot_be_read,
    sysrq_trigger_cannot_be_written,
    no_host_descriptor_is_visible_inside,
    pid_1_does_not_lead_to_the_host,
    the_host_environment_is_not_visible_inside,
    signals_from_inside_reach_nothing_outside,
    keystrokes_cannot_be_pushed_into_the_callers_terminal,
);
