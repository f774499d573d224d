//! The one seam between the sandbox and the kernel (youki's model): every namespace, mount,
//! credential and process-hygiene call the sandbox makes goes through [`Syscall`], with one real
//! implementation, [`Linux`], and a recording double for unit tests that check the order of the
//! steps without root. Keeping it narrow keeps the dangerous part reviewable in one screen.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

/// `mount_setattr` attributes (linux/mount.h).
pub mod attr {
    pub const RDONLY: u64 = 0x1;
    pub const NOSUID: u64 = 0x2;
    pub const NODEV: u64 = 0x4;
    pub const NOEXEC: u64 = 0x8;
    pub const IDMAP: u64 = 0x0010_0000;
}

/// What `clone_into_namespaces` returns on each side.
pub enum Cloned {
    Child,
    Parent { pid: i32, pidfd: OwnedFd },
}

pub trait Syscall {
    /// A fork-like clone3 into new namespaces, with a pidfd for the parent.
    fn clone_into_namespaces(&self, flags: CloneFlags) -> io::Result<Cloned>;
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    /// Joins the namespaces `flags` names of the process a pidfd holds (its pid namespace for
    /// the children to come).
    fn join_namespaces(&self, pidfd: BorrowedFd, flags: CloneFlags) -> io::Result<()>;
    /// Orphans of this process's descendants become its children, to reap.
    fn set_child_subreaper(&self) -> io::Result<()>;
    /// Maps ids 0..count of `pid`'s user namespace to the host ranges starting at the bases.
    fn write_id_maps(&self, pid: i32, uid_base: u32, gid_base: u32, count: u32) -> io::Result<()>;
    /// Becomes uid and gid 0 of the current user namespace, with no supplementary groups.
    fn become_root(&self) -> io::Result<()>;
    /// Whether this process may be ptraced or have its /proc files opened by its own uid.
    fn set_dumpable(&self, dumpable: bool) -> io::Result<()>;
    fn set_parent_death_signal(&self) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;

    /// `mount --make-rprivate /`: nothing mounted here propagates to the host.
    fn make_mounts_private(&self) -> io::Result<()>;
    /// A new, detached filesystem (fsopen + fsconfig + fsmount) with mount attributes `attrs`.
    fn new_filesystem(&self, fstype: &str, options: &[(&str, &str)], attrs: u64) -> io::Result<OwnedFd>;
    /// A detached copy (OPEN_TREE_CLONE) of the mount at `path` below `dir` ("" for `dir` itself),
    /// made private: a copy of a shared mount would otherwise be its peer, and whatever the
    /// sandbox mounts on it (/proc, /dev, the views) would appear in the host's or the
    /// container's mount namespace — and stay there.
    fn clone_tree(&self, dir: BorrowedFd, path: &str) -> io::Result<OwnedFd>;
    /// The same with every mount below `dir` (`AT_RECURSIVE`), all private; `dir` must be in
    /// this process's mount namespace.
    fn clone_tree_recursive(&self, dir: BorrowedFd) -> io::Result<OwnedFd>;
    /// Sets attributes on a detached tree; `userns` makes it an idmapped mount.
    fn set_mount_attrs(&self, tree: BorrowedFd, attrs: u64, userns: Option<BorrowedFd>) -> io::Result<()>;
    /// Sets attributes on every mount of a detached tree.
    fn set_tree_attrs(&self, tree: BorrowedFd, attrs: u64) -> io::Result<()>;
    /// Attaches the detached `tree` on the directory or file `target` (a descriptor, never a path).
    fn attach(&self, tree: BorrowedFd, target: BorrowedFd) -> io::Result<()>;
    /// Makes `root` the root: pivot_root, then detaches the old root from the namespace.
    fn pivot_into(&self, root: BorrowedFd) -> io::Result<()>;

    /// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symlinks never leave `dir`.
    fn open_beneath(&self, dir: BorrowedFd, path: &str, flags: OFlag) -> io::Result<OwnedFd>;
    fn mkdir_at(&self, dir: BorrowedFd, name: &str, mode: u32) -> io::Result<()>;
    /// Creates a new empty file (O_EXCL, no symlink followed) and returns it.
    fn create_at(&self, dir: BorrowedFd, name: &str, mode: u32) -> io::Result<OwnedFd>;
    fn symlink_at(&self, target: &str, dir: BorrowedFd, name: &str) -> io::Result<()>;

