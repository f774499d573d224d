//! Package-manager backends: what the wrapper must know of one package manager to drive it in
//! the sandbox — whether a root uses it, its installed set, its locks and repair step, the views
//! of the shared cache it needs, its command lines and environment. Built on the pure parts in
//! the adapters crate; one file per manager.

pub mod apt;
pub mod view;

use anyhow::{bail, Result};
pub use vzpkg_adapters::apt::dpkg::{Changes, Installed, Operation};

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
    /// The installed packages, from the container's own database (bounded reads).
    fn installed(&self, ct: &Container) -> Result<Vec<Installed>>;
    /// Lock files inside the root that the package manager takes; probed, never deleted.
    fn locks(&self) -> &'static [&'static str];
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

/// The backend for what the root contains.
pub fn detect(ct: &Container) -> Result<Box<dyn Backend>> {
    if apt::Apt::detect(ct)? {
        return Ok(Box::new(apt::Apt));
    }
    bail!(
        "container root {} has no dpkg database (/{}): only apt/dpkg containers are supported so far",
        ct.show(""),
        vzpkg_adapters::apt::dpkg::STATUS
    )
}
