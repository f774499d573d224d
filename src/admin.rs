//! The CLI's side of the proxy's admin socket (`CACHE/admin/vzpkg.sock`, see the proxy's
//! `admin` module): plain blocking HTTP/1.0 over a unix stream, so that no async runtime is
//! started in a process that forks a sandbox. "No proxy runs" (no socket, or nobody listening
//! on it) is `Ok(None)`, for callers that then open the cache themselves.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// An answer from the proxy: status code and a reader positioned at the body.
pub struct Answer {
    pub status: u16,
    pub body: BufReader<UnixStream>,
}

impl Answer {
    pub fn json(mut self) -> Result<serde_json::Value> {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut self.body, &mut text).context("reading the proxy's answer")?;
        serde_json::from_str(&text).with_context(|| format!("the proxy answered something that is not JSON: {text:?}"))
    }
}

/// Sends one request to the proxy running on `cache_dir`; `Ok(None)` when none runs there.
pub fn request(cache_dir: &Path, method: &str, path: &str, timeout: Option<Duration>) -> Result<Option<Answer>> {
    let socket = vzpkg_proxy::admin::socket_path(cache_dir);
    let mut stream = match UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!(
                "cannot reach the proxy's admin socket {} (permission denied): run as root or as the proxy's user",
                socket.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", socket.display())),
    };
    stream.set_read_timeout(timeout)?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: vzpkg\r\n\r\n")?;
    let mut body = BufReader::new(stream);
    let mut line = String::new();
    body.read_line(&mut line).with_context(|| format!("reading the answer on {}", socket.display()))?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("the proxy's admin socket answered {line:?}"))?;
    loop {
        line.clear();
        if body.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
    }
    Ok(Some(Answer { status, body }))
}

/// What the proxy counted for one wrapper run (`None` when no proxy runs there, or no request
/// of the run reached it).
pub fn run_stats(cache_dir: &Path, tag: &str) -> Result<Option<serde_json::Value>> {
    match request(cache_dir, "GET", &format!("/runs/{tag}"), Some(Duration::from_secs(10)))? {
        Some(answer) if answer.status == 200 => Ok(Some(answer.json()?)),
        // The proxy runs, and nothing of this run reached it.
        Some(answer) if answer.status == 404 => Ok(Some(serde_json::json!({
            "requests": 0, "bytes_from_cache": 0, "bytes_from_upstream": 0, "bytes_other": 0, "refused_hosts": []
        }))),
        Some(answer) => bail!("the proxy's admin socket answered {} for run {tag}", answer.status),
        None => Ok(None),
    }
}
