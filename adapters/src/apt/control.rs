//! What the deb822 control format of Packages indexes and dpkg's status file shares: apt's
//! names for the archives a stanza describes.

/// apt's name for a downloaded archive: `name_version_arch.deb`, with `_`, `:` (the epoch) and
/// unprintable bytes percent-encoded as apt's QuoteString does, and `.` in the architecture.
pub fn archive_name(package: &str, version: &str, arch: &str) -> String {
    fn quote(s: &str, bad: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if bad.as_bytes().contains(&b) || b == b'%' || b <= 0x20 || b >= 0x7f {
                out.push_str(&format!("%{b:02x}"));
            } else {
                out.push(b as char);
            }
        }
        out
    }
    format!("{}_{}_{}.deb", quote(package, "_:"), quote(version, "_:"), quote(arch, "_:."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_encode_the_epoch() {
        assert_eq!(archive_name("libc6", "2.36-9+deb12u4", "amd64"), "libc6_2.36-9+deb12u4_amd64.deb");
        assert_eq!(archive_name("apt", "1:2.6.1", "amd64"), "apt_1%3a2.6.1_amd64.deb");
    }
}
