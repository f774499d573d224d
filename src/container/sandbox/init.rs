//! Pid 1 of the sandbox. It is not dumpable (the guest can neither ptrace it nor open anything
//! under /proc/1) and closes every descriptor of the host before it waits for the keeper's trees.
//! It then becomes root of its user namespace, builds the root from descriptors only — a private
//! scratch tmpfs, the idmapped container root, /proc, /dev, the read-only views — pivots into it,
//! and runs each command in a child with a session of its own, few capabilities,
//! `no_new_privs` and the seccomp filter, reaping every orphan meanwhile.

use std::ffi::CString;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use caps::Capability;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::messages::{self, Message};
use super::{dev, procfs, Confinement, GuestStdio, GuestStreams, Spec, RELAY_PORT};
use crate::container::seccomp;
use crate::container::syscall::{assert_single_threaded, attr, Linux, Syscall};
use crate::container::Kind;

/// Capabilities a package manager and maintainer scripts need; every other one is dropped from
/// all sets, the bounding set included.
const KEEP: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_NET_BIND_SERVICE,
];

/// Signals the keeper ignores and a running container's sandbox shields itself from; a
/// command always starts with their default dispositions.
const GUEST_SIGNALS: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGPIPE,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

/// Runs pid 1 in the cloned child; never returns.
pub fn run(spec: &Spec, control: OwnedFd, stdio: GuestStdio) -> ! {
    let sys = Linux;
    let code = match start(&sys, spec, &control, &stdio) {
        Ok(()) => run_commands(&sys, spec, &control, &stdio),
        Err(e) => {
            let _ = messages::send(control.as_fd(), &Message::Failed(format!("{e:#}")), &[]);
            125
        }
    };
    // SAFETY: leaving the cloned child without running the parent's destructors.
    unsafe { libc::_exit(code) }
}

fn start(sys: &impl Syscall, spec: &Spec, control: &OwnedFd, stdio: &GuestStdio) -> Result<()> {
    sys.set_parent_death_signal()?;
    sys.set_dumpable(false)?;
    // In a running container this process is not its pid namespace's init, which the kernel
    // shields from its members' signals: the guest (root of the same user namespace) could end
    // its own run's reaper with a `kill -1`. It ignores what can be ignored; each command gets
    // the default dispositions back before it runs.
    let disposition = match spec.kind {
        Kind::StoppedRoot => nix::sys::signal::SigHandler::SigDfl,
        Kind::Running { .. } => nix::sys::signal::SigHandler::SigIgn,
    };
    for signal in GUEST_SIGNALS {
        // SAFETY: SIG_DFL and SIG_IGN install no handler code.
        unsafe { nix::sys::signal::signal(*signal, disposition) }?;
    }
    // The container root's handle, the view, the lock file, the keeper's sockets: all closed
    // before anything else happens here.
    let mut keep = vec![control.as_raw_fd()];
    keep.extend(stdio.raw_fds());
    sys.close_fds_except(&keep).context("closing the host's descriptors")?;

    let mut trees = match messages::receive(control.as_fd())? {
        Some((Message::Trees, trees)) if !trees.is_empty() => trees,
        Some((other, _)) => bail!("the keeper sent {other:?} instead of the container root"),
        None => bail!("the keeper ended before handing over the container root"),
    };
    if let Confinement::Unprivileged(_) = spec.confinement {
        sys.become_root().context("becoming root of the sandbox's user namespace")?;
        // Changing credentials resets both.
        sys.set_dumpable(false)?;
        sys.set_parent_death_signal()?;
    }
    // The keeper has put this process in the run's cgroup: that becomes the guest's "/".
    sys.unshare(CloneFlags::CLONE_NEWCGROUP).context("creating the cgroup namespace")?;
    // A copy of the host's mounts, of which nothing this process mounts propagates back.
    sys.make_mounts_private().context("making the mount namespace private")?;
    let proc = match spec.kind {
        Kind::StoppedRoot => {
            sys.sethostname("vzpkg-sandbox").context("setting the hostname")?;
            None
        }
        // Its hostname is the container's own; the container's init, not this process, is pid
        // 1 of the namespace, so orphans are made to come here to be reaped.
        Kind::Running { .. } => {
            sys.set_child_subreaper().context("becoming the run's reaper")?;
            (trees.len() > 1).then(|| trees.remove(1))
        }
    };
    sys.bring_loopback_up().context("bringing up the sandbox's loopback")?;
    let listener = TcpListener::bind(("127.0.0.1", RELAY_PORT)).context("binding the relay in the sandbox")?;
    messages::send(control.as_fd(), &Message::Relay, &[listener.as_fd()]).context("handing out the relay")?;
    drop(listener);

    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let targets: Vec<&str> = spec.views.iter().map(|v| v.target.as_str()).collect();
    let own_userns = matches!(spec.confinement, Confinement::Unprivileged(_));
    build_root(sys, trees, proc, &targets, own_userns, spec.layers.is_some())?;
    messages::send(control.as_fd(), &Message::Ready, &[])?;
    Ok(())
}

