//! vzpkg's wrapper commands as the tests run them: a config, cache and state of the test's own,
//! the proxy given to every command (with `-y`, but for `list`), and `--backend` where a test
//! root's contents would say otherwise.

use std::path::Path;

use super::{vzpkg, ProxyProcess, Upstream};

/// A test upstream serving `TMP/upstream`, a proxy allowed to reach it, and vzpkg set up to use
/// them: what every wrapper test starts from.
pub struct Served {
    pub upstream: Upstream,
    pub proxy: ProxyProcess,
    pub cli: Cli,
}

impl Served {
    /// With `proxy_config` as the proxy's config file; the repositories already under
    /// `tmp/upstream`.
    pub fn start(tmp: &Path, proxy_config: &str) -> Served {
        let upstream = Upstream::start(&tmp.join("upstream"));
        let proxy = ProxyProcess::start(&tmp.join("cache"), proxy_config, &["--allow-host", &upstream.host()]);
        Served { cli: Cli::new(tmp, &proxy), upstream, proxy }
    }

    /// Runs `vzpkg COMMAND [args…]`; panics with its output on failure.
    pub fn ok(&self, command: &str, args: &[&str]) -> String {
        self.cli.ok(command, args)
    }

    pub fn run(&self, command: &str, args: &[&str]) -> (i32, String, String) {
        self.cli.run(command, args)
    }
}

#[derive(Clone)]
pub struct Cli {
    pub config: String,
    pub cache: String,
    pub state: String,
    pub proxy: String,
    backend: Option<&'static str>,
    templates: Option<String>,
}

impl Cli {
    /// An empty config under `tmp`, the proxy's cache, state under `tmp`.
    pub fn new(tmp: &Path, proxy: &ProxyProcess) -> Cli {
        let config = tmp.join("vzpkg.toml");
        std::fs::write(&config, "").unwrap();
        Cli {
            config: config.display().to_string(),
            cache: proxy.cache_dir.display().to_string(),
            state: tmp.join("state").display().to_string(),
            proxy: proxy.url(),
            backend: None,
            templates: None,
        }
    }

    /// The same with `--backend NAME` on every command.
    pub fn backend(&self, name: &'static str) -> Cli {
        Cli { backend: Some(name), ..self.clone() }
    }

    /// The same with `--templates DIR` on every command.
    pub fn templates(&self, dir: &std::path::Path) -> Cli {
        Cli { templates: Some(dir.display().to_string()), ..self.clone() }
    }

    /// `vzpkg --config … --cache-dir … --state-dir … [--templates …] ARGS…`, nothing else
    /// added: its exit code, stdout and stderr.
    pub fn bare(&self, args: &[&str]) -> (i32, String, String) {
        let mut argv = vec!["--config", &self.config, "--cache-dir", &self.cache, "--state-dir", &self.state];
        if let Some(templates) = &self.templates {
            argv.extend(["--templates", templates]);
        }
        argv.extend(args);
        vzpkg(&argv)
    }

    /// The same; panics with its output unless it succeeds. All it printed.
    pub fn bare_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.bare(args);
        assert_eq!(code, 0, "vzpkg {args:?} failed:\nstdout:\n{out}\nstderr:\n{err}");
        format!("{out}{err}")
    }

    /// `--config … COMMAND [--backend …] [-y --proxy …] ARGS…`
    pub fn argv(&self, command: &str, args: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> =
            ["--config", &self.config, "--cache-dir", &self.cache, "--state-dir", &self.state, command]
                .map(String::from)
                .to_vec();
        if let Some(backend) = self.backend {
            argv.extend(["--backend".to_string(), backend.to_string()]);
        }
        if command != "list" {
            argv.extend(["-y", "--proxy", &self.proxy].map(String::from));
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// Runs the command: its exit code, stdout and stderr.
    pub fn run(&self, command: &str, args: &[&str]) -> (i32, String, String) {
        let argv = self.argv(command, args);
        vzpkg(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Runs the command; panics with its output unless it succeeds. All it printed.
    pub fn ok(&self, command: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(command, args);
        assert_eq!(code, 0, "vzpkg {command} {args:?} failed:\nstdout:\n{out}\nstderr:\n{err}");
        format!("{out}{err}")
    }
}
