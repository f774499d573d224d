//! `vzpkg template show`, `vzpkg cache` and `vzpkg create`: templates resolved, their OS images
//! built, and new containers made from an image, with application templates installed by the
//! wrapper (so the audit log records them) in a vzpkg process of their own.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::FileConfig;
use crate::container::layered::{self, Layers};
use crate::image::{self, Built};
use crate::template::{self, Templates};

/// `<state_dir>/containers/<CT>.toml`: a container `vzpkg create` made, found by its name.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The root; for a layered container its directory (holding `upper/` and `work/`).
    pub root: PathBuf,
    pub template: String,
    pub image_hash: String,
    pub layers: Option<Layers>,
}

impl Record {
    pub fn path(state_dir: &Path, name: &str) -> Result<PathBuf> {
        template::check_name(name).with_context(|| format!("container name {name:?}"))?;
        Ok(records_dir(state_dir).join(format!("{name}.toml")))
    }

    pub fn read(state_dir: &Path, name: &str) -> Result<Record> {
        let path = Self::path(state_dir, name)?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no container {name} made by vzpkg create ({})", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Written whole, then renamed over the old one.
    pub fn write(&self, state_dir: &Path, name: &str) -> Result<()> {
        let path = Self::path(state_dir, name)?;
        std::fs::create_dir_all(records_dir(state_dir))?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml::to_string(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("containers")
}

/// The containers `vzpkg create` made, by name (for the config's `[containers]`, which wins).
pub fn created(state_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(records_dir(state_dir)) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".toml") else { continue };
        // A name that is not one, or a record that does not parse, is no container.
        match Record::read(state_dir, name).ok() {
            // Resolved from its record each time (see `Container::resolve`).
            Some(record) if record.layers.is_some() => {
                found.push((name.to_string(), PathBuf::from(format!("layered:{name}"))))
            }
            Some(record) if record.root.is_absolute() => found.push((name.to_string(), record.root)),
            _ => {}
        }
    }
    found.sort();
    found
}

pub fn show(name: &str, json: bool, templates: &Templates) -> Result<i32> {
    let resolved = templates.resolve(name)?;
    if json {
        let mut value = serde_json::to_value(&resolved)?;
        value["hash"] = resolved.hash().ok().into();
        println!("{}", crate::untrusted::json_text(&value));
    } else {
        print!("{}", template::show(&resolved));
    }
    Ok(0)
}

pub fn cache(
    name: Option<&str>,
    force: bool,
    list: bool,
    proxy: &str,
    templates: &Templates,
    file: &FileConfig,
) -> Result<i32> {
    if list || name.is_none() {
        println!("{:24}  {:19}  {:>10}  {:>8}  HASH", "TEMPLATE", "BUILT", "SIZE", "PACKAGES");
        for manifest in image::list(&file.cache_dir)? {
            let current = templates.resolve(&manifest.template).and_then(|t| t.hash()).ok();
            let stale =
                if current.as_deref() == Some(manifest.template_hash.as_str()) { "" } else { " (template changed)" };
            println!(
                "{:24}  {:19}  {:>10}  {:>8}  {}{stale}",
                manifest.template,
                crate::commands::show_time(manifest.built_ms),
                crate::commands::human_bytes(manifest.tarball_bytes),
                manifest.packages.len(),
                &manifest.template_hash[..16],
            );
        }
        return Ok(0);
    }
    let name = name.expect("checked above");
    let resolved = templates.resolve(name)?;
    match image::build(&resolved, &file.cache_dir, proxy, force)? {
        Built::UpToDate(m) => eprintln!(
            "vzpkg: the image of {name} is up to date (built {}, {} packages); --force rebuilds it",
            crate::commands::show_time(m.built_ms),
            m.packages.len()
        ),
        Built::Rebuilt(m) => eprintln!(
            "vzpkg: built the image of {name}: {} packages, {} ({})",
            m.packages.len(),
            crate::commands::human_bytes(m.tarball_bytes),
            image::dir(&file.cache_dir, name).join(image::TARBALL).display()
        ),
    }
    Ok(0)
}

pub struct CreateArgs<'a> {
    pub ct: &'a str,
    pub template: &'a str,
    pub apps: &'a [String],
    pub root: Option<&'a Path>,
    pub layered: bool,
    pub proxy: &'a str,
    /// Global options for the wrapper runs of the application templates.
    pub child_global: Vec<String>,
}

