//! Templates, images and new containers, as root: a three-level template chain built into an
//! image by mmdebstrap through the proxy from a loopback copy of real Debian packages (the ones
//! contrib/test.sh downloads), rebuilt only when the template changes, a container made from
//! it that is the image to the last owner, mode and file capability, and one with an
//! application template installed by the wrapper.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::cli::Served;
use crate::util::repo::{deb_repo, Pkg};
use crate::util::rootfs::{capability_debs, require_root};
use crate::util::{run, try_run};

/// The real .deb files of a root (contrib/test.sh downloads them once).
fn template_debs() -> PathBuf {
    let dir = std::env::var_os("VZPKG_TEST_TEMPLATE_DEBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vzpkg-tests/template-debs"));
    assert!(
        std::fs::read_dir(&dir)
            .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("dpkg_"))),
        "no root packages in {}: run contrib/test.sh (as root), which downloads them",
        dir.display()
    );
    dir
}

/// `name` → version, for every installed package of the root.
fn installed(root: &Path) -> Vec<(String, String)> {
    let out = run(Command::new("dpkg-query")
        .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\n"]));
    let mut set: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let status = f.next()?;
            status.starts_with("ii").then(|| (f.next().unwrap().to_string(), f.next().unwrap().to_string()))
        })
        .collect();
    set.sort();
    set
}

