//! apt and dpkg: detection by dpkg's status file, the installed set from it, dpkg's and apt's
//! fcntl locks, `dpkg --configure -a` after an interrupted run, and the archive directory's view
//! built from the container's own package lists.

use std::path::Path;

use anyhow::{Context, Result};
use vzpkg_adapters::apt::{dpkg, packages};

use super::view::ViewDir;
use super::{Backend, Installed, Operation, View};
use crate::container::Container;

/// dpkg's status file: a few MiB on a full system.
const MAX_STATUS: u64 = 64 << 20;
/// One package list: a full Debian main list is under 100 MiB uncompressed.
const MAX_LIST: u64 = 256 << 20;
/// Package lists read for the view.
const MAX_LISTS: usize = 1000;
/// Bytes of package lists read for one view in all: the lists of a few Debian releases with
/// their updates, security and backports. Past it the view is narrower, the run as correct.
const MAX_LISTS_TOTAL: u64 = 1 << 30;

/// A sources file: a few KiB.
const MAX_SOURCES: u64 = 1 << 20;

pub struct Apt;

/// Sources files read, and bytes of them in all: a real system has a handful of a few KiB.
const MAX_SOURCES_FILES: usize = 200;
const MAX_SOURCES_TOTAL: u64 = 8 << 20;
/// Distinct hosts kept: each becomes one option on apt's command line.
const MAX_HOSTS: usize = 256;

/// The hosts the root's apt sources name (one-line and deb822 files), within budgets: the files
/// are the container's, and may be crafted to cost the host time and memory.
fn source_hosts(ct: &Container) -> Result<Vec<String>> {
    let mut files = vec!["etc/apt/sources.list".to_string()];
    for suffix in [".list", ".sources"] {
        files.extend(ct.files_in("etc/apt/sources.list.d", suffix, MAX_SOURCES_FILES)?);
    }
    let mut hosts = std::collections::BTreeSet::new();
    let mut budget = MAX_SOURCES_TOTAL;
    for file in files {
        let Ok(Some(text)) = ct.read(&file, MAX_SOURCES.min(budget)) else { continue };
        budget = budget.saturating_sub(text.len() as u64);
        for host in vzpkg_adapters::apt::source_hosts(&String::from_utf8_lossy(&text)) {
            if hosts.len() >= MAX_HOSTS {
                break;
            }
            hosts.insert(host);
        }
    }
    Ok(hosts.into_iter().collect())
}

impl Apt {
    pub fn detect(ct: &Container) -> Result<bool> {
        match ct.open_in(dpkg::STATUS, nix::fcntl::OFlag::O_PATH) {
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::ENOENT) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("looking for {}", ct.show(dpkg::STATUS))),
        }
    }
}

impl Backend for Apt {
    fn name(&self) -> &'static str {
        "apt"
    }

    fn installed(&self, ct: &Container) -> Result<Option<Vec<Installed>>> {
        Ok(Some(dpkg::installed(&ct.read(dpkg::STATUS, MAX_STATUS)?.unwrap_or_default())))
    }

    fn locks(&self) -> &'static [&'static str] {
        dpkg::LOCKS
    }

    fn repair(&self, ct: &Container) -> Result<Option<(&'static str, Vec<String>)>> {
        Ok(ct.dir_has_entries(dpkg::UPDATES_DIR)?.then(|| ("dpkg was interrupted", dpkg::configure_pending())))
    }

    /// The archives this container's own package lists name whose exact content (by sha256)
    /// the shared cache holds verified. Two repositories that build the same name_version_arch
    /// differently never mix: each container sees only its own.
    fn views(&self, ct: &Container, cache_dir: &Path) -> Result<Vec<View>> {
        let mut dir = ViewDir::create(cache_dir)?;
        let verified = vzpkg_proxy::view::Verified::read(cache_dir).context("reading the cache index for the view")?;
        if !verified.is_empty() {
            let mut budget = MAX_LISTS_TOTAL;
            for list in ct.files_in(dpkg::LISTS, "_Packages", MAX_LISTS)? {
                // A list too large, or mangled, only narrows what the container sees.
                let Ok(Some(text)) = ct.read(&list, MAX_LIST.min(budget)) else { continue };
                budget = budget.saturating_sub(text.len() as u64);
                let Ok(debs) = packages::parse_matching(&text, |sha| verified.contains(sha)) else { continue };
                for deb in debs {
                    let (Some(name), Some(blob)) = (deb.archive_name, verified.blob(&deb.file.sha256)) else {
                        continue;
                    };
                    dir.link(&name, &blob)?;
                }
            }
        }
        Ok(vec![View { dir, target: dpkg::ARCHIVES.to_string() }])
    }

    fn command(
        &self,
        ct: &Container,
        op: &Operation,
        assume_yes: bool,
        proxy: &str,
        run_tag: &str,
    ) -> Result<Vec<String>> {
        Ok(dpkg::apt_get(op, assume_yes, proxy, run_tag, &source_hosts(ct)?))
    }

    fn env(&self, assume_yes: bool, interactive: bool, proxy: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_string(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
            ("HOME".to_string(), "/root".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("http_proxy".to_string(), proxy.to_string()),
        ];
        if assume_yes || !interactive {
            env.push(("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string()));
        }
        env
    }
}
