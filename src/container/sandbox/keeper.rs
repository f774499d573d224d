//! The keeper: a child of vzpkg that stays in the host's namespaces, as root, for the whole run.
//! It clones pid 1 into the new namespaces, writes its id maps, moves it into the run's cgroup
//! and hands it the container root as a detached idmapped mount (only host root can make one).
//! Then it forwards pid 1's messages to the host side and waits; when pid 1 ends, when the time
//! limit passes, or when vzpkg itself dies (its socket closes), it kills the run's cgroup,
//! removes it, and reports how the run ended.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use super::messages::{self, Message};
use super::{init, Confinement, GuestStdio, Spec};
use crate::container::cgroup::RunCgroup;
use crate::container::idmap::COUNT;
use crate::container::syscall::{attr, Cloned, Linux, Syscall};
use crate::container::Kind;

/// Runs the keeper in the forked child; never returns.
pub fn run(spec: &Spec, cgroup: &RunCgroup, host: OwnedFd, stdio: GuestStdio) -> ! {
    let code = match keep(&Linux, spec, cgroup, &host, stdio) {
        Ok(code) => code,
        Err(e) => {
            let _ = messages::send(host.as_fd(), &Message::Failed(format!("{e:#}")), &[]);
            125
        }
    };
    // SAFETY: leaving the forked child without running the parent's destructors.
    unsafe { libc::_exit(code) }
}

fn keep(sys: &impl Syscall, spec: &Spec, cgroup: &RunCgroup, host: &OwnedFd, stdio: GuestStdio) -> Result<i32> {
    sys.set_dumpable(false)?;
    // A Ctrl-C or a `kill` of the whole process group must not stop the keeper before it has
    // cleaned up: it ends the run when vzpkg itself is gone.
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGPIPE] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn) }?;
    }
    let (to_init, init_end) = messages::pair()?;
    // Mount and network namespaces are always the sandbox's own: the view is seen by no one
    // else, and the only way out is the relay.
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET;
    if let Confinement::Unprivileged(_) = spec.confinement {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let joined = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    let taken = match (spec.kind, spec.init) {
        (Kind::StoppedRoot, _) => {
            flags |= joined;
            None
        }
        (Kind::Running { pid }, Some(init)) => {
            // The keeper's own children are born in the container's pid namespace.
            sys.join_namespaces(init.as_fd(), joined)
                .with_context(|| format!("joining the namespaces of {} (pid {pid})", spec.name))?;
            let trees = container_trees(sys, init.as_fd(), spec.root.as_fd())
                .with_context(|| format!("taking the root and a /proc of {} (pid {pid})", spec.name))?;
            if !crate::container::running::alive(init.as_fd()) {
                bail!("the init of {} (pid {pid}) exited: the container stopped", spec.name);
            }
            Some(trees)
        }
        (Kind::Running { .. }, None) => bail!("no handle on the init of {}", spec.name),
    };
    let (pid, pidfd) = match sys.clone_into_namespaces(flags).context("creating the sandbox's namespaces")? {
        Cloned::Child => init::run(spec, init_end, stdio),
        Cloned::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop((init_end, stdio));
    if let Err(e) = hand_over(sys, spec, cgroup, pid, taken, &to_init) {
        let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
        let _ = rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        );
        return Err(e);
    }
    let (status, timed_out) = watch(spec, host, &to_init, &pidfd)?;
    let oom = cgroup.oom_killed();
    cgroup.kill_and_remove();
    let code = match status {
        Some(s) => s.exit_status().or(s.terminating_signal().map(|s| 128 + s)).unwrap_or(1),
        None => 1,
    };
    let _ = messages::send(host.as_fd(), &Message::Exited { code, oom, timed_out }, &[]);
    Ok(code)
}

