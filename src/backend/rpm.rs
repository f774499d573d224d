//! What dnf, yum and zypper share, being rpm's front ends: the installed set from `rpm -qa` run
//! inside (only rpm reads its database), rpm's lock, stale Berkeley DB environment files
//! removed when nothing holds the database, reading a repository's cached primary metadata for
//! the views, and the environment their commands get.

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use vzpkg_adapters::compress::{decompress, Compression};
use vzpkg_adapters::rpm::{dnf, primary, repomd};
use vzpkg_adapters::FileHash;

use super::view::is_plain_file_name;
use crate::container::locks::users_of;
use crate::container::Container;

/// repomd.xml is a few KiB; a primary.xml of a full distribution is tens of MiB compressed.
const MAX_REPOMD: u64 = 1 << 20;
const MAX_PRIMARY: u64 = 128 << 20;
/// Bytes of metadata read for the views of one run in all.
pub const MAX_METADATA_TOTAL: u64 = 1 << 30;
/// Repository cache directories looked at for views.
pub const MAX_REPOS: usize = 256;

/// The packages a repository's cached metadata (`repodata`, relative to the root, holding
/// repomd.xml and the primary file it names) lists with their SHA256, within `budget` bytes
/// read. Missing or mangled metadata is `None`: it only narrows what the container sees.
pub fn cached_packages(ct: &Container, repodata: &str, budget: &mut u64) -> Option<Vec<FileHash>> {
    let index = ct.read(&format!("{repodata}/repomd.xml"), MAX_REPOMD).ok()??;
    let files = repomd::parse(&index).ok()?;
    let primary = files.iter().find(|f| f.kind == "primary")?;
    let name = vzpkg_adapters::file_name(&primary.file.path);
    if !is_plain_file_name(name) {
        return None;
    }
    let bytes = ct.read(&format!("{repodata}/{name}"), MAX_PRIMARY.min(*budget)).ok()??;
    *budget = budget.saturating_sub(bytes.len() as u64);
    let text = decompress(Compression::of(name), &bytes).ok()?;
    primary::parse(&text).ok()
}

/// Berkeley DB environment files (`__db.*`) left by an rpm that crashed make every later rpm
/// hang or fail; they are rebuilt on the next open, so they go — but only when no process has
/// any file of the database open or mapped. An SQLite database's `-wal` and `-shm` are never
/// touched: they hold committed transactions.
pub fn clear_stale(ct: &Container) -> Result<Option<String>> {
    let mut removed = Vec::new();
    for db in dnf::RPMDB_DIRS {
        let stale = ct.names_in(db, 64, dnf::is_bdb_environment_file)?;
        if stale.is_empty() {
            continue;
        }
        let dir =
            ct.open_in(db, OFlag::O_RDONLY | OFlag::O_DIRECTORY).with_context(|| format!("opening {}", ct.show(db)))?;
        let mut files = Vec::new();
        for name in ct.names_in(db, 4096, |_| true)? {
            if let Ok(st) = nix::sys::stat::fstatat(&dir, name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                files.push((st.st_dev, st.st_ino));
            }
        }
        if let Some((pid, comm)) = users_of(&files).into_iter().next() {
            bail!(
                "the rpm database {} is open in pid {pid} ({comm}): stale Berkeley DB files ({}) are left as they \
                 are while it runs; wait for it to finish or stop it, then retry",
                ct.show(db),
                stale.join(", ")
            );
        }
        for name in stale {
            match nix::unistd::unlinkat(&dir, name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => removed.push(format!("/{db}/{name}")),
                Err(e) => return Err(e).with_context(|| format!("removing {}", ct.show(&format!("{db}/{name}")))),
            }
        }
    }
    Ok((!removed.is_empty())
        .then(|| format!("removed stale Berkeley DB environment files no process held: {}", removed.join(", "))))
}

/// The environment of an rpm front end's commands.
pub fn env(proxy: &str) -> Vec<(String, String)> {
    [
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("HOME", "/root"),
        ("LANG", "C.UTF-8"),
        ("http_proxy", proxy),
        ("https_proxy", proxy),
        ("no_proxy", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