    /// Closes every descriptor from 3 up except `keep`; an error is an error, not ignored.
    fn close_fds_except(&self, keep: &[RawFd]) -> io::Result<()>;
    fn setsid(&self) -> io::Result<()>;
    /// Makes the terminal `fd` the controlling terminal and standard input, output and error.
    fn attach_terminal(&self, fd: BorrowedFd) -> io::Result<()>;
    /// Makes the three descriptors standard input, output and error.
    fn redirect_stdio(&self, fds: [BorrowedFd; 3]) -> io::Result<()>;
    fn bring_loopback_up(&self) -> io::Result<()>;
    /// Lowers the resource limits whose use is charged to a host user beyond the run's cgroup
    /// (POSIX message queues), hard limits included.
    fn limit_resources(&self) -> io::Result<()>;
    /// Limits every capability set, the bounding set included, to `keep`.
    fn limit_capabilities(&self, keep: &[caps::Capability]) -> io::Result<()>;
    fn set_no_new_privs(&self) -> io::Result<()>;
    fn install_seccomp(&self, program: &[seccompiler::sock_filter]) -> io::Result<()>;
    /// Replaces the process image; returns only on failure.
    fn exec(&self, path: &std::ffi::CStr, argv: &[CString], env: &[CString]) -> io::Error;
}

