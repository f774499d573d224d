//! Templates: OS and application templates in TOML (/etc/vzpkg/templates/NAME.toml, or
//! `--templates DIR`), each inheriting from others. Lists merge down the inheritance tree in
//! order, `pkg-` removes an inherited entry, a child's scalar replaces its parents'; the
//! resolved template remembers where every entry came from.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const DEFAULT_DIR: &str = "/etc/vzpkg/templates";

/// Deepest inheritance chain taken (a bound, not a design limit).
const MAX_DEPTH: usize = 32;

/// One template file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    inherit: Vec<String>,
    /// debian, ubuntu (deb), or an rpm family: fedora, alma, rocky, centos, opensuse…
    distribution: Option<String>,
    /// The deb suite (bookworm) or the rpm release (40, 9).
    suite: Option<String>,
    /// apt source lines (`deb URL SUITE COMPONENTS`), or rpm repository base URLs.
    #[serde(default)]
    repositories: Vec<String>,
    /// apt or dnf; by default apt for deb distributions and dnf for the others.
    package_manager: Option<String>,
    /// mmdebstrap's variant (default `apt`).
    variant: Option<String>,
    architecture: Option<String>,
    /// rpm images: a root tarball the image starts from (a distribution's minimal root), into
    /// which dnf installs the packages; without it the image holds only what dnf installs.
    seed: Option<String>,
    #[serde(default)]
    packages: Vec<String>,
    /// Commands run in the sandbox after an application template's packages are installed,
    /// each an argv (never a shell string).
    #[serde(default)]
    post_install: Vec<Vec<String>>,
}

/// A value and the template it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Origin<T> {
    pub value: T,
    pub from: String,
}

/// A template with everything it inherits applied.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub name: String,
    /// Every template applied, each once, parents before children: the template itself last.
    pub chain: Vec<String>,
    pub distribution: Option<Origin<String>>,
    pub suite: Option<Origin<String>>,
    pub package_manager: Option<Origin<String>>,
    pub variant: Option<Origin<String>>,
    pub architecture: Option<Origin<String>>,
    pub seed: Option<Origin<String>>,
    pub repositories: Vec<Origin<String>>,
    pub packages: Vec<Origin<String>>,
    /// Packages a `pkg-` entry removed (and excludes from the image): the template that said so.
    pub removed: Vec<Origin<String>>,
    pub post_install: Vec<Origin<Vec<String>>>,
}

/// What an image is built from: the resolved template without origins, in a fixed order.
#[derive(Debug, Serialize)]
pub struct Recipe<'a> {
    pub distribution: &'a str,
    pub suite: &'a str,
    pub package_manager: &'a str,
    pub variant: &'a str,
    pub architecture: Option<&'a str>,
    pub seed: Option<&'a str>,
    pub repositories: Vec<&'a str>,
    pub packages: Vec<&'a str>,
    pub removed: Vec<&'a str>,
}

impl Resolved {
    fn empty(name: &str) -> Resolved {
        Resolved {
            name: name.to_string(),
            chain: Vec::new(),
            distribution: None,
            suite: None,
            package_manager: None,
            variant: None,
            architecture: None,
            seed: None,
            repositories: Vec::new(),
            packages: Vec::new(),
            removed: Vec::new(),
            post_install: Vec::new(),
        }
    }

    /// Whether images are built with apt (mmdebstrap) rather than dnf.
    pub fn is_deb(&self) -> bool {
        self.package_manager() == "apt"
    }

    pub fn package_manager(&self) -> &str {
        match (&self.package_manager, self.distribution.as_ref().map(|d| d.value.as_str())) {
            (Some(pm), _) => &pm.value,
            (None, Some("debian" | "ubuntu" | "devuan")) | (None, None) => "apt",
            (None, Some(_)) => "dnf",
        }
    }

    pub fn package_names(&self) -> Vec<&str> {
        self.packages.iter().map(|p| p.value.as_str()).collect()
    }

