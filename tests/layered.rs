//! Layered containers, as root: three containers over one shared read-only image layer, a
//! package installed into one through the sandbox's overlay, whiteouts and opaque directories,
//! `vzpkg flatten` into plain roots dpkg accepts, and a hostile upper layer.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::cli::Served;
use crate::util::repo::{deb_repo, Pkg};
use crate::util::rootfs::{require_root, tarball};

/// Bytes on disk under `dir` (hard links counted once).
fn disk_bytes(dir: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    crate::util::walk(dir, &[])
        .into_iter()
        .filter(|(_, m)| seen.insert((m.dev(), m.ino())))
        .map(|(_, m)| m.blocks() * 512)
        .sum()
}

/// Every path, owner, mode, size and mtime under `dir`: what "unchanged" means for a tree.
fn tree_listing(dir: &Path) -> Vec<String> {
    crate::util::walk(dir, &[])
        .into_iter()
        .map(|(p, m)| format!("{} {}:{} {:o} {} {}", p.display(), m.uid(), m.gid(), m.mode(), m.len(), m.mtime()))
        .collect()
}

/// dpkg's status inside a root, as the host's dpkg reads it.
fn has_package(root: &Path, package: &str) -> bool {
    let out = Command::new("dpkg-query")
        .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${db:Status-Abbrev}", package])
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ii")
}

