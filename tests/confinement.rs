//! A hostile container against `vzpkg exec`: the attacks that reach through mount and pid
//! namespaces when the guest is real root (file handles, global sysctls, keyrings, device
//! nodes, pid 1 of the sandbox, signals, the caller's terminal) must all fail.
//! Each test runs tests/confinement/probe.c (built once, static) inside a busybox root and
//! reads what it printed; every test first checks that the probe ran at all.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::util::rootfs::{require_root, Rootfs};
use crate::util::{run, sha256};

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

/// A busybox root with the probe as /bin/probe and a hostname of its own.
struct Hostile {
    root: Rootfs,
    hostname: String,
}

impl Hostile {
    fn new(dir: &Path) -> Hostile {
        let root = Rootfs::busybox(dir);
        std::fs::copy(probe_binary(), dir.join("bin/probe")).unwrap();
        let hostname = format!("ct-{}", token());
        std::fs::write(dir.join("etc/hostname"), format!("{hostname}\n")).unwrap();
        Hostile { root, hostname }
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

    /// `vzpkg exec dir:ROOT -- ARGV`, not started.
    fn exec(&self, root: &Rootfs, argv: &[&str]) -> Command {
        let mut args = vec![root.ct(), "--".to_string()];
        args.extend(argv.iter().map(|a| a.to_string()));
        self.command("exec", &args.iter().map(String::as_str).collect::<Vec<_>>())
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
    let out = output_text(&vz.exec(&root.root, &argv).output().unwrap(), false);
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

#[test]
fn a_file_handle_does_not_open_the_host_filesystem() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let secret = format!("host-secret-{}", token());
    std::fs::write(tmp.path().join("host-secret"), &secret).unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
    let (fstype, relative) = path_in_filesystem(&tmp.path().join("host-secret"));
    assert_eq!(fstype, "ext4", "the probe builds an ext4 file handle: run the tests with TMPDIR on ext4");

    let out = probe(&Vzpkg::new(tmp.path()), &root, "handle", &[relative.to_str().unwrap()]);
    assert!(!out.contains(&secret), "the host's file was read by handle:\n{out}");
    assert_nothing_leaked(&out);
    assert_denied(&out, "open_by_handle_at");
}

#[test]
fn a_global_sysctl_cannot_be_written() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
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

#[test]
fn the_host_users_keyring_cannot_be_read() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
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

#[test]
fn proc_1_exe_is_not_the_host_vzpkg_binary() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
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

#[test]
fn a_block_device_made_inside_cannot_be_read() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
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

#[test]
fn sysrq_trigger_cannot_be_written() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
    let out = probe(&Vzpkg::new(tmp.path()), &root, "sysrq", &[]);
    assert_nothing_leaked(&out);
    assert_denied(&out, "sysrq-trigger");
}

#[test]
fn no_host_descriptor_is_visible_inside() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
    // A pipe vzpkg inherits at fd 5: whatever the caller had open must not reach the guest.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let pipe = format!("pipe:[{}]", nix::sys::stat::fstat(write_end.as_raw_fd()).unwrap().st_ino);
    let mut cmd = Vzpkg::new(tmp.path()).exec(&root.root, &["probe", "fds"]);
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

#[test]
fn pid_1_does_not_lead_to_the_host() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("host-marker-{}", token());
    std::fs::write(tmp.path().join("host-marker"), &marker).unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
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

#[test]
fn the_host_environment_is_not_visible_inside() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
    let secret = format!("env-secret-{}", token());
    let mut cmd = Vzpkg::new(tmp.path()).exec(&root.root, &["probe", "environ"]);
    let out = output_text(&cmd.env("VZPKG_TEST_SECRET", &secret).output().unwrap(), false);
    assert_started(&out, "environ");
    assert!(out.lines().any(|l| l.starts_with("environ ")), "the probe saw no process at all:\n{out}");
    assert!(!out.contains(&secret), "vzpkg's environment is readable inside:\n{out}");
}

#[test]
fn signals_from_inside_reach_nothing_outside() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
    let vzpkg = Vzpkg::new(tmp.path()).exec(&root.root, &["probe", "signals"]);
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
    fcntl(tty.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let mut buf = [0u8; 256];
    match nix::unistd::read(tty.as_raw_fd(), &mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(nix::errno::Errno::EAGAIN) => Vec::new(),
        Err(e) => panic!("reading the terminal: {e}"),
    }
}

#[test]
fn keystrokes_cannot_be_pushed_into_the_callers_terminal() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = Hostile::new(&tmp.path().join("ct"));
    let pty = nix::pty::openpty(None, None).unwrap();
    // Raw, so that any byte pushed shows, not only whole lines.
    let mut mode = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    nix::sys::termios::cfmakeraw(&mut mode);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &mode).unwrap();

    // The terminal is stdin only, as in `vzpkg exec … | less`.
    let mut cmd = Vzpkg::new(tmp.path()).exec(&root.root, &["probe", "tiocsti"]);
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
