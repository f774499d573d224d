//! The hash chain, as clients walk it: what each downloaded index vouches for (InRelease →
//! Packages → .deb; repomd.xml → primary.xml → .rpm), and the OpenPGP signatures of the chain's
//! roots, checked with gpgv (as apt does) against a keyring configured per upstream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use vzpkg_adapters::compress::{self, Compression};
use vzpkg_adapters::{apt, armor, rpm, FileHash, FileKind};

use vzpkg_adapters::ParseError;

use crate::catalog::{background_priority, Catalog, Expected, Learned, Learner, Role};
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
    /// Remap NAME or `host[:port]` → keyring files (a signature by a key of any of them).
    keyrings: BTreeMap<String, Vec<PathBuf>>,
}

impl Verifier {
    pub fn new(keyrings: BTreeMap<String, Vec<PathBuf>>) -> Verifier {
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
            source_blob: None,
        })
    }

    fn keyring(&self, target: &Target) -> Option<&[PathBuf]> {
        self.keyrings.get(&target.origin).map(Vec::as_slice).filter(|k| !k.is_empty())
    }

    /// Whether `target`'s roots must carry a good signature.
    pub fn has_keyring(&self, target: &Target) -> bool {
        self.keyring(target).is_some()
    }

    /// Checks a downloaded root before it is stored (blocking: runs gpgv), and returns what it
    /// may be trusted for, if anything. `signature` is the detached signature fetched beside a
    /// Release or repomd.xml. An Err means the file must not be stored: a root whose framing or
    /// signature is bad is refused whole, never trimmed to its good part.
    pub fn check_root(
        &self,
        catalog: &Catalog,
        store: &Store,
        target: &Target,
        file: &Path,
        signature: Option<&[u8]>,
    ) -> Result<Option<Trusted>> {
        let Some(root) = Root::of(&target.key) else {
            return Ok(None);
        };
        let key = target.key.as_str();
        let bytes = std::fs::read(file).map_err(Error::Store)?;
        let keyring = self.keyring(target);
        match root {
            Root::InRelease | Root::Release => {
                // apt refuses text outside the signed message whether or not it checks the
                // signature, so nothing is learned from such a file without a keyring either.
                let signed = armor::clearsigned(&String::from_utf8_lossy(&bytes)).map_err(|e| framing(key, e))?;
                match (keyring, root, signature) {
                    // Trusted on first use: the signed part, or the whole of an unsigned Release.
                    (None, ..) => Ok(Some(Trusted::root(signed.map(String::into_bytes).unwrap_or(bytes)))),
                    // The text gpgv itself took as signed, not our reading of the file.
                    (Some(keyring), Root::InRelease, _) => Ok(Some(Trusted::root(clearsigned(keyring, key, &bytes)?))),
                    (Some(keyring), _, Some(signature)) => {
                        detached(keyring, key, signature, &bytes)?;
                        Ok(Some(Trusted::root(bytes)))
                    }
                    // Trusted only once its detached signature has been checked.
                    (Some(_), _, None) => Ok(None),
                }
            }
            Root::Repomd => match (keyring, signature) {
                (None, _) => Ok(Some(Trusted::root(bytes))),
                (Some(keyring), Some(signature)) => {
                    detached(keyring, key, signature, &bytes)?;
                    Ok(Some(Trusted::root(bytes)))
                }
                (Some(_), None) => Ok(None),
            },
            Root::ReleaseGpg | Root::RepomdAsc => {
                let Some(keyring) = keyring else {
                    return Ok(None);
                };
                let signed_key = key.rsplit_once('.').expect("has an extension").0;
                let Some(signed) = catalog.get(signed_key) else {
                    tracing::info!(%key, "signature fetched before the file it signs: nothing to check yet");
                    return Ok(None);
                };
                // Read once: the bytes checked are the bytes learned from, whatever replaces the
                // catalog entry meanwhile.
                let data = std::fs::read(store.blob_path(&signed.blob)).map_err(Error::Store)?;
                detached(keyring, key, &bytes, &data)?;
                Ok(Some(Trusted { text: data, signed: Some((signed_key.to_string(), signed.blob)) }))
            }
        }
    }

    /// Learns what a stored file vouches for into the catalog (blocking: reads, parses and
    /// waits for the commits). A root vouches through `trusted`, from `check_root`, and for
    /// nothing without it; any other file through `role`, from the index that listed it. A
    /// Packages file or primary.xml is read from its blob as a stream and learned in batches:
    /// what is held is a read buffer, the decoder's window and a batch, whatever its size.
    pub fn learn(
        &self,
        store: &Store,
        catalog: &Catalog,
        target: &Target,
        blob: &str,
        trusted: Option<&Trusted>,
        role: Option<Role>,
    ) -> Result<Learned> {
        let key = target.key.as_str();
        let parse = |e: ParseError| Error::Verify(format!("{key}: {e}"));
        let dir = key.rsplit_once('/').map(|(d, _)| d).unwrap_or(key);
        let mut learner = catalog.learner(key, blob);
        let open = |compression| -> Result<_> {
            let file = std::fs::File::open(store.blob_path(blob)).map_err(Error::Store)?;
            compress::reader(compression, std::io::BufReader::with_capacity(64 << 10, file)).map_err(parse)
        };
        match (Root::of(key), trusted, role) {
            (Some(Root::InRelease | Root::Release | Root::ReleaseGpg), Some(trusted), _) => {
                let release = apt::release::parse(&trusted.text).map_err(parse)?;
                for (k, e) in release_entries(dir, &release, key) {
                    learner.add(k, &e);
                }
            }
            (Some(Root::Repomd | Root::RepomdAsc), Some(trusted), _) => {
                let base = dir.strip_suffix("/repodata").unwrap_or(dir);
                for m in rpm::repomd::parse(&trusted.text).map_err(parse)? {
                    let role = match m.kind.as_str() {
                        "primary" => Role::RpmPrimary(Compression::of(&m.file.path)),
                        _ => Role::Metadata,
                    };
                    let (k, e) = expect(base, &m.file, role, key);
                    learner.add(k, &e);
                }
            }
            (None, _, Some(Role::AptPackages(compression))) => {
                // Filenames are relative to the archive root, the part before `/dists/`.
                let archive = key.rsplit_once("/dists/").map(|(a, _)| a).unwrap_or(dir);
                return in_background(learner, |learner| {
                    apt::packages::read(open(compression)?, |deb| -> std::result::Result<(), ParseError> {
                        let (k, e) = expect(archive, &deb.file, Role::Package, key);
                        learner.add(k, &e);
                        Ok(())
                    })
                    .map_err(parse)
                });
            }
            (None, _, Some(Role::RpmPrimary(compression))) => {
                let base = key.rsplit_once("/repodata/").map(|(b, _)| b).unwrap_or(dir);
                return in_background(learner, |learner| {
                    rpm::primary::read(open(compression)?, |file| -> std::result::Result<(), ParseError> {
                        let (k, e) = expect(base, &file, Role::Package, key);
                        learner.add(k, &e);
                        Ok(())
                    })
                    .map_err(parse)
                });
            }
            _ => {}
        }
        learner.finish()
    }
}

