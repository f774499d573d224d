//! The sandbox's kernel-side limits, as root: each run in a cgroup of its own with the
//! configured pids and memory limits, removed with everything in it when the run ends or vzpkg
//! is killed; the guest's ids are the unprivileged range; a root on a filesystem that cannot be
//! idmapped is refused with the reason and the way out.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::rootfs::{require_root, Rootfs};

/// vzpkg with a config of its own; each test picks its own id range, so the processes of one
/// run can be told from those of every other test by their host uid.
struct Run {
    config: PathBuf,
    tmp: PathBuf,
    uid: u32,
}

impl Run {
    fn new(tmp: &Path, id_slot: u32, sandbox: &str) -> Run {
        let uid = 0x7100_0000 + id_slot * 65536;
        let config = tmp.join("vzpkg.toml");
        std::fs::write(&config, format!("[sandbox]\nid_base = {uid}\n{sandbox}")).unwrap();
        Run { config, tmp: tmp.to_path_buf(), uid }
    }

    fn exec(&self, root: &Rootfs, extra: &[&str], argv: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vzpkg"));
        cmd.arg("--config").arg(&self.config);
        cmd.arg("--cache-dir").arg(self.tmp.join("cache")).arg("--state-dir").arg(self.tmp.join("state"));
        cmd.args(["exec", "--proxy", "http://127.0.0.1:9"]).args(extra).arg(root.ct()).arg("--").args(argv);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Host pids of the processes running as this test's guest root.
    fn guest_processes(&self) -> Vec<u32> {
        processes().into_iter().filter(|&p| host_uid(p) == Some(self.uid)).collect()
    }
}

/// A vzpkg run that is killed (its sandbox with it, by the keeper) if the test fails while it
/// waits at its gate: a failed test leaves nothing running that the next run would count.
struct Killed(Child);

impl std::ops::Deref for Killed {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn processes() -> Vec<u32> {
    std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

fn host_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// The host directories of the cgroups of the first of `pids` still there (a short-lived
/// process may have exited since it was listed).
fn first_cgroup_dirs(pids: &[u32]) -> (PathBuf, PathBuf) {
    pids.iter().find_map(|&p| cgroup_dirs(p)).expect("every guest process exited")
}

/// The host directories of `pid`'s cgroups for the pids and memory controllers (v1), or its one
/// v2 cgroup twice; None when it has exited.
fn cgroup_dirs(pid: u32) -> Option<(PathBuf, PathBuf)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut pids = None;
    let mut memory = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let path = path.trim_start_matches('/');
        for c in controllers.split(',') {
            match c {
                "pids" => pids = Some(Path::new("/sys/fs/cgroup/pids").join(path)),
                "memory" => memory = Some(Path::new("/sys/fs/cgroup/memory").join(path)),
                _ => {}
            }
        }
    }
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/');
        let dir = Path::new("/sys/fs/cgroup").join(path);
        return Some((dir.clone(), dir));
    }
    Some((pids?, memory?))
}

fn read_line(child: &mut Child, out: &mut Option<BufReader<std::process::ChildStdout>>) -> String {
    let reader = out.get_or_insert_with(|| BufReader::new(child.stdout.take().unwrap()));
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

/// A busybox root at `tmp/ct` with a FIFO at /tmp/go for the guest to wait on until the test
/// opens it.
fn root_with_gate(tmp: &Path) -> (Rootfs, PathBuf) {
    let root = Rootfs::busybox(&tmp.join("ct"));
    let gate = root.path.join("tmp/go");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    (root, gate)
}

/// Opens the FIFO the guest waits on.
fn open_gate(gate: &Path) {
    std::fs::OpenOptions::new().write(true).open(gate).unwrap().write_all(b"go\n").unwrap();
}

#[test]
fn a_run_sits_in_a_cgroup_of_its_own_with_its_limits_and_unprivileged_ids() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::new(tmp.path(), 1, "pids_max = 77\nmemory_max = 123731968\n");
    let (root, gate) = root_with_gate(tmp.path());
    let mut child = Killed(
        run.exec(&root, &[], &["sh", "-c", "echo started; cat /proc/self/cgroup; read x < /tmp/go"]).spawn().unwrap(),
    );
    let mut out = None;
    assert_eq!(read_line(&mut child, &mut out), "started\n");

    let guests = run.guest_processes();
    assert!(!guests.is_empty(), "no process runs as the test's unprivileged range {}", run.uid);
    let (pids, memory) = first_cgroup_dirs(&guests);
    assert!(pids.display().to_string().contains("/vzpkg/run-"), "{}", pids.display());
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(read(pids.join("pids.max")), "77");
    let memory_file = if memory == pids { "memory.max" } else { "memory.limit_in_bytes" };
    assert_eq!(read(memory.join(memory_file)), "123731968");
    for guest in &guests {
        if let Some(dirs) = cgroup_dirs(*guest) {
            assert_eq!(dirs, (pids.clone(), memory.clone()), "every process of the run is in it");
        }
    }
    // Inside, the cgroup namespace makes the run's cgroup the root.
    let inside = read_line(&mut child, &mut out);
    assert!(inside.trim_end().ends_with(":/"), "{inside}");

    open_gate(&gate);
    assert!(child.wait().unwrap().success());
    assert!(!pids.exists() && !memory.exists(), "the run's cgroup was left behind");
    assert!(run.guest_processes().is_empty());
}

