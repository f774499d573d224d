//! Builds real package repositories in a temp dir: .deb files with dpkg-deb indexed by
//! apt-ftparchive, and .rpm files with rpmbuild indexed by createrepo_c.

use std::path::Path;
use std::process::Command;

use super::run;

pub struct Pkg {
    pub name: &'static str,
    pub version: &'static str,
    /// Bytes of incompressible content inside the package.
    pub size: usize,
    pub depends: Option<&'static str>,
    /// Debian's Priority field (none by default).
    pub priority: Option<&'static str>,
}

impl Pkg {
    pub fn new(name: &'static str, version: &'static str, size: usize) -> Pkg {
        Pkg { name, version, size, depends: None, priority: None }
    }

    pub fn priority(mut self, priority: &'static str) -> Pkg {
        self.priority = Some(priority);
        self
    }

    pub fn depends(mut self, on: &'static str) -> Pkg {
        self.depends = Some(on);
        self
    }
}

/// Deterministic bytes that do not compress, so a package's size is what the test asked for.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A Debian repository at `root` with suite `stable`, component `main`, arch amd64 (packages
/// are `Architecture: all`). Returns the pool paths of the .deb files, relative to `root`.
pub fn deb_repo(root: &Path, packages: &[Pkg]) -> Vec<String> {
    let work = root.join(".build");
    let pool = root.join("pool/main");
    std::fs::create_dir_all(&pool).unwrap();
    let mut debs = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let dir = work.join(p.name);
        std::fs::create_dir_all(dir.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(dir.join("usr/share").join(p.name)).unwrap();
        let depends = p.depends.map(|d| format!("Depends: {d}\n")).unwrap_or_default()
            + &p.priority.map(|d| format!("Priority: {d}\n")).unwrap_or_default();
        std::fs::write(
            dir.join("DEBIAN/control"),
            format!(
                "Package: {}\nVersion: {}\nArchitecture: all\nMaintainer: vzpkg tests <tests@example.org>\n{depends}Description: test package {}\n",
                p.name, p.version, p.name
            ),
        )
        .unwrap();
        std::fs::write(dir.join("usr/share").join(p.name).join("data"), noise(p.size, i as u64 + 1)).unwrap();
        let file = format!("pool/main/{}_{}_all.deb", p.name, p.version);
        run(Command::new("dpkg-deb").args(["-Znone", "--root-owner-group", "--build"]).arg(&dir).arg(root.join(&file)));
        debs.push(file);
    }
    std::fs::remove_dir_all(&work).unwrap();
    deb_index(root);
    debs
}

/// How the suite's index is written.
#[derive(Default)]
pub struct IndexOptions<'a> {
    /// Also serve index files under `by-hash/SHA256/` and say so in Release.
    pub by_hash: bool,
    /// Sign: InRelease (clearsigned) and Release.gpg (detached).
    pub signer: Option<&'a super::gpg::Gpg>,
}

/// (Re)writes Packages, Packages.gz and Release for everything under `root/pool`.
pub fn deb_index(root: &Path) {
    deb_index_with(root, &IndexOptions::default());
}

pub fn deb_index_with(root: &Path, options: &IndexOptions) {
    let dists = root.join("dists/stable");
    let bin = dists.join("main/binary-amd64");
    std::fs::create_dir_all(&bin).unwrap();
    let packages = run(Command::new("apt-ftparchive").arg("packages").arg("pool").current_dir(root));
    std::fs::write(bin.join("Packages"), &packages).unwrap();
    run(Command::new("gzip").args(["-9nkf"]).arg(bin.join("Packages")));
    // apt prefers .xz when Release lists it: the proxy reads it too.
    run(Command::new("xz").args(["-9kf"]).arg(bin.join("Packages")));
    // apt-ftparchive would list a Release left from an earlier run in the new one.
    for old in ["Release", "InRelease", "Release.gpg"] {
        let _ = std::fs::remove_file(dists.join(old));
    }
    let by_hash = format!("APT::FTPArchive::DoByHash={}", options.by_hash);
    let release = run(Command::new("apt-ftparchive")
        .args([
            "-o",
            "APT::FTPArchive::Release::Suite=stable",
            "-o",
            "APT::FTPArchive::Release::Codename=stable",
            "-o",
            "APT::FTPArchive::Release::Architectures=amd64",
            "-o",
            "APT::FTPArchive::Release::Components=main",
            // Like Debian's own archive: MD5Sum and SHA256 only.
            "-o",
            "APT::FTPArchive::SHA1=false",
            "-o",
            "APT::FTPArchive::SHA512=false",
            "-o",
            &by_hash,
            "release",
            ".",
        ])
        .current_dir(&dists));
    std::fs::write(dists.join("Release"), release).unwrap();
    if let Some(gpg) = options.signer {
        gpg.clearsign(&dists.join("Release"), &dists.join("InRelease"));
        gpg.detach_sign(&dists.join("Release"), &dists.join("Release.gpg"));
    }
}

/// An rpm-md repository at `root` (noarch packages, uncompressed payloads) built with rpmbuild
/// and createrepo_c. Returns the .rpm paths relative to `root`.
pub fn rpm_repo(root: &Path, packages: &[Pkg]) -> Vec<String> {
    let top = root.join(".build");
    std::fs::create_dir_all(top.join("SPECS")).unwrap();
    std::fs::create_dir_all(top.join("SOURCES")).unwrap();
    let mut rpms = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let data = top.join("SOURCES").join(format!("{}.data", p.name));
        std::fs::write(&data, noise(p.size, 100 + i as u64)).unwrap();
        let requires = p.depends.map(|d| format!("Requires: {d}\n")).unwrap_or_default();
        let spec = top.join("SPECS").join(format!("{}.spec", p.name));
        std::fs::write(
            &spec,
            format!(
                "Name: {name}\nVersion: {version}\nRelease: 1\nSummary: test package\nLicense: MIT\nBuildArch: noarch\n{requires}\
                 %description\ntest package {name}\n\
                 %install\nmkdir -p %{{buildroot}}/usr/share/{name}\ncp {data} %{{buildroot}}/usr/share/{name}/data\n\
                 %files\n/usr/share/{name}/data\n",
                name = p.name,
                version = p.version,
                data = data.display(),
            ),
        )
        .unwrap();
        run(Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("--define")
            .arg(format!("_rpmdir {}", root.join("Packages").display()))
            .args(["--define", "_binary_payload w0.ufdio", "--define", "_build_id_links none", "--quiet"])
            .arg(&spec));
        rpms.push(format!("Packages/noarch/{}-{}-1.noarch.rpm", p.name, p.version));
    }
    std::fs::remove_dir_all(&top).unwrap();
    // xz-compressed metadata (Debian's createrepo_c has no zstd; the parser's zstd path has a
    // unit test of its own).
    run(Command::new("createrepo_c").args(["--quiet", "--general-compress-type=xz"]).arg(root));
    for rpm in &rpms {
        assert!(root.join(rpm).is_file(), "rpmbuild did not make {rpm}");
    }
    rpms
}
