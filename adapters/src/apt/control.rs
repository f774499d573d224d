//! The deb822 control format shared by Packages indexes and dpkg's status file: stanzas of
//! `Field: value` lines separated by blank lines (continuation lines are skipped: no field we
//! read spans lines).

/// The fields of each stanza, in order.
pub fn stanzas(text: &str) -> impl Iterator<Item = Vec<(&str, &str)>> {
    text.split("\n\n").map(|stanza| {
        stanza
            .lines()
            .filter(|line| !line.starts_with(' ') && !line.starts_with('\t'))
            .filter_map(|line| line.split_once(':'))
            .map(|(field, value)| (field, value.trim()))
            .collect::<Vec<_>>()
    })
}

/// The value of `name` in a stanza.
pub fn field<'a>(stanza: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    stanza.iter().find(|(f, _)| f.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
}

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

    #[test]
    fn stanzas_and_fields() {
        let text = "Package: a\nDescription: x\n more\nVersion: 1\n\nPackage: b\n";
        let all: Vec<_> = stanzas(text).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(field(&all[0], "version"), Some("1"));
        assert_eq!(field(&all[1], "Package"), Some("b"));
    }
}