#[test]
fn a_fork_bomb_ends_with_its_run_and_the_host_stays_responsive() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::new(tmp.path(), 2, "pids_max = 40\n");
    let (root, gate) = root_with_gate(tmp.path());
    // The bomb forks until the run's pids limit stops it; the shell that started it waits for
    // the test (a failed fork ends busybox's shell, so it forks nothing more itself; the
    // bomb's SIGCHLDs interrupt opening the FIFO, hence the loop).
    let script = "exec 2>/dev/null; echo started; bomb() { bomb | bomb & }; bomb; until read x < /tmp/go; do :; done";
    let mut child = Killed(run.exec(&root, &[], &["sh", "-c", script]).spawn().unwrap());
    let mut out = None;
    assert_eq!(read_line(&mut child, &mut out), "started\n");
    let (pids, _) = first_cgroup_dirs(&run.guest_processes());
    // Watched from outside until the kernel has refused a fork for the limit.
    let refused = || {
        let events = std::fs::read_to_string(pids.join("pids.events")).unwrap_or_default();
        events.lines().any(|l| l.strip_prefix("max ").is_some_and(|n| n != "0"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !refused() {
        assert!(std::time::Instant::now() < deadline, "the bomb never reached the limit");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let current: usize = std::fs::read_to_string(pids.join("pids.current")).unwrap().trim().parse().unwrap();
    assert!(current <= 40, "{current} processes in a run limited to 40");
    // The host still starts processes while the bomb is at its limit.
    assert!(Command::new("true").status().unwrap().success());

    open_gate(&gate);
    child.wait().unwrap();
    let left = run.guest_processes();
    assert!(left.is_empty(), "processes of the bomb outlived the run: {left:?}");
}

#[test]
fn a_memory_hog_is_killed_and_named_and_nothing_else_is() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::new(tmp.path(), 3, "memory_max = 67108864\n");
    let root = Rootfs::busybox(&tmp.path().join("ct"));
    // Doubling a string reaches the 64 MiB limit in a few dozen steps.
    let out = run.exec(&root, &[], &["awk", "BEGIN { s = \"x\"; while (1) s = s s }"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "killed by SIGKILL: {err}");
    assert!(err.contains("went over its memory limit (64 MiB, sandbox.memory_max)"), "{err}");
    assert!(run.guest_processes().is_empty());
}

#[test]
fn killing_vzpkg_leaves_no_process_mount_or_cgroup() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::new(tmp.path(), 4, "");
    let root = Rootfs::busybox(&tmp.path().join("ct"));
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // Children that try to outlive the run: one in a new session, one double-forked.
    let script = "setsid sleep 1000 & (sleep 1000 &) ; echo started; exec sleep 1000";
    let mut child = Killed(run.exec(&root, &[], &["sh", "-c", script]).spawn().unwrap());
    let mut out = None;
    assert_eq!(read_line(&mut child, &mut out), "started\n");
    let guests = run.guest_processes();
    assert!(guests.len() >= 3, "{guests:?}");
    let (pids, memory) = first_cgroup_dirs(&guests);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGKILL).unwrap();
    child.wait().unwrap();
    // The keeper notices vzpkg is gone and cleans up; the test watches from outside.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(run.guest_processes().is_empty() && !pids.exists() && !memory.exists()) {
        assert!(std::time::Instant::now() < deadline, "left behind: {:?}, {}", run.guest_processes(), pids.display());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), mounts_before, "a mount was left on the host");
}

