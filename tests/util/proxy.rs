//! Runs the real `vzpkg proxy` binary on 127.0.0.1:0 with its own cache directory, learns its
//! port from the line it prints, and stops it when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub struct ProxyProcess {
    pub addr: SocketAddr,
    pub cache_dir: PathBuf,
    pub log: PathBuf,
    child: Child,
    /// Kept open: the proxy must never find its stdout closed.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl ProxyProcess {
    /// Starts a proxy on `cache_dir` with extra command-line `args`; `config` is the text of
    /// its config file (empty for defaults).
    pub fn start(cache_dir: &Path, config: &str, args: &[&str]) -> ProxyProcess {
        Self::start_with(cache_dir, config, args, Command::new(env!("CARGO_BIN_EXE_vzpkg")))
    }

    /// The same, in a mount namespace of its own where `etc_apt` is this machine's /etc/apt:
    /// a proxy that sees the apt sources a test wrote, with no option saying so. Needs root.
    pub fn start_with_host_apt(cache_dir: &Path, config: &str, args: &[&str], etc_apt: &Path) -> ProxyProcess {
        crate::util::rootfs::require_root();
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c", r#"mount --bind "$0" /etc/apt && exec "$@""#])
            .arg(etc_apt)
            .arg(env!("CARGO_BIN_EXE_vzpkg"));
        Self::start_with(cache_dir, config, args, command)
    }

    fn start_with(cache_dir: &Path, config: &str, args: &[&str], mut command: Command) -> ProxyProcess {
        std::fs::create_dir_all(cache_dir).unwrap();
        let config_file = cache_dir.with_extension("toml");
        std::fs::write(&config_file, config).unwrap();
        // Appended to, so a restart on the same cache keeps the earlier run's lines.
        let log = cache_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut child = command
            .arg("--config")
            .arg(&config_file)
            .arg("--cache-dir")
            .arg(cache_dir)
            .args(["proxy", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info,vzpkg_proxy=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("starting vzpkg proxy");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix("vzpkg proxy listening on ") else {
            let _ = child.wait();
            panic!("proxy did not start: {line:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        };
        ProxyProcess { addr: addr.parse().unwrap(), cache_dir: cache_dir.to_path_buf(), log, child, _stdout: stdout }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up, as in a crash or an OOM kill.
    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait: the graceful stop.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal_stop();
        self.child.wait().unwrap()
    }

    /// SIGTERM without waiting.
    pub fn signal_stop(&self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it holds `needle`: the proxy writes its log from a thread of its own, so a
    /// line can land a moment after what it tells of. Lines keep their order, so waiting for a
    /// later line also waits for every earlier one. Fails after 30 s.
    pub fn log_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let log = self.log_text();
            if log.contains(needle) {
                return log;
            }
            assert!(std::time::Instant::now() < deadline, "the proxy never logged {needle:?}:\n{log}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        if std::thread::panicking() {
            eprintln!("--- proxy log {} ---\n{}", self.log.display(), self.log_text());
        }
    }
}
