//! `vzpkg template show`, `vzpkg cache` and `vzpkg create`: templates resolved, their OS images
//! built, and new containers made from an image, with application templates installed by the
//! wrapper (so the audit log records them) in a vzpkg process of their own.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::FileConfig;
use crate::image::{self, Built};
use crate::template::{self, Templates};

/// `<state_dir>/containers/<CT>.toml`: a container `vzpkg create` made, found by its name.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub root: PathBuf,
    pub template: String,
    pub image_hash: String,
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
        if template::check_name(name).is_err() {
            continue;
        }
        let record = std::fs::read_to_string(entry.path()).ok().and_then(|t| toml::from_str::<Record>(&t).ok());
        if let Some(record) = record.filter(|r| r.root.is_absolute()) {
            found.push((name.to_string(), record.root));
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
    if file.containers.contains_key(ct) || records_dir(&file.state_dir).join(format!("{ct}.toml")).exists() {
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
    let root = match args.root {
        Some(root) => root.to_path_buf(),
        None => file.state_dir.join("containers").join(ct).join("root"),
    };
    if !root.is_absolute() {
        bail!("--root {}: not an absolute path", root.display());
    }
    if std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} exists and is not empty: refusing to write a container root over it", root.display());
    }
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent)?;
        if args.root.is_none() {
            // Container roots hold setuid binaries and devices of their own: root's alone.
            std::fs::set_permissions(parent, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        }
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    image::unpack(&image::dir(&file.cache_dir, args.template).join(image::TARBALL), &root)?;
    let record = Record { root: root.clone(), template: args.template.to_string(), image_hash: manifest.template_hash };
    std::fs::create_dir_all(records_dir(&file.state_dir))?;
    let path = records_dir(&file.state_dir).join(format!("{ct}.toml"));
    std::fs::write(&path, toml::to_string(&record)?).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("vzpkg: created {ct} at {} from the image of {}", root.display(), args.template);

    let exe = std::env::current_exe()?;
    // An image carries no package lists (the bootstrapper leaves none): they come first.
    let mut updated = false;
    for app in &apps {
        let packages = app.package_names();
        let mut runs: Vec<Vec<String>> = Vec::new();
        if !packages.is_empty() && !updated {
            updated = true;
            runs.push(vec!["update".to_string(), "-y".into(), "--proxy".into(), args.proxy.to_string(), ct.into()]);
        }
        if !packages.is_empty() {
            let mut argv =
                vec!["install".to_string(), "-y".into(), "--proxy".into(), args.proxy.to_string(), ct.into()];
            argv.push("--".into());
            argv.extend(packages.iter().map(|p| p.to_string()));
            runs.push(argv);
        }
        for command in &app.post_install {
            let mut argv = vec!["exec".to_string(), "--proxy".into(), args.proxy.to_string(), ct.into(), "--".into()];
            argv.extend(command.value.iter().cloned());
            runs.push(argv);
        }
        for argv in runs {
            eprintln!("vzpkg: {ct}: application template {}: vzpkg {}", app.name, argv.join(" "));
            let status = std::process::Command::new(&exe)
                .args(&args.child_global)
                .args(&argv)
                .status()
                .context("running vzpkg for an application template")?;
            if !status.success() {
                bail!(
                    "application template {} failed in {ct} ({status}); the container is at {} (remove it with rm -r and \
                     {})",
                    app.name,
                    root.display(),
                    path.display()
                );
            }
        }
    }
    Ok(0)
}
