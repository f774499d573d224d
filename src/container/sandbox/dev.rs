//! The sandbox's /dev: a new tmpfs attached on the root's /dev, then filled through the
//! descriptor of that fresh mount (no guest path is resolved twice), with the harmless
//! character devices bound from the host's, a devpts instance of its own, and the usual links.
//! It is nodev itself, so a device node created there is inert.

use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;

use crate::container::syscall::{attr, Syscall};

const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
const LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// Builds /dev inside `root`; `host_dev` is the host's /dev, whose devices are bound in.
pub fn build(sys: &impl Syscall, root: BorrowedFd, host_dev: BorrowedFd) -> Result<()> {
    let target = sys
        .open_beneath(root, "dev", OFlag::O_PATH | OFlag::O_DIRECTORY)
        .context("the container root has no /dev directory")?;
    let dev = sys
        .new_filesystem("tmpfs", &[("mode", "0755"), ("size", "1m")], attr::NOSUID | attr::NODEV | attr::NOEXEC)
        .context("creating /dev")?;
    sys.attach(dev.as_fd(), target.as_fd()).context("attaching /dev")?;
    for name in DEVICES {
        let node = sys.create_at(dev.as_fd(), name, 0o666).with_context(|| format!("creating /dev/{name}"))?;
        let host = sys.clone_tree(host_dev, name).with_context(|| format!("cloning the host's /dev/{name}"))?;
        // Read-only bind: the device still reads and writes, but its inode — the host's own —
        // cannot be chmod'ed or chown'ed (a privileged guest holds CAP_FOWNER).
        sys.set_mount_attrs(host.as_fd(), attr::RDONLY | attr::NOSUID | attr::NOEXEC, None)?;
        sys.attach(host.as_fd(), node.as_fd()).with_context(|| format!("binding /dev/{name}"))?;
    }
    for (name, target) in LINKS {
        sys.symlink_at(target, dev.as_fd(), name)?;
    }
    sys.mkdir_at(dev.as_fd(), "shm", 0o1777)?;
    sys.mkdir_at(dev.as_fd(), "pts", 0o755)?;
    let pts_dir = sys.open_beneath(dev.as_fd(), "pts", OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    // `max`: the kernel's pty budget for containers is shared by all of them.
    let options = [("newinstance", ""), ("ptmxmode", "0666"), ("mode", "0620"), ("gid", "5"), ("max", "64")];
    let pts = sys.new_filesystem("devpts", &options, attr::NOSUID | attr::NOEXEC).context("mounting /dev/pts")?;
    sys.attach(pts.as_fd(), pts_dir.as_fd()).context("attaching /dev/pts")?;
    Ok(())
}
