//! Containers as vzpkg reaches them, and everything that touches namespaces: resolving CT to a
//! container of some kind with its root directory opened once, reading files inside that root
//! only through `openat2(RESOLVE_IN_ROOT)` and only up to a bound (no symlink the container
//! planted can send a read, a write or a mount onto a host path, and no file it grew can
//! exhaust the host), and the sandbox the package manager runs in.

pub mod cgroup;
pub mod idmap;
pub mod locks;
pub mod relay;
pub mod sandbox;
pub mod seccomp;
pub mod syscall;
pub mod terminal;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use syscall::{Linux, Syscall};

/// How vzpkg reaches a container.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A root directory no container runs from right now (`dir:`, a config name): the sandbox
    /// makes new namespaces of its own around it.
    StoppedRoot,
}

pub struct Container {
    /// As the operator named it, for messages.
    pub name: String,
    pub kind: Kind,
    pub root_path: PathBuf,
    /// `O_PATH` handle of the root, opened once; everything inside is resolved from it.
    pub root: OwnedFd,
    /// Device and inode of the root: the container's identity, whatever path spelled it.
    pub identity: (u64, u64),
}

impl Container {
    /// `dir:/path/to/rootfs`, or a name from the config's `[containers]` table.
    pub fn resolve(spec: &str, named: &BTreeMap<String, PathBuf>) -> Result<Container> {
        let path = if let Some(dir) = spec.strip_prefix("dir:") {
            PathBuf::from(dir)
        } else if let Some((kind, _)) = spec.split_once(':') {
            bail!("container {spec:?}: the {kind}: form is not supported yet; use dir:/path/to/rootfs")
        } else if let Some(path) = named.get(spec) {
            path.clone()
        } else {
            bail!("unknown container {spec:?}: use dir:/path/to/rootfs, or name it under [containers] in the config")
        };
        if !path.is_absolute() {
            bail!("container {spec:?}: {} is not an absolute path", path.display());
        }
        let root = nix::fcntl::open(
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening container root {}", path.display()))?;
        let stat = nix::sys::stat::fstat(&root)?;
        let identity = (stat.st_dev, stat.st_ino);
        Ok(Container { name: spec.to_string(), kind: Kind::StoppedRoot, root_path: path, root, identity })
    }

    /// Opens `rel` inside the root; symlinks resolve as they would for a process chrooted there.
    pub fn open_in(&self, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
        Linux
            .open_beneath(self.root.as_fd(), rel, flags)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    /// Opens a *regular* file inside the root. It is first opened as a bare path and checked:
    /// opening a device node or FIFO the container planted could have effects on the host.
    pub fn open_file_in(&self, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
        let path = self.open_in(rel, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
        let stat = nix::sys::stat::fstat(&path)?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(nix::errno::Errno::EINVAL);
        }
        let reopened = format!("/proc/self/fd/{}", path.as_raw_fd());
        nix::fcntl::open(reopened.as_str(), flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY, Mode::empty())
    }

    /// The content of a file inside the root, or `None` when it does not exist. A file larger
    /// than `max` bytes is an error that names it: the container's files are its own to grow.
    pub fn read(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
        match self.open_file_in(rel, OFlag::O_RDONLY) {
            Ok(fd) => {
                let mut bytes = Vec::new();
                std::fs::File::from(fd)
                    .take(max + 1)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("reading {}", self.show(rel)))?;
                if bytes.len() as u64 > max {
                    bail!("{} is larger than {} MiB: refusing to read it", self.show(rel), max >> 20);
                }
                Ok(Some(bytes))
            }
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("opening {}", self.show(rel))),
        }
    }

    /// Whether a directory inside the root has any entry.
    pub fn dir_has_entries(&self, rel: &str) -> Result<bool> {
        match self.open_in(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            Ok(fd) => {
                let listing = format!("/proc/self/fd/{}", fd.as_raw_fd());
                let mut entries = std::fs::read_dir(listing).with_context(|| format!("listing {}", self.show(rel)))?;
                Ok(entries.next().is_some())
            }
            Err(nix::errno::Errno::ENOENT) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("opening {}", self.show(rel))),
        }
    }

    /// Whether `rel` exists inside the root (as anything; symlinks resolved in the root).
    pub fn exists(&self, rel: &str) -> Result<bool> {
        match self.open_in(rel, OFlag::O_PATH) {
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("looking for {}", self.show(rel))),
        }
    }

    /// Names (relative to the root) of the entries of directory `rel` ending in `suffix`, at
    /// most `max` of them.
    pub fn files_in(&self, rel: &str, suffix: &str, max: usize) -> Result<Vec<String>> {
        let names = self.names_in(rel, max, |name| name.ends_with(suffix))?;
        Ok(names.into_iter().map(|name| format!("{}/{name}", rel.trim_end_matches('/'))).collect())
    }

    /// The names of the entries of directory `rel` that `keep` accepts, sorted, at most `max`
    /// of them; none when it does not exist.
    pub fn names_in(&self, rel: &str, max: usize, keep: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let fd = match self.open_in(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("opening {}", self.show(rel))),
        };
        let listing = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let mut names = Vec::new();
        for entry in std::fs::read_dir(listing).with_context(|| format!("listing {}", self.show(rel)))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if keep(&name) && !name.contains('/') {
                names.push(name);
                if names.len() >= max {
                    break;
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// `rel` as the operator sees it: under the root's host path.
    pub fn show(&self, rel: &str) -> String {
        crate::untrusted::printable(&Path::new(&self.root_path).join(rel).display().to_string(), 4096)
    }
}
