//! dnf (dnf4, dnf5) and yum: detection by the program the root has, their command line, and
//! their cache layout (one `<repoid>-<hash>` directory per repository, packages flat in it).

use anyhow::{bail, Result};
use vzpkg_adapters::rpm::dnf;

use super::rpm::{Frontend, MAX_REPOS};
use super::Operation;
use crate::container::Container;

/// Programs by which a root is recognised, in order of preference.
const PROGRAMS: &[(&str, &str)] = &[("usr/bin/dnf", "dnf"), ("usr/bin/dnf5", "dnf5"), ("usr/bin/yum", "yum")];

pub struct Dnf {
    program: &'static str,
}

impl Dnf {
    /// The dnf-family front end for the program the root has, if any.
    pub fn detect(ct: &Container) -> Result<Option<Dnf>> {
        for (path, program) in PROGRAMS {
            if ct.exists(path)? {
                return Ok(Some(Dnf { program }));
            }
        }
        Ok(None)
    }

    /// The front end the operator named.
    pub fn named(ct: &Container, name: &str) -> Result<Dnf> {
        let Some((path, program)) = PROGRAMS.iter().find(|(_, p)| *p == name) else {
            bail!("{name} is not a dnf-family package manager");
        };
        if !ct.exists(path)? {
            bail!("--backend {name}: the container has no /{path}");
        }
        Ok(Dnf { program })
    }
}

impl Frontend for Dnf {
    fn name(&self) -> &'static str {
        self.program
    }

    fn command(&self, op: &Operation, assume_yes: bool, proxy: &str, user_agent: &str) -> Vec<String> {
        dnf::command(self.program, op, assume_yes, proxy, user_agent)
    }

    fn repositories(&self, ct: &Container) -> Result<Vec<(String, String)>> {
        let dirs = ct.names_in(dnf::CACHE, MAX_REPOS, dnf::is_repo_cache_dir)?;
        Ok(dirs
            .iter()
            .map(|d| (format!("{}/{d}/repodata", dnf::CACHE), format!("{}/{d}/packages", dnf::CACHE)))
            .collect())
    }

    fn keeps_repository_layout(&self) -> bool {
        false
    }
}