pub fn create(args: CreateArgs, templates: &Templates, file: &FileConfig) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("vzpkg create needs root (it writes a container root with its owners)");
    }
    let ct = args.ct;
    template::check_name(ct).with_context(|| format!("container name {ct:?}"))?;
    if file.containers.contains_key(ct) || Record::path(&file.state_dir, ct)?.exists() {
        bail!("a container named {ct} exists already (in the config's [containers] or made by vzpkg create)");
    }
    let resolved = templates.resolve(args.template)?;
    let apps = args.apps.iter().map(|a| templates.resolve(a)).collect::<Result<Vec<_>>>()?;
    let Some(manifest) = image::current(&file.cache_dir, args.template)? else {
        bail!("template {} has no image yet: run `vzpkg cache {}` first", args.template, args.template)
    };
    if resolved.hash().ok().as_deref() != Some(manifest.template_hash.as_str()) {
        eprintln!(
            "vzpkg: the image of {} is older than the template (it changed since); `vzpkg cache {}` rebuilds it",
            args.template, args.template
        );
    }
    let root = match (args.root, args.layered) {
        (Some(root), _) => root.to_path_buf(),
        (None, false) => file.state_dir.join("containers").join(ct).join("root"),
        (None, true) => file.state_dir.join("containers").join(ct),
    };
    if !root.is_absolute() {
        bail!("--root {}: not an absolute path", root.display());
    }
    if std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} exists and is not empty: refusing to write a container root over it", root.display());
    }
    // Made here (STATE_DIR/containers/CT), so taken away again if the root cannot be made.
    let made_parent = root.parent().filter(|p| !p.exists()).map(Path::to_path_buf);
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent)?;
        if args.root.is_none() {
            // Container roots hold setuid binaries and devices of their own: root's alone.
            std::fs::set_permissions(parent, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        }
    }
    let tarball = image::dir(&file.cache_dir, args.template).join(image::TARBALL);
    let layers = if args.layered {
        let lower =
            layered::shared_lower(&tarball, &manifest.tarball_sha256, &image::dir(&file.cache_dir, args.template))?;
        Some(layered::create(&lower, &root)?)
    } else {
        let unpacked = unpack_root(&tarball, &manifest.tarball_sha256, &root);
        if let (Err(_), Some(parent)) = (&unpacked, &made_parent) {
            let _ = std::fs::remove_dir(parent);
        }
        unpacked?;
        None
    };
    let record =
        Record { root: root.clone(), template: args.template.to_string(), image_hash: manifest.template_hash, layers };
    record.write(&file.state_dir, ct)?;
    let path = Record::path(&file.state_dir, ct)?;
    eprintln!(
        "vzpkg: created {ct} at {} from the image of {}{}",
        root.display(),
        args.template,
        if args.layered { " (layered: the image is its read-only lower layer)" } else { "" }
    );

    // Each a vzpkg process of its own: the sandbox forks before any thread, once per process.
    let vzpkg = |app: &str, argv: Vec<String>, capture: bool| -> Result<Vec<u8>> {
        eprintln!("vzpkg: {ct}: application template {app}: vzpkg {}", argv.join(" "));
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.args(&args.child_global).args(&argv);
        if !capture {
            command.stdout(std::process::Stdio::inherit());
        }
        let out = command.stderr(std::process::Stdio::inherit()).output().context("running vzpkg")?;
        if !out.status.success() {
            bail!(
                "application template {app} failed in {ct} ({}); the container is at {} (remove it with rm -r and {})",
                out.status,
                root.display(),
                path.display()
            );
        }
        Ok(out.stdout)
    };
    let wrapper = |command: &str, tail: &[&str]| -> Vec<String> {
        let mut argv = vec![command.to_string()];
        if command != "exec" {
            argv.push("-y".into());
        }
        argv.extend(["--proxy".into(), args.proxy.to_string(), ct.into()]);
        if !tail.is_empty() {
            argv.push("--".into());
            argv.extend(tail.iter().map(|t| t.to_string()));
        }
        argv
    };
    // An image carries no package lists (the bootstrapper leaves none): they come first.
    let mut updated = false;
    for app in &apps {
        // `pkg-` in an application template takes the package out of the container, as in an
        // OS template out of its image — if the container has it.
        let removed: Vec<&str> = app.removed.iter().map(|r| r.value.as_str()).collect();
        if !removed.is_empty() {
            let listed = vzpkg(&app.name, vec!["list".into(), "--json".into(), ct.into()], true)?;
            let installed: Vec<String> = String::from_utf8_lossy(&listed)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect();
            let present: Vec<&str> = removed.into_iter().filter(|r| installed.iter().any(|i| i == r)).collect();
            if !present.is_empty() {
                vzpkg(&app.name, wrapper("remove", &present), false)?;
            }
        }
        let packages = app.package_names();
        if !packages.is_empty() {
            if !updated {
                updated = true;
                vzpkg(&app.name, wrapper("update", &[]), false)?;
            }
            vzpkg(&app.name, wrapper("install", &packages), false)?;
        }
        for command in &app.post_install {
            vzpkg(&app.name, wrapper("exec", &command.value.iter().map(String::as_str).collect::<Vec<_>>()), false)?;
        }
    }
    Ok(0)
}

