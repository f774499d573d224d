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
    /// A running container's init (a pidfd), whose namespaces the sandbox joins.
    pub init: Option<&'a OwnedFd>,
    /// The container root, opened once (`O_PATH`).
    pub root: &'a OwnedFd,
    /// A layered container's layers: the root is then an overlay of them, built in the sandbox.
    pub layers: Option<&'a super::layered::LayerFds>,
    /// Attach the root through an idmapped mount (its files carry the host's ids on disk);
    /// off for a container with a user namespace of its own, whose files carry its ids.
    pub idmap_root: bool,
    pub confinement: Confinement,
    pub views: Vec<ViewMount<'a>>,
    /// Commands run in order inside the root; after one fails only queries still run.
    pub commands: Vec<GuestCommand>,
    pub env: Vec<(String, String)>,
    /// Where the relay on the sandbox's loopback leads.
    pub proxy: SocketAddr,
    /// Give the commands a pty of their own (vzpkg runs on a terminal).
    pub pty: bool,
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
    /// Each query's standard output (at most [`MAX_CAPTURE`] bytes), in order; `None` for a
    /// query that failed or did not run. Untrusted: the guest's programs wrote it.
    pub queries: Vec<Option<Vec<u8>>>,
    /// The last bytes the guest wrote to its terminal or its output streams (at most
    /// [`MAX_TAIL`]), for the wrapper to tell what failed. Untrusted.
    pub tail: Vec<u8>,
}

/// The most of the guest's output kept as its tail.
pub const MAX_TAIL: usize = 64 << 10;

/// The end of the guest's output, kept while it is copied out.
#[derive(Clone, Default)]
pub struct Tail(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u8>>>);

impl Tail {
    pub fn keep(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.extend(&bytes[bytes.len().saturating_sub(MAX_TAIL)..]);
        let over = kept.len().saturating_sub(MAX_TAIL);
        kept.drain(..over);
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner())).into()
    }
}

/// One command of a run.
#[derive(Debug, Clone)]
pub struct GuestCommand {
    pub argv: Vec<String>,
    /// A query of the installed set: its standard output is captured, not shown, and it runs
    /// even after a failed command (the set after a failed run is still worth knowing).
    pub query: bool,
}

impl GuestCommand {
    pub fn run(argv: Vec<String>) -> GuestCommand {
        GuestCommand { argv, query: false }
    }

    pub fn query(argv: Vec<String>) -> GuestCommand {
        GuestCommand { argv, query: true }
    }
}

/// The guest's standard streams: never a descriptor of the host's own (the operator's terminal
/// or log file), only ends of something the host side copies.
pub struct GuestStdio {
    pub streams: GuestStreams,
    /// Write ends of one pipe per query command, which gets it as its standard output.
    pub captures: Vec<OwnedFd>,
}

pub enum GuestStreams {
    /// The slave side of a pty of the sandbox's own.
    Terminal(OwnedFd),
    /// stdin, stdout and stderr: pipes whose other ends the host side feeds or copies.
    Pipes([OwnedFd; 3]),
}

impl GuestStdio {
    fn raw_fds(&self) -> Vec<RawFd> {
        let mut fds = match &self.streams {
            GuestStreams::Terminal(fd) => vec![fd.as_raw_fd()],
            GuestStreams::Pipes(fds) => fds.iter().map(|f| f.as_raw_fd()).collect(),
        };
        fds.extend(self.captures.iter().map(|f| f.as_raw_fd()));
        fds
    }
}

/// The most of a command's output kept when captured.
pub const MAX_CAPTURE: usize = 64 << 20;