/// The real kernel.
pub struct Linux;

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Syscall for Linux {
    fn clone_into_namespaces(&self, flags: CloneFlags) -> io::Result<Cloned> {
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
            cgroup: u64,
        }
        assert_single_threaded();
        let mut pidfd: libc::c_int = -1;
        let args = CloneArgs {
            flags: flags.bits() as u64 | libc::CLONE_PIDFD as u64,
            pidfd: &mut pidfd as *mut libc::c_int as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        // SAFETY: with no stack given, clone3 behaves like fork: the child continues on a copy
        // of this (single-threaded) process; `args` outlives the call.
        let pid = cvt(unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>()) })?;
        if pid == 0 {
            return Ok(Cloned::Child);
        }
        // SAFETY: CLONE_PIDFD made the kernel store a new descriptor that nothing else owns.
        Ok(Cloned::Parent { pid: pid as i32, pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) } })
    }

    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        nix::sched::unshare(flags).map_err(io::Error::from)
    }

    fn join_namespaces(&self, pidfd: BorrowedFd, flags: CloneFlags) -> io::Result<()> {
        nix::sched::setns(pidfd, flags).map_err(io::Error::from)
    }

    fn set_child_subreaper(&self) -> io::Result<()> {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
        cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } as libc::c_long).map(drop)
    }

    fn write_id_maps(&self, pid: i32, uid_base: u32, gid_base: u32, count: u32) -> io::Result<()> {
        std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid_base} {count}\n"))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid_base} {count}\n"))
    }

    fn become_root(&self) -> io::Result<()> {
        // SAFETY: plain credential calls with no pointers but the empty group list.
        unsafe {
            cvt(libc::setgroups(0, std::ptr::null()) as libc::c_long)?;
            cvt(libc::setresgid(0, 0, 0) as libc::c_long)?;
            cvt(libc::setresuid(0, 0, 0) as libc::c_long)?;
        }
        Ok(())
    }

    fn set_dumpable(&self, dumpable: bool) -> io::Result<()> {
        nix::sys::prctl::set_dumpable(dumpable).map_err(io::Error::from)
    }

    fn set_parent_death_signal(&self) -> io::Result<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(io::Error::from)
    }

    fn make_mounts_private(&self) -> io::Result<()> {
        use nix::mount::MsFlags;
        nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .map_err(io::Error::from)
    }

    fn new_filesystem(&self, fstype: &str, options: &[(&str, &str)], attrs: u64) -> io::Result<OwnedFd> {
        use rustix::mount::{fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen};
        use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
        let fs = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
        for (key, value) in options {
            if value.is_empty() {
                fsconfig_set_flag(&fs, *key)?;
            } else {
                fsconfig_set_string(&fs, *key, *value)?;
            }
        }
        fsconfig_create(&fs)?;
        let attrs = MountAttrFlags::from_bits_retain(attrs as u32);
        Ok(fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?)
    }

    fn clone_tree(&self, dir: BorrowedFd, path: &str) -> io::Result<OwnedFd> {
        use rustix::mount::{open_tree, OpenTreeFlags};
        let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        if path.is_empty() {
            flags |= OpenTreeFlags::AT_EMPTY_PATH;
        }
        flags |= OpenTreeFlags::AT_SYMLINK_NOFOLLOW;
        let tree = open_tree(dir, path, flags)?;
        mount_setattr(tree.as_fd(), true, 0, MS_PRIVATE, None)?;
        Ok(tree)
    }

    fn clone_tree_recursive(&self, dir: BorrowedFd) -> io::Result<OwnedFd> {
        use rustix::mount::{open_tree, OpenTreeFlags};
        let flags = OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH
            | OpenTreeFlags::AT_RECURSIVE;
        let tree = open_tree(dir, "", flags)?;
        mount_setattr(tree.as_fd(), true, 0, MS_PRIVATE, None)?;
        Ok(tree)
    }

    fn set_mount_attrs(&self, tree: BorrowedFd, attrs: u64, userns: Option<BorrowedFd>) -> io::Result<()> {
        mount_setattr(tree, false, attrs, 0, userns)
    }

    fn set_tree_attrs(&self, tree: BorrowedFd, attrs: u64) -> io::Result<()> {
        mount_setattr(tree, true, attrs, 0, None)
    }

    fn attach(&self, tree: BorrowedFd, target: BorrowedFd) -> io::Result<()> {
        use rustix::mount::{move_mount, MoveMountFlags};
        let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
        Ok(move_mount(tree, "", target, "", flags)?)
    }

    fn pivot_into(&self, root: BorrowedFd) -> io::Result<()> {
        nix::unistd::fchdir(root)?;
        nix::unistd::pivot_root(".", ".")?;
        nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)?;
        nix::unistd::chdir("/")?;
        Ok(())
    }

    fn open_beneath(&self, dir: BorrowedFd, path: &str, flags: OFlag) -> io::Result<OwnedFd> {
        // openat2 refuses flags that do not go with O_PATH, where open() would ignore them.
        let extra = if flags.contains(OFlag::O_PATH) { OFlag::O_CLOEXEC } else { OFlag::O_CLOEXEC | OFlag::O_NOCTTY };
        let how = OpenHow::new()
            .flags(flags | extra)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        Ok(nix::fcntl::openat2(dir, path, how)?)
    }

    fn mkdir_at(&self, dir: BorrowedFd, name: &str, mode: u32) -> io::Result<()> {
        nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(mode)).map_err(io::Error::from)
    }

    fn create_at(&self, dir: BorrowedFd, name: &str, mode: u32) -> io::Result<OwnedFd> {
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        Ok(nix::fcntl::openat(dir, name, flags, Mode::from_bits_truncate(mode))?)
    }

    fn symlink_at(&self, target: &str, dir: BorrowedFd, name: &str) -> io::Result<()> {
        nix::unistd::symlinkat(target, dir, name).map_err(io::Error::from)
    }

    fn close_fds_except(&self, keep: &[RawFd]) -> io::Result<()> {
        let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 3).collect();
        keep.sort_unstable();
        let mut from: u32 = 3;
        for fd in keep.into_iter().chain([u32::MAX as RawFd]) {
            let fd = fd as u32;
            if fd > from {
                // SAFETY: close_range only closes descriptors; the ones kept are outside the range.
                cvt(unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0u32) })?;
            }
            from = fd.saturating_add(1);
        }
        Ok(())
    }

    fn setsid(&self) -> io::Result<()> {
        nix::unistd::setsid().map(drop).map_err(io::Error::from)
    }

    fn attach_terminal(&self, fd: BorrowedFd) -> io::Result<()> {
        // SAFETY: TIOCSCTTY takes an int argument; dup2 only duplicates descriptors.
        unsafe {
            cvt(libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) as libc::c_long)?;
            for target in 0..3 {
                cvt(libc::dup2(fd.as_raw_fd(), target) as libc::c_long)?;
            }
        }
        Ok(())
    }

    fn redirect_stdio(&self, fds: [BorrowedFd; 3]) -> io::Result<()> {
        // Copied out of 0..3 first, so that one of them being 0, 1 or 2 cannot clobber another.
        let mut high = Vec::new();
        for fd in fds {
            // SAFETY: F_DUPFD_CLOEXEC only duplicates the descriptor.
            high.push(cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) } as libc::c_long)? as RawFd);
        }
        for (target, fd) in high.into_iter().enumerate() {
            // SAFETY: dup2 and close only act on descriptors this process owns.
            unsafe {
                cvt(libc::dup2(fd, target as RawFd) as libc::c_long)?;
                libc::close(fd);
            }
        }
        Ok(())
    }

    fn bring_loopback_up(&self) -> io::Result<()> {
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain data; the name fits with its NUL; the ioctls read and write only it.
        unsafe {
            let mut req: libc::ifreq = std::mem::zeroed();
            for (i, b) in b"lo\0".iter().enumerate() {
                req.ifr_name[i] = *b as libc::c_char;
            }
            cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) as libc::c_long)?;
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) as libc::c_long)?;
        }
        Ok(())
    }

    fn limit_resources(&self) -> io::Result<()> {
        use nix::sys::resource::{setrlimit, Resource};
        setrlimit(Resource::RLIMIT_MSGQUEUE, 64 << 10, 64 << 10).map_err(io::Error::from)
    }

    fn limit_capabilities(&self, keep: &[caps::Capability]) -> io::Result<()> {
        use caps::CapSet;
        let keep: caps::CapsHashSet = keep.iter().copied().collect();
        let err = |e: caps::errors::CapsError| io::Error::other(e.to_string());
        for cap in caps::all() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
            }
        }
        caps::clear(None, CapSet::Ambient).map_err(err)?;
        for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
            let now = caps::read(None, set).map_err(err)?;
            caps::set(None, set, &now.intersection(&keep).copied().collect()).map_err(err)?;
        }
        Ok(())
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)
    }

    fn install_seccomp(&self, program: &[seccompiler::sock_filter]) -> io::Result<()> {
        seccompiler::apply_filter(program).map_err(|e| io::Error::other(e.to_string()))
    }

    fn exec(&self, path: &std::ffi::CStr, argv: &[CString], env: &[CString]) -> io::Error {
        match nix::unistd::execve(path, argv, env) {
            Err(e) => e.into(),
            Ok(never) => match never {},
        }
    }
}

