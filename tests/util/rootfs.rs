//! Debian container roots for the wrapper tests: a tarball made once with mmdebstrap (by
//! contrib/test.sh, kept outside the repository) and extracted afresh for each test.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::run;

/// Where contrib/test.sh leaves the tarball; VZPKG_TEST_ROOTFS overrides it.
pub fn tarball() -> PathBuf {
    let path = std::env::var_os("VZPKG_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vzpkg-tests/debian-apt.tar"));
    assert!(
        path.is_file(),
        "no container tarball at {}: run contrib/test.sh (as root), which makes it with mmdebstrap",
        path.display()
    );
    path
}

/// The wrapper tests create namespaces and mounts: they need root and say so.
pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root (namespaces, mounts): run contrib/test.sh as root");
}

pub struct Rootfs {
    pub path: PathBuf,
}

impl Rootfs {
    /// A fresh Debian root at `dir` whose only apt source is `source_line`.
    pub fn new(dir: &Path, source_line: &str) -> Rootfs {
        require_root();
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("tar").arg("-C").arg(dir).arg("-xf").arg(tarball()));
        let root = Rootfs { path: dir.to_path_buf() };
        for f in std::fs::read_dir(dir.join("etc/apt/sources.list.d")).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        std::fs::write(dir.join("etc/apt/sources.list"), format!("{source_line}\n")).unwrap();
        root
    }

    /// `dir:/path`, as vzpkg takes it.
    pub fn ct(&self) -> String {
        format!("dir:{}", self.path.display())
    }

    /// Version of an installed package, from the root's dpkg database (read by the host's dpkg).
    pub fn installed_version(&self, package: &str) -> Option<String> {
        let out = Command::new("dpkg-query")
            .arg(format!("--admindir={}", self.path.join("var/lib/dpkg").display()))
            .args(["-W", "-f", "${Status} ${Version}", package])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.strip_prefix("install ok installed ").map(str::to_string)
    }
}