    /// What an OS image needs; an error naming what is missing for an application template.
    pub fn recipe(&self) -> Result<Recipe<'_>> {
        fn need<'a>(this: &Resolved, v: &'a Option<Origin<String>>, key: &str) -> Result<&'a str> {
            match v {
                Some(v) => Ok(v.value.as_str()),
                None => bail!(
                    "template {} has no {key} (in it or what it inherits: {}): an OS template needs distribution, suite and \
                     repositories",
                    this.name,
                    this.chain.join(", ")
                ),
            }
        }
        let recipe = Recipe {
            distribution: need(self, &self.distribution, "distribution")?,
            suite: need(self, &self.suite, "suite")?,
            package_manager: self.package_manager(),
            variant: self.variant.as_ref().map(|v| v.value.as_str()).unwrap_or("apt"),
            architecture: self.architecture.as_ref().map(|v| v.value.as_str()),
            seed: self.seed.as_ref().map(|v| v.value.as_str()),
            repositories: self.repositories.iter().map(|r| r.value.as_str()).collect(),
            packages: self.package_names(),
            removed: self.removed.iter().map(|r| r.value.as_str()).collect(),
        };
        if !matches!(recipe.package_manager, "apt" | "dnf") {
            bail!(
                "template {}: package_manager {:?} cannot build an image (apt or dnf)",
                self.name,
                recipe.package_manager
            );
        }
        if recipe.repositories.is_empty() {
            bail!("template {} names no repositories", self.name);
        }
        for repository in &recipe.repositories {
            repository_url(repository, recipe.package_manager == "apt")
                .with_context(|| format!("in template {} (or what it inherits)", self.name))?;
        }
        match recipe.seed {
            Some(_) if recipe.package_manager == "apt" => {
                bail!("template {}: a seed is for rpm images; mmdebstrap builds a deb image from nothing", self.name)
            }
            Some(seed) if !seed.starts_with('/') => {
                bail!("template {}: seed {seed:?} is not an absolute path", self.name)
            }
            _ => {}
        }
        Ok(recipe)
    }

    /// sha256 of the recipe, its package lists sorted (their order changes no image): an image
    /// is rebuilt when this changes.
    pub fn hash(&self) -> Result<String> {
        let mut recipe = self.recipe()?;
        recipe.packages.sort_unstable();
        recipe.removed.sort_unstable();
        let recipe = serde_json::to_vec(&recipe).expect("plain data");
        Ok(hex::encode(Sha256::digest(recipe)))
    }
}

/// Where templates are read from.
pub struct Templates {
    pub dir: PathBuf,
}

