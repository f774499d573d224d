//! OS images built from templates, and new container roots made from them. An image is
//! `<cache_dir>/images/<template>/rootfs.tar.zst` plus `manifest.json` (the template's recipe
//! hash, the package set, when and how it was built, the tarball's sha256); the manifest is
//! written last, so an image is complete exactly when its manifest names its tarball's hash.
//! deb images are built by mmdebstrap, rpm images by `dnf --installroot`, both downloading
//! through the vzpkg proxy so that a rebuild fetches nothing upstream twice.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::template::Resolved;

pub const TARBALL: &str = "rootfs.tar.zst";
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub template: String,
    /// The resolved template's recipe hash: the image is rebuilt when it changes.
    pub template_hash: String,
    /// Unix milliseconds.
    pub built_ms: u64,
    /// mmdebstrap or dnf, with its version.
    pub tool: String,
    pub packages: Vec<Package>,
    pub tarball_sha256: String,
    pub tarball_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

pub fn dir(cache_dir: &Path, template: &str) -> PathBuf {
    cache_dir.join("images").join(template)
}

/// The complete image of `template`, if one was built.
pub fn current(cache_dir: &Path, template: &str) -> Result<Option<Manifest>> {
    let dir = dir(cache_dir, template);
    let text = match std::fs::read(dir.join(MANIFEST)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.join(MANIFEST).display())),
    };
    let manifest: Manifest =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", dir.join(MANIFEST).display()))?;
    let complete = std::fs::metadata(dir.join(TARBALL)).is_ok_and(|m| m.len() == manifest.tarball_bytes);
    Ok(complete.then_some(manifest))
}

/// Every built image: (template, manifest), sorted by template.
pub fn list(cache_dir: &Path) -> Result<Vec<Manifest>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(cache_dir.join("images")) else { return Ok(found) };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if crate::template::check_name(&name).is_ok() {
            if let Some(manifest) = current(cache_dir, &name)? {
                found.push(manifest);
            }
        }
    }
    found.sort_by(|a, b| a.template.cmp(&b.template));
    Ok(found)
}

/// What `build` did.
pub enum Built {
    UpToDate(Manifest),
    Rebuilt(Manifest),
}

