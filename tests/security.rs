//! Hostile requests: traversal in every spelling, hosts and clients not allowed, CONNECT.
//! None of them may touch a file outside the cache or reach upstream.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::util::{ProxyProcess, Upstream};

/// Sends raw bytes (no client library normalises the path) and returns status and body.
fn raw(addr: SocketAddr, request_line: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request_line).unwrap();
    stream.write_all(b"\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?} for {:?}", String::from_utf8_lossy(request_line)));
    (status, answer)
}

#[test]
fn traversal_attempts_get_400_and_read_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("upstream/debian")).unwrap();
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    let remap = format!("debian={}/debian", upstream.url());
    let proxy =
        ProxyProcess::start(&tmp.path().join("cache"), "", &["--remap", &remap, "--allow-host", &upstream.host()]);
    let up = upstream.host();
    let attempts: Vec<Vec<u8>> = vec![
        b"GET /debian/../../../../etc/passwd HTTP/1.1".to_vec(),
        b"GET /debian/pool/../../../etc/passwd HTTP/1.1".to_vec(),
        b"GET /debian/%2e%2e/%2e%2e/%2e%2e/etc/passwd HTTP/1.1".to_vec(),
        b"GET /debian/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd HTTP/1.1".to_vec(),
        b"GET /debian/.%2e/.%2e/etc/passwd HTTP/1.1".to_vec(),
        b"GET /debian//etc/passwd HTTP/1.1".to_vec(),
        b"GET //etc/passwd HTTP/1.1".to_vec(),
        b"GET /debian/pool/a%00.deb HTTP/1.1".to_vec(),
        b"GET /debian/pool/a\x00.deb HTTP/1.1".to_vec(),
        b"GET /debian/pool/a%0d%0aX:%20y.deb HTTP/1.1".to_vec(),
        b"GET /debian/pool\\..\\..\\etc\\passwd HTTP/1.1".to_vec(),
        format!("GET http://{up}/debian/../../etc/passwd HTTP/1.1").into_bytes(),
        format!("GET http://{up}//etc/passwd HTTP/1.1").into_bytes(),
        format!("GET http://{up}/debian/%2e%2e/x.deb HTTP/1.1").into_bytes(),
    ];
    for attempt in &attempts {
        let (status, answer) = raw(proxy.addr, attempt);
        assert_eq!(status, 400, "{}: {answer}", String::from_utf8_lossy(attempt));
        assert!(!answer.contains("root:"), "{answer}");
    }
    assert_eq!(upstream.total(), 0, "no hostile request reached upstream");
    let entries: Vec<_> = std::fs::read_dir(proxy.cache_dir.join("blobs")).unwrap().collect();
    assert!(entries.is_empty(), "nothing was stored");
}

#[test]
fn hosts_not_allowed_and_connect_get_403() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("upstream")).unwrap();
    let upstream = Upstream::start(&tmp.path().join("upstream"));
    // The upstream is on loopback but not allowed: only hosts named by config or sources are.
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), "[proxy]\nallow_system_sources = false\n", &[]);
    let (status, answer) =
        raw(proxy.addr, format!("GET http://{}/debian/pool/x_1_all.deb HTTP/1.1", upstream.host()).as_bytes());
    assert_eq!(status, 403);
    assert!(
        answer.contains(&format!("--allow-host {}", upstream.host())),
        "the refusal says how to allow it: {answer}"
    );
    let (status, _) = raw(proxy.addr, b"GET http://mirror.example.org/debian/pool/x_1_all.deb HTTP/1.1");
    assert_eq!(status, 403);
    let (status, answer) = raw(proxy.addr, format!("CONNECT {} HTTP/1.1", upstream.host()).as_bytes());
    assert_eq!(status, 403, "{answer}");
    let (status, _) = raw(proxy.addr, b"POST http://mirror.example.org/x HTTP/1.1");
    assert_eq!(status, 405);
    assert_eq!(upstream.total(), 0);
}

#[test]
fn clients_outside_the_allowed_networks_get_403() {
    let tmp = tempfile::tempdir().unwrap();
    let proxy = ProxyProcess::start(&tmp.path().join("cache"), "[proxy]\nallow_clients = [\"192.0.2.0/24\"]\n", &[]);
    let (status, answer) = raw(proxy.addr, b"GET /_vzpkg/status HTTP/1.1");
    assert_eq!(status, 403);
    assert!(answer.contains("allow_clients"), "{answer}");
}
