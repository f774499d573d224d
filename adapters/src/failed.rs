//! The sources a package manager names in its output as having failed (apt's `Err:` and
//! `Failed to fetch`, dnf's `Status code: … for URL`, zypper's `error for 'URL'`), so that a
//! failed run can end by saying what failed. The output is the guest's: only http(s) URLs are
//! taken, each once, at most a few.

/// Sources kept: enough to point at the problem.
const MAX_SOURCES: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct FailedSource {
    pub url: String,
    /// What the package manager said of it (`403  Forbidden`, `Could not connect …`).
    pub reason: String,
}

impl FailedSource {
    /// The HTTP status the reason starts with or names, if any.
    pub fn status(&self) -> Option<u16> {
        self.reason
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 3)
            .and_then(|w| w.parse().ok())
            .filter(|s| (400..600).contains(s))
    }
}

pub fn sources(output: &str) -> Vec<FailedSource> {
    let mut found: Vec<FailedSource> = Vec::new();
    let lines: Vec<&str> = output.lines().map(|l| l.trim_end_matches('\r')).collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        let source = if let Some(rest) =
            ["E: Failed to fetch ", "W: Failed to fetch "].iter().find_map(|p| line.strip_prefix(p))
        {
            // apt: `E: Failed to fetch URL  REASON`
            rest.split_once("  ").map(|(url, reason)| (url.to_string(), reason.trim().to_string()))
        } else if let Some(rest) = line.strip_prefix("Err:") {
            // apt: `Err:N URL SUITE FILE`, the reason on the next line.
            rest.split_whitespace().nth(1).map(|url| (url.to_string(), next.to_string()))
        } else if let Some((_, rest)) = line.split_once("Status code: ") {
            // dnf: `Status code: 403 for URL (IP: …)`
            rest.split_once(" for ").map(|(code, url)| {
                let url = url.split_whitespace().next().unwrap_or_default().to_string();
                (url, format!("status {code}"))
            })
        } else if let Some((_, rest)) = line.split_once("error for '") {
            // zypper: `Download (curl) error for 'URL':`, then `Error code: …`/`Error message: …`
            rest.split_once('\'').map(|(url, _)| (url.to_string(), next.to_string()))
        } else {
            None
        };
        let Some((url, reason)) = source else { continue };
        if !(url.starts_with("http://") || url.starts_with("https://")) || found.iter().any(|f| f.url == url) {
            continue;
        }
        found.push(FailedSource { url, reason });
        if found.len() >= MAX_SOURCES {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_dnf_and_zypper_failures_are_found() {
        let apt = "Hit:1 http://a.example.org/debian stable InRelease\n\
            Err:2 http://mirror.example.org/debian stable InRelease\n  403  Forbidden [IP: 127.0.0.1 3142]\n\
            Reading package lists...\n\
            E: Failed to fetch http://mirror.example.org/debian/dists/stable/InRelease  403  Forbidden [IP: 127.0.0.1 3142]\n";
        let found = sources(apt);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].url, "http://mirror.example.org/debian");
        assert_eq!(found[0].reason, "403  Forbidden [IP: 127.0.0.1 3142]");
        assert_eq!(found[1].status(), Some(403));

        let dnf = "Errors during downloading metadata for repository 'test':\n  \
            - Status code: 403 for http://mirror.example.org/el/repodata/repomd.xml (IP: 127.0.0.1)\n";
        assert_eq!(sources(dnf)[0].url, "http://mirror.example.org/el/repodata/repomd.xml");
        assert_eq!(sources(dnf)[0].status(), Some(403));

        let zypper = "Download (curl) error for 'http://mirror.example.org/el/repodata/repomd.xml':\n\
            Error code: HTTP response: 403\n";
        assert_eq!(sources(zypper)[0].status(), Some(403));
    }

    #[test]
    fn junk_and_repeats_are_skipped() {
        let junk = "E: Failed to fetch file:/etc/passwd  nope\nErr:1\nStatus code: for\n".repeat(3)
            + &"E: Failed to fetch http://x.example.org/a  500  Oops\n".repeat(20);
        let found = sources(&junk);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].status(), Some(500));
    }
}
