//! zypper: detection by its program, its command line, and its cache layout (metadata per
//! repository alias under `raw/`, packages under `packages/<alias>/` in the repository's layout).

use anyhow::Result;
use vzpkg_adapters::rpm::zypper;

use super::rpm::{Frontend, MAX_REPOS};
use super::view::is_plain_file_name;
use super::Operation;
use crate::container::Container;

pub struct Zypper;

impl Zypper {
    pub fn detect(ct: &Container) -> Result<bool> {
        ct.exists("usr/bin/zypper")
    }
}

impl Frontend for Zypper {
    fn name(&self) -> &'static str {
        "zypper"
    }

    /// zypper has no proxy option: the environment carries it (see [`super::rpm`]).
    fn command(&self, op: &Operation, assume_yes: bool, _proxy: &str, _user_agent: &str) -> Vec<String> {
        zypper::command(op, assume_yes)
    }

    fn repositories(&self, ct: &Container) -> Result<Vec<(String, String)>> {
        let aliases = ct.names_in(zypper::RAW, MAX_REPOS, is_plain_file_name)?;
        Ok(aliases
            .iter()
            .map(|a| (format!("{}/{a}/repodata", zypper::RAW), format!("{}/{a}", zypper::PACKAGES)))
            .collect())
    }

    fn keeps_repository_layout(&self) -> bool {
        true
    }
}
