//! The host side of a run: vzpkg itself. Creates the run's cgroup, forks the keeper while this
//! process still has a single thread, then serves what the sandbox asks of the host — the relay
//! to the proxy, and the guest's standard streams: a pty of its own on a terminal, else pipes
//! copied to and from vzpkg's own (never vzpkg's descriptors themselves: the guest must not
//! learn, truncate or rewrite the operator's log file) — until the keeper reports the end.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, ForkResult};

use super::messages::{self, Message};
use super::{keeper, GuestStdio, GuestStreams, Outcome, Spec, Tail, MAX_CAPTURE};
use crate::container::cgroup::RunCgroup;
use crate::container::syscall::assert_single_threaded;
use crate::container::{relay, terminal, Kind};

/// Runs the spec's commands in a fresh sandbox and reports how they ended.
pub fn run(spec: &Spec) -> Result<Outcome> {
    let run_name = format!("run-{}-{}", std::process::id(), crate::commands::now_millis());
    let under = match spec.kind {
        Kind::Running { pid } => Some(pid),
        Kind::StoppedRoot => None,
    };
    let cgroup = RunCgroup::create(&run_name, &spec.limits, under).context("creating the run's cgroup")?;
    // The container's cgroup was read by pid: it was the init's only if the init still lives.
    if let Some(init) = spec.init {
        if !crate::container::running::alive(init.as_fd()) {
            cgroup.kill_and_remove();
            bail!("the init of {} exited: the container stopped", spec.name);
        }
    }
    let (host_end, keeper_end) = messages::pair().context("creating the sandbox's control socket")?;
    let (streams, host_side) = if spec.pty {
        let pty = terminal::open()?;
        (GuestStreams::Terminal(pty.slave), HostStdio::Terminal(pty.master))
    } else {
        let (stdin_r, stdin_w) = pipe2(OFlag::O_CLOEXEC)?;
        let (stdout_r, stdout_w) = pipe2(OFlag::O_CLOEXEC)?;
        let (stderr_r, stderr_w) = pipe2(OFlag::O_CLOEXEC)?;
        (GuestStreams::Pipes([stdin_r, stdout_w, stderr_w]), HostStdio::Pipes([stdin_w, stdout_r, stderr_r]))
    };
    let (mut captures, mut captured) = (Vec::new(), Vec::new());
    for _ in spec.commands.iter().filter(|c| c.query) {
        let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
        captures.push(write);
        captured.push(read);
    }
    let guest = GuestStdio { streams, captures };

    assert_single_threaded();
    // SAFETY: no thread exists (checked above), so the child may do anything the parent could.
    let keeper = match unsafe { fork() }.context("forking the sandbox's keeper")? {
        ForkResult::Child => {
            drop((host_end, host_side));
            keeper::run(spec, &cgroup, keeper_end, guest)
        }
        ForkResult::Parent { child } => child,
    };
    drop((keeper_end, guest));
    let tail = Tail::default();
    let streams = host_side.serve(&tail);
    let captured: Vec<JoinHandle<Vec<u8>>> = captured
        .into_iter()
        .map(|read| std::thread::spawn(move || copy_out(read, Some(MAX_CAPTURE), None, &mut std::io::sink())))
        .collect();
    let mut query_codes = vec![None; captured.len()];

    let mut failed = None;
    let mut ended = None;
    while let Some((message, mut fds)) = messages::receive(host_end.as_fd()).context("listening to the sandbox")? {
        match message {
            Message::Relay => {
                let fd = fds.pop().ok_or_else(|| anyhow!("the sandbox sent no relay listener"))?;
                relay::spawn(std::net::TcpListener::from(fd), spec.proxy);
            }
            Message::Ready | Message::Trees => {}
            Message::Failed(text) => failed = Some(text),
            Message::Queried { index, code } => {
                if let Some(slot) = query_codes.get_mut(index as usize) {
                    *slot = Some(code);
                }
            }
            Message::Exited { code, oom, timed_out } => ended = Some((code, oom, timed_out)),
        }
    }
    let _ = waitpid(keeper, None);
    cgroup.kill_and_remove();
    // Everything the guest wrote is out before vzpkg says anything more.
    streams.finish();
    let queries = captured
        .into_iter()
        .zip(query_codes)
        .map(|(copy, code)| {
            let bytes = copy.join().unwrap_or_default();
            (code == Some(0)).then_some(bytes)
        })
        .collect();
    if let Some(text) = failed {
        return Err(anyhow!("{text}")).context(format!("setting up the sandbox for {}", spec.name));
    }
    let Some((code, oom, timed_out)) = ended else {
        bail!("the sandbox's keeper for {} ended without a word", spec.name);
    };
    Ok(Outcome { code, oom, timed_out, queries, tail: tail.take() })
}

/// The host's ends of the guest's standard streams.
enum HostStdio {
    Terminal(OwnedFd),
    /// stdin's write end, stdout's and stderr's read ends.
    Pipes([OwnedFd; 3]),
}

/// The threads serving the guest's streams while it runs.
struct Streams {
    _raw: Option<terminal::RawMode>,
    copies: Vec<JoinHandle<()>>,
    terminal: bool,
}

impl HostStdio {
    fn serve(self, tail: &Tail) -> Streams {
        match self {
            HostStdio::Terminal(master) => {
                let raw = terminal::RawMode::enter();
                let copies = terminal::relay(master, tail.clone()).into_iter().collect();
                Streams { _raw: Some(raw), copies, terminal: true }
            }
            HostStdio::Pipes([stdin, stdout, stderr]) => {
                // Not joined: it may wait on vzpkg's stdin forever, and ends with the process.
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::fs::File::from(stdin));
                });
                let (out_tail, err_tail) = (tail.clone(), tail.clone());
                let out =
                    std::thread::spawn(move || drop(copy_out(stdout, None, Some(out_tail), &mut std::io::stdout())));
                let err =
                    std::thread::spawn(move || drop(copy_out(stderr, None, Some(err_tail), &mut std::io::stderr())));
                Streams { _raw: None, copies: vec![out, err], terminal: false }
            }
        }
    }
}

impl Streams {
    /// Waits for the guest's output to end.
    fn finish(self) {
        for copy in self.copies {
            let _ = copy.join();
        }
        if self.terminal && std::io::stderr().is_terminal() {
            // Whatever state the guest left the terminal in (hidden text, colours, no cursor,
            // another character set, a scroll region, the alternate screen), vzpkg's own report
            // is seen as written: a soft reset, then what it leaves alone.
            let _ = std::io::stderr().write_all(b"\x1b[!p\x0f\x1b(B\x1b[0m\x1b[r\x1b[?7h\x1b[?25h\x1b[?1049l\r\n");
        }
    }
}

/// Copies a guest stream to `to` (keeping its end in `tail`), or keeps up to `capture` bytes of
/// it. Past the bound, or when `to` is closed, the rest is read and dropped, so the guest never
/// blocks on a full pipe.
fn copy_out(from: OwnedFd, capture: Option<usize>, tail: Option<Tail>, to: &mut impl Write) -> Vec<u8> {
    let mut from = std::fs::File::from(from);
    let mut kept = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut writing = true;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if let Some(tail) = &tail {
            tail.keep(&buf[..n]);
        }
        match capture {
            Some(max) => kept.extend_from_slice(&buf[..n.min(max.saturating_sub(kept.len()))]),
            None if writing => writing = to.write_all(&buf[..n]).and_then(|()| to.flush()).is_ok(),
            None => {}
        }
    }
    kept
}
