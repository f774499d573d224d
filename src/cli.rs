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
    /// Template files [default: /etc/vzpkg/templates]
    #[arg(long, global = true, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Also write the wrapper command's audit record to FILE, as JSON (how a run over several
    /// containers learns each one's outcome)
    #[arg(long, global = true, value_name = "FILE", hide = true)]
    pub record_to: Option<PathBuf>,
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
        /// dir:/path/to/rootfs, pid:N, lxc:NAME, nspawn:NAME, openvz:CTID, a name from the config's
        /// [containers]; or several: a comma-separated list, @GROUP from [groups], @all
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
    List {
        ct: String,
        /// One JSON object per line instead of tab-separated columns
        #[arg(long)]
        json: bool,
        /// The container's package manager (apt, dnf, dnf5, yum, zypper) when the root's contents do
        /// not tell it
        #[arg(long, value_name = "NAME")]
        backend: Option<String>,
        /// For a container whose package database only its own tools read: kill the query after
        /// this many seconds [default: 300]
        #[arg(long, value_name = "SECS")]
        max_time: Option<u64>,
    },
    /// Run a command in the same sandbox (debugging, scripts)
    Exec {
        ct: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[command(flatten)]
        args: WrapperArgs,
    },
    /// Show the audit log of wrapper commands, or check it with `audit verify`
    Audit(AuditArgs),
    /// Remove cached files: unreferenced ones after a grace period, old ones, then the least
    /// recently used down to a size (through the running proxy, or on the cache itself)
    Prune(PruneArgs),
    /// Cache size, hit ratio, bytes saved, downloads in flight, top containers, last prune
    Status {
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show a template with everything it inherits, and where each entry came from
    Template {
        #[command(subcommand)]
        action: TemplateAction,
    },
    /// Build the OS image of a template (through the proxy), unless it is up to date; or list
    /// the images built
    Cache {
        /// The OS template (a file TEMPLATE.toml in the templates directory)
        template: Option<String>,
        /// Rebuild even if the template did not change
        #[arg(long)]
        force: bool,
        /// List the images built, with their age and whether their template changed since
        #[arg(long)]
        list: bool,
        /// The vzpkg proxy the bootstrapper downloads through
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3142")]
        proxy: String,
    },
    /// Make a new container root from a template's image, then install application templates
    Create {
        /// The new container's name (what `vzpkg install NAME …` then takes)
        ct: String,
        /// The OS template whose image (`vzpkg cache TEMPLATE`) the root is made from
        #[arg(long, value_name = "TEMPLATE")]
        template: String,
        /// An application template to install afterwards (repeatable)
        #[arg(long = "app", value_name = "TEMPLATE")]
        apps: Vec<String>,
        /// Where the root goes [default: STATE_DIR/containers/NAME/root; with --layered, the
        /// container's directory STATE_DIR/containers/NAME, holding its upper layer]
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// An overlay: the image, unpacked once and shared read-only by every container of it,
        /// under an upper layer of the container's own
        #[arg(long)]
        layered: bool,
        /// The vzpkg proxy the application templates' packages come through
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3142")]
        proxy: String,
    },
    /// Fold a layered container's layers into a plain root
    Flatten {
        ct: String,
        /// Write the plain root here and leave the container as it is [default: the container
        /// becomes the plain root STATE_DIR/containers/NAME/root]
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
    /// The containers vzpkg finds ([containers], LXC, systemd-nspawn, OpenVZ): what @all stands for
    Containers {
        /// One JSON object per container and line instead of the table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplateAction {
    /// The resolved template: each setting, repository and package with the template it came from
    Show {
        name: String,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: Option<AuditAction>,
    /// Only this container: dir:/path/to/rootfs, or a name from the config's [containers]
    pub ct: Option<String>,
    /// Only records from this time on: 2026-11-22, "2026-11-22 10:00:00" (UTC), or a duration
    /// ago such as 2h or 7days
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only records that changed this package or named it on their command line
    #[arg(long, value_name = "NAME")]
    pub package: Option<String>,
    /// One JSON object per record and line instead of the table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Recompute the hash chain; exit non-zero naming the first record edited, deleted or moved
    Verify {
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove least recently used files until the cache holds at most this much (500M, 20G…)
    /// [default: the config's proxy.max_cache_size, if set]
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Remove any file not used for this long (30days, 12weeks…)
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Files no current index references go once unused for this long
    #[arg(long, value_name = "DURATION", default_value = "1day")]
    pub grace: String,
    /// Say what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object instead of the summary (and no progress bar)
    #[arg(long)]
    pub json: bool,
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
    /// The container's package manager (apt, dnf, dnf5, yum, zypper) when the root's contents do not
    /// tell it
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// JSON output (`list --json`).
    #[arg(skip)]
    pub json: bool,
    /// `--record-to`, from the global options.
    #[arg(skip)]
    pub record_to: Option<PathBuf>,
    #[command(flatten)]
    pub many: ManyArgs,
}

/// How a wrapper command runs over several containers (a list, @GROUP or @all).
#[derive(Debug, Args, Default, Clone)]
pub struct ManyArgs {
    /// Containers run at once [default: twice the CPUs, at least 2 and at most 8]
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Start no further container after one fails (running ones finish)
    #[arg(long)]
    pub fail_fast: bool,
    /// Keep each container's output in a log of its own (under STATE_DIR/logs/) instead of
    /// printing it, prefixed with the container's name
    #[arg(long)]
    pub quiet: bool,
    /// The summary as one JSON object on stdout (the containers' own output goes to stderr)
    #[arg(long = "json")]
    pub summary_json: bool,
}

impl ManyArgs {
    /// Whether any option asks for a run over containers (with its summary), even of one.
    pub fn any(&self) -> bool {
        self.parallel.is_some() || self.fail_fast || self.quiet || self.summary_json
    }
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
