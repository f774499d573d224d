//! zypper: detection by its program, its command line, and one view per repository alias, built
//! from the container's own cached metadata and laid out as zypper keeps packages (the rpm side
//! is in [`super::rpm`]).

use std::path::Path;

use anyhow::{Context, Result};
use vzpkg_adapters::rpm::{dnf, zypper};

use super::view::{is_plain_file_name, ViewDir};
use super::{rpm, Backend, Installed, Operation, View};
use crate::container::Container;

pub struct Zypper;

impl Zypper {
    pub fn detect(ct: &Container) -> Result<bool> {
        ct.exists("usr/bin/zypper")
    }
}

impl Backend for Zypper {
    fn name(&self) -> &'static str {
        "zypper"
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
        rpm::clear_stale(ct)
    }

    fn repair(&self, _ct: &Container) -> Result<Option<(&'static str, Vec<String>)>> {
        Ok(None)
    }

    /// The packages each repository's cached metadata names whose exact content the shared
    /// cache holds verified, at the path zypper looks for them: `<alias>/<path in the repo>`.
    fn views(&self, ct: &Container, cache_dir: &Path) -> Result<Vec<View>> {
        let verified = vzpkg_proxy::view::Verified::read(cache_dir).context("reading the cache index for the view")?;
        let mut views = Vec::new();
        if verified.is_empty() {
            return Ok(views);
        }
        let mut budget = rpm::MAX_METADATA_TOTAL;
        for alias in ct.names_in(zypper::RAW, rpm::MAX_REPOS, is_plain_file_name)? {
            let repodata = format!("{}/{alias}/repodata", zypper::RAW);
            let Some(packages) = rpm::cached_packages(ct, &repodata, &mut budget) else { continue };
            let mut dir = ViewDir::create(cache_dir)?;
            for package in &packages {
                if let Some(blob) = verified.blob(&package.sha256) {
                    dir.link_path(&package.path, &blob)?;
                }
            }
            views.push(View { dir, target: format!("{}/{alias}", zypper::PACKAGES) });
        }
        Ok(views)
    }

    fn command(
        &self,
        _ct: &Container,
        op: &Operation,
        assume_yes: bool,
        _proxy: &str,
        _run_tag: &str,
    ) -> Result<Vec<String>> {
        Ok(zypper::command(op, assume_yes))
    }

    fn env(&self, _assume_yes: bool, _interactive: bool, proxy: &str) -> Vec<(String, String)> {
        rpm::env(proxy)
    }
}
