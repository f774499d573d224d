//! Installed packages as every backend reports them, what changed between two sets of them,
//! and the operations the wrapper asks a package manager for.

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Installed {
    pub name: String,
    pub arch: String,
    pub version: String,
}

/// What changed between two installed sets.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub installed: Vec<Installed>,
    pub removed: Vec<Installed>,
    /// (before, after)
    pub changed: Vec<(Installed, Installed)>,
}

impl Changes {
    pub fn between(before: &[Installed], after: &[Installed]) -> Changes {
        let key = |p: &Installed| (p.name.clone(), p.arch.clone());
        let old: std::collections::BTreeMap<_, _> = before.iter().map(|p| (key(p), p)).collect();
        let new: std::collections::BTreeMap<_, _> = after.iter().map(|p| (key(p), p)).collect();
        let mut changes = Changes::default();
        for (k, p) in &new {
            match old.get(k) {
                None => changes.installed.push((*p).clone()),
                Some(o) if o.version != p.version => changes.changed.push(((*o).clone(), (*p).clone())),
                Some(_) => {}
            }
        }
        changes.removed = old.iter().filter(|(k, _)| !new.contains_key(*k)).map(|(_, p)| (*p).clone()).collect();
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.installed.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The operations the wrapper runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Install(Vec<String>),
    Remove(Vec<String>),
    /// Empty: everything.
    Upgrade(Vec<String>),
    Update,
}