impl Templates {
    pub fn new(dir: Option<&Path>) -> Templates {
        Templates { dir: dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)) }
    }

    /// Template `name` with everything it inherits.
    pub fn resolve(&self, name: &str) -> Result<Resolved> {
        let mut resolved = Resolved::empty(name);
        self.apply(name, &mut Vec::new(), &mut resolved)?;
        Ok(resolved)
    }

    /// Applies `name` (its parents first, in order) onto `into`, unless it was applied already;
    /// `stack` is the chain that led here, for loops and messages.
    fn apply(&self, name: &str, stack: &mut Vec<String>, into: &mut Resolved) -> Result<()> {
        check_name(name)?;
        if stack.iter().any(|s| s == name) {
            bail!("template loop: {} → {name}", stack.join(" → "));
        }
        if stack.len() >= MAX_DEPTH {
            bail!("templates inherit more than {MAX_DEPTH} deep: {}", stack.join(" → "));
        }
        // A template inherited along two paths counts once, where it first comes: applying it
        // again would bring back what a template after it removed or replaced.
        if into.chain.iter().any(|c| c == name) {
            return Ok(());
        }
        let path = self.dir.join(format!("{name}.toml"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !stack.is_empty() => {
                bail!("template {name} (inherited by {}) not found: no {}", stack.join(" → "), path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("reading template {name} ({})", path.display())),
        };
        let file: File = toml::from_str(&text).with_context(|| format!("in template {}", path.display()))?;
        stack.push(name.to_string());
        for parent in &file.inherit {
            self.apply(parent, stack, into)?;
        }
        stack.pop();
        into.chain.push(name.to_string());
        let from = |value: &String| Some(Origin { value: value.clone(), from: name.to_string() });
        for (slot, value) in [
            (&mut into.distribution, &file.distribution),
            (&mut into.suite, &file.suite),
            (&mut into.package_manager, &file.package_manager),
            (&mut into.variant, &file.variant),
            (&mut into.architecture, &file.architecture),
            (&mut into.seed, &file.seed),
        ] {
            if let Some(value) = value {
                *slot = from(value);
            }
        }
        for repository in &file.repositories {
            merge(&mut into.repositories, &mut Vec::new(), repository, name, |_| Ok(()))?;
        }
        for package in &file.packages {
            merge(&mut into.packages, &mut into.removed, package, name, check_package)
                .with_context(|| format!("in template {}", path.display()))?;
        }
        for command in &file.post_install {
            if command.is_empty() || command[0].is_empty() {
                bail!("in template {}: a post_install command is an empty argv", path.display());
            }
            into.post_install.push(Origin { value: command.clone(), from: name.to_string() });
        }
        Ok(())
    }
}

/// Adds `entry` to `list`, or with a trailing `-` takes it out (and notes that in `removed`).
fn merge(
    list: &mut Vec<Origin<String>>,
    removed: &mut Vec<Origin<String>>,
    entry: &str,
    from: &str,
    check: impl Fn(&str) -> Result<()>,
) -> Result<()> {
    match entry.strip_suffix('-') {
        Some(gone) => {
            check(gone)?;
            list.retain(|e| e.value != gone);
            removed.retain(|e| e.value != gone);
            removed.push(Origin { value: gone.to_string(), from: from.to_string() });
        }
        None => {
            check(entry)?;
            removed.retain(|e| e.value != entry);
            if !list.iter().any(|e| e.value == entry) {
                list.push(Origin { value: entry.to_string(), from: from.to_string() });
            }
        }
    }
    Ok(())
}

/// The URL of a repository: of an apt one-line source (`deb [options] URL suite [components]`),
/// or an rpm base URL. http, https (which apt and dnf fetch around the proxy) or file.
pub fn repository_url(repository: &str, apt: bool) -> Result<url::Url> {
    let url = if apt {
        let Some(rest) = repository.strip_prefix("deb ").or_else(|| repository.strip_prefix("deb-src ")) else {
            bail!("repository {repository:?} is not an apt source line (deb [options] URL suite components)")
        };
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(options) => match options.split_once(']') {
                Some((_, rest)) => rest,
                None => bail!("repository {repository:?}: its options have no closing ']'"),
            },
            None => rest,
        };
        let mut words = rest.split_whitespace();
        match (words.next(), words.next()) {
            (Some(url), Some(_suite)) => url,
            _ => bail!("repository {repository:?} names no URL and suite"),
        }
    } else {
        repository.trim()
    };
    let url = url::Url::parse(url).with_context(|| format!("repository {repository:?}: {url:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https" | "file") {
        bail!(
            "repository {repository:?}: {} URLs are not fetched through the proxy (http, https or file)",
            url.scheme()
        );
    }
    Ok(url)
}

/// A template name is a file name in the templates directory: letters, digits, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || name.starts_with(['.', '-'])
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        bail!("{name:?} is not a template name (letters, digits, '.', '_', '-')");
    }
    Ok(())
}

/// A package name as Debian and rpm allow them (and never an option or a path).
fn check_package(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "+-._:".contains(c));
    if !ok {
        bail!("{name:?} is not a package name");
    }
    Ok(())
}

