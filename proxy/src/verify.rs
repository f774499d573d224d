//! The hash chain, as clients walk it: what each downloaded index vouches for (InRelease →
//! Packages → .deb; repomd.xml → primary.xml → .rpm), and the OpenPGP signatures of the chain's
//! roots, checked with gpgv (as apt does) against a keyring configured per upstream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use vzpkg_adapters::compress::{decompress, Compression};
use vzpkg_adapters::{apt, rpm, FileHash, FileKind};

use crate::catalog::{Catalog, Expected, Role};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::target::Target;

/// The files that start a chain (or sign one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    /// Clearsigned Release.
    InRelease,
    Release,
    /// Detached signature of the Release beside it.
    ReleaseGpg,
    Repomd,
    /// Detached signature of the repomd.xml beside it.
    RepomdAsc,
}

impl Root {
    pub fn of(key: &str) -> Option<Root> {
        match key.rsplit('/').next()? {
            "InRelease" => Some(Root::InRelease),
            "Release" => Some(Root::Release),
            "Release.gpg" => Some(Root::ReleaseGpg),
            "repomd.xml" if key.ends_with("/repodata/repomd.xml") => Some(Root::Repomd),
            "repomd.xml.asc" if key.ends_with("/repodata/repomd.xml.asc") => Some(Root::RepomdAsc),
            _ => None,
        }
    }
}

pub struct Verifier {
    /// Remap NAME or `host[:port]` → keyring file.
    keyrings: BTreeMap<String, PathBuf>,
}

impl Verifier {
    pub fn new(keyrings: BTreeMap<String, PathBuf>) -> Verifier {
        Verifier { keyrings }
    }

    /// What `key` must hash to: from an index seen before, or from its own by-hash path.
    /// Roots are the trust anchors: no index pins them, even one that (wrongly) lists itself.
    pub fn expected(&self, catalog: &Catalog, key: &str, kind: FileKind) -> Option<Expected> {
        if Root::of(key).is_some() {
            return None;
        }
        if let Some(e) = catalog.expected(key) {
            return Some(e);
        }
        if kind != FileKind::ByHash {
            return None;
        }
        let mut segments = key.rsplit('/');
        let (hash, algorithm) = (segments.next()?, segments.next()?);
        let valid = algorithm == "SHA256" && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| Expected {
            sha256: hash.to_ascii_lowercase(),
            size: None,
            role: Role::Metadata,
            source: key.to_string(),
            archive_name: None,
        })
    }

    fn keyring(&self, target: &Target) -> Option<&Path> {
        self.keyrings.get(&target.origin).map(PathBuf::as_path)
    }

    /// Checks a downloaded root before it is stored (blocking: runs gpgv). Returns whether the
    /// file is a root whose hashes may be trusted.
    pub fn check_root(&self, catalog: &Catalog, store: &Store, target: &Target, file: &Path) -> Result<bool> {
        let Some(root) = Root::of(&target.key) else {
            return Ok(false);
        };
        let Some(keyring) = self.keyring(target) else {
            return Ok(matches!(root, Root::InRelease | Root::Release | Root::Repomd));
        };
        match root {
            Root::InRelease => {
                gpgv(keyring, &[file])?;
                Ok(true)
            }
            // Trusted only once its detached signature has been checked.
            Root::Release | Root::Repomd => Ok(false),
            Root::ReleaseGpg | Root::RepomdAsc => {
                let signed_key = target.key.rsplit_once('.').expect("has an extension").0;
                let Some(signed) = catalog.get(signed_key) else {
                    tracing::info!(key = %target.key, "signature fetched before the file it signs: nothing to check yet");
                    return Ok(false);
                };
                gpgv(keyring, &[file, &store.blob_path(&signed.blob)])?;
                Ok(true)
            }
        }
    }

    /// What a stored file vouches for, keyed like the catalog (blocking: reads and parses it).
    /// `trusted_root` comes from `check_root`; `role` from the index that listed this file.
    pub fn learn(
        &self,
        catalog: &Catalog,
        store: &Store,
        target: &Target,
        blob: &str,
        trusted_root: bool,
        role: Option<Role>,
    ) -> Result<Vec<(String, Expected)>> {
        let key = target.key.as_str();
        let read = |blob: &str| std::fs::read(store.blob_path(blob)).map_err(Error::Store);
        let parse = |e: vzpkg_adapters::ParseError| Error::Verify(format!("{key}: {e}"));
        let dir = key.rsplit_once('/').map(|(d, _)| d).unwrap_or(key);
        match (Root::of(key), role) {
            (Some(Root::InRelease | Root::Release | Root::ReleaseGpg), _) if trusted_root => {
                // What a Release.gpg vouches for is the Release beside it.
                let release_blob = match key.ends_with(".gpg") {
                    true => catalog.get(&format!("{dir}/Release")).map(|e| e.blob),
                    false => Some(blob.to_string()),
                };
                let Some(release_blob) = release_blob else {
                    return Ok(Vec::new());
                };
                let release = apt::release::parse(&read(&release_blob)?).map_err(parse)?;
                Ok(release_entries(dir, &release, key))
            }
            (Some(Root::Repomd | Root::RepomdAsc), _) if trusted_root => {
                let repomd_blob = match key.ends_with(".asc") {
                    true => catalog.get(&format!("{dir}/repomd.xml")).map(|e| e.blob),
                    false => Some(blob.to_string()),
                };
                let Some(repomd_blob) = repomd_blob else {
                    return Ok(Vec::new());
                };
                let base = dir.strip_suffix("/repodata").unwrap_or(dir);
                let files = rpm::repomd::parse(&read(&repomd_blob)?).map_err(parse)?;
                Ok(files
                    .into_iter()
                    .map(|m| {
                        let role = match m.kind.as_str() {
                            "primary" => Role::RpmPrimary(Compression::of(&m.file.path)),
                            _ => Role::Metadata,
                        };
                        expect(base, &m.file, role, key)
                    })
                    .collect())
            }
            (_, Some(Role::AptPackages(compression))) => {
                let text = decompress(compression, &read(blob)?).map_err(parse)?;
                let debs = apt::packages::parse(&text).map_err(parse)?;
                // Filenames are relative to the archive root, the part before `/dists/`.
                let archive = key.rsplit_once("/dists/").map(|(a, _)| a).unwrap_or(dir);
                Ok(debs
                    .into_iter()
                    .map(|deb| {
                        let (k, mut e) = expect(archive, &deb.file, Role::Package, key);
                        e.archive_name = deb.archive_name;
                        (k, e)
                    })
                    .collect())
            }
            (_, Some(Role::RpmPrimary(compression))) => {
                let text = decompress(compression, &read(blob)?).map_err(parse)?;
                let files = rpm::primary::parse(&text).map_err(parse)?;
                let base = key.rsplit_once("/repodata/").map(|(b, _)| b).unwrap_or(dir);
                Ok(files.iter().map(|f| expect(base, f, Role::Package, key)).collect())
            }
            _ => Ok(Vec::new()),
        }
    }
}

