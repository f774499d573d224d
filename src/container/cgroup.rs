//! A cgroup per sandbox run, with a pids and a memory limit, killed and removed as a whole when
//! the run ends. cgroup v2 (a `vzpkg` parent under the unified root) where the controllers are
//! there, else the v1 `pids` and `memory` hierarchies (nested under vzpkg's own cgroup, so any
//! limit already placed on vzpkg still applies). A fork bomb or a memory hog inside a container
//! ends that run and nothing else.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const ROOT: &str = "/sys/fs/cgroup";

/// Socket buffers a run may hold on cgroup v1: apt's downloads over loopback need a few MiB.
const MAX_TCP_BUFFERS: u64 = 256 << 20;

/// The limits of one run (config `[sandbox]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Processes and threads at once.
    pub pids_max: u64,
    /// Bytes of memory (page cache included, as the kernel counts it).
    pub memory_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { pids_max: 4096, memory_max: 4 << 30 }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Version {
    V2,
    V1,
}

/// One run's cgroup: a directory per hierarchy (one on v2, `pids` and `memory` on v1).
#[derive(Debug)]
pub struct RunCgroup {
    version: Version,
    dirs: Vec<PathBuf>,
}

impl RunCgroup {
    /// Creates the run's cgroup with `limits`; removes what earlier runs that died left. On
    /// v1 it sits under the cgroup of `under` (a running container's init), else under vzpkg's
    /// own, so the limits already placed there still apply.
    pub fn create(name: &str, limits: &Limits, under: Option<i32>) -> Result<RunCgroup> {
        let file = match under {
            Some(pid) => format!("/proc/{pid}/cgroup"),
            None => "/proc/self/cgroup".to_string(),
        };
        let own = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
        Self::create_in(Path::new(ROOT), &own, name, limits)
    }

    /// The same under the cgroup filesystem root `root`, for a process whose /proc/self/cgroup
    /// reads `own`.
    fn create_in(root: &Path, own: &str, name: &str, limits: &Limits) -> Result<RunCgroup> {
        let unified = root.join("cgroup.controllers");
        if std::fs::read_to_string(&unified).is_ok_and(|c| has_words(&c, &["pids", "memory"])) {
            let parent = root.join("vzpkg");
            mkdir(&parent)?;
            for dir in [root, &parent] {
                write(&dir.join("cgroup.subtree_control"), "+pids +memory")?;
            }
            remove_stale(&parent);
            let dir = parent.join(name);
            mkdir(&dir)?;
            write(&dir.join("pids.max"), &limits.pids_max.to_string())?;
            write(&dir.join("memory.max"), &limits.memory_max.to_string())?;
            return Ok(RunCgroup { version: Version::V2, dirs: vec![dir] });
        }
        let mut dirs = Vec::new();
        for controller in ["pids", "memory"] {
            let hierarchy = root.join(controller);
            if !hierarchy.join("cgroup.procs").exists() {
                bail!(
                    "no cgroup {controller} controller at {} (v1) or {} (v2): vzpkg limits each run with one",
                    hierarchy.display(),
                    root.display()
                );
            }
            let parent = hierarchy.join(own_v1_path(own, controller).trim_start_matches('/')).join("vzpkg");
            mkdir(&parent)?;
            remove_stale(&parent);
            let dir = parent.join(name);
            mkdir(&dir)?;
            dirs.push(dir);
        }
        write(&dirs[0].join("pids.max"), &limits.pids_max.to_string())?;
        write(&dirs[1].join("memory.limit_in_bytes"), &limits.memory_max.to_string())?;
        // v1 counts socket buffers only under a limit of their own (v2 counts them in
        // memory.max): without one a guest can queue gigabytes on its own loopback.
        let tcp = limits.memory_max.min(MAX_TCP_BUFFERS);
        let _ = std::fs::write(dirs[1].join("memory.kmem.tcp.limit_in_bytes"), tcp.to_string());
        Ok(RunCgroup { version: Version::V1, dirs })
    }

    /// Moves `pid` (and so everything it will start) into the run's cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the kernel killed a process of this run for going over the memory limit.
    pub fn oom_killed(&self) -> bool {
        let (file, dir) = match self.version {
            Version::V2 => ("memory.events", &self.dirs[0]),
            Version::V1 => ("memory.oom_control", &self.dirs[1]),
        };
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        text.lines().any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
    }

