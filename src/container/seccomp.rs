//! The seccomp filter every guest process runs under: a denylist modelled on the default
//! profiles of Docker and systemd-nspawn. Everything a package manager and maintainer scripts
//! use is allowed; what reaches past a container (file handles, kernel modules and kexec, bpf,
//! perf, keyrings, userfaultfd, the mount family, new or joined namespaces, reboot, swap, clocks,
//! accounting, quotas, raw I/O ports, the kernel log, io_uring, terminal injection, sockets
//! other than local, IP and netlink) fails with EPERM; x32 calls with ENOSYS. Other architectures than the host's own (i386 on x86_64) are refused outright by the
//! filter's architecture check.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// Syscalls refused whatever their arguments.
const DENIED: &[libc::c_long] = &[
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_fanotify_init,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_keyctl,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_lookup_dcookie,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_nfsservctl,
];

/// clone() flags that would make or enter namespaces.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
    0x80, // CLONE_NEWTIME
];

/// The filters to install, in order (the kernel applies the most restrictive answer of all).
pub fn programs() -> Result<Vec<BpfProgram>> {
    let arch = std::env::consts::ARCH.try_into().map_err(|e| anyhow!("seccomp: {e:?}"))?;
    let cond = |arg: u8, len, op, value| SeccompCondition::new(arg, len, op, value).map_err(|e| anyhow!("{e:?}"));
    let rule = |c: Vec<SeccompCondition>| SeccompRule::new(c).map_err(|e| anyhow!("{e:?}"));

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    let mut clone_rules = Vec::new();
    for &flag in NAMESPACE_FLAGS {
        let flag = flag as u64;
        clone_rules.push(rule(vec![cond(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)?])?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let ioctl = [libc::TIOCSTI, libc::TIOCLINUX]
        .iter()
        .map(|&req| rule(vec![cond(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req)?]))
        .collect::<Result<Vec<_>>>()?;
    rules.insert(libc::SYS_ioctl, ioctl);
    // Socket families: local, IP and netlink only. vsock in particular is not confined by a
    // network namespace (its ports are the whole machine's, and it reaches the hypervisor).
    for nr in [libc::SYS_socket, libc::SYS_socketpair] {
        let others = [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK]
            .iter()
            .map(|&family| cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, family as u64))
            .collect::<Result<Vec<_>>>()?;
        rules.insert(nr, vec![rule(others)?]);
    }
    let deny = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
        .map_err(|e| anyhow!("building the seccomp filter: {e:?}"))?;

    let enosys = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let no_clone3 = SeccompFilter::new(enosys, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch)
        .map_err(|e| anyhow!("building the seccomp filter: {e:?}"))?;
    let compile =
        |f: SeccompFilter| BpfProgram::try_from(f).map_err(|e| anyhow!("compiling the seccomp filter: {e:?}"));
    let mut programs = vec![compile(deny)?, compile(no_clone3)?];
    if cfg!(target_arch = "x86_64") {
        programs.push(no_x32());
    }
    Ok(programs)
}

/// x32 system calls share x86_64's architecture value with bit 30 set in their number: a
/// filter keyed on x86_64 numbers never sees them. Where a kernel has the x32 ABI, every call
/// above would be reachable through it; this refuses them all. (Four instructions: no crate
/// builds a range check on the syscall number.)
fn no_x32() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    let errno = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    vec![
        // A = seccomp_data.nr
        sock_filter { code: LD_W_ABS, jt: 0, jf: 0, k: 0 },
        sock_filter { code: JSET_K, jt: 0, jf: 1, k: 0x4000_0000 },
        sock_filter { code: RET_K, jt: 0, jf: 0, k: errno },
        sock_filter { code: RET_K, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Installs the filters in a forked child and reports what a few calls return there.
    #[test]
    fn denied_calls_fail_and_ordinary_ones_work() {
        let programs = programs().unwrap();
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = (|| {
                    for p in &programs {
                        seccompiler::apply_filter(p).ok()?;
                    }
                    let errno = || std::io::Error::last_os_error().raw_os_error();
                    // SAFETY: raw syscalls with harmless arguments.
                    unsafe {
                        let keyctl =
                            libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) == -1 && errno() == Some(libc::EPERM);
                        let unshare = libc::unshare(libc::CLONE_NEWUSER) == -1 && errno() == Some(libc::EPERM);
                        let clone3 = libc::syscall(libc::SYS_clone3, 0, 0) == -1 && errno() == Some(libc::ENOSYS);
                        let getpid = libc::getpid() > 0;
                        let vsock =
                            libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) == -1 && errno() == Some(libc::EPERM);
                        let tcp = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) >= 0;
                        let unix = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) >= 0;
                        Some(keyctl && unshare && clone3 && getpid && vsock && tcp && unix)
                    }
                })();
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(if ok == Some(true) { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
