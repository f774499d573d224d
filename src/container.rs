//! Containers as vzpkg reaches them, and everything that touches namespaces: resolving CT to a
//! container of some kind with its root directory opened once, reading files inside that root
//! only through `openat2(RESOLVE_IN_ROOT)` and only up to a bound (no symlink the container
//! planted can send a read, a write or a mount onto a host path, and no file it grew can
//! exhaust the host), and the sandbox the package manager runs in.

pub mod cgroup;
pub mod discover;
pub mod idmap;
pub mod layered;
pub mod locks;
pub mod relay;
pub mod running;
pub mod sandbox;
pub mod seccomp;
pub mod syscall;
pub mod terminal;

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::config::FileConfig;
use syscall::{Linux, Syscall};

/// How vzpkg reaches a container.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A root directory no container runs from right now (`dir:`, `openvz:` when stopped): the
    /// sandbox makes new namespaces of its own around it.
    StoppedRoot,
    /// A running container, by the host pid of its init: the sandbox joins its pid, ipc and
    /// uts namespaces and its cgroup, and keeps a mount and network namespace of its own.
    Running { pid: i32 },
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
    /// A running container's init, held by a pidfd: an init that exits, and a pid reused
    /// meanwhile, are detected, never followed.
    pub init: Option<OwnedFd>,
    /// A running container's own id mapping, when it has a user namespace of its own: its files
    /// carry ids shifted on disk, and the guest runs with the same mapping.
    pub own_ids: Option<idmap::IdRange>,
    /// A layered container's layers (its `root` is then their merged tree, read-only): the
    /// sandbox builds the writable overlay from these.
    pub layers: Option<(layered::Layers, layered::LayerFds)>,
}

impl Container {
    /// `dir:/path/to/rootfs`, `pid:N`, `lxc:NAME`, `nspawn:NAME`, `openvz:CTID`, or a name from
    /// the config's `[containers]` table (whose value may be any of these, or a path).
    /// A stopped LXC or systemd-nspawn container is reached through its root directory (LXC's
    /// from its config, with its id range when it is unprivileged).
    pub fn resolve(spec: &str, file: &FileConfig) -> Result<Container> {
        let named = &file.containers;
        let mut container = match named.get(spec) {
            Some(target) if !spec.contains(':') => {
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    Self::stopped(spec, PathBuf::from(&*target))?
                } else {
                    Self::resolve_kind(&target, file)?
                }
            }
            _ => Self::resolve_kind(spec, file)?,
        };
        container.name = spec.to_string();
        Ok(container)
    }

    fn resolve_kind(spec: &str, file: &FileConfig) -> Result<Container> {
        let places = &file.discovery;
        let Some((kind, what)) = spec.split_once(':') else {
            bail!(
                "unknown container {spec:?}: use dir:/path/to/rootfs, pid:N, lxc:NAME, nspawn:NAME or openvz:CTID, \
                 or name it under [containers] in the config"
            )
        };
        match kind {
            "dir" => Self::stopped(spec, PathBuf::from(what)),
            "pid" => {
                let pid = what.parse::<i32>().ok().filter(|p| *p > 1);
                let pid = pid.with_context(|| format!("container {spec:?}: {what:?} is not a process id above 1"))?;
                Self::running(spec, pid)
            }
            "lxc" | "nspawn" => match running::leader(kind, what, &places.lxc_path)? {
                Some(pid) => Self::running(spec, pid),
                None if kind == "lxc" => {
                    let config = running::lxc_config(&places.lxc_path, what)?;
                    let mut container = Self::stopped(spec, config.rootfs)?;
                    container.own_ids = config.ids;
                    Ok(container)
                }
                None => {
                    let root = places.machines_dir.join(what);
                    if places.machines_dir.as_os_str().is_empty() || !root.is_dir() {
                        bail!(
                            "{spec}: machinectl gives no running machine {what:?} and there is no {}",
                            root.display()
                        );
                    }
                    Self::stopped(spec, root)
                }
            },
            "openvz" => Self::stopped(spec, running::openvz_root(what, &places.openvz_private)?),
            "layered" => {
                let record = crate::commands::create::Record::read(&file.state_dir, what)?;
                let layers = record.layers.with_context(|| format!("{spec}: container {what} is not layered"))?;
                Self::layered(spec, layers)
            }
            _ => bail!("container {spec:?}: unknown kind {kind:?}: use dir:, pid:, lxc:, nspawn:, openvz: or layered:"),
        }
    }

    /// A running container by its init's host pid: its root as that process sees it.
    fn running(spec: &str, pid: i32) -> Result<Container> {
        let init = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid).context("pid 0")?,
            rustix::process::PidfdFlags::empty(),
        )
        .with_context(|| format!("container {spec:?}: no process {pid}"))?;
        let proc_dir = format!("/proc/{pid}");
        let root = nix::fcntl::open(
            format!("{proc_dir}/root").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening the root of {spec} ({proc_dir}/root)"))?;
        let own_ids = running::own_ids(pid).with_context(|| format!("reading the id mapping of {spec}"))?;
        // Everything above was read from /proc/PID: it belongs to the process the pidfd holds
        // only if that process is still alive now.
        if !running::alive(init.as_fd()) {
            bail!("container {spec:?}: its init (pid {pid}) exited while vzpkg opened it");
        }
        let stat = nix::sys::stat::fstat(&root)?;
        Ok(Container {
            name: spec.to_string(),
            kind: Kind::Running { pid },
            root_path: PathBuf::from(format!("{proc_dir}/root")),
            root,
            identity: (stat.st_dev, stat.st_ino),
            init: Some(init),
            own_ids,
            layers: None,
        })
    }

    fn stopped(spec: &str, path: PathBuf) -> Result<Container> {
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
        Ok(Container {
            name: spec.to_string(),
            kind: Kind::StoppedRoot,
            root_path: path,
            root,
            identity,
            init: None,
            own_ids: None,
            layers: None,
        })
    }

    /// A layered container (made by `vzpkg create --layered`): read through its merged tree.
    fn layered(spec: &str, layers: layered::Layers) -> Result<Container> {
        let fds = layers.open()?;
        let root = layers.merged_read_only()?;
        let stat = nix::sys::stat::fstat(&fds.dir)?;
        Ok(Container {
            name: spec.to_string(),
            kind: Kind::StoppedRoot,
            root_path: layers.dir.clone(),
            root,
            identity: (stat.st_dev, stat.st_ino),
            init: None,
            own_ids: None,
            layers: Some((layers, fds)),
        })
    }

    /// Reads what a run changed: a layered container's merged tree is mounted anew (an overlay
    /// does not see changes made to its layers under it).
    pub fn reopen(&mut self) -> Result<()> {
        if let Some((layers, _)) = &self.layers {
            self.root = layers.merged_read_only()?;
        }
        Ok(())
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