/// `MS_PRIVATE` (linux/mount.h), as `mount_setattr` takes it.
const MS_PRIVATE: u64 = 1 << 18;

/// `mount_setattr` on the detached tree `tree`: `attrs` set, `propagation` changed unless 0,
/// idmapped through `userns`; on every mount of the tree when `recursive`.
fn mount_setattr(
    tree: BorrowedFd,
    recursive: bool,
    attrs: u64,
    propagation: u64,
    userns: Option<BorrowedFd>,
) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let arg = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation,
        userns_fd: userns.map(|fd| fd.as_raw_fd() as u64).unwrap_or(0),
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr reads `arg` (of the size given) and the empty path.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &arg as *const MountAttr,
            size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// Forking or setns into a mount namespace is only sound in a single-threaded process.
pub fn assert_single_threaded() {
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1);
    assert_eq!(threads, 1, "vzpkg: the sandbox must be forked before any thread exists");
}

#[cfg(test)]
pub mod recording {
    //! A [`Syscall`] that records each call instead of making it, for checking the order of
    //! the sandbox's steps without root. Descriptors it hands out lead to /dev/null.

    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    pub struct Recorder {
        pub calls: RefCell<Vec<String>>,
        /// Calls whose name starts with this fail with EINVAL.
        pub fail: Option<&'static str>,
    }

    impl Recorder {
        fn log(&self, call: String) -> io::Result<()> {
            let fails = self.fail.is_some_and(|f| call.starts_with(f));
            self.calls.borrow_mut().push(call);
            if fails {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                Ok(())
            }
        }

        fn fd(&self) -> OwnedFd {
            std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").unwrap().into()
        }

        pub fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }

        /// Index of the first call starting with `prefix`.
        pub fn position(&self, prefix: &str) -> usize {
            let calls = self.calls();
            calls.iter().position(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {calls:#?}"))
        }
    }

    impl Syscall for Recorder {
        fn clone_into_namespaces(&self, flags: CloneFlags) -> io::Result<Cloned> {
            self.log(format!("clone {flags:?}"))?;
            Ok(Cloned::Parent { pid: 4242, pidfd: self.fd() })
        }
        fn clone_tree_recursive(&self, _dir: BorrowedFd) -> io::Result<OwnedFd> {
            self.log("clone_tree_recursive".into())?;
            Ok(self.fd())
        }
        fn join_namespaces(&self, _pidfd: BorrowedFd, flags: CloneFlags) -> io::Result<()> {
            self.log(format!("join_namespaces {flags:?}"))
        }
        fn set_child_subreaper(&self) -> io::Result<()> {
            self.log("child_subreaper".into())
        }
        fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
            self.log(format!("unshare {flags:?}"))
        }
        fn write_id_maps(&self, pid: i32, uid_base: u32, gid_base: u32, count: u32) -> io::Result<()> {
            self.log(format!("id_maps {pid} {uid_base} {gid_base} {count}"))
        }
        fn become_root(&self) -> io::Result<()> {
            self.log("become_root".into())
        }
        fn set_dumpable(&self, dumpable: bool) -> io::Result<()> {
            self.log(format!("dumpable {dumpable}"))
        }
        fn set_parent_death_signal(&self) -> io::Result<()> {
            self.log("pdeathsig".into())
        }
        fn sethostname(&self, name: &str) -> io::Result<()> {
            self.log(format!("sethostname {name}"))
        }
        fn make_mounts_private(&self) -> io::Result<()> {
            self.log("make_private".into())
        }
        fn new_filesystem(&self, fstype: &str, options: &[(&str, &str)], attrs: u64) -> io::Result<OwnedFd> {
            self.log(format!("new_filesystem {fstype} {options:?} {attrs:#x}"))?;
            Ok(self.fd())
        }
        fn clone_tree(&self, _dir: BorrowedFd, path: &str) -> io::Result<OwnedFd> {
            self.log(format!("clone_tree {path}"))?;
            Ok(self.fd())
        }
        fn set_mount_attrs(&self, _tree: BorrowedFd, attrs: u64, userns: Option<BorrowedFd>) -> io::Result<()> {
            self.log(format!("set_mount_attrs {attrs:#x} idmap={}", userns.is_some()))
        }
        fn set_tree_attrs(&self, _tree: BorrowedFd, attrs: u64) -> io::Result<()> {
            self.log(format!("set_tree_attrs {attrs:#x}"))
        }
        fn attach(&self, _tree: BorrowedFd, _target: BorrowedFd) -> io::Result<()> {
            self.log("attach".into())
        }
        fn pivot_into(&self, _root: BorrowedFd) -> io::Result<()> {
            self.log("pivot_into".into())
        }
        fn open_beneath(&self, _dir: BorrowedFd, path: &str, _flags: OFlag) -> io::Result<OwnedFd> {
            self.log(format!("open_beneath {path}"))?;
            Ok(self.fd())
        }
        fn mkdir_at(&self, _dir: BorrowedFd, name: &str, mode: u32) -> io::Result<()> {
            self.log(format!("mkdir_at {name} {mode:o}"))
        }
        fn create_at(&self, _dir: BorrowedFd, name: &str, mode: u32) -> io::Result<OwnedFd> {
            self.log(format!("create_at {name} {mode:o}"))?;
            Ok(self.fd())
        }
        fn symlink_at(&self, target: &str, _dir: BorrowedFd, name: &str) -> io::Result<()> {
            self.log(format!("symlink_at {name} -> {target}"))
        }
        fn close_fds_except(&self, keep: &[RawFd]) -> io::Result<()> {
            self.log(format!("close_fds_except {keep:?}"))
        }
        fn setsid(&self) -> io::Result<()> {
            self.log("setsid".into())
        }
        fn attach_terminal(&self, _fd: BorrowedFd) -> io::Result<()> {
            self.log("attach_terminal".into())
        }
        fn redirect_stdio(&self, _fds: [BorrowedFd; 3]) -> io::Result<()> {
            self.log("redirect_stdio".into())
        }
        fn bring_loopback_up(&self) -> io::Result<()> {
            self.log("loopback_up".into())
        }
        fn limit_resources(&self) -> io::Result<()> {
            self.log("limit_resources".into())
        }
        fn limit_capabilities(&self, keep: &[caps::Capability]) -> io::Result<()> {
            self.log(format!("limit_capabilities {}", keep.len()))
        }
        fn set_no_new_privs(&self) -> io::Result<()> {
            self.log("no_new_privs".into())
        }
        fn install_seccomp(&self, program: &[seccompiler::sock_filter]) -> io::Result<()> {
            self.log(format!("seccomp {} instructions", program.len()))
        }
        fn exec(&self, path: &std::ffi::CStr, argv: &[CString], _env: &[CString]) -> io::Error {
            let _ = self.log(format!("exec {path:?} {argv:?}"));
            io::Error::from_raw_os_error(libc::ENOEXEC)
        }
    }
}