/// `vzpkg template show`'s text.
pub fn show(resolved: &Resolved) -> String {
    let mut out = format!("template {} (from {})\n", resolved.name, resolved.chain.join(", "));
    for (key, value) in [
        ("distribution", &resolved.distribution),
        ("suite", &resolved.suite),
        ("package_manager", &resolved.package_manager),
        ("variant", &resolved.variant),
        ("architecture", &resolved.architecture),
        ("seed", &resolved.seed),
    ] {
        if let Some(v) = value {
            out.push_str(&format!("{key:16}{:40}  ({})\n", v.value, v.from));
        }
    }
    let mut list = |title: &str, items: Vec<(String, &str)>| {
        if !items.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for (value, from) in items {
                out.push_str(&format!("  {value:54}  ({from})\n"));
            }
        }
    };
    list("repositories", resolved.repositories.iter().map(|r| (r.value.clone(), r.from.as_str())).collect());
    list("packages", resolved.packages.iter().map(|r| (r.value.clone(), r.from.as_str())).collect());
    list("removed", resolved.removed.iter().map(|r| (r.value.clone(), r.from.as_str())).collect());
    list("post_install", resolved.post_install.iter().map(|r| (format!("{:?}", r.value), r.from.as_str())).collect());
    if let Ok(hash) = resolved.hash() {
        out.push_str(&format!("hash            {hash}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
        }
        dir
    }

    fn values(list: &[Origin<String>]) -> Vec<(&str, &str)> {
        list.iter().map(|e| (e.value.as_str(), e.from.as_str())).collect()
    }

    #[test]
    fn three_levels_merge_lists_remove_with_a_dash_and_replace_scalars() {
        let d = dir(&[
            ("base", "distribution = \"debian\"\nsuite = \"bullseye\"\npackages = [\"less\", \"whiptail\"]\n"),
            (
                "distro",
                "inherit = [\"base\"]\nsuite = \"bookworm\"\nrepositories = [\"deb http://mirror.example.org/debian bookworm main\"]\npackages = [\"jq\"]\n",
            ),
            ("site", "inherit = [\"distro\"]\npackages = [\"whiptail-\", \"nano\", \"bzip2\"]\n"),
        ]);
        let site = Templates::new(Some(d.path())).resolve("site").unwrap();
        assert_eq!(site.chain, ["base", "distro", "site"]);
        assert_eq!(values(&site.packages), [("less", "base"), ("jq", "distro"), ("nano", "site"), ("bzip2", "site")]);
        assert_eq!(values(&site.removed), [("whiptail", "site")]);
        assert_eq!(site.suite.as_ref().map(|s| (s.value.as_str(), s.from.as_str())), Some(("bookworm", "distro")));
        assert!(site.is_deb());
        let text = show(&site);
        assert!(text.contains("whiptail") && text.contains("(site)") && text.contains("hash"), "{text}");
        // The hash follows the recipe: the same lists give the same hash, one entry changes it.
        let again = Templates::new(Some(d.path())).resolve("site").unwrap();
        assert_eq!(site.hash().unwrap(), again.hash().unwrap());
        std::fs::write(d.path().join("site.toml"), "inherit = [\"distro\"]\npackages = [\"whiptail-\", \"nano\"]\n")
            .unwrap();
        let changed = Templates::new(Some(d.path())).resolve("site").unwrap();
        assert_ne!(site.hash().unwrap(), changed.hash().unwrap());
        // The order of the packages is no change.
        std::fs::write(
            d.path().join("site.toml"),
            "inherit = [\"distro\"]\npackages = [\"bzip2\", \"nano\", \"whiptail-\"]\n",
        )
        .unwrap();
        let reordered = Templates::new(Some(d.path())).resolve("site").unwrap();
        assert_eq!(site.hash().unwrap(), reordered.hash().unwrap());
    }

    #[test]
    fn a_template_inherited_twice_is_applied_once_where_it_first_comes() {
        // site inherits a and b, both of which inherit base: base's list and scalars must not
        // come back after a removed or replaced them.
        let d = dir(&[
            ("base", "distribution = \"debian\"\nsuite = \"bullseye\"\npackages = [\"less\", \"whiptail\"]\n"),
            ("a", "inherit = [\"base\"]\nsuite = \"bookworm\"\npackages = [\"whiptail-\", \"jq\"]\n"),
            ("b", "inherit = [\"base\"]\npackages = [\"nano\"]\n"),
            ("site", "inherit = [\"a\", \"b\"]\n"),
        ]);
        let site = Templates::new(Some(d.path())).resolve("site").unwrap();
        assert_eq!(site.chain, ["base", "a", "b", "site"]);
        assert_eq!(values(&site.packages), [("less", "base"), ("jq", "a"), ("nano", "b")]);
        assert_eq!(values(&site.removed), [("whiptail", "a")]);
        assert_eq!(site.suite.as_ref().map(|s| (s.value.as_str(), s.from.as_str())), Some(("bookworm", "a")));
    }

    #[test]
    fn loops_unknown_parents_unknown_keys_and_bad_names_are_errors_naming_the_chain() {
        let d = dir(&[
            ("a", "inherit = [\"b\"]\n"),
            ("b", "inherit = [\"a\"]\n"),
            ("c", "inherit = [\"nope\"]\n"),
            ("d", "pakages = [\"x\"]\n"),
            ("e", "packages = [\"-rf\"]\n"),
            ("f", "inherit = [\"../etc/passwd\"]\n"),
        ]);
        let t = Templates::new(Some(d.path()));
        let err = |name: &str| format!("{:#}", t.resolve(name).unwrap_err());
        assert!(err("a").contains("template loop: a → b → a"), "{}", err("a"));
        assert!(err("c").contains("template nope (inherited by c) not found"), "{}", err("c"));
        assert!(err("d").contains("pakages"), "{}", err("d"));
        assert!(err("e").contains("not a package name"), "{}", err("e"));
        assert!(err("f").contains("not a template name"), "{}", err("f"));
        assert!(t.resolve("missing").is_err());
        let d = dir(&[("z", "distribution = \"opensuse\"\nsuite = \"15\"\npackage_manager = \"zypper\"\nrepositories = [\"http://mirror.example.org/oss\"]\n")]);
        let zypper = Templates::new(Some(d.path())).resolve("z").unwrap();
        assert!(format!("{:#}", zypper.recipe().unwrap_err()).contains("apt or dnf"));
        assert!(Templates::new(Some(d.path())).resolve("a").is_err());
    }

    #[test]
    fn repositories_are_apt_source_lines_or_base_urls_over_http_https_or_file() {
        let url = |r: &str, apt| repository_url(r, apt).map(|u| u.to_string()).map_err(|e| format!("{e:#}"));
        assert_eq!(
            url("deb [trusted=yes arch=amd64] http://mirror.example.org/debian bookworm main", true).unwrap(),
            "http://mirror.example.org/debian"
        );
        assert_eq!(
            url("deb-src https://mirror.example.org/debian bookworm", true).unwrap(),
            "https://mirror.example.org/debian"
        );
        assert_eq!(url("http://mirror.example.org/el/9/", false).unwrap(), "http://mirror.example.org/el/9/");
        assert!(url("http://mirror.example.org/debian bookworm main", true)
            .unwrap_err()
            .contains("not an apt source line"));
        assert!(url("deb [trusted=yes http://mirror.example.org/debian bookworm", true).unwrap_err().contains("']'"));
        assert!(url("deb http://mirror.example.org/debian", true).unwrap_err().contains("no URL and suite"));
        assert!(url("deb ftp://mirror.example.org/debian bookworm main", true).unwrap_err().contains("ftp URLs"));
        assert!(url("mirror.example.org/el", false).unwrap_err().contains("not a URL"));
        let d =
            dir(&[("t", "distribution = \"debian\"\nsuite = \"bookworm\"\nrepositories = [\"deb bookworm main\"]\n")]);
        let t = Templates::new(Some(d.path())).resolve("t").unwrap();
        assert!(format!("{:#}", t.hash().unwrap_err()).contains("in template t"));
    }

    #[test]
    fn an_application_template_has_no_recipe_but_its_packages_and_commands() {
        let d = dir(&[("web", "packages = [\"nginx\"]\npost_install = [[\"systemctl\", \"enable\", \"nginx\"]]\n")]);
        let web = Templates::new(Some(d.path())).resolve("web").unwrap();
        assert_eq!(web.package_names(), ["nginx"]);
        assert_eq!(web.post_install[0].value, ["systemctl", "enable", "nginx"]);
        assert!(format!("{:#}", web.recipe().unwrap_err()).contains("no distribution"));
    }
}
