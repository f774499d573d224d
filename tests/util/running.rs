//! Running containers for the tests: a root started with unshare(1) in pid, mount, network and
//! uts namespaces of its own, its mounts shared (as LXC's and a systemd host's are), its init
//! `sleep infinity`; or the same in a user namespace of its own, as unprivileged LXC runs them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::rootfs::Rootfs;

/// Where an unprivileged test container's ids start on the host.
pub const CONTAINER_IDS: u32 = 300_000;

pub struct Running {
    pub unshare: Child,
    /// The init's host pid.
    pub pid: i32,
    pub root: Rootfs,
    /// What holds an unprivileged container's user namespace while its maps are written.
    holder: Option<Child>,
}

impl Running {
    pub fn start(root: Rootfs) -> Running {
        let mut unshare = Command::new("unshare");
        Self::spawn(unshare.arg("--fork"), root, "true", None)
    }

    /// A container in a user namespace of its own: its ids 0…65535 are the host's
    /// CONTAINER_IDS… (a root whose files are stored with other ids shows them as nobody's),
    /// its pid, mount, net and uts namespaces owned by that user namespace. Its root runs
    /// `script` (with busybox, for its own mounts) before it settles as the init.
    pub fn unprivileged(root: Rootfs, script: &str) -> Running {
        std::fs::copy("/bin/busybox", root.path.join("usr/local/bin/busybox")).unwrap();
        let mut holder = Command::new("unshare")
            .args(["--user", "--", "sh", "-c", "echo ready; exec sleep infinity"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        for map in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{}/{map}", holder.id()), format!("0 {CONTAINER_IDS} 65536\n")).unwrap();
        }
        // nsenter becomes root of that user namespace (the host's CONTAINER_IDS), then unshare
        // makes the container's other namespaces, owned by it.
        let mut nsenter = Command::new("nsenter");
        nsenter.args(["--target", &holder.id().to_string(), "--user", "--", "unshare", "--fork"]);
        Self::spawn(&mut nsenter, root, script, Some(holder))
    }

    fn spawn(command: &mut Command, root: Rootfs, script: &str, holder: Option<Child>) -> Running {
        let mut unshare = command
            .args(["--pid", "--mount", "--net", "--uts", "--mount-proc", "--propagation", "shared"])
            .arg(format!("--root={}", root.path.display()))
            .args(["/bin/sh", "-c", &format!("{script} && echo started; exec sleep infinity")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(unshare.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "started\n", "the container's init script failed");
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
        let pid = children.trim().parse().unwrap();
        Running { unshare, pid, root, holder }
    }

    /// `pid:N`, as vzpkg takes it.
    pub fn ct(&self) -> String {
        format!("pid:{}", self.pid)
    }

    pub fn mountinfo(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid)).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
        let _ = self.unshare.wait();
        if let Some(holder) = &mut self.holder {
            let _ = holder.kill();
            let _ = holder.wait();
        }
    }
}
