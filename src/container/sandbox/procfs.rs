//! The sandbox's /proc: a fresh proc filesystem of its own pid namespace, with runc's masked
//! paths covered (kernel memory, keys, timers, the kernel log…) and the paths that reach global
//! kernel state (/proc/sys, irq, bus, fs, sysrq-trigger) read-only. Built by descriptors only.

use std::os::fd::{AsFd, BorrowedFd};

use std::io::Write;

use anyhow::{Context, Result};
use nix::fcntl::OFlag;

use crate::container::syscall::{attr, Syscall};

/// Files hidden behind the host's /dev/null.
const MASKED_FILES: &[&str] =
    &["kcore", "keys", "kmsg", "latency_stats", "timer_list", "timer_stats", "sched_debug", "interrupts"];
/// Directories hidden behind an empty read-only tmpfs.
const MASKED_DIRS: &[&str] = &["acpi", "asound", "scsi"];
/// Made read-only: writing there changes the host's kernel, not the container's.
const READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Per-user kernel budgets of the sandbox's user namespace, set low: what the guest uses is
/// also charged to the namespace's owner on the host, so without them one guest could use up
/// host root's inotify instances and watches.
const USER_NAMESPACE_LIMITS: &[(&str, &str)] =
    &[("sys/user/max_inotify_instances", "32"), ("sys/user/max_inotify_watches", "16384")];

/// Mounts /proc inside `root` — `made`, a detached proc of the pid namespace joined, or a new
/// one of the sandbox's own; `host_dev` is the host's /dev, for its null device. With
/// `own_user_namespace` the namespace's per-user limits are lowered before /proc/sys is made
/// read-only (in the host's user namespace they are the host's own, and left alone).
pub fn mount(
    sys: &impl Syscall,
    root: BorrowedFd,
    host_dev: BorrowedFd,
    made: Option<std::os::fd::OwnedFd>,
    own_user_namespace: bool,
) -> Result<()> {
    let target = sys
        .open_beneath(root, "proc", OFlag::O_PATH | OFlag::O_DIRECTORY)
        .context("the container root has no /proc directory")?;
    let proc = match made {
        Some(proc) => proc,
        None => sys.new_filesystem("proc", &[], attr::NOSUID | attr::NODEV | attr::NOEXEC).context("mounting proc")?,
    };
    sys.attach(proc.as_fd(), target.as_fd()).context("attaching /proc")?;
    // From here `proc` is the attached /proc: every path below is resolved from it.
    for name in MASKED_FILES {
        let Some(file) = existing(sys, proc.as_fd(), name)? else { continue };
        let null = sys.clone_tree(host_dev, "null").context("cloning /dev/null")?;
        sys.set_mount_attrs(null.as_fd(), attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC, None)?;
        sys.attach(null.as_fd(), file.as_fd()).with_context(|| format!("masking /proc/{name}"))?;
    }
    for name in MASKED_DIRS {
        let Some(dir) = existing(sys, proc.as_fd(), name)? else { continue };
        let empty = sys.new_filesystem(
            "tmpfs",
            &[("size", "0"), ("mode", "0555")],
            attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC,
        )?;
        sys.attach(empty.as_fd(), dir.as_fd()).with_context(|| format!("masking /proc/{name}"))?;
    }
    if own_user_namespace {
        for (name, value) in USER_NAMESPACE_LIMITS {
            match sys.open_beneath(proc.as_fd(), name, OFlag::O_WRONLY) {
                Ok(file) => std::fs::File::from(file)
                    .write_all(value.as_bytes())
                    .with_context(|| format!("setting /proc/{name}"))?,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e).with_context(|| format!("opening /proc/{name}")),
            }
        }
    }
    for name in READ_ONLY {
        let Some(place) = existing(sys, proc.as_fd(), name)? else { continue };
        let tree = sys.clone_tree(proc.as_fd(), name)?;
        sys.set_mount_attrs(tree.as_fd(), attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC, None)
            .with_context(|| format!("making /proc/{name} read-only"))?;
        sys.attach(tree.as_fd(), place.as_fd()).with_context(|| format!("making /proc/{name} read-only"))?;
    }
    Ok(())
}

fn existing(sys: &impl Syscall, proc: BorrowedFd, name: &str) -> Result<Option<std::os::fd::OwnedFd>> {
    match sys.open_beneath(proc, name, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("opening /proc/{name}")),
    }
}
