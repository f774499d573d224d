//! Real apt-get and dnf download through the proxy, in forward-proxy and remap mode; a second,
//! fresh client then gets every package from the cache without a single upstream request.

use crate::util::clients::{Apt, Dnf, Via};
use crate::util::repo::{deb_repo, rpm_repo, Pkg};
use crate::util::{check_store, sha256, ProxyProcess, Upstream};

fn packages() -> Vec<Pkg> {
    vec![
        Pkg::new("vzt-alpha", "1.0", 300_000).depends("vzt-beta"),
        Pkg::new("vzt-beta", "2.1", 1_200_000),
        Pkg::new("vzt-gamma", "0.3", 40_000),
    ]
}

fn apt_twice(via_forward: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let debs = deb_repo(&tmp.path().join("upstream/debian"), &packages());
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let proxy = ProxyProcess::start(
        &tmp.path().join("cache"),
        "",
        &["--allow-host", &upstream.host(), "--remap", &format!("debian={}/debian", upstream.url())],
    );
    let repo = format!("{}/debian", upstream.url());
    let remap_base = format!("{}/debian", proxy.url());
    let proxy_url = proxy.url();
    let via = || match via_forward {
        true => Via::Forward { proxy: &proxy_url, repo: &repo },
        false => Via::Remap { base: &remap_base },
    };
    let first = Apt::new(&tmp.path().join("apt1"), via());
    first.get(&["update"]);
    first.get(&["install", "--download-only", "vzt-alpha", "vzt-gamma"]);
    assert_eq!(first.archives().len(), 3, "alpha, its dependency beta, and gamma");
    for deb in &debs {
        let name = deb.rsplit('/').next().unwrap();
        let got = std::fs::read(first.dir.join("var/cache/apt/archives").join(name)).unwrap();
        assert_eq!(sha256(&got), sha256(&std::fs::read(upstream.root.join("debian").join(deb)).unwrap()), "{name}");
        assert_eq!(upstream.count(&format!("/debian/{deb}")), 1, "{deb} fetched once");
    }
    let upstream_before = upstream.count_ending(".deb");

    let second = Apt::new(&tmp.path().join("apt2"), via());
    second.get(&["update"]);
    second.get(&["install", "--download-only", "vzt-alpha", "vzt-gamma"]);
    assert_eq!(second.archives().len(), 3);
    assert_eq!(upstream.count_ending(".deb"), upstream_before, "the second client caused upstream package requests");
    assert!(check_store(&proxy.cache_dir).len() >= 3);
}

#[test]
fn apt_forward_proxy_second_client_is_served_from_cache() {
    apt_twice(true);
}

#[test]
fn apt_remap_second_client_is_served_from_cache() {
    apt_twice(false);
}

fn dnf_twice(via_forward: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let rpms = rpm_repo(&tmp.path().join("upstream/el"), &packages());
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let proxy = ProxyProcess::start(
        &tmp.path().join("cache"),
        "",
        &["--allow-host", &upstream.host(), "--remap", &format!("el={}/el", upstream.url())],
    );
    let repo = format!("{}/el/", upstream.url());
    let remap_base = format!("{}/el/", proxy.url());
    let proxy_url = proxy.url();
    let via = || match via_forward {
        true => Via::Forward { proxy: &proxy_url, repo: &repo },
        false => Via::Remap { base: &remap_base },
    };
    let first = Dnf::new(&tmp.path().join("dnf1"), via());
    first.run(&["install", "--downloadonly", "vzt-alpha", "vzt-gamma"]);
    let got = first.packages();
    assert_eq!(got.len(), 3, "alpha, its dependency beta, and gamma: {got:?}");
    for rpm in &rpms {
        let name = rpm.rsplit('/').next().unwrap();
        let file = got.iter().find(|p| p.ends_with(name)).unwrap_or_else(|| panic!("{name} not downloaded"));
        assert_eq!(
            sha256(&std::fs::read(file).unwrap()),
            sha256(&std::fs::read(upstream.root.join("el").join(rpm)).unwrap())
        );
        assert_eq!(upstream.count(&format!("/el/{rpm}")), 1, "{rpm} fetched once");
    }
    let upstream_before = upstream.count_ending(".rpm");

    let second = Dnf::new(&tmp.path().join("dnf2"), via());
    second.run(&["install", "--downloadonly", "vzt-alpha", "vzt-gamma"]);
    assert_eq!(second.packages().len(), 3);
    assert_eq!(upstream.count_ending(".rpm"), upstream_before, "the second client caused upstream package requests");
    check_store(&proxy.cache_dir);
}

#[test]
fn dnf_forward_proxy_second_client_is_served_from_cache() {
    dnf_twice(true);
}

#[test]
fn dnf_remap_second_client_is_served_from_cache() {
    dnf_twice(false);
}