/// Reads a big index into `learner` on a thread of its own at background priority, so that
/// hits keep the CPU while it is learned. What was read before a fault is learned all the same:
/// the file matched its hash.
fn in_background<'a>(
    mut learner: Learner<'a>,
    read: impl FnOnce(&mut Learner<'a>) -> Result<()> + Send,
) -> Result<Learned> {
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            background_priority();
            let read = read(&mut learner);
            (learner.finish(), read)
        });
        let (learned, read) = reader.join().map_err(|_| Error::Verify("reading an index panicked".into()))?;
        let learned = learned?;
        read?;
        Ok(learned)
    })
}

/// What a root that checked out vouches for: the exact bytes its hashes are read from.
#[derive(Debug)]
pub struct Trusted {
    /// A Release (an InRelease's signed text, as gpgv gave it) or a repomd.xml.
    pub text: Vec<u8>,
    /// For a detached signature: the key and blob of the file it signed, which is now verified.
    pub signed: Option<(String, String)>,
}

impl Trusted {
    fn root(text: Vec<u8>) -> Trusted {
        Trusted { text, signed: None }
    }
}

fn framing(key: &str, e: vzpkg_adapters::ParseError) -> Error {
    Error::Verify(format!("{key}: {e} (apt refuses such a file too)"))
}

