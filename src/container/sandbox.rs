//! The sandbox a container's package manager runs in. The calling process forks before any
//! thread exists; the child enters new mount, pid, ipc, uts and network namespaces, mounts a
//! private /proc, a minimal /dev and the read-only view of the shared cache inside the root
//! (every target resolved with RESOLVE_IN_ROOT), pivots into the root, drops the capabilities
//! a package manager does not need, closes every inherited descriptor and runs the commands.
//! All of it lives in the child's namespaces and vanishes with it, also when vzpkg is killed.

use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use caps::{CapSet, Capability};
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::syscall::{Linux, Syscall};
use super::terminal;
use super::{open_beneath as open_in, Container};

/// Where the relay listens inside the sandbox, on the sandbox's own loopback.
pub const RELAY_PORT: u16 = 3142;

/// Capabilities a package manager and maintainer scripts need; every other one is dropped
/// from all sets, the bounding set included, so nothing inside can remount the view.
const KEEP: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_MKNOD,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_NET_BIND_SERVICE,
];

pub struct Spec<'a> {
    pub container: &'a Container,
    /// A host directory whose files appear, read-only, in the package manager's archive
    /// directory: the lower layer of an overlay whose upper layer is a private tmpfs.
    pub view: Option<&'a Path>,
    /// The archive directory, relative to the root.
    pub archives: &'a str,
    /// An empty host directory; a private tmpfs is mounted on it inside the sandbox only.
    pub scratch: &'a Path,
    /// Commands run in order inside the root; the first that fails ends the run.
    pub commands: Vec<Vec<String>>,
    pub env: Vec<(String, String)>,
    /// Where the relay on the sandbox's loopback leads.
    pub proxy: SocketAddr,
    /// Give the commands a pty of their own (vzpkg runs on a terminal).
    pub pty: bool,
}

/// Runs the spec's commands in a fresh sandbox; returns the exit status of the last command
/// that ran (128 + N for a signal).
pub fn run(spec: &Spec) -> Result<i32> {
    let (parent_end, child_end) = UnixStream::pair().context("creating the sandbox's control socket")?;
    let pty = if spec.pty { Some(terminal::open()?) } else { None };
    // SAFETY: no thread exists yet in this process (wrapper commands never start one before
    // this point), so the child may do anything the parent could.
    match unsafe { fork() }.context("forking the sandbox")? {
        ForkResult::Child => {
            drop(parent_end);
            let slave = pty.map(|p| p.slave);
            let code = match sandbox_keeper(spec, &child_end, slave.as_ref()) {
                Ok(code) => code,
                Err(e) => {
                    let _ = (&child_end).write_all(format!("ERR {e:#}").as_bytes());
                    125
                }
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            let _raw = pty.map(|p| {
                drop(p.slave);
                let raw = terminal::RawMode::enter();
                let _ = terminal::relay(p.master);
                raw
            });
            // Either the relay listener arrives first, or the start of an error message.
            let (listener, mut message) = receive_listener(&parent_end)?;
            if let Some(listener) = listener {
                super::relay::spawn(listener, spec.proxy);
            }
            let status = waitpid(child, None).context("waiting for the sandbox")?;
            let _ = (&parent_end).read_to_end(&mut message);
            let message = String::from_utf8_lossy(&message);
            if let Some(err) = message.strip_prefix("ERR ") {
                return Err(anyhow!("{err}")).context(format!("setting up the sandbox for {}", spec.container.name));
            }
            Ok(exit_code(status))
        }
    }
}

fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 1,
    }
}