    /// Kills every process left in the run's cgroup and removes it. Idempotent.
    pub fn kill_and_remove(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for dir in &self.dirs {
            if !dir.exists() {
                continue;
            }
            if self.version == Version::V2 {
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            }
            // v1 has no cgroup.kill; on v2 this only waits for the kill to land.
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                for pid in procs(dir) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn procs(dir: &Path) -> Vec<i32> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Removes run cgroups under `parent` left by a killed keeper: those of a vzpkg process that is
/// gone (`run-PID-…`; a cgroup of a live run may be empty for a moment) and that nothing uses.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix("run-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        let path = entry.path();
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) && procs(&path).is_empty() {
            let _ = std::fs::remove_dir(&path);
        }
    }
}

/// A process's own cgroup in the v1 hierarchy of `controller`, from its /proc/PID/cgroup.
fn own_v1_path(own: &str, controller: &str) -> String {
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        if controllers.split(',').any(|c| c == controller) && !path.split('/').any(|c| c == "..") {
            return path.to_string();
        }
    }
    "/".to_string()
}

fn has_words(text: &str, words: &[&str]) -> bool {
    words.iter().all(|w| text.split_whitespace().any(|t| t == *w))
}

fn mkdir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(e).with_context(|| format!("creating cgroup {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn write(file: &Path, value: &str) -> Result<()> {
    std::fs::write(file, value).with_context(|| format!("writing {value:?} to {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { pids_max: 77, memory_max: 1 << 30 };
    const READ: fn(PathBuf) -> String = |p| std::fs::read_to_string(p).unwrap();

    #[test]
    fn on_v2_a_run_gets_one_cgroup_under_vzpkg_with_both_controllers_enabled() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma\n").unwrap();
        let cgroup = RunCgroup::create_in(root.path(), "0::/system.slice/x.service\n", "run-1-2", &LIMITS).unwrap();
        let dir = root.path().join("vzpkg/run-1-2");
        assert_eq!(cgroup.dirs, std::slice::from_ref(&dir));
        assert_eq!(READ(dir.join("pids.max")), "77");
        assert_eq!(READ(dir.join("memory.max")), "1073741824");
        for enabled in [root.path().to_path_buf(), root.path().join("vzpkg")] {
            assert_eq!(READ(enabled.join("cgroup.subtree_control")), "+pids +memory");
        }
    }

    #[test]
    fn on_v1_a_run_nests_under_vzpkgs_own_cgroup_in_each_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        for controller in ["pids", "memory"] {
            std::fs::create_dir_all(root.path().join(controller)).unwrap();
            std::fs::write(root.path().join(controller).join("cgroup.procs"), "").unwrap();
        }
        std::fs::create_dir_all(root.path().join("memory/outer/job")).unwrap();
        let own = "8:pids:/\n4:memory:/outer/job\n0::/\n";
        let cgroup = RunCgroup::create_in(root.path(), own, "run-1-2", &LIMITS).unwrap();
        let (pids, memory) =
            (root.path().join("pids/vzpkg/run-1-2"), root.path().join("memory/outer/job/vzpkg/run-1-2"));
        assert_eq!(cgroup.dirs, [pids.clone(), memory.clone()]);
        assert_eq!(READ(pids.join("pids.max")), "77");
        assert_eq!(READ(memory.join("memory.limit_in_bytes")), "1073741824");
    }

    #[test]
    fn without_controllers_the_error_names_where_it_looked() {
        let root = tempfile::tempdir().unwrap();
        let err = RunCgroup::create_in(root.path(), "0::/\n", "run-1-2", &LIMITS).unwrap_err();
        assert!(format!("{err}").contains("no cgroup pids controller"), "{err}");
    }

    #[test]
    fn stale_runs_of_dead_processes_are_removed_and_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let live = parent.path().join(format!("run-{}-1", std::process::id()));
        let dead = parent.path().join(format!("run-{}-1", i32::MAX));
        for dir in [&live, &dead] {
            std::fs::create_dir(dir).unwrap();
        }
        remove_stale(parent.path());
        assert!(live.exists() && !dead.exists());
    }
}
