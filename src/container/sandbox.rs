//! The sandbox a container's package manager runs in, in three processes (youki's shape):
//!
//! - the **host side** ([`host`]): vzpkg itself; creates the run's cgroup, forks the keeper
//!   before any thread exists, then relays the sandbox's only network way out and its terminal;
//! - the **keeper** ([`keeper`]): stays in the host's namespaces as root; clones pid 1 into new
//!   user, mount, pid, ipc, uts and network namespaces, writes its id maps, puts it in the run's
//!   cgroup, hands it the container root as a detached *idmapped* mount, and when the run ends —
//!   or vzpkg dies — kills the cgroup and removes it;
//! - **pid 1** ([`init`]): not dumpable, holding no host descriptor; builds the root from
//!   descriptors only (/proc with masked paths, a /dev of its own, the read-only views of the
//!   shared cache), pivots into it and runs each command in a session of its own, with few
//!   capabilities, `no_new_privs` and the seccomp filter.
//!
//! They talk over SOCK_SEQPACKET sockets in typed [`messages`]. Every syscall that shapes the
//! sandbox goes through [`Syscall`](super::syscall::Syscall).

mod dev;
mod host;
mod init;
mod keeper;
mod messages;
mod procfs;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub use host::run;

use super::cgroup::Limits;
use super::idmap::IdRange;
use super::Kind;

/// Where the relay listens inside the sandbox, on the sandbox's own loopback.
pub const RELAY_PORT: u16 = 3142;

/// How the guest is confined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Confinement {
    /// Root of its own user namespace, mapped to an unprivileged host range; the container root
    /// attached through an idmapped mount.
    Unprivileged(IdRange),
    /// Real host root (the operator's explicit choice, for filesystems that cannot idmap):
    /// every other layer still applies.
    Privileged,
}

/// A host directory whose files appear, read-only, at `target` inside the root: the lower layer
/// of an overlay whose upper layer is a private tmpfs, so the guest may write there and nothing
/// it writes reaches the host.
pub struct ViewMount<'a> {
    pub source: &'a OwnedFd,
    /// Relative to the container root.
    pub target: String,
}

pub struct Spec<'a> {
    /// As the operator named the container, for messages.
    pub name: &'a str,
    pub kind: Kind,
    /// The container root, opened once (`O_PATH`).
    pub root: &'a OwnedFd,
    pub confinement: Confinement,
    pub views: Vec<ViewMount<'a>>,
    /// Commands run in order inside the root; the first that fails ends the run.
    pub commands: Vec<Vec<String>>,
    pub env: Vec<(String, String)>,
    /// Where the relay on the sandbox's loopback leads.
    pub proxy: SocketAddr,
    /// Give the commands a pty of their own (vzpkg runs on a terminal).
    pub pty: bool,
    /// Capture the commands' standard output instead of passing it through.
    pub capture: bool,
    pub limits: Limits,
    /// Kill the run after this long.
    pub max_time: Option<Duration>,
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status of the last command that ran (128 + N for a signal).
    pub code: i32,
    /// The kernel killed a process of the run for going over its memory limit.
    pub oom: bool,
    /// The run was killed for going over `max_time`.
    pub timed_out: bool,
    /// Standard output, when captured (at most [`MAX_CAPTURE`] bytes). Read by backends whose
    /// installed set only a command inside can tell (rpm's, next).
    #[allow(dead_code)]
    pub output: Vec<u8>,
}

/// The guest's standard streams: never a descriptor of the host's own (the operator's terminal
/// or log file), only ends of something the host side copies.
pub enum GuestStdio {
    /// The slave side of a pty of the sandbox's own.
    Terminal(OwnedFd),
    /// stdin, stdout and stderr: pipes whose other ends the host side feeds, copies or captures.
    Pipes([OwnedFd; 3]),
}

impl GuestStdio {
    fn raw_fds(&self) -> Vec<RawFd> {
        match self {
            GuestStdio::Terminal(fd) => vec![fd.as_raw_fd()],
            GuestStdio::Pipes(fds) => fds.iter().map(|f| f.as_raw_fd()).collect(),
        }
    }
}

/// The most of a command's output kept when captured.
pub const MAX_CAPTURE: usize = 64 << 20;