fn expect(base: &str, file: &FileHash, role: Role, source: &str) -> (String, Expected) {
    let expected =
        Expected { sha256: file.sha256.clone(), size: file.size, role, source: source.to_string(), archive_name: None };
    (format!("{base}/{}", file.path), expected)
}

/// Every file a Release lists, and its by-hash twin when the archive serves those.
fn release_entries(dir: &str, release: &apt::release::Release, source: &str) -> Vec<(String, Expected)> {
    let mut out = Vec::new();
    for f in &release.files {
        let name = f.path.rsplit('/').next().unwrap_or(&f.path);
        let role = if name.starts_with("Packages") { Role::AptPackages(Compression::of(name)) } else { Role::Metadata };
        let (key, expected) = expect(dir, f, role, source);
        if release.by_hash {
            let parent = key.rsplit_once('/').map(|(p, _)| p).unwrap_or(dir);
            out.push((format!("{parent}/by-hash/SHA256/{}", f.sha256), expected.clone()));
        }
        out.push((key, expected));
    }
    out
}

/// Runs gpgv: a clearsigned file alone, or a detached signature and its data.
fn gpgv(keyring: &Path, files: &[&Path]) -> Result<()> {
    let home = tempfile::tempdir().map_err(Error::Store)?;
    let out = Command::new("gpgv")
        .env("GNUPGHOME", home.path())
        .arg("--keyring")
        .arg(keyring)
        .args(files)
        .output()
        .map_err(|e| Error::Verify(format!("cannot run gpgv (install the gpgv package): {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr);
    let why = why.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no reason given");
    Err(Error::Verify(format!("signature does not verify with keyring {}: {why}", keyring.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_known_by_name() {
        assert_eq!(Root::of("remap:d/dists/stable/InRelease"), Some(Root::InRelease));
        assert_eq!(Root::of("http://h/d/dists/stable/Release.gpg"), Some(Root::ReleaseGpg));
        assert_eq!(Root::of("remap:el/repodata/repomd.xml"), Some(Root::Repomd));
        assert_eq!(Root::of("remap:el/repomd.xml"), None);
        assert_eq!(Root::of("remap:d/pool/a.deb"), None);
    }

    #[test]
    fn release_entries_include_by_hash_twins() {
        let hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let release = apt::release::Release {
            files: vec![FileHash::new("main/binary-amd64/Packages.xz", hash, Some(0)).unwrap()],
            by_hash: true,
        };
        let entries = release_entries("remap:d/dists/s", &release, "src");
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                format!("remap:d/dists/s/main/binary-amd64/by-hash/SHA256/{hash}").as_str(),
                "remap:d/dists/s/main/binary-amd64/Packages.xz"
            ]
        );
        assert_eq!(entries[1].1.role, Role::AptPackages(Compression::Xz));
    }
}