/// Attaches the trees (the container root — or, `layered`, the image and the container's own
/// layer, made an overlay here — then one per view target) under a private scratch tmpfs,
/// mounts /proc (`proc`, a running container's, or a new one), /dev and the views inside the
/// root, and pivots into it.
pub fn build_root(
    sys: &impl Syscall,
    trees: Vec<OwnedFd>,
    proc: Option<OwnedFd>,
    view_targets: &[&str],
    own_user_namespace: bool,
    layered: bool,
) -> Result<()> {
    if trees.len() != view_targets.len() + 1 + usize::from(layered) {
        bail!("the keeper sent {} trees for {} views", trees.len(), view_targets.len());
    }
    let host_root: OwnedFd =
        nix::fcntl::open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?;
    let dir = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let host_dev = sys.open_beneath(host_root.as_fd(), "dev", dir).context("opening the host's /dev")?;
    // A place of this mount namespace alone to attach things to; the host's /tmp only lends
    // its name, and disappears from view with the pivot.
    let tmp = sys.open_beneath(host_root.as_fd(), "tmp", dir | OFlag::O_NOFOLLOW).context("opening /tmp")?;
    let scratch = sys
        .new_filesystem("tmpfs", &[("mode", "0700")], attr::NOSUID | attr::NODEV)
        .context("creating the sandbox's scratch tmpfs")?;
    sys.attach(scratch.as_fd(), tmp.as_fd()).context("attaching the scratch tmpfs")?;

    let mut trees = trees.into_iter();
    let root = match layered {
        true => {
            let (lower, own) = (trees.next().expect("checked above"), trees.next().expect("checked above"));
            layered_root(sys, scratch.as_fd(), lower, own)?
        }
        false => trees.next().expect("checked above"),
    };
    sys.mkdir_at(scratch.as_fd(), "root", 0o755)?;
    let place = sys.open_beneath(scratch.as_fd(), "root", dir)?;
    sys.attach(root.as_fd(), place.as_fd()).context("attaching the container root")?;
    // From here `root` is the attached root: every path inside it is resolved from it.
    procfs::mount(sys, root.as_fd(), host_dev.as_fd(), proc, own_user_namespace)?;
    dev::build(sys, root.as_fd(), host_dev.as_fd())?;
    for (i, (view, target)) in trees.zip(view_targets).enumerate() {
        mount_view(sys, scratch.as_fd(), root.as_fd(), view, target, i)?;
    }
    sys.pivot_into(root.as_fd()).context("pivoting into the container root")?;
    Ok(())
}