fn expect(base: &str, file: &FileHash, role: Role, source: &str) -> (String, Expected) {
    let expected =
        Expected { sha256: file.sha256.clone(), size: file.size, role, source: source.to_string(), source_blob: None };
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

/// Checks a detached signature of `data`; the signature must be armor and nothing else.
fn detached(keyring: &[PathBuf], key: &str, signature: &[u8], data: &[u8]) -> Result<()> {
    armor::detached(signature).map_err(|e| framing(key, e))?;
    let home = tempfile::tempdir().map_err(Error::Store)?;
    let (signature_file, data_file) = (home.path().join("signature"), home.path().join("data"));
    std::fs::write(&signature_file, signature).map_err(Error::Store)?;
    std::fs::write(&data_file, data).map_err(Error::Store)?;
    gpgv(keyring, key, home.path(), &[&signature_file, &data_file])
}

/// Checks a clearsigned message and returns the text gpgv found signed.
fn clearsigned(keyring: &[PathBuf], key: &str, message: &[u8]) -> Result<Vec<u8>> {
    let home = tempfile::tempdir().map_err(Error::Store)?;
    let (message_file, text_file) = (home.path().join("message"), home.path().join("text"));
    std::fs::write(&message_file, message).map_err(Error::Store)?;
    gpgv(keyring, key, home.path(), &["--output".as_ref(), &text_file, &message_file])?;
    std::fs::read(&text_file).map_err(Error::Store)
}

/// Runs gpgv with `home` as its GnuPG home: copies of the bytes to check are written there, so
/// what gpgv reads is exactly what the caller holds.
fn gpgv(keyring: &[PathBuf], key: &str, home: &Path, args: &[&Path]) -> Result<()> {
    let mut gpgv = Command::new("gpgv");
    gpgv.env("GNUPGHOME", home);
    for k in keyring {
        gpgv.arg("--keyring").arg(k);
    }
    let out = gpgv
        .args(args)
        .output()
        .map_err(|e| Error::Verify(format!("cannot run gpgv (install the gpgv package): {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr);
    let why = why.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no reason given");
    let names: Vec<String> = keyring.iter().map(|k| k.display().to_string()).collect();
    Err(Error::Verify(format!("{key}: signature does not verify with keyring {}: {why}", names.join(", "))))
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

    /// Without a keyring a root is trusted on first use, but only for its signed part, and one
    /// with text outside that part is refused rather than trimmed.
    #[test]
    fn a_root_is_learned_from_its_signed_part_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let catalog = Catalog::open(&dir.path().join("index.sqlite"), |_| true).unwrap();
        let verifier = Verifier::new(BTreeMap::new());
        let target = Target {
            key: "remap:d/dists/s/InRelease".into(),
            origin: "d".into(),
            upstreams: Vec::new(),
            kind: FileKind::Index,
            host: None,
        };
        let hash = |n: u8| format!("{n:02x}").repeat(32);
        let signed = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nSHA256:\n {} 3 main/binary-amd64/Packages\n\
             -----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n",
            hash(1)
        );
        let file = dir.path().join("InRelease");
        let check = |text: &str| {
            std::fs::write(&file, text).unwrap();
            verifier.check_root(&catalog, &store, &target, &file, None)
        };
        let before = format!("SHA256:\n {} 3 extra/Packages\n\n{signed}", hash(2));
        let err = check(&before).unwrap_err();
        assert!(matches!(&err, Error::Verify(why) if why.contains("text before the signed message")), "{err}");
        assert!(check(&format!("{signed}\nSuite: x\n")).is_err(), "text after the signature");

        let trusted = check(&signed).unwrap().expect("trusted on first use");
        assert!(String::from_utf8(trusted.text.clone()).unwrap().starts_with("SHA256:"));
        let blob = hash(3);
        assert_eq!(
            verifier.learn(&store, &catalog, &target, &blob, None, None).unwrap().files,
            0,
            "untrusted: nothing"
        );
        assert_eq!(catalog.expected_count(), 0);
        let learned = verifier.learn(&store, &catalog, &target, &blob, Some(&trusted), None).unwrap();
        assert_eq!(learned.files, 1);
        let packages = catalog.expected("remap:d/dists/s/main/binary-amd64/Packages").unwrap();
        assert_eq!((packages.sha256, packages.source_blob), (hash(1), Some(blob)));
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
