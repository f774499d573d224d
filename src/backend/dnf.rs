//! dnf (dnf4, dnf5) and yum: detection by the program the root has, their command line, and one
//! view per repository cache directory, built from the container's own cached metadata (the
//! rpm side is in [`super::rpm`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use vzpkg_adapters::rpm::dnf;

use super::view::ViewDir;
use super::{rpm, Backend, Installed, Operation, View};
use crate::container::Container;

/// Programs by which a root is recognised, in order of preference.
const PROGRAMS: &[(&str, &str)] = &[("usr/bin/dnf", "dnf"), ("usr/bin/dnf5", "dnf5"), ("usr/bin/yum", "yum")];
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
        let Some(packages) = rpm::cached_packages(ct, &repodata, budget) else { return Ok(None) };
        let mut dir = ViewDir::create(cache_dir)?;
        for package in &packages {
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

    fn clear_stale(&self, ct: &Container) -> Result<Option<String>> {
        rpm::clear_stale(ct)
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
        let mut budget = rpm::MAX_METADATA_TOTAL;
        for repo_dir in ct.names_in(dnf::CACHE, rpm::MAX_REPOS, dnf::is_repo_cache_dir)? {
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
        rpm::env(proxy)
    }
}
