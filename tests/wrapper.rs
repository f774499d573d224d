//! `vzpkg install` and friends against real Debian roots (mmdebstrap), as root: the container's
//! own apt in the sandbox, downloading through the proxy from a test upstream on loopback.

use std::path::Path;

use crate::util::repo::{deb_index, deb_repo, Pkg};
use crate::util::rootfs::Rootfs;
use crate::util::{counter, vzpkg, ProxyProcess, Upstream};

/// A test upstream, a proxy allowed to reach it, and what vzpkg needs to use them.
struct Setup {
    upstream: Upstream,
    proxy: ProxyProcess,
    config: String,
    state: String,
    source: String,
}

impl Setup {
    fn new(tmp: &Path) -> Setup {
        Self::with_proxy_config(tmp, "")
    }

    fn with_proxy_config(tmp: &Path, proxy_config: &str) -> Setup {
        deb_repo(&tmp.join("upstream/debian"), &packages());
        let upstream = Upstream::start(&tmp.join("upstream"));
        let proxy = ProxyProcess::start(&tmp.join("cache"), proxy_config, &["--allow-host", &upstream.host()]);
        std::fs::write(tmp.join("vzpkg.toml"), "").unwrap();
        Setup {
            source: format!("deb [trusted=yes] {}/debian stable main", upstream.url()),
            config: tmp.join("vzpkg.toml").display().to_string(),
            state: tmp.join("state").display().to_string(),
            upstream,
            proxy,
        }
    }

    fn root(&self, dir: &Path) -> Rootfs {
        Rootfs::new(dir, &self.source)
    }

    /// Runs `vzpkg COMMAND [args…]` against this setup; panics with its output on failure.
    fn ok(&self, command: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(command, args);
        assert_eq!(code, 0, "vzpkg {command} {args:?} failed:\nstdout:\n{out}\nstderr:\n{err}");
        format!("{out}{err}")
    }

    fn run(&self, command: &str, args: &[&str]) -> (i32, String, String) {
        let cache = self.proxy.cache_dir.display().to_string();
        let proxy = self.proxy.url();
        let mut argv = vec!["--config", &self.config, "--cache-dir", &cache, "--state-dir", &self.state, command];
        if command != "list" {
            argv.extend(["-y", "--proxy", &proxy]);
        }
        argv.extend(args);
        vzpkg(&argv)
    }
}

fn packages() -> Vec<Pkg> {
    vec![
        Pkg::new("vzt-alpha", "1.0", 300_000).depends("vzt-beta"),
        Pkg::new("vzt-beta", "2.1", 1_200_000),
        Pkg::new("vzt-gamma", "0.3", 40_000),
    ]
}

#[test]
fn install_remove_upgrade_update_and_list_in_a_debian_root() {
    let tmp = tempfile::tempdir().unwrap();
    // Revalidate Release at every update, so that the repository's change is seen at once.
    let setup = Setup::with_proxy_config(tmp.path(), "[proxy]\nindex_ttl_secs = 0\n");
    let root = setup.root(&tmp.path().join("ct"));
    let ct = root.ct();

    setup.ok("update", &[&ct]);
    let out = setup.ok("install", &[&ct, "vzt-alpha", "vzt-gamma"]);
    assert!(out.contains("installed vzt-alpha:all 1.0"), "{out}");
    assert_eq!(root.installed_version("vzt-alpha").as_deref(), Some("1.0"));
    assert_eq!(root.installed_version("vzt-beta").as_deref(), Some("2.1"), "its dependency came along");
    assert!(root.path.join("usr/share/vzt-alpha/data").is_file());

    let list = setup.ok("list", &[&ct]);
    assert!(list.lines().any(|l| l == "vzt-alpha\t1.0\tall"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("dpkg\t")), "{list}");

    setup.ok("remove", &[&ct, "vzt-gamma"]);
    assert_eq!(root.installed_version("vzt-gamma"), None);

    // The repository gains a newer alpha: update, then upgrade.
    let repo = setup.upstream.root.join("debian");
    deb_repo(&tmp.path().join("newer"), &[Pkg::new("vzt-alpha", "1.1", 310_000).depends("vzt-beta")]);
    std::fs::copy(tmp.path().join("newer/pool/main/vzt-alpha_1.1_all.deb"), repo.join("pool/main/vzt-alpha_1.1_all.deb")).unwrap();
    deb_index(&repo);
    setup.ok("update", &[&ct]);
    let out = setup.ok("upgrade", &[&ct]);
    assert!(out.contains("changed vzt-alpha:all 1.0 -> 1.1"), "{out}");
    assert_eq!(root.installed_version("vzt-alpha").as_deref(), Some("1.1"));
}

#[test]
fn a_second_container_installs_from_the_view_without_downloading() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let first = setup.root(&tmp.path().join("ct1"));
    setup.ok("update", &[&first.ct()]);
    setup.ok("install", &[&first.ct(), "vzt-alpha"]);
    let debs_fetched = setup.upstream.count_ending(".deb");
    assert_eq!(debs_fetched, 2, "alpha and beta, once each");

    let second = setup.root(&tmp.path().join("ct2"));
    setup.ok("update", &[&second.ct()]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let requests = |name| runtime.block_on(counter(&setup.proxy, name));
    let (hits, misses) = (requests("cache_hits"), requests("cache_misses"));
    setup.ok("install", &[&second.ct(), "vzt-alpha"]);
    assert_eq!(second.installed_version("vzt-alpha").as_deref(), Some("1.0"));
    assert_eq!(setup.upstream.count_ending(".deb"), debs_fetched, "no upstream package download");
    assert_eq!(requests("cache_hits"), hits, "apt read the archives from the view, not over HTTP");
    assert_eq!(requests("cache_misses"), misses);
}