/// The first child: enters the new namespaces, hands the relay listener to the host side, and
/// forks the process that becomes pid 1 of the new pid namespace.
fn sandbox_keeper(spec: &Spec, control: &UnixStream, pty: Option<&OwnedFd>) -> Result<i32> {
    die_with_parent()?;
    Linux
        .unshare(
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWNET,
        )
        .context("entering new namespaces (vzpkg must run as root)")?;
    loopback_up().context("bringing up the sandbox's loopback")?;
    let listener = TcpListener::bind(("127.0.0.1", RELAY_PORT)).context("binding the relay in the sandbox")?;
    send_fd(control, listener.as_raw_fd()).context("handing the relay listener out")?;
    drop(listener);
    // SAFETY: this process has no threads either.
    match unsafe { fork() }.context("forking pid 1 of the sandbox")? {
        ForkResult::Child => {
            let code = match inside(spec, pty) {
                Ok(code) => code,
                Err(e) => {
                    let _ = (&*control).write_all(format!("ERR {e:#}").as_bytes());
                    125
                }
            };
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(exit_code(waitpid(child, None)?)),
    }
}

/// Pid 1 of the sandbox: mounts, pivot, capabilities, then the commands.
fn inside(spec: &Spec, pty: Option<&OwnedFd>) -> Result<i32> {
    die_with_parent()?;
    let sys = Linux;
    sys.mount(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
        .context("making the mount namespace private")?;
    sys.sethostname("vzpkg-sandbox").context("setting the sandbox hostname")?;

    // The root becomes a mount point of its own, for pivot_root. Mounts of the namespace we
    // left cannot be bound, so the root is opened again here, and must be the same directory
    // as the handle taken at the start.
    let here = open_root(&spec.container.root_path)?;
    same_directory(&spec.container.root, &here)?;
    let here = fd_path(here.as_raw_fd());
    sys.mount(Some(&here), &here, None, MsFlags::MS_BIND | MsFlags::MS_REC, None).context("binding the root")?;
    // A handle that sees the new mount; every target below is resolved from it.
    let root = open_root(&spec.container.root_path)?;
    same_directory(&spec.container.root, &root)?;

    let proc = open_in(&root, "proc", OFlag::O_PATH | OFlag::O_DIRECTORY).context("the root has no /proc")?;
    let no_exec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    sys.mount(Some(Path::new("proc")), &fd_path(proc.as_raw_fd()), Some("proc"), no_exec, None)
        .context("mounting /proc")?;
    minimal_dev(&sys, &root)?;

    if let Some(view) = spec.view {
        let archives = open_in(&root, spec.archives, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .with_context(|| format!("the container has no /{}", spec.archives))?;
        let private = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        sys.mount(Some(Path::new("tmpfs")), spec.scratch, Some("tmpfs"), private, Some("mode=0700"))
            .context("mounting the scratch tmpfs")?;
        for dir in ["upper", "work"] {
            std::fs::create_dir(spec.scratch.join(dir))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            view.display(),
            spec.scratch.join("upper").display(),
            spec.scratch.join("work").display()
        );
        sys.mount(Some(Path::new("overlay")), &fd_path(archives.as_raw_fd()), Some("overlay"), private, Some(&options))
            .context("mounting the read-only view of the shared cache")?;
    }

    nix::unistd::fchdir(root.as_raw_fd()).context("entering the root")?;
    sys.pivot_root(Path::new("."), Path::new(".")).context("pivot_root")?;
    sys.umount_detach(Path::new(".")).context("detaching the host's root")?;
    nix::unistd::chdir("/")?;
    drop(root);

    drop_capabilities()?;
    let mut last = 0;
    for argv in &spec.commands {
        last = run_command(argv, &spec.env, pty)?;
        if last != 0 {
            break;
        }
    }
    Ok(last)
}

/// A minimal /dev: a tmpfs with the harmless character devices bound from the host's.
fn minimal_dev(sys: &Linux, root: &OwnedFd) -> Result<()> {
    let dev = open_in(root, "dev", OFlag::O_PATH | OFlag::O_DIRECTORY).context("the root has no /dev")?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &fd_path(dev.as_raw_fd()),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1m"),
    )
    .context("mounting /dev")?;
    let dev = open_in(root, "dev", OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let node = nix::fcntl::openat(
            Some(dev.as_raw_fd()),
            name,
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o666),
        )?;
        // SAFETY: `openat` just returned it.
        let node = unsafe { OwnedFd::from_raw_fd(node) };
        let host = PathBuf::from("/dev").join(name);
        sys.mount(Some(&host), &fd_path(node.as_raw_fd()), None, MsFlags::MS_BIND, None)
            .with_context(|| format!("binding /dev/{name}"))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        nix::unistd::symlinkat(target, Some(dev.as_raw_fd()), link)?;
    }
    nix::sys::stat::mkdirat(Some(dev.as_raw_fd()), "shm", Mode::from_bits_truncate(0o1777))?;
    Ok(())
}

fn drop_capabilities() -> Result<()> {
    let keep: caps::CapsHashSet = KEEP.iter().copied().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        let now = caps::read(None, set)?;
        caps::set(None, set, &now.intersection(&keep).copied().collect())
            .with_context(|| format!("limiting {set:?}"))?;
    }
    Ok(())
}

