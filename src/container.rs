//! Containers as vzpkg reaches them: resolving CT to a root directory opened once, and reading
//! files inside that root only through `openat2(RESOLVE_IN_ROOT)`, so that no symlink planted
//! by the container can send a read, a write or a mount onto a host path.

pub mod locks;
pub mod relay;
pub mod sandbox;
pub mod syscall;
pub mod terminal;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

pub struct Container {
    /// As the operator named it, for messages.
    pub name: String,
    pub root_path: PathBuf,
    /// `O_PATH` handle of the root, opened once; everything inside is resolved from it.
    pub root: OwnedFd,
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
        let fd = nix::fcntl::open(
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening container root {}", path.display()))?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let root = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Container { name: spec.to_string(), root_path: path, root })
    }

    /// Opens `rel` inside the root; symlinks resolve as they would for a process chrooted there.
    pub fn open_in(&self, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
        open_beneath(&self.root, rel, flags)
    }

    /// Opens a *regular* file inside the root. It is first opened as a bare path and checked:
    /// opening a device node or FIFO the container planted could have effects on the host.
    pub fn open_file_in(&self, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
        let path = self.open_in(rel, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
        let stat = nix::sys::stat::fstat(path.as_raw_fd())?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(nix::errno::Errno::EINVAL);
        }
        let reopened = format!("/proc/self/fd/{}", path.as_raw_fd());
        let fd = nix::fcntl::open(reopened.as_str(), flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY, Mode::empty())?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The content of a file inside the root, or `None` when it does not exist.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        match self.open_file_in(rel, OFlag::O_RDONLY) {
            Ok(fd) => {
                let mut bytes = Vec::new();
                std::fs::File::from(fd)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("reading {}", self.show(rel)))?;
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

    /// Names (relative to the root) of the regular files in directory `rel` ending in `suffix`.
    pub fn files_in(&self, rel: &str, suffix: &str) -> Result<Vec<String>> {
        let fd = match self.open_in(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("opening {}", self.show(rel))),
        };
        let listing = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let mut names = Vec::new();
        for entry in std::fs::read_dir(listing).with_context(|| format!("listing {}", self.show(rel)))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(suffix) {
                names.push(format!("{}/{name}", rel.trim_end_matches('/')));
            }
        }
        names.sort();
        Ok(names)
    }

    /// `rel` as the operator sees it: under the root's host path.
    pub fn show(&self, rel: &str) -> String {
        Path::new(&self.root_path).join(rel).display().to_string()
    }
}

/// Opens `rel` below the directory `root` with `openat2(RESOLVE_IN_ROOT)`: `..` and symlinks,
/// absolute ones included, never leave it.
pub fn open_beneath(root: &OwnedFd, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    // openat2 refuses flags that do not go with O_PATH, where open() would ignore them.
    let extra = if flags.contains(OFlag::O_PATH) { OFlag::O_CLOEXEC } else { OFlag::O_CLOEXEC | OFlag::O_NOCTTY };
    let how =
        OpenHow::new().flags(flags | extra).resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(root.as_raw_fd(), rel, how)?;
    // SAFETY: `openat2` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
