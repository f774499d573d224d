//! Running containers for the tests: a root started with unshare(1) in pid, mount, network and
//! uts namespaces of its own (optionally a user namespace too), its init `sleep infinity`.

use std::io::BufRead;
use std::io::BufReader;

use super::rootfs::Rootfs;

/// A container started with unshare(1): its init is `sleep infinity`, pid 1 of its namespace.
pub struct Running {
    /// unshare(1)'s host pid, a child of this test process.
    unshare: i32,
    /// The init's host pid.
    pub pid: i32,
    pub root: Rootfs,
}

impl Running {
    pub fn start(root: Rootfs) -> Running {
        Self::start_in_user_namespace(root, None)
    }

    /// With `base`, in a user namespace of its own mapping 0..65536 to `base..`, as an
    /// unprivileged LXC container is (the maps written from here, as LXC does, so that no
    /// /etc/subuid entry is needed).
    pub fn start_in_user_namespace(root: Rootfs, base: Option<u32>) -> Running {
        use std::ffi::CString;
        use std::os::fd::AsRawFd;
        // Everything the child needs is made before the fork: the test process has threads, so
        // the child makes system calls only.
        let argv: Vec<CString> = [
            "unshare",
            "--pid",
            "--mount",
            "--net",
            "--uts",
            "--fork",
            "--mount-proc",
            // Shared mounts, as LXC and systemd hosts have them: a mount made on a clone of one
            // would show in the container unless the sandbox makes its copies private.
            "--propagation",
            "shared",
            &format!("--root={}", root.path.display()),
            "/bin/sh",
            "-c",
            "echo started; exec sleep infinity",
        ]
        .iter()
        .map(|a| CString::new(*a).unwrap())
        .collect();
        let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        pointers.push(std::ptr::null());
        let program = CString::new("/usr/bin/unshare").unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
        let (go_r, go_w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes system calls on what was prepared above, then execs.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => unsafe {
                libc::dup2(out_w.as_raw_fd(), 1);
                if base.is_some() {
                    let mut byte = 0u8;
                    if libc::unshare(libc::CLONE_NEWUSER) != 0
                        || libc::write(ready_w.as_raw_fd(), b"u".as_ptr().cast(), 1) != 1
                        || libc::read(go_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) != 1
                        || libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setresgid(0, 0, 0) != 0
                        || libc::setresuid(0, 0, 0) != 0
                    {
                        libc::_exit(126);
                    }
                }
                libc::execv(program.as_ptr(), pointers.as_ptr());
                libc::_exit(127)
            },
            nix::unistd::ForkResult::Parent { child } => {
                drop((out_w, ready_w, go_r));
                if let Some(base) = base {
                    assert_eq!(nix::unistd::read(&ready_r, &mut [0u8; 1]).unwrap(), 1);
                    let map = format!("0 {base} 65536\n");
                    std::fs::write(format!("/proc/{child}/uid_map"), &map).unwrap();
                    std::fs::write(format!("/proc/{child}/gid_map"), &map).unwrap();
                }
                nix::unistd::write(&go_w, b"g").unwrap();
                let mut line = String::new();
                BufReader::new(std::fs::File::from(out_r)).read_line(&mut line).unwrap();
                assert_eq!(line, "started\n", "the container did not start");
                let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child)).unwrap();
                Running { unshare: child.as_raw(), pid: children.trim().parse().unwrap(), root }
            }
        }
    }

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
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.unshare), None);
    }
}
