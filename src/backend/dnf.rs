//! dnf (dnf4, dnf5) and yum over rpm: detection by the program the root has, the installed set
//! from `rpm -qa` run inside (only rpm reads its database), rpm's lock, stale Berkeley DB
//! environment files removed when nothing holds the database, and one view per repository
//! cache directory, built from the container's own cached metadata.

use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use vzpkg_adapters::compress::{decompress, Compression};
use vzpkg_adapters::rpm::{dnf, primary, repomd};

use super::view::{is_plain_file_name, ViewDir};
use super::{Backend, Installed, Operation, View};
use crate::container::locks::users_of;
use crate::container::Container;

/// Programs by which a root is recognised, in order of preference.
const PROGRAMS: &[(&str, &str)] = &[("usr/bin/dnf", "dnf"), ("usr/bin/dnf5", "dnf5"), ("usr/bin/yum", "yum")];
/// Repository cache directories looked at for views.
const MAX_REPOS: usize = 256;
/// repomd.xml is a few KiB; a primary.xml of a full distribution is tens of MiB compressed.
const MAX_REPOMD: u64 = 1 << 20;
const MAX_PRIMARY: u64 = 128 << 20;
/// Bytes of metadata read for the views of one run in all.
const MAX_METADATA_TOTAL: u64 = 1 << 30;

pub struct Dnf {
    program: &'static str,
}

impl Dnf {
    /// The dnf-family backend for the program the root has, if any.
    pub fn detect(ct: &Container) -> Result<Option<Dnf>> {
        for (path, program) in PROGRAMS {
            if ct.exists(path)? {
                return Ok(Some(Dnf { program }));
            }
        }
        Ok(None)
    }

    /// The backend the operator named.
    pub fn named(ct: &Container, name: &str) -> Result<Dnf> {
        let Some((path, program)) = PROGRAMS.iter().find(|(_, p)| *p == name) else {
            bail!("{name} is not a dnf-family package manager");
        };
        if !ct.exists(path)? {
            bail!("--backend {name}: the container has no /{path}");
        }
        Ok(Dnf { program })
    }

    /// One repository's view: the packages its cached primary metadata names whose exact
    /// content the shared cache holds verified, under the names dnf looks for.
    fn repo_view(
        &self,
        ct: &Container,
        repo_dir: &str,
        verified: &vzpkg_proxy::view::Verified,
        cache_dir: &Path,
        budget: &mut u64,
    ) -> Result<Option<View>> {
        let repodata = format!("{}/{repo_dir}/repodata", dnf::CACHE);
        // Mangled or missing metadata only narrows what the container sees.
        let Ok(Some(index)) = ct.read(&format!("{repodata}/repomd.xml"), MAX_REPOMD) else { return Ok(None) };
        let Ok(files) = repomd::parse(&index) else { return Ok(None) };
        let Some(primary) = files.iter().find(|f| f.kind == "primary") else { return Ok(None) };
        let name = vzpkg_adapters::file_name(&primary.file.path);
        if !is_plain_file_name(name) {
            return Ok(None);
        }
        let Ok(Some(bytes)) = ct.read(&format!("{repodata}/{name}"), MAX_PRIMARY.min(*budget)) else { return Ok(None) };
        *budget = budget.saturating_sub(bytes.len() as u64);
        let Ok(text) = decompress(Compression::of(name), &bytes) else { return Ok(None) };
        let Ok(packages) = primary::parse(&text) else { return Ok(None) };
        let mut dir = ViewDir::create(cache_dir)?;
        for package in packages.iter().filter(|p| verified.contains(&p.sha256)) {
            if let Some(blob) = verified.blob(&package.sha256) {
                dir.link(vzpkg_adapters::file_name(&package.path), &blob)?;
            }
        }
        Ok(Some(View { dir, target: format!("{}/{repo_dir}/packages", dnf::CACHE) }))
    }
}

impl Backend for Dnf {
    fn name(&self) -> &'static str {
        self.program
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

    /// Berkeley DB environment files (`__db.*`) left by an rpm that crashed make every later
    /// rpm hang or fail; they are rebuilt on the next open, so they go — but only when no
    /// process has any file of the database open or mapped. An SQLite database's `-wal` and
    /// `-shm` are never touched: they hold committed transactions.
    fn clear_stale(&self, ct: &Container) -> Result<Option<String>> {
        let mut removed = Vec::new();
        for db in dnf::RPMDB_DIRS {
            let stale = ct.names_in(db, 64, dnf::is_bdb_environment_file)?;
            if stale.is_empty() {
                continue;
            }
            let dir = ct
                .open_in(db, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .with_context(|| format!("opening {}", ct.show(db)))?;
            // The host removes them on the container root's behalf: only where that root could
            // itself, in a directory of its own — not in one of the host's that a running
            // container mounted there.
            let root_uid = ct.own_ids.map_or(0, |ids| ids.uid_base);
            let owner = nix::sys::stat::fstat(&dir)?.st_uid;
            if owner != root_uid {
                bail!(
                    "{} belongs to uid {owner}, not to the container's root (uid {root_uid} on the host): stale \
                     Berkeley DB files ({}) are left as they are",
                    ct.show(db),
                    stale.join(", ")
                );
            }
            let all = ct.names_in(db, 4096, |_| true)?;
            let mut files = Vec::new();
            for name in &all {
                if let Ok(st) = nix::sys::stat::fstatat(&dir, name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                    files.push((st.st_dev, st.st_ino));
                }
            }
            if let Some((pid, comm)) = users_of(&files).into_iter().next() {
                bail!(
                    "the rpm database {} is open in pid {pid} ({comm}): stale Berkeley DB files ({}) are left as \
                     they are while it runs; wait for it to finish or stop it, then retry",
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

    fn repair(&self, _ct: &Container) -> Result<Option<(&'static str, Vec<String>)>> {
        Ok(None)
    }

    fn views(&self, ct: &Container, cache_dir: &Path) -> Result<Vec<View>> {
        let verified = vzpkg_proxy::view::Verified::read(cache_dir).context("reading the cache index for the view")?;
        let mut views = Vec::new();
        if verified.is_empty() {
            return Ok(views);
        }
        let mut budget = MAX_METADATA_TOTAL;
        for repo_dir in ct.names_in(dnf::CACHE, MAX_REPOS, dnf::is_repo_cache_dir)? {
            views.extend(self.repo_view(ct, &repo_dir, &verified, cache_dir, &mut budget)?);
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
        Ok(dnf::command(self.program, op, assume_yes, proxy, run_tag))
    }

    fn env(&self, _assume_yes: bool, _interactive: bool, proxy: &str) -> Vec<(String, String)> {
        [
            ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ("HOME", "/root"),
            ("LANG", "C.UTF-8"),
            ("http_proxy", proxy),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}
