//! The host side of a run: vzpkg itself. Creates the run's cgroup, forks the keeper while this
//! process still has a single thread, then serves what the sandbox asks of the host — the relay
//! to the proxy, the operator's terminal, captured output — until the keeper reports the end.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

use super::messages::{self, Message};
use super::{keeper, Outcome, Spec, MAX_CAPTURE};
use crate::container::cgroup::RunCgroup;
use crate::container::syscall::assert_single_threaded;
use crate::container::{relay, terminal};

/// Runs the spec's commands in a fresh sandbox and reports how they ended.
pub fn run(spec: &Spec) -> Result<Outcome> {
    let run_name = format!("run-{}-{}", std::process::id(), crate::commands::now_millis());
    let cgroup = RunCgroup::create(&run_name, &spec.limits).context("creating the run's cgroup")?;
    let (host_end, keeper_end) = messages::pair().context("creating the sandbox's control socket")?;
    let pty = if spec.pty { Some(terminal::open()?) } else { None };
    let capture = if spec.capture { Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?) } else { None };

    assert_single_threaded();
    // SAFETY: no thread exists (checked above), so the child may do anything the parent could.
    let keeper = match unsafe { fork() }.context("forking the sandbox's keeper")? {
        ForkResult::Child => {
            drop(host_end);
            let slave = pty.map(|p| p.slave);
            let capture = capture.map(|(_, write)| write);
            keeper::run(spec, &cgroup, keeper_end, slave, capture)
        }
        ForkResult::Parent { child } => child,
    };
    drop(keeper_end);
    let _raw = pty.map(|p| {
        drop(p.slave);
        let raw = terminal::RawMode::enter();
        let _ = terminal::relay(p.master);
        raw
    });
    let output = capture.map(|(read, write)| {
        drop(write);
        std::thread::spawn(move || read_bounded(read))
    });

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
            Message::Exited { code, oom, timed_out } => ended = Some((code, oom, timed_out)),
        }
    }
    let _ = waitpid(keeper, None);
    cgroup.kill_and_remove();
    if let Some(text) = failed {
        return Err(anyhow!("{text}")).context(format!("setting up the sandbox for {}", spec.name));
    }
    let Some((code, oom, timed_out)) = ended else {
        bail!("the sandbox's keeper for {} ended without a word", spec.name);
    };
    let output = output.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
    Ok(Outcome { code, oom, timed_out, output })
}

fn read_bounded(read: OwnedFd) -> Vec<u8> {
    let mut file = std::fs::File::from(read);
    let mut out = Vec::new();
    let _ = (&mut file).take(MAX_CAPTURE as u64).read_to_end(&mut out);
    // Past the bound, drained and dropped, so the guest never blocks on a full pipe.
    let _ = std::io::copy(&mut file, &mut std::io::sink());
    out
}
