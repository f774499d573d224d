//! The backend of rpm's front ends (dnf, yum, zypper), all they share: the installed set from
//! `rpm -qa` run inside (only rpm reads its database), rpm's lock, stale Berkeley DB environment
//! files removed when nothing holds the database, views built from each repository's cached
//! primary metadata, and the environment their commands get. What tells them apart is a
//! [`Frontend`].

use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use std::io::Read;

use vzpkg_adapters::compress::{self, Compression};
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
            let packages = cached_packages(ct, &repodata, &mut budget, |p| verified.contains(&p.sha256));
            if packages.is_empty() {
                continue;
            }
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
/// Bytes of metadata read for the views of one run in all, once decompressed: the primary
/// metadata of a few large distributions.
const MAX_METADATA_TOTAL: u64 = 1 << 30;
/// Repository cache directories looked at for views.
pub const MAX_REPOS: usize = 256;

/// The packages a repository's cached metadata (`repodata`, relative to the root, holding
/// repomd.xml and the primary file it names) lists with their SHA256 that `wanted` keeps,
/// within `budget` decompressed bytes read (a few KiB of compressed bomb cannot cost more).
/// Read as a stream; missing or mangled metadata gives what was read before the fault: it only
/// narrows what the container sees.
fn cached_packages(
    ct: &Container,
    repodata: &str,
    budget: &mut u64,
    wanted: impl Fn(&FileHash) -> bool,
) -> Vec<FileHash> {
    let mut found = Vec::new();
    let Ok(Some(index)) = ct.read(&format!("{repodata}/repomd.xml"), MAX_REPOMD) else { return found };
    let Ok(files) = repomd::parse(&index) else { return found };
    let Some(primary) = files.iter().find(|f| f.kind == "primary") else { return found };
    let name = vzpkg_adapters::file_name(&primary.file.path);
    if !is_plain_file_name(name) {
        return found;
    }
    let Ok(file) = ct.open_file_in(&format!("{repodata}/{name}"), OFlag::O_RDONLY) else { return found };
    let compressed = std::io::BufReader::new(std::fs::File::from(file).take(MAX_PRIMARY));
    let Ok(text) = compress::reader(Compression::of(name), compressed) else { return found };
    let mut limited = std::io::BufReader::new(text.take(*budget));
    let _ = primary::read(&mut limited, |package| {
        if wanted(&package) {
            found.push(package);
        }
        Ok::<(), vzpkg_adapters::ParseError>(())
    });
    *budget = limited.into_inner().limit();
    found
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
