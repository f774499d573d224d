//! Finding running containers and what the sandbox takes over from them: the host pid of an LXC
//! or systemd-nspawn container's init (asked of their own tools), an OpenVZ container's root,
//! whether an init is still the process a pidfd holds, and a container's own id mapping.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::idmap::{IdRange, COUNT};

/// The host pid of the init of the LXC (`lxc-info`) or systemd-nspawn (`machinectl`'s Leader)
/// container `name`.
pub fn leader(kind: &str, name: &str) -> Result<i32> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) || name.starts_with('-')
    {
        bail!("{kind}:{name:?}: not a container name (letters, digits, '.', '_', '-')");
    }
    let (tool, args): (&str, Vec<&str>) = match kind {
        "lxc" => ("lxc-info", vec!["-n", name, "-p", "-H"]),
        _ => ("machinectl", vec!["show", name, "-p", "Leader", "--value"]),
    };
    let out = Command::new(tool)
        .args(&args)
        .output()
        .with_context(|| format!("{kind}:{name}: running {tool} (is it installed?)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse::<i32>() {
        Ok(pid) if out.status.success() && pid > 1 => Ok(pid),
        _ => bail!(
            "{kind}:{name}: {tool} gives no running init ({}); is the container running?",
            crate::untrusted::printable(String::from_utf8_lossy(&out.stderr).trim(), 300)
        ),
    }
}

/// An OpenVZ container's root: /vz/root/CTID while it runs (mounted there), else its private
/// area /vz/private/CTID.
pub fn openvz_root(ctid: &str) -> Result<PathBuf> {
    if ctid.is_empty() || !ctid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("openvz:{ctid:?}: not a container id");
    }
    let mounted = PathBuf::from(format!("/vz/root/{ctid}"));
    if std::fs::read_dir(&mounted).is_ok_and(|mut d| d.next().is_some()) {
        return Ok(mounted);
    }
    let private = PathBuf::from(format!("/vz/private/{ctid}"));
    if private.is_dir() {
        return Ok(private);
    }
    bail!("openvz:{ctid}: neither {} nor {} exists", mounted.display(), private.display())
}

/// Whether the process `pidfd` holds is still alive (it may be a zombie, never another
/// process: a pidfd does not follow a reused pid).
pub fn alive(pidfd: BorrowedFd) -> bool {
    // SAFETY: pidfd_send_signal with signal 0 only checks; no info struct is passed.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<u8>(), 0) };
    ret == 0
}

/// The id mapping of `pid`'s user namespace when it is not the host's: its one range of 65536
/// ids from 0. Other shapes are refused (the guest must be exactly the container's root).
pub fn own_ids(pid: i32) -> Result<Option<IdRange>> {
    let ns = |p: &str| std::fs::metadata(format!("/proc/{p}/ns/user")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    if ns(&pid.to_string())? == ns("self")? {
        return Ok(None);
    }
    let read = |file: &str| -> Result<u32> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))?;
        match parse_map(&text) {
            Some(base) => Ok(base),
            None => bail!(
                "its user namespace maps ids other than one range of {COUNT} from 0 ({file}: {}); vzpkg cannot \
                 run its package manager with the same ids",
                crate::untrusted::printable(text.trim(), 200)
            ),
        }
    };
    Ok(Some(IdRange { uid_base: read("uid_map")?, gid_base: read("gid_map")? }))
}

/// The host base of a map that is exactly `0 BASE 65536` (or longer).
fn parse_map(text: &str) -> Option<u32> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let fields: Vec<u64> = lines.next()?.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
    match fields[..] {
        [0, base, count] if lines.next().is_none() && count >= u64::from(COUNT) && base > 0 => u32::try_from(base).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_full_range_from_zero_is_taken() {
        assert_eq!(parse_map("         0     100000      65536\n"), Some(100_000));
        assert_eq!(parse_map("0 100000 1000000\n"), Some(100_000));
        for bad in ["0 0 4294967295\n", "0 100000 1000\n", "1 100000 65536\n", "0 100000 65536\n65536 300000 10\n", ""]
        {
            assert_eq!(parse_map(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_that_could_be_options_or_paths_are_refused() {
        for bad in ["", "-h", "../x", "a b", "a/b"] {
            assert!(leader("lxc", bad).is_err(), "{bad:?}");
        }
        assert!(openvz_root("../1").is_err());
    }
}