#[test]
fn layered_containers_share_one_image_keep_their_changes_apart_and_flatten_into_plain_roots() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    deb_repo(
        &t.join("upstream/debian"),
        &[Pkg::new("vzt-alpha", "1.0", 300_000), Pkg::new("vzt-gamma", "0.3", 40_000)],
    );
    let served = Served::start(t, "");
    let source = format!("deb [trusted=yes] {}/debian stable main", served.upstream.url());
    let templates = t.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(
        templates.join("deb.toml"),
        format!("distribution = \"debian\"\nsuite = \"stable\"\nrepositories = [{source:?}]\n"),
    )
    .unwrap();
    let cli = served.cli.templates(&templates);
    let vzpkg = |args: &[&str]| cli.bare(args);
    let ok = |args: &[&str]| cli.bare_ok(args);
    let proxy = served.cli.proxy.clone();

    // The image: the test's Debian root, made the template's image as `vzpkg cache` would
    // leave it (an mmdebstrap build is the templates test's).
    let shown: serde_json::Value = serde_json::from_str(&ok(&["template", "show", "deb", "--json"])).unwrap();
    let images = Path::new(&served.cli.cache).join("images/deb");
    std::fs::create_dir_all(&images).unwrap();
    let mut packed = Vec::new();
    zstd::stream::copy_encode(std::fs::File::open(tarball()).unwrap(), &mut packed, 3).unwrap();
    std::fs::write(images.join("rootfs.tar.zst"), &packed).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&packed))
    };
    let manifest = serde_json::json!({
        "template": "deb", "template_hash": shown["hash"], "built_ms": 0, "tool": "test", "packages": [],
        "tarball_sha256": sha, "tarball_bytes": packed.len(),
    });
    std::fs::write(images.join("manifest.json"), manifest.to_string()).unwrap();

    // Three containers over one image: one lower layer on disk, each container a few KiB.
    ok(&["create", "a", "--template", "deb", "--layered"]);
    let lowers: Vec<PathBuf> = std::fs::read_dir(&images)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("lower-"))
        .collect();
    assert_eq!(lowers.len(), 1, "{lowers:?}");
    let lower = &lowers[0];
    let mode = std::fs::metadata(images.parent().unwrap()).unwrap().mode();
    assert_eq!(mode & 0o077, 0, "the images (setuid binaries among them) are root's alone: {mode:o}");
    let image_bytes = disk_bytes(lower);
    assert!(image_bytes > 50 << 20, "the image is {image_bytes} bytes");
    ok(&["create", "b", "--template", "deb", "--layered"]);
    ok(&["create", "c", "--template", "deb", "--layered"]);
    let dir = |ct: &str| Path::new(&served.cli.state).join("containers").join(ct);
    for ct in ["b", "c"] {
        let used = disk_bytes(&dir(ct));
        assert!(used * 20 < image_bytes, "{ct} uses {used} bytes on disk, the image {image_bytes}");
    }
    assert_eq!(
        std::fs::read_dir(&images)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("lower-"))
            .count(),
        1
    );
    let lower_before = tree_listing(lower);

    // A package installed into a: in a's layer only.
    let set_source = format!("rm -f /etc/apt/sources.list.d/*; echo '{source}' > /etc/apt/sources.list");
    ok(&["exec", "a", "--", "sh", "-c", &set_source]);
    ok(&["update", "-y", "--proxy", &proxy, "a"]);
    let out = ok(&["install", "-y", "--proxy", &proxy, "a", "vzt-alpha"]);
    assert!(out.contains("installed vzt-alpha:all 1.0"), "{out}");
    assert!(ok(&["list", "a"]).lines().any(|l| l.starts_with("vzt-alpha\t1.0")));
    assert!(!ok(&["list", "b"]).lines().any(|l| l.starts_with("vzt-alpha")));
    assert!(dir("a").join("upper/usr/share/vzt-alpha/data").is_file());
    assert!(!dir("b").join("upper/usr/share/vzt-alpha").exists());
    assert!(!has_package(lower, "vzt-alpha"), "the image itself changed");
    // Files the guest made are owned as a plain root's would be: root's is 0 on disk.
    assert_eq!(std::fs::metadata(dir("a").join("upper/usr/share/vzt-alpha/data")).unwrap().uid(), 0);

    // In b: a whiteout (a file of the image removed), an opaque directory (one removed and made
    // again), a file capability set in its layer (by the host: the image has no setcap).
    ok(&[
        "exec",
        "b",
        "--",
        "sh",
        "-c",
        "rm /etc/motd && rm -rf /etc/skel && mkdir /etc/skel && echo mine > /etc/skel/only",
    ]);
    std::fs::create_dir_all(dir("b").join("upper/usr/local/bin")).unwrap();
    std::fs::copy("/bin/true", dir("b").join("upper/usr/local/bin/capped")).unwrap();
    crate::util::run(Command::new("setcap").arg("cap_net_raw+ep").arg(dir("b").join("upper/usr/local/bin/capped")));
    assert!(lower.join("etc/motd").exists() && lower.join("etc/skel/.bashrc").exists());

    // A hostile upper layer in c: its /var/log and /etc/evil point out of the root.
    let outside = t.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), "host file").unwrap();
    // And a 1 TiB sparse file, a FIFO and a socket, which flatten copies as what they are (or,
    // the socket, leaves out) without reading a terabyte of zeros or blocking.
    let plant = format!(
        "rm -rf /var/log && ln -s {0} /var/log && ln -s {0}/keep /etc/evil && truncate -s 1T /huge && mkfifo /fifo && \
         perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Local => \"/sock\", Listen => 1) or die'",
        outside.display()
    );
    ok(&["exec", "c", "--", "sh", "-c", &plant]);
    ok(&["exec", "c", "--", "sh", "-c", "echo from-guest > /var/log/written || true"]);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "the guest wrote outside its root");

    // Flatten a (in place) and b (to a new root): plain roots dpkg accepts.
    let out = ok(&["flatten", "a"]);
    assert!(out.contains("now the plain root"), "{out}");
    let flat_a = dir("a").join("root");
    assert!(!dir("a").join("upper").exists());
    assert!(has_package(&flat_a, "vzt-alpha") && flat_a.join("usr/share/vzt-alpha/data").is_file());
    let listed = crate::util::run(Command::new("chroot").arg(&flat_a).args(["dpkg", "-l"]));
    assert!(listed.lines().any(|l| l.starts_with("ii  vzt-alpha")), "{listed}");
    crate::util::run(Command::new("chroot").arg(&flat_a).args(["dpkg", "--verify"]));
    // Still the container a: the wrapper reaches its plain root now.
    ok(&["install", "-y", "--proxy", &proxy, "a", "vzt-gamma"]);
    assert!(has_package(&flat_a, "vzt-gamma"));

    let flat_b = t.join("flat-b");
    ok(&["flatten", "b", "--to", &flat_b.display().to_string()]);
    assert!(!flat_b.join("etc/motd").exists(), "a whiteout came back");
    let skel: Vec<String> = std::fs::read_dir(flat_b.join("etc/skel"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(skel, ["only"], "the opaque directory let the image's files through");
    let caps = crate::util::run(Command::new("getcap").arg(flat_b.join("usr/local/bin/capped")));
    assert!(caps.contains("cap_net_raw=ep"), "{caps}");
    assert!(dir("b").join("upper").exists(), "flatten --to leaves the container as it was");
    crate::util::run(Command::new("chroot").arg(&flat_b).args(["dpkg", "--verify"]));

    let flat_c = t.join("flat-c");
    ok(&["flatten", "c", "--to", &flat_c.display().to_string()]);
    assert_eq!(std::fs::read_link(flat_c.join("var/log")).unwrap(), outside);
    let huge = std::fs::metadata(flat_c.join("huge")).unwrap();
    assert!(huge.len() == 1 << 40 && huge.blocks() < 1024, "{} bytes in {} blocks", huge.len(), huge.blocks());
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&std::fs::metadata(flat_c.join("fifo")).unwrap().file_type()));
    assert!(!flat_c.join("sock").exists());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "flatten wrote outside the new root");
    assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "host file");

    // The image layer never changed.
    assert_eq!(tree_listing(lower), lower_before);
    let (code, _, err) = vzpkg(&["flatten", "a"]);
    assert_ne!(code, 0);
    assert!(err.contains("not a layered container"), "{err}");
}