/// Builds the image of `template` through `proxy` unless the one there has the same recipe
/// hash (or `force`). Builds of one template queue on a lock; the old image stays until the
/// new one is complete.
pub fn build(template: &Resolved, cache_dir: &Path, proxy: &str, force: bool) -> Result<Built> {
    let recipe = template.recipe()?;
    let hash = template.hash()?;
    let dir = dir(cache_dir, &template.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Images hold setuid binaries and devices of their own: only root may traverse them.
    std::fs::set_permissions(cache_dir.join("images"), std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let lock = std::fs::File::create(dir.join(".lock"))?;
    fs2::FileExt::lock_exclusive(&lock).with_context(|| format!("locking {}", dir.display()))?;
    if let Some(manifest) = current(cache_dir, &template.name)? {
        if manifest.template_hash == hash && !force {
            return Ok(Built::UpToDate(manifest));
        }
    }
    // Builds hold the lock: a build directory found now is a killed build's.
    for entry in std::fs::read_dir(&dir)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".build-") {
            std::fs::remove_dir_all(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    check_proxy(proxy)?;
    for repository in &recipe.repositories {
        let url = crate::template::repository_url(repository, template.is_deb())?;
        if url.scheme() == "https" {
            // The proxy refuses CONNECT, so apt and dnf go to https upstreams themselves.
            eprintln!(
                "vzpkg: warning: {} is fetched directly, not through the proxy (https): every build of {} downloads \
                 it again; name an http mirror to have the proxy keep it",
                url, template.name
            );
        }
    }
    let work = tempfile::Builder::new().prefix(".build-").tempdir_in(&dir)?;
    let tar = work.path().join("rootfs.tar");
    let listing = work.path().join("packages.tsv");
    let tool = if template.is_deb() {
        debootstrap(&recipe, proxy, &tar, &listing)?
    } else {
        dnf_installroot(&recipe, proxy, work.path(), &tar, &listing)?
    };
    let packages = parse_listing(&std::fs::read_to_string(&listing).context("reading the image's package list")?);
    for name in &recipe.packages {
        if !packages.iter().any(|p| &p.name == name) {
            bail!("the image of {} was built, but package {name} is not in it", template.name);
        }
    }
    for name in &recipe.removed {
        if packages.iter().any(|p| &p.name == name) {
            bail!("the image of {} still has {name}, which the template removes", template.name);
        }
    }
    let packed = work.path().join(TARBALL);
    let (tarball_sha256, tarball_bytes) = compress(&tar, &packed)?;
    std::fs::remove_file(&tar)?;
    let manifest = Manifest {
        template: template.name.clone(),
        template_hash: hash,
        built_ms: crate::commands::now_millis() as u64,
        tool,
        packages,
        tarball_sha256,
        tarball_bytes,
    };
    let manifest_tmp = work.path().join(MANIFEST);
    std::fs::write(&manifest_tmp, serde_json::to_vec_pretty(&manifest)?)?;
    sync(&packed)?;
    sync(&manifest_tmp)?;
    std::fs::rename(&packed, dir.join(TARBALL))?;
    std::fs::rename(&manifest_tmp, dir.join(MANIFEST))?;
    sync(&dir)?;
    Ok(Built::Rebuilt(manifest))
}

/// Fails early, saying so, when nothing listens at the proxy's address (rather than after the
/// bootstrapper's own errors about each file).
fn check_proxy(proxy: &str) -> Result<()> {
    let url = url::Url::parse(proxy).with_context(|| format!("--proxy {proxy:?} is not a URL"))?;
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        bail!("--proxy {proxy:?} names no host")
    };
    let addresses: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .with_context(|| format!("resolving the proxy's host {host}"))?
        .collect();
    let mut last = None;
    for address in addresses {
        match std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    bail!(
        "the proxy at {proxy} does not answer ({}): start it (`vzpkg proxy`) or name another with --proxy; images are \
         built through it",
        last.map_or("no address".to_string(), |e| e.to_string())
    )
}

fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)?.sync_all().with_context(|| format!("syncing {}", path.display()))
}

/// mmdebstrap into `tar`, through the proxy; the package set written to `listing`.
fn debootstrap(recipe: &crate::template::Recipe, proxy: &str, tar: &Path, listing: &Path) -> Result<String> {
    let mut command = Command::new("mmdebstrap");
    command
        .arg(format!("--variant={}", recipe.variant))
        .arg("--format=tar")
        .arg(format!("--aptopt=Acquire::http::Proxy \"{proxy}\""))
        // The proxy setting is the build's, not the image's.
        .arg("--customize-hook=rm -f \"$1/etc/apt/apt.conf.d/99mmdebstrap\"");
    if !recipe.packages.is_empty() {
        command.arg(format!("--include={}", recipe.packages.join(",")));
    }
    if let Some(arch) = recipe.architecture {
        command.arg(format!("--architectures={arch}"));
    }
    // mmdebstrap has no exclude: what the variant brings and the template removes is purged,
    // by the image's dpkg (the image may have no apt: minbase), all in one run so that dpkg
    // orders them, and refused by dpkg if a package kept needs one. Names are checked package
    // names (no blank, glob or shell character) and come through the environment.
    if !recipe.removed.is_empty() {
        command.env("VZPKG_REMOVE", recipe.removed.join(" ")).arg(
            "--customize-hook=gone=; for name in $VZPKG_REMOVE; do \
             if dpkg-query --admindir=\"$1/var/lib/dpkg\" -W \"$name\" >/dev/null 2>&1; then gone=\"$gone $name\"; fi; done; \
             if [ -n \"$gone\" ]; then chroot \"$1\" dpkg --purge $gone; fi",
        );
    }
    command.env("VZPKG_LISTING", listing).arg(
        "--customize-hook=dpkg-query --admindir=\"$1/var/lib/dpkg\" -W -f='${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Architecture}\\n' \
         >\"$VZPKG_LISTING\"",
    );
    command.arg(recipe.suite).arg(tar).args(&recipe.repositories);
    run(&mut command, "mmdebstrap")?;
    Ok(format!("mmdebstrap {}", version("mmdebstrap")))
}

/// `dnf --installroot` into a directory, then packed into `tar`; the package set (rpm -qa) to
/// `listing`.
fn dnf_installroot(
    recipe: &crate::template::Recipe,
    proxy: &str,
    work: &Path,
    tar: &Path,
    listing: &Path,
) -> Result<String> {
    let root = work.join("root");
    std::fs::create_dir_all(&root)?;
    if let Some(seed) = recipe.seed {
        let mut unpack = Command::new("tar");
        unpack
            .args(["--extract", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "--same-owner"])
            .args(["--same-permissions", "--file"])
            .arg(seed)
            .arg("-C")
            .arg(&root);
        run(&mut unpack, "tar (unpacking the seed)")?;
    }
    // rpm's database where rpm-based systems keep it, whatever the host's rpm defaults to.
    let home = work.join("home");
    std::fs::create_dir_all(&home)?;
    std::fs::write(home.join(".rpmmacros"), "%_dbpath /var/lib/rpm\n")?;
    let mut command = Command::new("dnf");
    command
        .env("HOME", &home)
        .arg("-y")
        .arg("--quiet")
        .arg(format!("--installroot={}", root.display()))
        .arg(format!("--releasever={}", recipe.suite))
        .arg("--setopt=reposdir=/nonexistent")
        .arg("--setopt=install_weak_deps=False")
        .arg("--setopt=keepcache=0")
        .arg(format!("--setopt=proxy={proxy}"))
        .arg(format!("--setopt=user_agent=vzpkg/{} cache", env!("CARGO_PKG_VERSION")));
    for (i, url) in recipe.repositories.iter().enumerate() {
        command.arg(format!("--repofrompath=vzpkg{i},{url}"));
        command.arg(format!("--setopt=vzpkg{i}.gpgcheck=0"));
        // https directly, as apt does: through the proxy it would be a CONNECT, which it
        // refuses. (Per repository: a `*.proxy` would win over any repository's own setting.)
        let via = if url.starts_with("https:") { "" } else { proxy };
        command.arg(format!("--setopt=vzpkg{i}.proxy={via}"));
    }
    for name in &recipe.removed {
        command.arg(format!("--exclude={name}"));
    }
    command.arg("install").args(&recipe.packages);
    run(&mut command, "dnf")?;
    let rpm = || {
        let mut rpm = Command::new("rpm");
        rpm.env("HOME", &home).arg("--root").arg(&root);
        rpm
    };
    // Excludes only keep dnf from adding a package: one the seed brought is erased, all in one
    // run, refused by rpm if a package kept needs it.
    let seeded: Vec<&str> = recipe
        .removed
        .iter()
        .copied()
        .filter(|name| rpm().args(["-q", "--quiet", name]).status().is_ok_and(|s| s.success()))
        .collect();
    if !seeded.is_empty() {
        run(rpm().arg("-e").args(&seeded), "rpm -e (the template's removals)")?;
    }
    let query = rpm()
        .args(["-qa", "--qf", "ii \t%{NAME}\t%{EPOCH}:%{VERSION}-%{RELEASE}\t%{ARCH}\n"])
        .output()
        .context("running rpm -qa on the image")?;
    if !query.status.success() {
        bail!("rpm -qa on the image failed: {}", String::from_utf8_lossy(&query.stderr));
    }
    std::fs::write(listing, String::from_utf8_lossy(&query.stdout).replace("(none):", ""))?;
    let mut pack = Command::new("tar");
    pack.args(["--create", "--file"])
        .arg(tar)
        .args(["--sparse", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "--one-file-system", "-C"])
        .arg(&root)
        .arg(".");
    run(&mut pack, "tar")?;
    Ok(format!("dnf {}", version("dnf")))
}

fn version(tool: &str) -> String {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().last().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command.stdin(Stdio::null()).status().with_context(|| format!("running {what} (is it installed?)"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `STATUS\tNAME\tVERSION\tARCH` lines; only installed packages.
fn parse_listing(text: &str) -> Vec<Package> {
    let mut packages: Vec<Package> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let status = f.next()?;
            let (name, version, arch) = (f.next()?, f.next()?, f.next()?);
            (status.starts_with("ii") && name != "gpg-pubkey").then(|| Package {
                name: name.to_string(),
                version: version.to_string(),
                arch: arch.to_string(),
            })
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    packages
}

/// zstd-compresses `from` into `to`; its sha256 and size.
fn compress(from: &Path, to: &Path) -> Result<(String, u64)> {
    struct Hashing<W> {
        inner: W,
        hash: Sha256,
        bytes: u64,
    }
    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hash.update(&buf[..n]);
            self.bytes += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let input = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let out = Hashing { inner: std::fs::File::create(to)?, hash: Sha256::new(), bytes: 0 };
    let mut encoder = zstd::stream::Encoder::new(out, 3)?;
    std::io::copy(&mut std::io::BufReader::new(input), &mut encoder)?;
    let out = encoder.finish()?;
    Ok((hex::encode(out.hash.finalize()), out.bytes))
}

/// Unpacks an image tarball into the empty directory `root` (owners, modes, xattrs and file
/// capabilities as they are in the image), checking on the way that it is the tarball whose
/// sha256 the manifest read names: a rebuild may have replaced it meanwhile. GNU tar, not the
/// tar crate: the crate writes device nodes (an image's /dev/null) and FIFOs as plain files and
/// knows no ACLs.
pub fn unpack(tarball: &Path, sha256: &str, root: &Path) -> Result<()> {
    struct Hashing<R> {
        inner: R,
        hash: Sha256,
    }
    impl<R: std::io::Read> std::io::Read for Hashing<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.hash.update(&buf[..n]);
            Ok(n)
        }
    }
    let input = std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut decoder = zstd::stream::Decoder::new(Hashing { inner: input, hash: Sha256::new() })?;
    let mut tar = Command::new("tar")
        .args(["--extract", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "--same-owner"])
        .args(["--same-permissions", "--no-overwrite-dir", "-C"])
        .arg(root)
        .stdin(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let mut stdin = tar.stdin.take().expect("piped");
    let copied = std::io::copy(&mut decoder, &mut stdin);
    drop(stdin);
    let status = tar.wait()?;
    copied.with_context(|| format!("decompressing {}", tarball.display()))?;
    if !status.success() {
        bail!("tar failed unpacking {} ({status})", tarball.display());
    }
    // Whatever follows the last frame counts too.
    let mut rest = decoder.finish();
    std::io::copy(&mut rest, &mut std::io::sink())?;
    let read = hex::encode(rest.into_inner().hash.finalize());
    if read != sha256 {
        bail!(
            "{} is not the image its manifest describes (sha256 {read}, not {sha256}): rebuilt meanwhile? Run again",
            tarball.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_keeps_installed_packages_only() {
        let text = "ii \tless\t590-2\tamd64\nrc \told\t1\tamd64\nii \tgpg-pubkey\t1\t(none)\nbroken line\n";
        assert_eq!(
            parse_listing(text),
            [Package { name: "less".into(), version: "590-2".into(), arch: "amd64".into() }]
        );
    }
}