/// A layered container's root: an overlay of the image (read-only, below) and the container's
/// own `upper`, with `work` beside it, both attached under the scratch tmpfs first. Made by
/// this process, root of the sandbox's user namespace, so that what the overlay itself creates
/// in the upper layer (copies, whiteouts) is the guest's through the layers' id mapping.
fn layered_root(sys: &impl Syscall, scratch: BorrowedFd, lower: OwnedFd, own: OwnedFd) -> Result<OwnedFd> {
    let dir = OFlag::O_PATH | OFlag::O_DIRECTORY;
    for name in ["image", "layer"] {
        sys.mkdir_at(scratch, name, 0o755)?;
    }
    let place = sys.open_beneath(scratch, "image", dir)?;
    sys.attach(lower.as_fd(), place.as_fd()).context("attaching the image layer")?;
    let place = sys.open_beneath(scratch, "layer", dir)?;
    sys.attach(own.as_fd(), place.as_fd()).context("attaching the container's layer")?;
    let upper = sys.open_beneath(own.as_fd(), "upper", dir | OFlag::O_NOFOLLOW).context("opening the upper layer")?;
    let work = sys
        .open_beneath(own.as_fd(), "work", dir | OFlag::O_NOFOLLOW)
        .context("opening the overlay's work directory")?;
    let path = |fd: BorrowedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
    let options = [
        ("lowerdir", path(lower.as_fd())),
        ("upperdir", path(upper.as_fd())),
        ("workdir", path(work.as_fd())),
        ("userxattr", String::new()),
    ];
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sys.new_filesystem("overlay", &options, attr::NODEV).context("mounting the layers as the container root")
}

/// The overlay on `target`: the read-only view below, a private directory of the scratch tmpfs
/// above, so apt can create `partial/` and its lock, and nothing written reaches the view.
fn mount_view(
    sys: &impl Syscall,
    scratch: BorrowedFd,
    root: BorrowedFd,
    view: OwnedFd,
    target: &str,
    i: usize,
) -> Result<()> {
    let dir = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let (lower, upper, work) = (format!("view{i}"), format!("upper{i}"), format!("work{i}"));
    for name in [&lower, &upper, &work] {
        sys.mkdir_at(scratch, name, 0o755)?;
    }
    let lower_place = sys.open_beneath(scratch, &lower, dir)?;
    sys.attach(view.as_fd(), lower_place.as_fd()).context("attaching the view")?;
    let upper = sys.open_beneath(scratch, &upper, dir)?;
    let work = sys.open_beneath(scratch, &work, dir)?;
    let place = make_dirs(sys, root, target).with_context(|| format!("making /{target} in the container"))?;
    let path = |fd: BorrowedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
    let options =
        [("lowerdir", path(view.as_fd())), ("upperdir", path(upper.as_fd())), ("workdir", path(work.as_fd()))];
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let overlay = sys
        .new_filesystem("overlay", &options, attr::NOSUID | attr::NODEV)
        .context("mounting the read-only view of the shared cache")?;
    sys.attach(overlay.as_fd(), place.as_fd()).with_context(|| format!("attaching the view on /{target}"))?;
    Ok(())
}

/// Opens directory `target` inside the root, making what is missing of it first (a package
/// manager's cache directory a fresh root has not made yet), as the guest's root would.
fn make_dirs(sys: &impl Syscall, root: BorrowedFd, target: &str) -> Result<OwnedFd> {
    let dir = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let mut path = String::new();
    let mut place = sys.open_beneath(root, ".", dir)?;
    for part in target.split('/').filter(|p| !p.is_empty()) {
        path = if path.is_empty() { part.to_string() } else { format!("{path}/{part}") };
        place = match sys.open_beneath(root, &path, dir) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                sys.mkdir_at(place.as_fd(), part, 0o755)?;
                sys.open_beneath(root, &path, dir)?
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(place)
}

/// Runs the commands in order, and after a failure only the queries; reports each query's
/// status to the host. The status of the first command that failed, or 0.
fn run_commands(sys: &impl Syscall, spec: &Spec, control: &OwnedFd, stdio: &GuestStdio) -> i32 {
    let prepared = (|| -> Result<_> {
        let mut keep = stdio.raw_fds();
        keep.push(control.as_raw_fd());
        sys.close_fds_except(&keep)?;
        let env = spec
            .env
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")).map_err(|_| anyhow!("NUL in {k}")))
            .collect::<Result<Vec<_>>>()?;
        Ok((seccomp::programs()?, env))
    })();
    let (programs, env) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "vzpkg: preparing the sandbox's commands: {e:#}");
            return 125;
        }
    };
    let mut failed = 0;
    let mut captures = stdio.captures.iter();
    for (i, command) in spec.commands.iter().enumerate() {
        let capture = if command.query { captures.next() } else { None };
        if failed != 0 && !command.query {
            continue;
        }
        let code = run_command(sys, stdio, capture, &programs, &command.argv, &env);
        if command.query {
            let index = spec.commands[..i].iter().filter(|c| c.query).count() as u32;
            let _ = messages::send(control.as_fd(), &Message::Queried { index, code }, &[]);
        }
        if code != 0 && failed == 0 {
            failed = code;
        }
    }
    failed
}