/// Closes every descriptor but stdin, stdout and stderr: nothing of the host leaks in.
fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; nothing below uses them afterwards.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// Runs one command (through the container's /bin/sh, which finds it on PATH) and reaps it.
fn run_command(argv: &[String], env: &[(String, String)], pty: Option<&OwnedFd>) -> Result<i32> {
    let shell: Vec<CString> = ["sh", "-c", "exec \"$@\"", "sh"]
        .iter()
        .map(|s| CString::new(*s).expect("no NUL"))
        .chain(
            argv.iter()
                .map(|a| CString::new(a.as_str()).map_err(|_| anyhow!("NUL in argument {a:?}")))
                .collect::<Result<Vec<_>>>()?,
        )
        .collect();
    let env: Vec<CString> = env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")).map_err(|_| anyhow!("NUL in {k}")))
        .collect::<Result<_>>()?;
    // SAFETY: single-threaded; the child only execs.
    match unsafe { fork() }? {
        ForkResult::Child => {
            if let Some(slave) = pty {
                if terminal::attach(slave).is_err() {
                    // SAFETY: leaving the forked child.
                    unsafe { libc::_exit(126) }
                }
            }
            close_inherited_fds();
            let _ = nix::unistd::execve(c"/bin/sh", &shell, &env);
            let _ = std::io::stderr().write_all(b"vzpkg: the container has no /bin/sh\n");
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => wait_reaping(child),
    }
}

/// As pid 1, reaps every orphan while waiting for `child`.
fn wait_reaping(child: Pid) -> Result<i32> {
    loop {
        match waitpid(None, None)? {
            WaitStatus::Exited(pid, code) if pid == child => return Ok(code),
            WaitStatus::Signaled(pid, sig, _) if pid == child => return Ok(128 + sig as i32),
            _ => {}
        }
    }
}

fn die_with_parent() -> Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("PR_SET_PDEATHSIG")
}

fn fd_path(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

fn open_root(path: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("reopening {}", path.display()))?;
    // SAFETY: `open` just returned it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Refuses to go on if the root path now leads somewhere else than when it was first opened.
fn same_directory(first: &OwnedFd, now: &OwnedFd) -> Result<()> {
    let (a, b) = (nix::sys::stat::fstat(first.as_raw_fd())?, nix::sys::stat::fstat(now.as_raw_fd())?);
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
        return Err(anyhow!("the container root was replaced while vzpkg was setting up; nothing was run"));
    }
    Ok(())
}

/// `ip link set lo up`, by ioctl.
fn loopback_up() -> Result<()> {
    let sock =
        socket::socket(socket::AddressFamily::Inet, socket::SockType::Datagram, socket::SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: ifreq is plain data; the name fits with its NUL; the ioctls read and write only it.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

fn send_fd(control: &UnixStream, fd: RawFd) -> Result<()> {
    let fds = [fd];
    socket::sendmsg::<()>(
        control.as_raw_fd(),
        &[IoSlice::new(b"L")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// The relay listener handed out by the sandbox; without one, the bytes read instead (the start
/// of the sandbox's error message).
fn receive_listener(control: &UnixStream) -> Result<(Option<TcpListener>, Vec<u8>)> {
    let mut bytes = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut bytes)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = socket::recvmsg::<()>(control.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut listener = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                listener = Some(unsafe { TcpListener::from_raw_fd(fd) });
            }
        }
    }
    let read = msg.bytes;
    // With the listener came its one-byte message; anything after it is already error text.
    let skip = usize::from(listener.is_some()).min(read);
    let leftover = bytes[skip..read].to_vec();
    Ok((listener, leftover))
}
