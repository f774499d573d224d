//! Real package-manager clients, each confined to its own temp directory: apt-get with its
//! own `Dir` and dnf with `--installroot`, pointed at the proxy in forward or remap mode.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run, try_run};

/// How a client reaches the repository through the proxy.
pub enum Via<'a> {
    /// `Acquire::http::Proxy` / dnf `proxy=`: the client asks for the upstream URL.
    Forward { proxy: &'a str, repo: &'a str },
    /// The client asks the proxy for `/NAME/…`.
    Remap { base: &'a str },
}

pub struct Apt {
    pub dir: PathBuf,
}

impl Apt {
    /// A fresh apt tree under `dir` whose only source is the test repository.
    pub fn new(dir: &Path, via: Via) -> Apt {
        for sub in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/log/apt",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("status"), "").unwrap();
        let (uri, proxy) = match via {
            Via::Forward { proxy, repo } => (repo.to_string(), format!("Acquire::http::Proxy \"{proxy}\";\n")),
            Via::Remap { base } => (base.to_string(), "Acquire::http::Proxy \"DIRECT\";\n".to_string()),
        };
        std::fs::write(dir.join("etc/apt/sources.list"), format!("deb [trusted=yes] {uri} stable main\n")).unwrap();
        std::fs::write(
            dir.join("apt.conf"),
            format!(
                "Dir \"{dir}/\";\nDir::State::status \"{dir}/status\";\nDir::Etc::Parts \"{dir}/etc/apt/apt.conf.d\";\n\
                 APT::Architecture \"amd64\";\nAPT::Architectures {{ \"amd64\"; }};\nAPT::Sandbox::User \"root\";\n\
                 Acquire::Languages \"none\";\nAcquire::Retries \"0\";\nDebug::NoLocking \"true\";\n{proxy}",
                dir = dir.display()
            ),
        )
        .unwrap();
        Apt { dir: dir.to_path_buf() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("apt-get");
        cmd.env("APT_CONFIG", self.dir.join("apt.conf"))
            .env_remove("http_proxy")
            .env_remove("no_proxy")
            .args(["-q", "-y"])
            .args(args);
        cmd
    }

    /// Runs apt-get; panics if it fails.
    pub fn get(&self, args: &[&str]) -> String {
        run(&mut self.command(args))
    }

    /// Runs apt-get; returns whether it succeeded and everything it printed.
    pub fn try_get(&self, args: &[&str]) -> (bool, String) {
        try_run(&mut self.command(args))
    }

    /// The .deb files apt downloaded, by file name.
    pub fn archives(&self) -> Vec<PathBuf> {
        files_ending(&self.dir.join("var/cache/apt/archives"), ".deb")
    }
}

pub struct Dnf {
    pub root: PathBuf,
}

impl Dnf {
    /// A fresh dnf install root under `dir` whose only repository is the test one.
    pub fn new(dir: &Path, via: Via) -> Dnf {
        std::fs::create_dir_all(dir.join("repos")).unwrap();
        std::fs::create_dir_all(dir.join("root")).unwrap();
        let (baseurl, proxy) = match via {
            Via::Forward { proxy, repo } => (repo.to_string(), format!("proxy={proxy}\n")),
            Via::Remap { base } => (base.to_string(), String::new()),
        };
        std::fs::write(
            dir.join("dnf.conf"),
            format!(
                "[main]\ngpgcheck=0\nkeepcache=1\ninstall_weak_deps=0\nreposdir={d}/repos\ncachedir={d}/cache\n\
                 logdir={d}/log\npersistdir={d}/persist\nretries=1\n{proxy}",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("repos/test.repo"), format!("[test]\nname=test\nbaseurl={baseurl}\nenabled=1\n"))
            .unwrap();
        Dnf { root: dir.to_path_buf() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("dnf");
        cmd.arg(format!("--config={}", self.root.join("dnf.conf").display()))
            .arg(format!("--installroot={}", self.root.join("root").display()))
            .args(["-y", "--releasever=1", "--disableplugin=*", "--setopt=*.skip_if_unavailable=0"])
            .env_remove("http_proxy")
            .env_remove("no_proxy")
            .args(args);
        cmd
    }

    /// Runs dnf; panics if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        run(&mut self.command(args))
    }

    /// Runs dnf; returns whether it succeeded and everything it printed.
    pub fn try_run(&self, args: &[&str]) -> (bool, String) {
        try_run(&mut self.command(args))
    }

    /// The .rpm files dnf downloaded (under the install root: dnf prefixes its cachedir with it).
    pub fn packages(&self) -> Vec<PathBuf> {
        files_ending(&self.root.join("root"), ".rpm")
    }
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}