/// Runs one command in a child of pid 1 and waits for it; its exit status.
fn run_command(
    sys: &impl Syscall,
    stdio: &GuestStdio,
    capture: Option<&OwnedFd>,
    programs: &[seccompiler::BpfProgram],
    argv: &[String],
    env: &[CString],
) -> i32 {
    let Ok(shell) = shell_argv(argv) else {
        let _ = writeln!(std::io::stderr(), "vzpkg: NUL in an argument of {argv:?}");
        return 125;
    };
    assert_single_threaded();
    // SAFETY: pid 1 is single-threaded (checked); the child only sets itself up and execs.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let err = become_command(sys, stdio, capture, programs, &shell, env);
            let _ = writeln!(std::io::stderr(), "vzpkg: cannot run {:?} in the sandbox: {err}", argv.join(" "));
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => wait_reaping(child),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "vzpkg: fork in the sandbox: {e}");
            125
        }
    }
}

/// `sh -c 'exec "$@"' sh ARGV…`: the container's own shell finds the command on PATH.
fn shell_argv(argv: &[String]) -> Result<Vec<CString>> {
    ["sh", "-c", "exec \"$@\"", "sh"]
        .iter()
        .map(|s| s.to_string())
        .chain(argv.iter().cloned())
        .map(|a| CString::new(a).map_err(|_| anyhow!("NUL in an argument")))
        .collect()
}

/// In the command's child: a session of its own (no signal to the operator's process group, no
/// input pushed into the operator's terminal), only stdio (a query's output going to its capture
/// pipe), few capabilities, no new privileges, the seccomp filter last, then exec. Returns only
/// on failure.
fn become_command(
    sys: &impl Syscall,
    stdio: &GuestStdio,
    capture: Option<&OwnedFd>,
    programs: &[seccompiler::BpfProgram],
    shell: &[CString],
    env: &[CString],
) -> std::io::Error {
    let steps = || -> std::io::Result<()> {
        for signal in GUEST_SIGNALS {
            // SAFETY: SIG_DFL installs no handler code.
            unsafe { nix::sys::signal::signal(*signal, nix::sys::signal::SigHandler::SigDfl) }?;
        }
        sys.setsid()?;
        match &stdio.streams {
            GuestStreams::Terminal(pty) => sys.attach_terminal(pty.as_fd())?,
            GuestStreams::Pipes([stdin, stdout, stderr]) => {
                sys.redirect_stdio([stdin.as_fd(), stdout.as_fd(), stderr.as_fd()])?
            }
        }
        if let Some(capture) = capture {
            // SAFETY: 0 and 2 were just set up and stay open while borrowed.
            let (stdin, stderr) = unsafe { (BorrowedFd::borrow_raw(0), BorrowedFd::borrow_raw(2)) };
            sys.redirect_stdio([stdin, capture.as_fd(), stderr])?;
        }
        sys.close_fds_except(&[])?;
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        sys.limit_resources()?;
        sys.limit_capabilities(KEEP)?;
        sys.set_no_new_privs()?;
        for program in programs {
            sys.install_seccomp(program)?;
        }
        Ok(())
    };
    match steps() {
        Ok(()) => sys.exec(c"/bin/sh", shell, env),
        Err(e) => e,
    }
}

