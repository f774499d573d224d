//! Finding running containers and what the sandbox takes over from them: the host pid of an LXC
//! or systemd-nspawn container's init (asked of their own tools), an OpenVZ container's root,
//! whether an init is still the process a pidfd holds, and a container's own id mapping.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::idmap::{IdRange, COUNT};

/// A container name as LXC and machinectl take it: never an option, never a path.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        || name.starts_with(['-', '.'])
    {
        bail!("{kind}:{name:?}: not a container name (letters, digits, '.', '_', '-')");
    }
    Ok(())
}

/// The host pid of the init of the LXC (`lxc-info`) or systemd-nspawn (`machinectl`'s Leader)
/// container `name`; `None` when its tool says it is not running, or is not there to ask.
pub fn leader(kind: &str, name: &str, lxc_path: &Path) -> Result<Option<i32>> {
    check_name(kind, name)?;
    let mut command = match kind {
        "lxc" => {
            let mut c = Command::new("lxc-info");
            if !lxc_path.as_os_str().is_empty() {
                c.arg("-P").arg(lxc_path);
            }
            c.args(["-n", name, "-p", "-H"]);
            c
        }
        _ => {
            let mut c = Command::new("machinectl");
            c.args(["show", name, "-p", "Leader", "--value"]);
            c
        }
    };
    let out = match command.stdin(std::process::Stdio::null()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{kind}:{name}: running {:?}", command.get_program())),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse::<i32>() {
        Ok(pid) if out.status.success() && pid > 1 => Ok(Some(pid)),
        _ => Ok(None),
    }
}

/// What vzpkg needs of a stopped LXC container's config: its root directory and, for an
/// unprivileged container, the one id range its files carry.
#[derive(Debug, PartialEq)]
pub struct LxcConfig {
    pub rootfs: PathBuf,
    pub ids: Option<IdRange>,
}

/// Reads `LXC_PATH/NAME/config` (the host's, written by its administrator).
pub fn lxc_config(lxc_path: &Path, name: &str) -> Result<LxcConfig> {
    check_name("lxc", name)?;
    let path = lxc_path.join(name).join("config");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("lxc:{name}: not running, and its config {} cannot be read", path.display()))?;
    parse_lxc_config(&text).with_context(|| format!("lxc:{name}: in {}", path.display()))
}

fn parse_lxc_config(text: &str) -> Result<LxcConfig> {
    let mut rootfs = None;
    let (mut uid, mut gid) = (None, None);
    let mut idmaps = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "lxc.rootfs.path" | "lxc.rootfs" => {
                let dir = value.strip_prefix("dir:").or(value.strip_prefix("btrfs:")).unwrap_or(value);
                if !dir.starts_with('/') {
                    bail!(
                        "lxc.rootfs.path = {value:?}: vzpkg reaches a stopped LXC container only through a directory \
                         root; start it (lxc-start) and vzpkg joins it while it runs"
                    );
                }
                rootfs = Some(PathBuf::from(dir));
            }
            "lxc.idmap" | "lxc.id_map" => {
                idmaps += 1;
                let fields: Vec<&str> = value.split_whitespace().collect();
                let base = match fields[..] {
                    [_, "0", base, count] if count.parse::<u64>().is_ok_and(|c| c >= u64::from(COUNT)) => {
                        base.parse::<u32>().ok().filter(|b| *b > 0)
                    }
                    _ => None,
                };
                match (fields.first(), base) {
                    (Some(&"u"), Some(b)) => uid = Some(b),
                    (Some(&"g"), Some(b)) => gid = Some(b),
                    _ => bail!("lxc.idmap = {value:?}: vzpkg takes one range of {COUNT} ids from 0 for u and for g"),
                }
            }
            _ => {}
        }
    }
    let ids = match (uid, gid, idmaps) {
        (None, None, 0) => None,
        (Some(uid_base), Some(gid_base), 2) => Some(IdRange { uid_base, gid_base }),
        _ => bail!("its lxc.idmap lines are not one u and one g range of {COUNT} ids from 0"),
    };
    Ok(LxcConfig { rootfs: rootfs.context("it names no lxc.rootfs.path")?, ids })
}

/// An OpenVZ container's root: /vz/root/CTID while it runs (mounted there), else its private
/// area /vz/private/CTID (`private` is that directory; `root` its sibling).
pub fn openvz_root(ctid: &str, private: &Path) -> Result<PathBuf> {
    if ctid.is_empty() || !ctid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("openvz:{ctid:?}: not a container id");
    }
    let mounted = private.parent().unwrap_or(Path::new("/")).join("root").join(ctid);
    if std::fs::read_dir(&mounted).is_ok_and(|mut d| d.next().is_some()) {
        return Ok(mounted);
    }
    let private = private.join(ctid);
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
        for bad in ["", "-h", "../x", "..", ".hidden", "a b", "a/b"] {
            assert!(leader("lxc", bad, Path::new("/var/lib/lxc")).is_err(), "{bad:?}");
        }
        assert!(openvz_root("../1", Path::new("/vz/private")).is_err());
    }

    #[test]
    fn an_lxc_config_gives_the_root_and_the_id_range() {
        let plain = "lxc.uts.name = web\nlxc.rootfs.path = dir:/var/lib/lxc/web/rootfs\n";
        assert_eq!(parse_lxc_config(plain).unwrap(), LxcConfig { rootfs: "/var/lib/lxc/web/rootfs".into(), ids: None });
        let shifted = "lxc.rootfs.path = /srv/web\nlxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 200000 65536\n";
        let config = parse_lxc_config(shifted).unwrap();
        assert_eq!(config.ids, Some(IdRange { uid_base: 100_000, gid_base: 200_000 }));
        for bad in [
            "lxc.rootfs.path = lvm:/dev/vg/web\n",
            "lxc.uts.name = web\n",
            "lxc.rootfs.path = /srv/web\nlxc.idmap = u 0 100000 65536\n",
            "lxc.rootfs.path = /srv/web\nlxc.idmap = u 0 100000 1000\nlxc.idmap = g 0 100000 1000\n",
            "lxc.rootfs.path = /srv/web\nlxc.idmap = u 0 0 65536\nlxc.idmap = g 0 0 65536\n",
        ] {
            assert!(parse_lxc_config(bad).is_err(), "{bad:?}");
        }
    }
}
