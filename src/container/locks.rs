//! Locks: the host-side per-container lock (so operations on one container queue while
//! different containers run in parallel), and probing the container's own dpkg/apt fcntl locks
//! without ever deleting them: a lock file nobody holds is harmless.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fs2::FileExt;
use nix::fcntl::OFlag;

use super::Container;

/// How often a held lock is looked at again while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Holds the host-side lock of one container until dropped.
pub struct HostLock(#[allow(dead_code)] File);

/// Takes the host-side lock for `container`, waiting up to `timeout` for another vzpkg command
/// on the same container to finish.
pub fn host_lock(state_dir: &Path, container: &Container, timeout: Duration) -> Result<HostLock> {
    let dir = state_dir.join("locks");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // One lock file per container identity (device and inode of its root), so two spellings
    // of one root — a symlink, a config name, a bind mount — share one lock.
    let (dev, ino) = container.identity;
    let path = dir.join(format!("root-{dev:x}-{ino:x}.lock"));
    let file = File::create(&path).with_context(|| format!("creating lock file {}", path.display()))?;
    let started = Instant::now();
    let mut told = false;
    loop {
        if file.try_lock_exclusive().is_ok() {
            return Ok(HostLock(file));
        }
        if started.elapsed() >= timeout {
            bail!(
                "another vzpkg command is still running on {} after {} s (lock {}); try again later or raise --timeout",
                container.name,
                timeout.as_secs(),
                path.display()
            );
        }
        if !told {
            eprintln!("vzpkg: waiting for another vzpkg command on {} to finish", container.name);
            told = true;
        }
        std::thread::sleep(POLL);
    }
}

/// Who holds an fcntl write lock on a file inside the container, if anyone.
fn holder(container: &Container, rel: &str) -> Result<Option<i32>> {
    // Opening for writing is needed to ask about write locks; nothing is written.
    let fd = match container.open_file_in(rel, OFlag::O_RDWR) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ELOOP) => {
            bail!("lock file {} is not a regular file: the container root looks tampered with", container.show(rel))
        }
        Err(e) => return Err(e).with_context(|| format!("opening lock file {}", container.show(rel))),
    };
    let mut probe =
        libc::flock { l_type: libc::F_WRLCK as i16, l_whence: libc::SEEK_SET as i16, l_start: 0, l_len: 0, l_pid: 0 };
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETLK(&mut probe))
        .with_context(|| format!("probing lock {}", container.show(rel)))?;
    Ok((probe.l_type != libc::F_UNLCK as i16).then_some(probe.l_pid))
}

/// Waits until none of `locks` is held, up to `timeout`; then fails naming the holder.
pub fn wait_for_guest_locks(container: &Container, locks: &[&str], timeout: Duration) -> Result<()> {
    // A layered container is stopped and reached only through vzpkg, whose host lock is held:
    // nobody else can hold its locks (and its overlay's locks are each mount's own anyway).
    if container.layers.is_some() {
        return Ok(());
    }
    let started = Instant::now();
    let mut told = false;
    'again: loop {
        for rel in locks {
            if let Some(pid) = holder(container, rel)? {
                let waited = started.elapsed();
                if waited >= timeout {
                    let who =
                        if pid > 0 { format!("pid {pid} ({})", process_name(pid)) } else { "a process".to_string() };
                    bail!(
                        "package manager lock /{rel} held by {who} in the container for {} s: wait for it to finish or stop it, then retry (or raise --timeout)",
                        waited.as_secs()
                    );
                }
                if !told {
                    eprintln!(
                        "vzpkg: /{rel} in {} is held by pid {pid} ({}); waiting up to {} s",
                        container.name,
                        process_name(pid),
                        timeout.as_secs()
                    );
                    told = true;
                }
                std::thread::sleep(POLL);
                continue 'again;
            }
        }
        return Ok(());
    }
}

/// A process's command name as the operator should read it (the guest chose it).
pub fn process_name(pid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_else(|_| "gone".to_string());
    crate::untrusted::printable(comm.trim_end(), 64)
}

/// Processes that have one of `files` (device, inode) open or mapped, with their names: read
/// from the host's /proc, so every container's processes are seen.
pub fn users_of(files: &[(u64, u64)]) -> Vec<(i32, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut users = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return users };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        let uses = ["fd", "map_files"].iter().any(|sub| {
            let Ok(links) = std::fs::read_dir(format!("/proc/{pid}/{sub}")) else { return false };
            // `metadata` follows the magic link to the open file itself, wherever it lives.
            links.flatten().any(|l| l.path().metadata().is_ok_and(|m| files.contains(&(m.dev(), m.ino()))))
        });
        if uses {
            users.push((pid, process_name(pid)));
        }
    }
    users
}