/// The image unpacked at `root`: a new root is unpacked beside it and renamed into place, so a
/// failure leaves nothing behind; an existing empty directory (a mount point, say) is filled in
/// place, and emptied again on failure.
fn unpack_root(tarball: &Path, sha256: &str, root: &Path) -> Result<()> {
    if root.exists() {
        let unpacked = image::unpack(tarball, sha256, root);
        if unpacked.is_err() {
            for entry in std::fs::read_dir(root)?.flatten() {
                let path = entry.path();
                let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
        return unpacked;
    }
    let parent = root.parent().context("a root has a parent directory")?;
    let tmp = tempfile::Builder::new().prefix(".create-").tempdir_in(parent)?;
    let tree = tmp.path().join("root");
    std::fs::create_dir(&tree)?;
    image::unpack(tarball, sha256, &tree)?;
    std::fs::rename(&tree, root).with_context(|| format!("moving the unpacked root to {}", root.display()))
}

/// `vzpkg flatten CT [--to DIR]`: a layered container's layers folded into a plain root. With
/// `--to`, a new root at DIR and the container unchanged; without, the container becomes that
/// plain root (its directory's `root/`) and its layers go.
pub fn flatten(ct: &str, to: Option<&Path>, file: &FileConfig) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("vzpkg flatten needs root (it mounts the layers and writes a root with its owners)");
    }
    let mut record = Record::read(&file.state_dir, ct)?;
    let Some(layers) = record.layers.clone() else { bail!("{ct} is not a layered container: nothing to flatten") };
    // Queued behind any wrapper command on the container, and none starts meanwhile.
    let container = crate::container::Container::resolve(ct, file)?;
    let _lock = crate::container::locks::host_lock(&file.state_dir, &container, std::time::Duration::from_secs(300))?;
    drop(container);
    match to {
        Some(to) => {
            layered::flatten(&layers, to)?;
            eprintln!("vzpkg: flattened {ct} into {} (the container is unchanged)", to.display());
        }
        None => {
            let root = layers.dir.join("root");
            layered::flatten(&layers, &root)?;
            record.root = root.clone();
            record.layers = None;
            record.write(&file.state_dir, ct)?;
            for sub in ["upper", "work"] {
                let path = layers.dir.join(sub);
                std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
            }
            eprintln!("vzpkg: flattened {ct}: it is now the plain root {}", root.display());
        }
    }
    Ok(0)
}