/// A running container's root with the mounts below it, and a proc filesystem of its pid
/// namespace, both detached, made by a child born in that pid namespace (only a member's proc
/// shows it) that joins the container's mount namespace (only a member can clone its mounts).
/// The child never returns to vzpkg's code; the keeper stays in the host's mount namespace.
fn container_trees(sys: &impl Syscall, init: BorrowedFd, root: BorrowedFd) -> Result<(OwnedFd, OwnedFd)> {
    let (here, there) = messages::pair()?;
    // SAFETY: the keeper is single-threaded (it was forked so); the child only mounts and sends.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let made = (|| -> std::io::Result<(OwnedFd, OwnedFd)> {
                sys.join_namespaces(init, CloneFlags::CLONE_NEWNS)?;
                let tree = sys.clone_tree_recursive(root)?;
                let proc = sys.new_filesystem("proc", &[], attr::NOSUID | attr::NODEV | attr::NOEXEC)?;
                Ok((tree, proc))
            })();
            let sent = match &made {
                Ok((tree, proc)) => messages::send(there.as_fd(), &Message::Trees, &[tree.as_fd(), proc.as_fd()]),
                Err(e) => messages::send(there.as_fd(), &Message::Failed(e.to_string()), &[]),
            };
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(i32::from(sent.is_err())) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(there);
            let answer = messages::receive(here.as_fd());
            let _ = nix::sys::wait::waitpid(child, None);
            match answer? {
                Some((Message::Trees, mut fds)) if fds.len() == 2 => {
                    let proc = fds.remove(1);
                    Ok((fds.remove(0), proc))
                }
                Some((Message::Failed(text), _)) => bail!("{text}"),
                _ => bail!("the child cloning the container's mounts ended without an answer"),
            }
        }
    }
}

/// Maps, cgroup, and the detached trees pid 1 builds the root from: the root, a running
/// container's /proc, then the views.
fn hand_over(
    sys: &impl Syscall,
    spec: &Spec,
    cgroup: &RunCgroup,
    pid: i32,
    taken: Option<(OwnedFd, OwnedFd)>,
    to_init: &OwnedFd,
) -> Result<()> {
    let userns = match spec.confinement {
        Confinement::Unprivileged(range) => {
            sys.write_id_maps(pid, range.uid_base, range.gid_base, COUNT).context("writing the sandbox's id maps")?;
            Some(open_userns(pid)?)
        }
        Confinement::Privileged => None,
    };
    cgroup.add(pid)?;

    let userns_fd = userns.as_ref().map(|u| u.as_fd());
    let root_userns = userns_fd.filter(|_| spec.idmap_root);
    let mut trees = match (spec.layers, taken) {
        // A layered container: pid 1 builds the root as an overlay of these two, the image
        // read-only and the container's own directory (upper and work) writable.
        (Some(layers), None) => {
            let lower = sys.clone_tree(layers.lower.as_fd(), "").context("cloning the image layer")?;
            let read_only = attr::RDONLY | attr::NODEV;
            if let Err(e) = sys.set_mount_attrs(lower.as_fd(), read_only | idmap_bit(root_userns), root_userns) {
                return Err(cannot_idmap(spec, e));
            }
            let own = sys.clone_tree(layers.dir.as_fd(), "").context("cloning the container's layer")?;
            if let Err(e) = sys.set_mount_attrs(own.as_fd(), attr::NODEV | idmap_bit(root_userns), root_userns) {
                return Err(cannot_idmap(spec, e));
            }
            vec![lower, own]
        }
        (Some(_), Some(_)) => {
            bail!("{} is layered and running: vzpkg reaches only stopped layered containers", spec.name)
        }
        (None, taken) => {
            let (root, proc) = match taken {
                Some((root, proc)) => {
                    // The container's own mounts come along, and a device node on any of them would
                    // open here: the run is outside the container's device cgroup.
                    sys.set_tree_attrs(root.as_fd(), attr::NODEV).context("making the container's mounts nodev")?;
                    (root, Some(proc))
                }
                None => (sys.clone_tree(spec.root.as_fd(), "").context("cloning the container root's mount")?, None),
            };
            if let Err(e) = sys.set_mount_attrs(root.as_fd(), attr::NODEV | idmap_bit(root_userns), root_userns) {
                return Err(cannot_idmap(spec, e));
            }
            let mut trees = vec![root];
            trees.extend(proc);
            trees
        }
    };
    for view in &spec.views {
        let tree = sys.clone_tree(view.source.as_fd(), "").context("cloning the view of the shared cache")?;
        let read_only = attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC;
        // The view shows root's files as root's where the cache's filesystem can idmap; where
        // it cannot, they show as nobody's, still readable and still read-only.
        if sys.set_mount_attrs(tree.as_fd(), read_only | idmap_bit(userns_fd), userns_fd).is_err() {
            sys.set_mount_attrs(tree.as_fd(), read_only, None).context("making the view read-only")?;
        }
        trees.push(tree);
    }
    let fds: Vec<BorrowedFd> = trees.iter().map(|t| t.as_fd()).collect();
    messages::send(to_init.as_fd(), &Message::Trees, &fds).context("handing the root to the sandbox")?;
    Ok(())
}