#[test]
fn a_template_chain_builds_an_image_once_and_a_container_gets_its_application_template() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pool = t.join("upstream/debian/pool/main");
    std::fs::create_dir_all(&pool).unwrap();
    for deb in std::fs::read_dir(template_debs()).unwrap().flatten() {
        let name = deb.file_name().to_string_lossy().into_owned();
        if name.ends_with(".deb") {
            // The test upstream serves paths as they are spelled: no '%', '+' or '~' in them.
            let plain: String =
                name.replace("%3a", "-").chars().map(|c| if "+~".contains(c) { '-' } else { c }).collect();
            std::fs::copy(deb.path(), pool.join(plain)).unwrap();
        }
    }
    // ping, whose postinst gives it a file capability with libcap2-bin's setcap, so the image
    // and the root made from it have one to keep.
    for (deb, name) in capability_debs().iter().zip(["libcap2-bin_amd64.deb", "iputils-ping_amd64.deb"]) {
        std::fs::copy(deb, pool.join(name)).unwrap();
    }
    // A package of Priority required, which only the variants from minbase on bring.
    let required = deb_repo(&t.join("upstream/debian"), &[Pkg::new("vzt-required", "1.0", 1000).priority("required")]);
    let served = Served::start(t, "");
    let source = format!("deb [trusted=yes] {}/debian stable main", served.upstream.url());
    let templates = t.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let write = |name: &str, text: &str| std::fs::write(templates.join(format!("{name}.toml")), text).unwrap();
    write("base", "distribution = \"debian\"\nsuite = \"stable\"\npackages = [\"less\", \"whiptail\"]\n");
    write(
        "distro",
        &format!(
            "inherit = [\"base\"]\nrepositories = [{source:?}]\npackages = [\"jq\", \"libcap2-bin\", \"iputils-ping\"]\n"
        ),
    );
    write("site", "inherit = [\"distro\"]\npackages = [\"whiptail-\", \"nano\", \"bzip2\"]\n");
    write(
        "tools",
        // nano- takes nano out of the container; vim- is a package it does not have.
        "packages = [\"whiptail\", \"nano-\", \"vim-\"]\npost_install = [[\"sh\", \"-c\", \"echo set up > /etc/tools-ready\"]]\n",
    );
    let cli = served.cli.templates(&templates);
    let vzpkg = |args: &[&str]| cli.bare(args);
    let ok = |args: &[&str]| cli.bare_ok(args);

    // Must show 1: the resolved set with where each entry came from.
    let shown = ok(&["template", "show", "site"]);
    for (entry, from) in [("less", "base"), ("jq", "distro"), ("nano", "site"), ("bzip2", "site")] {
        assert!(
            shown.lines().any(|l| l.trim_start().starts_with(entry) && l.ends_with(&format!("({from})"))),
            "{shown}"
        );
    }
    assert!(
        shown.contains("removed:") && shown.lines().any(|l| l.contains("whiptail") && l.ends_with("(site)")),
        "{shown}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&["template", "show", "site", "--json"])).unwrap();
    assert_eq!(json["packages"][0], serde_json::json!({"value": "less", "from": "base"}), "{json}");
    assert_eq!(json["removed"], serde_json::json!([{"value": "whiptail", "from": "site"}]), "{json}");
    assert_eq!(json["chain"], serde_json::json!(["base", "distro", "site"]), "{json}");
    let (code, _, err) = vzpkg(&["template", "show", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("nope"), "{err}");

    // No proxy listening: said plainly, before any build.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, _, err) = vzpkg(&["cache", "site", "--proxy", &nowhere]);
    assert_ne!(code, 0);
    assert!(err.contains("does not answer"), "{err}");

    let out = ok(&["cache", "site", "--proxy", &served.cli.proxy]);
    assert!(out.contains("built the image of site"), "{out}");
    let debs_fetched = served.upstream.count_ending(".deb");
    assert!(debs_fetched > 50, "{debs_fetched} .deb files came from upstream");

    // Must show 2: a second run fetches nothing and builds nothing.
    let requests = served.upstream.total();
    let out = ok(&["cache", "site", "--proxy", &served.cli.proxy]);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(served.upstream.total(), requests, "the second run asked upstream");
    let list = ok(&["cache", "--list"]);
    assert!(list.lines().any(|l| l.starts_with("site ") && !l.contains("changed")), "{list}");

    // A container from the image: exactly the resolved set, the removed package absent.
    let out = ok(&["create", "web", "--template", "site", "--proxy", &served.cli.proxy]);
    let root = Path::new(&served.cli.state).join("containers/web/root");
    assert!(out.contains("created web"), "{out}");
    // The root is the image: every entry's type, mode, owner, group, size, contents, time, link
    // target and device numbers (tar --diff), and ping's file capability.
    let image_tar = t.join("site.tar");
    zstd::stream::copy_decode(
        std::fs::File::open(Path::new(&served.cli.cache).join("images/site/rootfs.tar.zst")).unwrap(),
        std::fs::File::create(&image_tar).unwrap(),
    )
    .unwrap();
    let (same, diff) = try_run(
        Command::new("tar").arg("--diff").arg("--numeric-owner").arg("-f").arg(&image_tar).arg("-C").arg(&root),
    );
    assert!(same, "the root differs from its image:\n{diff}");
    let caps = run(Command::new("getcap").arg(root.join("usr/bin/ping")));
    assert!(caps.contains("cap_net_raw=ep"), "ping lost its file capability: {caps:?}");
    let set = installed(&root);
    for package in ["less", "jq", "nano", "bzip2", "dpkg", "apt", "iputils-ping"] {
        assert!(set.iter().any(|(n, _)| n == package), "{package} missing: {set:?}");
    }
    assert!(!set.iter().any(|(n, _)| n == "whiptail"), "whiptail was removed by site");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&served.cli.cache).join("images/site/manifest.json")).unwrap())
            .unwrap();
    let listed: Vec<(String, String)> = manifest["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["version"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(listed, set, "the manifest lists exactly what the root has");
    // The container is known by name: the wrapper reaches it.
    let list = ok(&["list", "web"]);
    assert!(list.lines().any(|l| l.starts_with("jq\t")), "{list}");

    // Changing one entry rebuilds, and the rebuild downloads no package twice.
    write("site", "inherit = [\"distro\"]\npackages = [\"whiptail-\", \"nano\"]\n");
    let list = ok(&["cache", "--list"]);
    assert!(list.lines().any(|l| l.starts_with("site ") && l.contains("template changed")), "{list}");
    let out = ok(&["cache", "site", "--proxy", &served.cli.proxy]);
    assert!(out.contains("built the image of site"), "{out}");
    assert_eq!(served.upstream.count_ending(".deb"), debs_fetched, "the rebuild fetched packages upstream again");

    // An application template: its packages installed and its removals removed by the
    // wrapper, its command run.
    let out = ok(&["create", "app", "--template", "site", "--app", "tools", "--proxy", &served.cli.proxy]);
    let root = Path::new(&served.cli.state).join("containers/app/root");
    assert!(installed(&root).iter().any(|(n, _)| n == "whiptail"), "{out}");
    assert!(!installed(&root).iter().any(|(n, _)| n == "bzip2"), "the rebuilt image has no bzip2");
    assert_eq!(std::fs::read_to_string(root.join("etc/tools-ready")).unwrap(), "set up\n");
    let audit = ok(&["audit", "app", "--json"]);
    assert!(audit.contains("\"command\":\"install\"") && audit.contains("whiptail"), "{audit}");
    assert!(!installed(&root).iter().any(|(n, _)| n == "nano"), "the application template removed nano");
    assert!(audit.contains("\"command\":\"remove\""), "{audit}");

    // A name in use, or a root that is not empty, is refused with nothing lost.
    let (code, _, err) = vzpkg(&["create", "app", "--template", "site"]);
    assert_ne!(code, 0);
    assert!(err.contains("exists already"), "{err}");
    let (code, _, err) = vzpkg(&["create", "other", "--template", "site", "--root", &root.display().to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("not empty") && root.join("etc/tools-ready").exists(), "{err}");

    // A tarball that is not the one its manifest names (replaced by a rebuild while read, or
    // damaged) gives no root and no container.
    let manifest_path = Path::new(&served.cli.cache).join("images/site/manifest.json");
    let good = std::fs::read_to_string(&manifest_path).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&good).unwrap();
    manifest["tarball_sha256"] = "0".repeat(64).into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let (code, _, err) = vzpkg(&["create", "torn", "--template", "site"]);
    assert_ne!(code, 0);
    assert!(err.contains("not the image its manifest describes"), "{err}");
    let containers: Vec<String> = std::fs::read_dir(Path::new(&served.cli.state).join("containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!containers.iter().any(|c| c.starts_with("torn") || c.starts_with(".create")), "{containers:?}");
    std::fs::write(&manifest_path, good).unwrap();

    // A removed package the variant itself brings (minbase: every package of Priority required)
    // is purged from the image after the bootstrap.
    write(
        "site",
        "inherit = [\"distro\"]\nvariant = \"minbase\"\npackages = [\"whiptail-\", \"nano\", \"vzt-required-\"]\n",
    );
    let out = ok(&["cache", "site", "--proxy", &served.cli.proxy]);
    assert!(out.contains("built the image of site"), "{out}");
    assert_eq!(served.upstream.count(&format!("/debian/{}", required[0])), 1, "minbase did not install vzt-required");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let names: Vec<&str> =
        manifest["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"nano") && !names.contains(&"vzt-required"), "{names:?}");
}

#[test]
fn an_rpm_template_builds_with_dnf_and_its_container_takes_installs_through_the_rpm_backend() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rpms = crate::util::repo::rpm_repo(
        &t.join("upstream/el"),
        &[
            crate::util::repo::Pkg::new("vzt-alpha", "1.0", 100_000),
            crate::util::repo::Pkg::new("vzt-gamma", "0.3", 40_000),
            crate::util::repo::Pkg::new("vzt-beta", "2.0", 20_000),
        ],
    );
    // Debian's dnf and rpm stand for a distribution's minimal root (the seed the image starts
    // from), with vzt-beta in its rpm database, which the template removes.
    let seed = t.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    run(Command::new("tar")
        .args(["--extract", "--numeric-owner", "--same-owner", "--file"])
        .arg(crate::util::rootfs::rpm_tarball())
        .arg("-C")
        .arg(&seed));
    let beta = rpms.iter().find(|r| r.contains("vzt-beta")).unwrap();
    run(Command::new("rpm")
        .arg("--root")
        .arg(&seed)
        .args(["--dbpath", "/var/lib/rpm", "-i", "--nodeps"])
        .arg(t.join("upstream/el").join(beta)));
    run(Command::new("tar")
        .args(["--create", "--numeric-owner", "--file"])
        .arg(t.join("seed.tar"))
        .arg("-C")
        .arg(&seed)
        .arg("."));
    let served = Served::start(t, "");
    let baseurl = format!("{}/el/", served.upstream.url());
    let templates = t.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    // The image is the seed plus what dnf installs from the test repository, less vzt-beta.
    std::fs::write(
        templates.join("el.toml"),
        format!(
            "distribution = \"fedora\"\nsuite = \"40\"\nrepositories = [{baseurl:?}]\npackages = [\"vzt-gamma\", \"vzt-beta-\"]\nseed = {:?}\n",
            t.join("seed.tar").display().to_string()
        ),
    )
    .unwrap();
    let cli = served.cli.templates(&templates);
    let vzpkg = |args: &[&str]| cli.bare_ok(args);
    let out = vzpkg(&["cache", "el", "--proxy", &served.cli.proxy]);
    assert!(out.contains("built the image of el"), "{out}");
    let gamma = rpms.iter().find(|r| r.contains("vzt-gamma")).unwrap();
    assert_eq!(served.upstream.count(&format!("/el/{gamma}")), 1, "dnf fetched vzt-gamma once");
    // Through the proxy: a forced rebuild gets it from the proxy's cache.
    let out = vzpkg(&["cache", "el", "--force", "--proxy", &served.cli.proxy]);
    assert!(out.contains("built the image of el"), "{out}");
    assert_eq!(served.upstream.count(&format!("/el/{gamma}")), 1, "the rebuild fetched vzt-gamma upstream again");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&served.cli.cache).join("images/el/manifest.json")).unwrap())
            .unwrap();
    assert!(manifest["tool"].as_str().unwrap().starts_with("dnf"), "{manifest}");
    assert!(manifest["packages"].as_array().unwrap().iter().any(|p| p["name"] == "vzt-gamma"), "{manifest}");

    vzpkg(&["create", "r", "--template", "el"]);
    let root = Path::new(&served.cli.state).join("containers/r/root");
    let rpm_q = |package: &str| {
        Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .args(["--dbpath", "/var/lib/rpm", "-q", package])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(rpm_q("vzt-gamma"), "the image's rpm database has what dnf installed");
    assert!(!rpm_q("vzt-beta"), "the seed's vzt-beta, which the template removes, is in the image");
    // The container's own dnf and rpm, told where its repository and database are.
    let setup = format!(
        "mkdir -p /etc/yum.repos.d /etc/rpm && printf '[test]\\nname=test\\nbaseurl={baseurl}\\ngpgcheck=0\\n' > \
         /etc/yum.repos.d/test.repo && echo '%_dbpath /var/lib/rpm' > /etc/rpm/macros.dbpath"
    );
    vzpkg(&["exec", "r", "--", "sh", "-c", &setup]);
    let out = vzpkg(&["install", "-y", "--backend", "dnf", "--proxy", &served.cli.proxy, "r", "vzt-alpha"]);
    assert!(out.contains("installed vzt-alpha"), "{out}");
    assert!(rpm_q("vzt-alpha") && rpm_q("vzt-gamma"));
}
