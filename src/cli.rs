//! The command line: global options and one subcommand per operation (see DESIGN.md).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "vzpkg", version, about = "Install packages into many containers from one shared, verified cache")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Config file [default: /etc/vzpkg/vzpkg.toml if it exists, else built-in defaults]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Cache directory (blobs and index) [default: /var/cache/vzpkg]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// State directory (audit log, locks) [default: /var/lib/vzpkg]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log format on stderr; the level comes from RUST_LOG (default: info)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the caching proxy in the foreground
    Proxy(ProxyArgs),
    /// Install packages into a container with its own package manager
    Install {
        /// dir:/path/to/rootfs, or a name from the config's [containers]
        ct: String,
        #[arg(required = true)]
        packages: Vec<String>,
        #[command(flatten)]
        args: WrapperArgs,
    },
    /// Remove packages from a container
    Remove {
        ct: String,
        #[arg(required = true)]
        packages: Vec<String>,
        #[command(flatten)]
        args: WrapperArgs,
    },
    /// Upgrade the named packages, or all of them
    Upgrade {
        ct: String,
        packages: Vec<String>,
        #[command(flatten)]
        args: WrapperArgs,
    },
    /// Refresh a container's package lists
    Update {
        ct: String,
        #[command(flatten)]
        args: WrapperArgs,
    },
    /// List a container's installed packages (name, version, architecture)
    List { ct: String },
    /// Run a command in the same sandbox (debugging, scripts)
    Exec {
        ct: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[command(flatten)]
        args: WrapperArgs,
    },
}

#[derive(Debug, Args, Default)]
pub struct WrapperArgs {
    /// Answer yes to the package manager's questions
    #[arg(short = 'y', long)]
    pub assume_yes: bool,
    /// Seconds to wait for locks held by other commands on the container
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// The vzpkg proxy the container's package manager downloads through
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3142")]
    pub proxy: String,
    /// Kill the run (the whole sandbox) after this many seconds
    #[arg(long, value_name = "SECS")]
    pub max_time: Option<u64>,
    /// Run the guest as the host's real root when its filesystem cannot be idmapped (seccomp,
    /// the masked /proc and the cgroup still apply); see README
    #[arg(long)]
    pub privileged: bool,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address to listen on (repeat for several) [default: 127.0.0.1:3142]
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<std::net::SocketAddr>,
    /// Allow forward-proxy requests to this upstream host (repeatable)
    #[arg(long, value_name = "HOST[:PORT]")]
    pub allow_host: Vec<String>,
    /// Serve GET /NAME/… from URL/… (repeat a NAME for failover, in order)
    #[arg(long, value_name = "NAME=URL")]
    pub remap: Vec<String>,
    /// Fetch everything through this HTTP proxy (a regional vzpkg, squid, apt-cacher-ng)
    #[arg(long, value_name = "URL")]
    pub parent: Option<String>,
}
