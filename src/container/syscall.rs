//! The one seam between the sandbox and the kernel: every namespace and mount operation goes
//! through this trait (youki's model), with one real implementation. Keeping it narrow keeps
//! the dangerous part reviewable in one screen.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

pub trait Syscall {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    fn umount_detach(&self, target: &Path) -> nix::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
}

/// The real kernel.
pub struct Linux;

impl Syscall for Linux {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount_detach(&self, target: &Path) -> nix::Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }
}
