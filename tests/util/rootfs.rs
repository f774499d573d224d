//! Container roots for the wrapper tests: a Debian root from a tarball made once with mmdebstrap
//! (by contrib/test.sh, kept outside the repository) and extracted afresh for each test, or a
//! minimal busybox root built in a moment for tests that only run their own programs inside.

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

/// A Debian root with Debian's rpm, dnf and zypper (contrib/test.sh makes it); VZPKG_TEST_RPM_ROOTFS
/// overrides it.
pub fn rpm_tarball() -> PathBuf {
    let path = std::env::var_os("VZPKG_TEST_RPM_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vzpkg-tests/debian-rpm.tar"));
    assert!(path.is_file(), "no rpm container tarball at {}: run contrib/test.sh (as root)", path.display());
    path
}

/// The real iputils-ping and libcap2-bin that contrib/test.sh downloads: ping's postinst gives
/// it a file capability with libcap2-bin's setcap.
pub fn capability_debs() -> Vec<PathBuf> {
    let dir = std::env::var_os("VZPKG_TEST_DEBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vzpkg-tests/debs"));
    ["libcap2-bin_", "iputils-ping_"]
        .iter()
        .map(|prefix| {
            std::fs::read_dir(&dir)
                .ok()
                .and_then(|entries| {
                    entries.map(|e| e.unwrap().path()).find(|p| {
                        let name = p.file_name().unwrap().to_string_lossy();
                        name.starts_with(prefix) && name.ends_with(".deb")
                    })
                })
                .unwrap_or_else(|| panic!("no {prefix}*.deb in {}: run contrib/test.sh", dir.display()))
        })
        .collect()
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

    /// A minimal root at `dir` that vzpkg accepts as a dpkg container: the host's static busybox
    /// (Debian's busybox-static) with every applet linked in /bin, an empty dpkg database and
    /// the directories the sandbox mounts on. No apt: for tests that run programs of their own.
    pub fn busybox(dir: &Path) -> Rootfs {
        require_root();
        let busybox = Path::new("/bin/busybox");
        let applets = run(Command::new(busybox).arg("--list"));
        assert!(applets.lines().any(|a| a == "sh"), "{} is not busybox (run contrib/test.sh)", busybox.display());
        for sub in
            ["bin", "proc", "dev", "tmp", "etc", "root", "var/lib/dpkg", "var/cache/apt/archives", "var/lib/apt/lists"]
        {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::set_permissions(dir.join("tmp"), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
        std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
        for applet in applets.lines().filter(|a| *a != "busybox") {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
        std::fs::write(dir.join("var/lib/dpkg/status"), "").unwrap();
        Rootfs { path: dir.to_path_buf() }
    }

    /// A fresh rpm root at `dir`: the rpm tarball with rpm's database where rpm-based systems
    /// keep it (/var/lib/rpm, SQLite, made empty here) and one repository at `baseurl` for dnf
    /// (carrying a proxy of its own that nobody answers at, as roots from older caches do) and
    /// for zypper.
    pub fn rpm(dir: &Path, baseurl: &str) -> Rootfs {
        require_root();
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("tar").arg("-C").arg(dir).arg("-xf").arg(rpm_tarball()));
        std::fs::create_dir_all(dir.join("etc/yum.repos.d")).unwrap();
        std::fs::create_dir_all(dir.join("etc/rpm")).unwrap();
        std::fs::write(dir.join("etc/rpm/macros.dbpath"), "%_dbpath /var/lib/rpm\n").unwrap();
        std::fs::write(
            dir.join("etc/yum.repos.d/test.repo"),
            format!("[test]\nname=test\nbaseurl={baseurl}\nenabled=1\ngpgcheck=0\nproxy=http://10.9.9.9:3128\n"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("etc/zypp/repos.d")).unwrap();
        std::fs::write(
            dir.join("etc/zypp/repos.d/test.repo"),
            format!("[test]\nname=test\nbaseurl={baseurl}\nenabled=1\nautorefresh=1\ngpgcheck=0\n"),
        )
        .unwrap();
        run(Command::new("rpm").arg("--root").arg(dir).args(["--dbpath", "/var/lib/rpm", "--initdb"]));
        Rootfs { path: dir.to_path_buf() }
    }

    /// `version-release` of an installed package, from the root's rpm database (read by the
    /// host's rpm).
    pub fn rpm_version(&self, package: &str) -> Option<String> {
        let out = Command::new("rpm")
            .arg("--root")
            .arg(&self.path)
            .args(["--dbpath", "/var/lib/rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", package])
            .output()
            .unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
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
