//! rpm repositories (dnf, yum, zypper): which paths are packages or repository metadata, and
//! which hosts a `.repo` file names.

pub mod dnf;
pub mod primary;
pub mod repomd;
pub mod zypper;

use crate::FileKind;

/// Classifies a path of an rpm-md repository, or `None` when it is not one of its files.
pub fn classify(path: &str) -> Option<FileKind> {
    let name = crate::file_name(path);
    if name.ends_with(".rpm") || name.ends_with(".drpm") {
        return Some(FileKind::Package);
    }
    // repomd.xml changes in place; the files it lists usually carry their hash in their name,
    // but not always (createrepo --simple-md-filenames), so all of repodata/ is revalidated.
    let in_repodata = path.split('/').rev().nth(1) == Some("repodata");
    if in_repodata && !name.is_empty() {
        return Some(FileKind::Index);
    }
    None
}

/// The `host[:port]` of every http(s) URL in a `.repo` file's baseurl, mirrorlist and metalink.
pub fn repo_hosts(text: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    let mut in_baseurl = false;
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            in_baseurl = false;
            continue;
        }
        // baseurl may continue on indented lines, one URL each
        let continuation = in_baseurl && raw.starts_with(char::is_whitespace) && !line.contains('=');
        let values = if continuation {
            line
        } else if let Some((key, value)) = line.split_once('=') {
            let key = key.trim();
            in_baseurl = key == "baseurl";
            if !matches!(key, "baseurl" | "mirrorlist" | "metalink") {
                continue;
            }
            value
        } else {
            in_baseurl = false;
            continue;
        };
        hosts.extend(values.split(|c: char| c.is_whitespace() || c == ',').filter_map(crate::url_authority));
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_rpm_paths() {
        assert_eq!(classify("/f/Packages/h/hello-2.12-1.fc40.x86_64.rpm"), Some(FileKind::Package));
        assert_eq!(classify("/f/drpms/hello-1_2.x86_64.drpm"), Some(FileKind::Package));
        assert_eq!(classify("/f/repodata/repomd.xml"), Some(FileKind::Index));
        assert_eq!(classify("/f/repodata/0abc-primary.xml.zst"), Some(FileKind::Index));
        assert_eq!(classify("repodata/repomd.xml"), Some(FileKind::Index));
        assert_eq!(classify("/f/repodata/"), None);
        assert_eq!(classify("/f/EULA"), None);
    }

    #[test]
    fn reads_hosts_from_repo_files() {
        let text = "[fedora]\nname=Fedora $releasever\n\
                    baseurl=http://mirror.example.org/fedora/$releasever/\n  https://two.example.org:444/f/\n\
                    metalink=https://meta.example.org/metalink?repo=fedora\n\
                    gpgkey=https://keys.example.org/key\n#baseurl=http://commented.example.org/\n";
        assert_eq!(repo_hosts(text), ["mirror.example.org", "two.example.org:444", "meta.example.org"]);
    }
}