fn idmap_bit(userns: Option<BorrowedFd>) -> u64 {
    if userns.is_some() {
        attr::IDMAP
    } else {
        0
    }
}

fn open_userns(pid: i32) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/user");
    Ok(std::fs::File::open(&path).with_context(|| format!("opening {path}"))?.into())
}

/// The operator's error when the container root cannot be idmapped: why, where, and the way out.
fn cannot_idmap(spec: &Spec, e: std::io::Error) -> anyhow::Error {
    let fs = nix::sys::statfs::fstatfs(spec.root).map(|s| filesystem_name(s.filesystem_type().0));
    let fs = fs.unwrap_or_else(|_| "an unknown filesystem".into());
    anyhow!(
        "cannot attach the root of {} through an idmapped mount: it is on {fs}, and the kernel answered {e} \
         (idmapped mounts need Linux 5.12 or newer and a filesystem that supports them: ext4, xfs, btrfs, \
         tmpfs on 6.3+…). Without one the guest would run as the host's real root. Move the container to such \
         a filesystem, or accept that risk for this root with --privileged (or sandbox.privileged = true in the \
         config); seccomp, the masked /proc and the run's cgroup still apply",
        spec.name
    )
}

fn filesystem_name(magic: i64) -> String {
    let name = match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0x2FC1_2FC1 => "zfs",
        0x6573_5546 => "fuse",
        0xF2F5_2010 => "f2fs",
        0x4d44 => "vfat",
        _ => return format!("a filesystem of type {magic:#x}"),
    };
    name.to_string()
}

/// Forwards pid 1's messages to the host side until pid 1 exits; kills the run when the host
/// side goes away or the time limit passes. Returns pid 1's status and whether time ran out.
fn watch(
    spec: &Spec,
    host: &OwnedFd,
    to_init: &OwnedFd,
    pidfd: &OwnedFd,
) -> Result<(Option<rustix::process::WaitIdStatus>, bool)> {
    use rustix::process::{pidfd_send_signal, waitid, Signal, WaitId, WaitIdOptions};
    let deadline = spec.max_time.map(|t| Instant::now() + t);
    let mut init_open = true;
    let mut host_open = true;
    let mut killed = false;
    let mut timed_out = false;
    loop {
        let timeout = match deadline {
            Some(d) if !killed => {
                let left = d.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
            _ => PollTimeout::NONE,
        };
        // Slots: pid 1's pidfd, then the host's socket and pid 1's socket while they are open.
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let host_slot = host_open.then(|| {
            fds.push(PollFd::new(host.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let init_slot = init_open.then(|| {
            fds.push(PollFd::new(to_init.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(0) => {
                timed_out = true;
                killed = true;
                let _ = pidfd_send_signal(pidfd, Signal::KILL);
                continue;
            }
            Ok(_) => {}
        }
        let ready =
            |slot: Option<usize>| slot.and_then(|i| fds.get(i)).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
        let (init_done, host_gone, from_init) = (ready(Some(0)), ready(host_slot), ready(init_slot));
        if !host_gone.is_empty() {
            // vzpkg died or closed its end (it never writes to the keeper): nothing may outlive it.
            host_open = false;
            killed = true;
            let _ = pidfd_send_signal(pidfd, Signal::KILL);
        }
        if !from_init.is_empty() {
            match messages::receive(to_init.as_fd()) {
                Ok(Some((message, fds))) => {
                    let borrowed: Vec<BorrowedFd> = fds.iter().map(|f| f.as_fd()).collect();
                    let _ = messages::send(host.as_fd(), &message, &borrowed);
                }
                _ => init_open = false,
            }
            continue;
        }
        if !init_done.is_empty() {
            let status = waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED)?;
            return Ok((status, timed_out));
        }
    }
}
