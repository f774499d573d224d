//! Layered containers: a read-only lower layer — an image unpacked once and shared by every
//! container of that image, never writable by any of them — under an upper layer of the
//! container's own (`<state_dir>/containers/<CT>/upper`, with overlayfs's `work` beside it).
//! The overlay exists only where it is used: in the sandbox (built there from idmapped layers,
//! see `sandbox::init`), read-only and detached for vzpkg's own host-side reads, and read-only
//! for `vzpkg flatten`, which folds the layers into a plain root. `userxattr` everywhere, so
//! the opaque directories the sandbox's overlay marks are read the same way by the others.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use super::syscall::{attr, Linux, Syscall};

/// Where a layered container's layers are (in its record, written by `vzpkg create`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Layers {
    /// The shared, read-only image tree.
    pub lower: PathBuf,
    /// The container's own directory, holding `upper/` and `work/`.
    pub dir: PathBuf,
}

/// A layered container's layers, opened once (`O_PATH`).
pub struct LayerFds {
    pub lower: OwnedFd,
    pub dir: OwnedFd,
}

impl Layers {
    pub fn open(&self) -> Result<LayerFds> {
        let open = |path: &Path| -> Result<OwnedFd> {
            nix::fcntl::open(
                path,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("opening layer {}", path.display()))
        };
        Ok(LayerFds { lower: open(&self.lower)?, dir: open(&self.dir)? })
    }

    /// The merged tree, read-only and attached nowhere: what vzpkg reads of the container.
    pub fn merged_read_only(&self) -> Result<OwnedFd> {
        let upper = self.dir.join("upper");
        let (upper, lower) = (path_str(&upper)?, path_str(&self.lower)?);
        Linux
            .new_filesystem(
                "overlay",
                &[("lowerdir+", upper), ("lowerdir+", lower), ("userxattr", "")],
                attr::RDONLY | attr::NODEV,
            )
            .with_context(|| format!("mounting the layers of {} read-only", self.dir.display()))
    }
}

fn path_str(path: &Path) -> Result<&str> {
    match path.to_str() {
        Some(s) if s.starts_with('/') && !s.contains(['\n', '\0']) => Ok(s),
        _ => bail!("{}: a layer must be an absolute path in UTF-8", path.display()),
    }
}

/// The shared lower tree of an image tarball: unpacked once (under `images_dir`, named by the
/// tarball's sha256), into a temporary directory renamed into place when complete.
pub fn shared_lower(tarball: &Path, sha256: &str, images_dir: &Path) -> Result<PathBuf> {
    let lower = images_dir.join(format!("lower-{}", &sha256[..sha256.len().min(32)]));
    // The image's setuid binaries and devices are reachable by root alone.
    if let Some(images) = images_dir.parent() {
        std::fs::set_permissions(images, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    if lower.is_dir() {
        return Ok(lower);
    }
    let tmp = tempfile::Builder::new().prefix(".lower-").tempdir_in(images_dir)?;
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree)?;
    crate::image::unpack(tarball, sha256, &tree)?;
    std::fs::set_permissions(&tree, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    match std::fs::rename(&tree, &lower) {
        Ok(()) => Ok(lower),
        // Another create unpacked it meanwhile.
        Err(_) if lower.is_dir() => Ok(lower),
        Err(e) => Err(e).with_context(|| format!("moving the unpacked image to {}", lower.display())),
    }
}

/// A new layered container's directory: empty `upper/` and `work/` (root's, like a root's
/// top directory) over `lower`.
pub fn create(lower: &Path, dir: &Path) -> Result<Layers> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    for sub in ["upper", "work"] {
        let path = dir.join(sub);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    Ok(Layers { lower: lower.to_path_buf(), dir: dir.to_path_buf() })
}

/// Folds the layers into a plain root at `to` (which must not exist): the merged view of a
/// read-only overlay — whiteouts and opaque directories applied by the kernel — copied by tar
/// with owners, modes, xattrs, file capabilities, hard links and device nodes, into a
/// temporary directory beside `to`, renamed into place when complete.
pub fn flatten(layers: &Layers, to: &Path) -> Result<()> {
    if to.exists() {
        bail!("{} exists: flatten writes a new root", to.display());
    }
    let parent = to.parent().context("the new root has no parent directory")?;
    std::fs::create_dir_all(parent)?;
    let merged = layers.merged_read_only()?;
    let tmp = tempfile::Builder::new().prefix(".flatten-").tempdir_in(parent)?;
    let tree = tmp.path().join("root");
    std::fs::create_dir(&tree)?;
    // tar reads the merged tree through a descriptor it inherits: the overlay is attached
    // nowhere, so no other process can reach it, and nothing the guest wrote names a host path.
    let inherited = nix::unistd::dup(merged.as_fd())?;
    let fd = inherited.as_raw_fd();
    let mut reader = Command::new("tar");
    reader
        .args(["--create", "--file=-", "--sparse", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "-C"])
        .arg(format!("/proc/self/fd/{fd}"))
        .arg(".")
        .stdout(Stdio::piped());
    // SAFETY: only clears FD_CLOEXEC on a descriptor this process owns, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut reader, move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut reader = reader.spawn().context("running tar to read the layers")?;
    drop(inherited);
    let stream = reader.stdout.take().expect("piped");
    let writer = Command::new("tar")
        .args(["--extract", "--file=-", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "--same-owner"])
        .args(["--same-permissions", "-C"])
        .arg(&tree)
        .stdin(stream)
        .status()
        .context("running tar to write the flat root")?;
    let read = reader.wait()?;
    if !read.success() || !writer.success() {
        bail!("copying the layers of {} failed (reading: {read}, writing: {writer})", layers.dir.display());
    }
    std::fs::rename(&tree, to).with_context(|| format!("moving the flat root to {}", to.display()))?;
    Ok(())
}
