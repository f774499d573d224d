//! Checks run from inside a sandbox, shared by the wrapper tests of every container kind and
//! backend: what the network lets through, and the shared store's content.

use std::path::Path;

/// A perl program (perl-base is in every Debian root) for `exec CT -- perl -e PROBE PORT…`:
/// tries each port on loopback, asks the proxy's status through the relay, lists interfaces.
pub const NETWORK_PROBE: &str = r#"use IO::Socket::INET;
    for my $p (@ARGV) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $p, Timeout => 5);
        print "port $p ", ($s ? "open" : "closed"), "\n";
    }
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => 3142) or die "relay: $!";
    print $s "GET /_vzpkg/status HTTP/1.0\r\n\r\n";
    my $line = <$s>;
    print "relay says $line";
    open(my $dev, "<", "/proc/net/dev") or die;
    while (<$dev>) { print "iface $1\n" if /^\s*(\w+):/ }"#;

/// What [`NETWORK_PROBE`] printed: every port it tried closed, the proxy answering through the
/// relay, and no interface but loopback.
pub fn assert_only_the_relay_answers(out: &str, ports: &[&str]) {
    for port in ports {
        assert!(out.contains(&format!("port {port} closed")), "port {port} is reachable from inside:\n{out}");
    }
    assert!(out.contains("relay says HTTP/1.0 200"), "the proxy does not answer through the relay:\n{out}");
    let interfaces: Vec<_> = out.lines().filter_map(|l| l.strip_prefix("iface ")).collect();
    assert_eq!(interfaces, ["lo"], "{out}");
}

/// Name, sha256 and mode of every blob in the store.
pub fn store_snapshot(cache: &Path) -> Vec<(String, String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut blobs: Vec<_> = super::walk(&cache.join("blobs"), &[])
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .map(|(path, meta)| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, super::sha256(&std::fs::read(&path).unwrap()), meta.permissions().mode())
        })
        .collect();
    blobs.sort();
    blobs
}