#[test]
fn a_root_that_cannot_be_idmapped_is_refused_with_the_reason_and_the_option() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::new(tmp.path(), 5, "");
    let mnt = tmp.path().join("ramfs");
    std::fs::create_dir(&mnt).unwrap();
    // ramfs has no idmapped mounts. It is mounted in a mount namespace of the test's own, and
    // vzpkg runs in it.
    let root = mnt.join("ct");
    let vzpkg = |extra: &str| {
        format!(
            "{} --config {} --cache-dir {} --state-dir {} exec --proxy http://127.0.0.1:9 {extra} dir:{} -- sh -c 'cat /proc/self/uid_map'",
            env!("CARGO_BIN_EXE_vzpkg"),
            run.config.display(),
            tmp.path().join("cache").display(),
            tmp.path().join("state").display(),
            root.display()
        )
    };
    let script = format!(
        "set -e; mount -t ramfs none {mnt}; mkdir -p {root}/bin {root}/proc {root}/dev {root}/tmp {root}/var/lib/dpkg {root}/var/cache/apt/archives
         touch {root}/var/lib/dpkg/status; cp /bin/busybox {root}/bin/; ln -s busybox {root}/bin/sh; ln -s busybox {root}/bin/cat
         {refused} 2>&1 && exit 9 || echo REFUSED
         {privileged} 2>&1",
        mnt = mnt.display(),
        root = root.display(),
        refused = vzpkg(""),
        privileged = vzpkg("--privileged"),
    );
    let out =
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let refusal = text.lines().find(|l| l.contains("idmapped")).unwrap_or_else(|| panic!("{text}"));
    for words in ["it is on ramfs", "Invalid argument", "--privileged", "sandbox.privileged = true"] {
        assert!(refusal.contains(words), "{words:?} missing from: {refusal}");
    }
    assert!(text.contains("REFUSED"), "{text}");
    // With the option, the guest runs as the host's own root: the identity map.
    let map: Vec<&str> = text.lines().find(|l| l.trim_start().starts_with('0')).unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "0", "4294967295"], "{text}");
}

#[test]
fn the_guest_gets_pipes_not_the_operators_files() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::new(tmp.path(), 6, "");
    let root = Rootfs::busybox(&tmp.path().join("ct"));
    let log = tmp.path().join("operator.log");
    std::fs::write(&log, "operator log\n").unwrap();
    let append = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    // What the guest can learn of its stdout, then an attempt to empty it through /proc.
    let script = "readlink /proc/self/fd/1; (: > /proc/self/fd/1) 2>/dev/null || echo reopen-refused; echo after";
    let status = run.exec(&root, &[], &["sh", "-c", script]).stdout(append).status().unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("operator log\n"), "the guest truncated the operator's file:\n{text}");
    assert!(text.contains("pipe:[") && !text.contains(&log.display().to_string()), "{text}");
    assert!(text.contains("after"), "{text}");
}

#[test]
fn max_time_kills_the_whole_run() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::new(tmp.path(), 7, "");
    let root = Rootfs::busybox(&tmp.path().join("ct"));
    // A child in a session of its own, and the command itself, would each outlive the limit.
    let out =
        run.exec(&root, &["--max-time", "1"], &["sh", "-c", "setsid sleep 1000 & exec sleep 1000"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{err}");
    assert!(err.contains("took longer than --max-time and was killed"), "{err}");
    assert!(run.guest_processes().is_empty(), "{:?}", run.guest_processes());
}

/// Unmounts a test's bind mount however the test ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_root_on_a_shared_mount_gets_no_sandbox_mount_propagated_to_the_host() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::new(tmp.path(), 8, "");
    // The root on a mount in a shared peer group, as / is on a systemd host.
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    crate::util::run(Command::new("mount").arg("--bind").arg(&shared).arg(&shared));
    let _mounted = Mounted(shared.clone());
    crate::util::run(Command::new("mount").arg("--make-shared").arg(&shared));
    let root = Rootfs::busybox(&shared.join("ct"));
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();

    // Held open while the host's mount table is read: the sandbox has its /proc, /dev and view
    // mounted on the root by then.
    let mut child = run
        .exec(&root, &[], &["sh", "-c", "cat /proc/self/mountinfo; echo READY; read go"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut inside = String::new();
    while !inside.ends_with("READY\n") {
        assert_ne!(out.read_line(&mut inside).unwrap(), 0, "the run ended early: {inside}");
    }
    assert!(inside.contains(" /var/cache/apt/archives ") && inside.contains(" /proc "), "{inside}");
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        host_mounts,
        "a sandbox mount reached the host"
    );
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), host_mounts, "a mount was left on the host");
}
