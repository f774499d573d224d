//! Package-manager backends: what the wrapper must know of one package manager to drive it in
//! the sandbox — whether a root uses it, its installed set, its locks and repair step, the views
//! of the shared cache it needs, its command lines and environment. Built on the pure parts in
//! the adapters crate; one file per manager.

pub mod apt;
pub mod dnf;
pub mod rpm;
pub mod view;
pub mod zypper;

use anyhow::{bail, Result};
pub use vzpkg_adapters::installed::{Changes, Installed, Operation};

use crate::container::Container;
use view::ViewDir;

/// A view of the shared cache and where it appears inside the root.
pub struct View {
    pub dir: ViewDir,
    /// Relative to the container root.
    pub target: String,
}

pub trait Backend {
    /// The package manager's name, for messages.
    fn name(&self) -> &'static str;
    /// The installed packages read on the host from the container's own database (bounded
    /// reads), or `None` when only the package manager's own tools read it: then
    /// [`Backend::query`] runs inside the sandbox and [`Backend::parse_query`] reads its output.
    fn installed(&self, ct: &Container) -> Result<Option<Vec<Installed>>>;
    /// The command that prints the installed set inside the container.
    fn query(&self) -> Vec<String> {
        Vec::new()
    }
    /// The installed set from [`Backend::query`]'s output (the guest's words: untrusted).
    fn parse_query(&self, _output: &[u8]) -> Vec<Installed> {
        Vec::new()
    }
    /// Lock files inside the root that the package manager takes; probed, never deleted.
    fn locks(&self) -> &'static [&'static str];
    /// Leftovers of a crashed run that the package manager cannot clear itself, removed when
    /// nothing holds them (after the locks were waited for); what was done, to say and record.
    fn clear_stale(&self, _ct: &Container) -> Result<Option<String>> {
        Ok(None)
    }
    /// A command to run first when the database shows an interrupted run, and why.
    fn repair(&self, ct: &Container) -> Result<Option<(&'static str, Vec<String>)>>;
    /// The views of the shared cache this run should see.
    fn views(&self, ct: &Container, cache_dir: &std::path::Path) -> Result<Vec<View>>;
    /// The command line for an operation, with per-run options instead of edits to the root
    /// (read from the root: the hosts its sources name).
    fn command(
        &self,
        ct: &Container,
        op: &Operation,
        assume_yes: bool,
        proxy: &str,
        run_tag: &str,
    ) -> Result<Vec<String>>;
    /// The environment the guest's commands get.
    fn env(&self, assume_yes: bool, interactive: bool, proxy: &str) -> Vec<(String, String)>;
}

/// Backend names `--backend` takes.
pub const NAMES: &[&str] = &["apt", "dnf", "dnf5", "yum", "zypper"];

/// The backend the operator named, or the one for what the root contains: apt where dpkg's
/// database is (a Debian root with rpm tools installed is still a Debian root), else dnf, dnf5,
/// yum or zypper, whichever the root has.
pub fn detect(ct: &Container, named: Option<&str>) -> Result<Box<dyn Backend>> {
    match named {
        Some("apt") => return Ok(Box::new(apt::Apt)),
        Some(name @ ("dnf" | "dnf5" | "yum")) => return Ok(Box::new(rpm::Rpm(dnf::Dnf::named(ct, name)?))),
        Some("zypper") => return Ok(Box::new(rpm::Rpm(zypper::Zypper))),
        Some(other) => bail!("unknown backend {other:?}: use one of {}", NAMES.join(", ")),
        None => {}
    }
    if apt::Apt::detect(ct)? {
        return Ok(Box::new(apt::Apt));
    }
    if let Some(dnf) = dnf::Dnf::detect(ct)? {
        return Ok(Box::new(rpm::Rpm(dnf)));
    }
    if zypper::Zypper::detect(ct)? {
        return Ok(Box::new(rpm::Rpm(zypper::Zypper)));
    }
    bail!(
        "container root {} has neither a dpkg database (/{}) nor dnf, yum or zypper (/usr/bin/dnf, \
         /usr/bin/dnf5, /usr/bin/yum, /usr/bin/zypper): vzpkg cannot tell which package manager it uses; name one with --backend",
        ct.show(""),
        vzpkg_adapters::apt::dpkg::STATUS
    )
}