/// As pid 1, reaps every orphan while waiting for `child`.
fn wait_reaping(child: Pid) -> i32 {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return 128 + sig as i32,
            Err(nix::errno::Errno::EINTR) | Ok(_) => {}
            Err(_) => return 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::syscall::recording::Recorder;

    fn trees(n: usize) -> Vec<OwnedFd> {
        (0..n).map(|_| std::fs::File::open("/dev/null").unwrap().into()).collect()
    }

    #[test]
    fn the_root_is_built_before_the_pivot_and_only_from_descriptors() {
        let sys = Recorder::default();
        build_root(&sys, trees(2), None, &["var/cache/apt/archives"], true, false).unwrap();
        let calls = sys.calls();
        // The scratch tmpfs first, the root on it, then /proc and /dev inside, the view last.
        assert!(calls[0].starts_with("open_beneath dev"), "{calls:#?}");
        assert!(sys.position("new_filesystem tmpfs [(\"mode\", \"0700\")]") < sys.position("mkdir_at root"));
        assert!(sys.position("open_beneath proc") > sys.position("mkdir_at root"));
        assert!(sys.position("new_filesystem proc") < sys.position("new_filesystem tmpfs [(\"mode\", \"0755\")"));
        assert!(sys.position("new_filesystem overlay") > sys.position("new_filesystem devpts"));
        assert_eq!(calls.last().unwrap(), "pivot_into", "the pivot comes last: {calls:#?}");
        // Masked and read-only /proc paths, the /dev devices.
        for masked in ["open_beneath kcore", "open_beneath keys", "open_beneath sysrq-trigger", "open_beneath sys"] {
            sys.position(masked);
        }
        assert!(calls.iter().any(|c| c.starts_with("set_mount_attrs 0xf idmap=false")), "{calls:#?}");
        // The user namespace's own limits are lowered before /proc/sys becomes read-only.
        let read_only_sys = calls.iter().position(|c| c == "open_beneath sys").unwrap();
        assert!(sys.position("open_beneath sys/user/max_inotify_instances") < read_only_sys);

        let privileged = Recorder::default();
        build_root(&privileged, trees(1), None, &[], false, false).unwrap();
        assert!(!privileged.calls().iter().any(|c| c.contains("sys/user")), "the host's own limits were touched");
        assert_eq!(calls.iter().filter(|c| c.starts_with("create_at")).count(), 6);
        let overlay = &calls[sys.position("new_filesystem overlay")];
        assert!(overlay.contains("lowerdir") && overlay.contains("/proc/self/fd/"), "{overlay}");
    }

    #[test]
    fn a_tree_count_that_does_not_match_the_views_is_refused() {
        let sys = Recorder::default();
        assert!(build_root(&sys, trees(1), None, &["a"], true, false).is_err());
        assert!(sys.calls().is_empty(), "nothing was mounted");
    }

    #[test]
    fn a_failed_mount_stops_the_build_before_the_pivot() {
        let sys = Recorder { fail: Some("new_filesystem proc"), ..Default::default() };
        assert!(build_root(&sys, trees(1), None, &[], true, false).is_err());
        assert!(!sys.calls().iter().any(|c| c == "pivot_into"));
    }

    #[test]
    fn a_command_gets_its_own_session_no_descriptors_and_the_filter_last() {
        let sys = Recorder::default();
        let programs = seccomp::programs().unwrap();
        let shell = shell_argv(&["apt-get".into(), "update".into()]).unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let stdio = GuestStdio { streams: GuestStreams::Terminal(null.into()), captures: Vec::new() };
        let err = become_command(&sys, &stdio, None, &programs, &shell, &[]);
        assert_eq!(err.raw_os_error(), Some(libc::ENOEXEC), "the recorder's exec");
        let calls = sys.calls();
        let order = [
            "setsid",
            "attach_terminal",
            "close_fds_except []",
            "limit_capabilities",
            "no_new_privs",
            "seccomp",
            "exec",
        ];
        let positions: Vec<usize> = order.iter().map(|c| sys.position(c)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{calls:#?}");
        assert_eq!(calls.iter().filter(|c| c.starts_with("seccomp")).count(), programs.len());
        assert!(calls.last().unwrap().contains("\"apt-get\", \"update\""), "{calls:#?}");
    }

    #[test]
    fn a_failed_step_means_no_exec() {
        let sys = Recorder { fail: Some("no_new_privs"), ..Default::default() };
        let null = || std::fs::File::open("/dev/null").unwrap().into();
        let stdio = GuestStdio { streams: GuestStreams::Pipes([null(), null(), null()]), captures: Vec::new() };
        let err = become_command(&sys, &stdio, None, &[], &shell_argv(&["true".into()]).unwrap(), &[]);
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert!(!sys.calls().iter().any(|c| c.starts_with("exec")));
    }
}
