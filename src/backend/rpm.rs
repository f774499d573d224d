//! The backend of rpm's front ends (dnf, yum, zypper), all they share: the installed set from
//! `rpm -qa` run inside (only rpm reads its database), rpm's lock, stale Berkeley DB environment
//! files removed when nothing holds the database, views built from each repository's cached
//! primary metadata, and the environment their commands get. What tells them apart is a
//! [`Frontend`].

use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use vzpkg_adapters::compress::{decompress, Compression};
use vzpkg_adapters::rpm::{dnf, primary, repomd};
use vzpkg_adapters::FileHash;

use super::view::{is_plain_file_name, ViewDir};
use super::{Backend, Installed, Operation, View};
use crate::container::locks::users_of;
use crate::container::Container;

/// One of rpm's front ends.
pub trait Frontend {
    fn name(&self) -> &'static str;
    /// The argv for an operation, the proxy set for every repository where it has an option.
    fn command(&self, op: &Operation, assume_yes: bool, proxy: &str, user_agent: &str) -> Vec<String>;
    /// The repositories cached in the root: each one's metadata directory (holding
    /// repomd.xml) and the directory where this front end looks for its cached packages.
    fn repositories(&self, ct: &Container) -> Result<Vec<(String, String)>>;
    /// Whether cached packages keep their path in the repository (`Packages/noarch/x.rpm`),
    /// or lie flat by file name.
    fn keeps_repository_layout(&self) -> bool;
}

/// An rpm container driven by the front end `F`.
pub struct Rpm<F>(pub F);

impl<F: Frontend> Backend for Rpm<F> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn installed(&self, _ct: &Container) -> Result<Option<Vec<Installed>>> {
        Ok(None)
    }

    fn query(&self) -> Vec<String> {
        dnf::query()
    }

    fn parse_query(&self, output: &[u8]) -> Vec<Installed> {
        dnf::parse_query(output)
    }

    fn locks(&self) -> &'static [&'static str] {
        dnf::LOCKS
    }

    fn clear_stale(&self, ct: &Container) -> Result<Option<String>> {
        clear_stale(ct)
    }

    fn repair(&self, _ct: &Container) -> Result<Option<(&'static str, Vec<String>)>> {
        Ok(None)
    }

    /// Per repository, the packages its cached metadata names whose exact content the shared
    /// cache holds verified, where the front end looks for them.
    fn views(&self, ct: &Container, cache_dir: &Path) -> Result<Vec<View>> {
        let verified = vzpkg_proxy::view::Verified::read(cache_dir).context("reading the cache index for the view")?;
        let mut views = Vec::new();
        if verified.is_empty() {
            return Ok(views);
        }
        let mut budget = MAX_METADATA_TOTAL;
        for (repodata, target) in self.0.repositories(ct)? {
            let Some(packages) = cached_packages(ct, &repodata, &mut budget) else { continue };
            let mut dir = ViewDir::create(cache_dir)?;
            for package in &packages {
                let Some(blob) = verified.blob(&package.sha256) else { continue };
                if self.0.keeps_repository_layout() {
                    dir.link_path(&package.path, &blob)?;
                } else {
                    dir.link(vzpkg_adapters::file_name(&package.path), &blob)?;
                }
            }
            views.push(View { dir, target });
        }
        Ok(views)
    }

    fn command(
        &self,
        _ct: &Container,
        op: &Operation,
        assume_yes: bool,
        proxy: &str,
        run_tag: &str,
    ) -> Result<Vec<String>> {
        Ok(self.0.command(op, assume_yes, proxy, run_tag))
    }

    fn env(&self, _assume_yes: bool, _interactive: bool, proxy: &str) -> Vec<(String, String)> {
        env(proxy)
    }
}

/// repomd.xml is a few KiB; a primary.xml of a full distribution is tens of MiB compressed.
const MAX_REPOMD: u64 = 1 << 20;
const MAX_PRIMARY: u64 = 128 << 20;
/// Bytes of metadata read for the views of one run in all.
const MAX_METADATA_TOTAL: u64 = 1 << 30;
/// Repository cache directories looked at for views.
pub const MAX_REPOS: usize = 256;

/// The packages a repository's cached metadata (`repodata`, relative to the root, holding
/// repomd.xml and the primary file it names) lists with their SHA256, within `budget` bytes
/// read. Missing or mangled metadata is `None`: it only narrows what the container sees.
fn cached_packages(ct: &Container, repodata: &str, budget: &mut u64) -> Option<Vec<FileHash>> {
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
fn clear_stale(ct: &Container) -> Result<Option<String>> {
    let mut removed = Vec::new();
    for db in dnf::RPMDB_DIRS {
        let stale = ct.names_in(db, 64, dnf::is_bdb_environment_file)?;
        if stale.is_empty() {
            continue;
        }
        let dir =
            ct.open_in(db, OFlag::O_RDONLY | OFlag::O_DIRECTORY).with_context(|| format!("opening {}", ct.show(db)))?;
        // The host removes them on the container root's behalf: only where that root could
        // itself, in a directory of its own — not in one of the host's that a running container
        // mounted there.
        let root_uid = ct.own_ids.map_or(0, |ids| ids.uid_base);
        let owner = nix::sys::stat::fstat(&dir)?.st_uid;
        if owner != root_uid {
            bail!(
                "{} belongs to uid {owner}, not to the container's root (uid {root_uid} on the host): stale Berkeley \
                 DB files ({}) are left as they are",
                ct.show(db),
                stale.join(", ")
            );
        }
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
fn env(proxy: &str) -> Vec<(String, String)> {
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
