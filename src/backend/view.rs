//! A run's view of the shared cache on the host: a directory of hard links to verified blobs
//! under the package manager's names, on the cache's own filesystem (an overlay layer cannot be
//! assembled from scattered files). Names come from the guest's lists, so each is checked to be
//! one plain file name and linked relative to the directory's descriptor: nothing is ever
//! created outside it. Only root can reach it; it is mounted read-only inside the sandbox
//! alone and removed when the run ends (or, after a crash, by the next run).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

/// Names one blob may have in one view: the same content under several names is rare, and a
/// crafted list naming one blob thousands of times must not use up its link count (ext4 allows
/// 65000), which would make other containers' runs fail.
const MAX_NAMES_PER_BLOB: u32 = 4;
/// Links in one view: a full Debian release is about 65,000 packages.
const MAX_LINKS: usize = 200_000;
/// Directories deep a package may sit in a view (zypper keeps a repository's own layout:
/// `Packages/noarch/…`, `x86_64/…`).
const MAX_DEPTH: usize = 8;

pub struct ViewDir {
    path: PathBuf,
    fd: OwnedFd,
    names: std::collections::HashMap<PathBuf, u32>,
    links: usize,
}

impl ViewDir {
    /// A new empty view under `CACHE/views`, clearing views of runs whose process is gone.
    pub fn create(cache_dir: &Path) -> Result<ViewDir> {
        let views = cache_dir.join("views");
        std::fs::create_dir_all(&views).with_context(|| format!("creating {}", views.display()))?;
        std::fs::set_permissions(&views, std::fs::Permissions::from_mode(0o700))?;
        remove_stale_views(&views);
        // A run may make several views (one per repository), within one millisecond.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = views.join(format!("run-{}-{}-{made}", std::process::id(), crate::commands::now_millis()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        // Readable by the sandbox's unprivileged root when the view cannot be idmapped.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        let fd = nix::fcntl::open(
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", path.display()))?;
        Ok(ViewDir { path, fd, names: Default::default(), links: 0 })
    }

    /// Links `blob` into the view as `name`. A name that is not one safe file name, a blob that
    /// has its share of names already, a view that is full, and a link the filesystem refuses
    /// are all skipped: the view is a speed-up, and a container's lists only narrow it.
    pub fn link(&mut self, name: &str, blob: &Path) -> Result<()> {
        self.link_in(None, name, blob)
    }

    /// Links `blob` at the relative path `path` (`/`-separated plain names), making its
    /// directories inside the view; a path with any other component is skipped.
    pub fn link_path(&mut self, path: &str, blob: &Path) -> Result<()> {
        let parts: Vec<&str> = path.split('/').collect();
        let Some((name, dirs)) = parts.split_last() else { return Ok(()) };
        if dirs.len() > MAX_DEPTH || !dirs.iter().all(|d| is_plain_file_name(d)) {
            tracing::warn!(path = %crate::untrusted::printable(path, 300), "skipping a package with an unsafe path");
            return Ok(());
        }
        let mut dir: Option<OwnedFd> = None;
        for part in dirs {
            let at = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
            match nix::sys::stat::mkdirat(at, *part, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("making {part} in the view")),
            }
            // The view is vzpkg's alone (0700 above it): nothing can swap a directory here, and
            // NOFOLLOW says so once more.
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            dir = Some(nix::fcntl::openat(at, *part, flags, Mode::empty())?);
        }
        self.link_in(dir, name, blob)
    }

    fn link_in(&mut self, dir: Option<OwnedFd>, name: &str, blob: &Path) -> Result<()> {
        if !is_plain_file_name(name) {
            tracing::warn!(name = %crate::untrusted::printable(name, 300), "skipping a package list entry with an unsafe archive name");
            return Ok(());
        }
        let names = self.names.entry(blob.to_path_buf()).or_default();
        if *names >= MAX_NAMES_PER_BLOB || self.links >= MAX_LINKS {
            return Ok(());
        }
        *names += 1;
        self.links += 1;
        // A blob pruned meanwhile is simply not in the view.
        let Ok(blob_fd) = nix::fcntl::open(blob, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
        else {
            return Ok(());
        };
        // Blobs are host root's and read-only for everyone (older stores made them 0600).
        let stat = nix::sys::stat::fstat(&blob_fd)?;
        if stat.st_mode & 0o7777 != 0o444 {
            nix::sys::stat::fchmod(&blob_fd, Mode::from_bits_truncate(0o444))?;
        }
        let source = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&blob_fd));
        let link = nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            source.as_str(),
            dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd()),
            name,
            AtFlags::AT_SYMLINK_FOLLOW,
        );
        match link {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => tracing::warn!(blob = %blob.display(), error = %e, "not linked into the view"),
        }
        Ok(())
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl Drop for ViewDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One entry of a directory: no `/`, no leading `.` (so neither `.` nor `..`), no NUL or
/// control characters, and short enough for any filesystem.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.chars().any(|c| c.is_control())
}

/// Views left by runs whose process is gone.
fn remove_stale_views(views: &Path) {
    let Ok(entries) = std::fs::read_dir(views) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix("run-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_linked() {
        for bad in ["", ".", "..", ".hidden", "a/b", "/etc/passwd", "../../x", "a\nb", &"x".repeat(256)] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
        assert!(is_plain_file_name("apt_1%3a2.6.1_amd64.deb"));

        let cache = tempfile::tempdir().unwrap();
        let blob = cache.path().join("blob");
        std::fs::write(&blob, b"deb").unwrap();
        let mut view = ViewDir::create(cache.path()).unwrap();
        for name in ["../escaped.deb", "/tmp/abs.deb", "ok_1_all.deb"] {
            view.link(name, &blob).unwrap();
        }
        let listing: Vec<_> = std::fs::read_dir(&view.path).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(listing, ["ok_1_all.deb"]);
        // One blob under ever more names: a few, then no more.
        for i in 0..1000 {
            view.link(&format!("alias{i}_1_all.deb"), &blob).unwrap();
        }
        assert_eq!(std::fs::read_dir(&view.path).unwrap().count(), MAX_NAMES_PER_BLOB as usize);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&blob).unwrap().nlink(), 1 + MAX_NAMES_PER_BLOB as u64);
        assert!(!cache.path().join("views/escaped.deb").exists());
        assert_eq!(std::fs::metadata(&blob).unwrap().permissions().mode() & 0o7777, 0o444);
    }

    #[test]
    fn nested_paths_are_made_of_plain_names_only() {
        let cache = tempfile::tempdir().unwrap();
        let blob = cache.path().join("blob");
        std::fs::write(&blob, b"rpm").unwrap();
        let mut view = ViewDir::create(cache.path()).unwrap();
        let too_deep = format!("{}x.rpm", "d/".repeat(MAX_DEPTH + 1));
        for bad in ["../x.rpm", "Packages/../../x.rpm", "/abs/x.rpm", "Packages/.hidden/x.rpm", "a//x.rpm", &too_deep] {
            view.link_path(bad, &blob).unwrap();
        }
        assert_eq!(std::fs::read_dir(&view.path).unwrap().count(), 0, "an unsafe path made something");
        view.link_path("Packages/noarch/x-1-1.noarch.rpm", &blob).unwrap();
        assert!(view.path.join("Packages/noarch/x-1-1.noarch.rpm").is_file());
        assert!(!cache.path().join("x.rpm").exists() && !cache.path().join("views/x.rpm").exists());
    }
}
