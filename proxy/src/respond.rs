//! Building client responses: from a stored blob (with Range and conditional requests), from a
//! flight in progress, or passed straight through from upstream; plus error pages.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use crate::catalog::Entry;
use crate::error::Error;
use crate::flight::{follow, Head, Progress};

pub type Body = UnsyncBoxBody<Bytes, io::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

fn stream_body(stream: impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static) -> Body {
    StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}

pub fn error_page(e: &Error) -> Response<Body> {
    let mut resp = Response::new(full(format!("vzpkg: {e}\n")));
    *resp.status_mut() = e.status();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: Option<&str>) {
    if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(name, v);
    }
}

fn describe(headers: &mut HeaderMap, head: &Head, cache: &'static str) {
    set(headers, header::CONTENT_TYPE, Some(head.content_type.as_deref().unwrap_or("application/octet-stream")));
    set(headers, header::ETAG, head.etag.as_deref());
    set(headers, header::LAST_MODIFIED, head.last_modified.as_deref());
    headers.insert("x-vzpkg-cache", HeaderValue::from_static(cache));
}

/// Large bodies go out in frames of this size, so that the bytes counted are the bytes sent.
const FRAME: usize = 2 << 20;

/// A response for a stored blob, whose `content` the caller loaded, honouring If-None-Match,
/// If-Modified-Since, Range and If-Range. The body shares `content`: nothing is copied.
pub fn blob(content: Bytes, entry: &Entry, request: &HeaderMap, head_only: bool) -> Response<Body> {
    let head = Head {
        content_length: Some(entry.size),
        content_type: entry.content_type.clone(),
        etag: entry.etag.clone(),
        last_modified: entry.last_modified.clone(),
    };
    let mut resp = Response::new(empty());
    describe(resp.headers_mut(), &head, "hit");
    resp.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if not_modified(request, entry) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return resp;
    }
    let range = match request.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) if if_range_holds(request, entry) => parse_range(spec, entry.size),
        _ => RangeAsk::Whole,
    };
    let (start, len) = match range {
        RangeAsk::Whole => (0, entry.size),
        RangeAsk::Part(start, end) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let value = format!("bytes {start}-{end}/{}", entry.size);
            set(resp.headers_mut(), header::CONTENT_RANGE, Some(&value));
            (start, end - start + 1)
        }
        RangeAsk::Unsatisfiable => {
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let value = format!("bytes */{}", entry.size);
            set(resp.headers_mut(), header::CONTENT_RANGE, Some(&value));
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return resp;
        }
    };
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if !head_only {
        // The catalog's size and the file agree unless the store was tampered with; a short
        // file is cut short, never read past.
        let end = (start + len).min(content.len() as u64) as usize;
        let part = content.slice((start as usize).min(end)..end);
        *resp.body_mut() = if part.len() <= FRAME {
            full(part)
        } else {
            let frames = (0..part.len()).step_by(FRAME).map(move |at| Ok(part.slice(at..(at + FRAME).min(part.len()))));
            stream_body(futures_util::stream::iter(frames))
        };
    }
    resp
}

/// A response that streams a flight's body as it arrives.
pub fn flight(
    rx: tokio::sync::watch::Receiver<Progress>,
    head: &Head,
    file: Arc<std::fs::File>,
    head_only: bool,
    cache: &'static str,
) -> Response<Body> {
    let mut resp = Response::new(empty());
    describe(resp.headers_mut(), head, cache);
    if let Some(len) = head.content_length {
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if !head_only {
        *resp.body_mut() = stream_body(follow(rx, file));
    }
    resp
}

/// A response relayed from upstream without storing it.
pub fn passthrough(upstream: reqwest::Response, head_only: bool) -> Response<Body> {
    let head = Head::of(upstream.headers());
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    describe(resp.headers_mut(), &head, "pass");
    if let Some(len) = head.content_length {
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if !head_only {
        *resp.body_mut() = stream_body(upstream.bytes_stream().map(|r| r.map_err(io::Error::other)));
    }
    resp
}

fn not_modified(request: &HeaderMap, entry: &Entry) -> bool {
    if let Some(inm) = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = &entry.etag else {
            return false;
        };
        let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm.split(',').any(|t| t.trim() == "*" || bare(t) == bare(etag));
    }
    let since = request.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok());
    match (since.and_then(|s| httpdate::parse_http_date(s).ok()), modified_time(entry)) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

fn modified_time(entry: &Entry) -> Option<std::time::SystemTime> {
    entry.last_modified.as_deref().and_then(|lm| httpdate::parse_http_date(lm).ok())
}

fn if_range_holds(request: &HeaderMap, entry: &Entry) -> bool {
    let Some(value) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if value.starts_with('"') || value.starts_with("W/") {
        return entry.etag.as_deref() == Some(value) && !value.starts_with("W/");
    }
    matches!((httpdate::parse_http_date(value).ok(), modified_time(entry)), (Some(a), Some(b)) if a == b)
}

#[derive(Debug, PartialEq)]
enum RangeAsk {
    Whole,
    /// Inclusive byte positions.
    Part(u64, u64),
    Unsatisfiable,
}

/// One byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`); several ranges are answered whole.
fn parse_range(spec: &str, size: u64) -> RangeAsk {
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if set.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = set.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeAsk::Whole;
            };
            let end = if b.is_empty() { Ok(u64::MAX) } else { b.parse::<u64>() };
            let Ok(end) = end else { return RangeAsk::Whole };
            if end < start {
                return RangeAsk::Whole;
            }
            (start, end.min(size.saturating_sub(1)))
        }
        (true, false) => {
            let Ok(n) = b.parse::<u64>() else {
                return RangeAsk::Whole;
            };
            if n == 0 {
                return RangeAsk::Unsatisfiable;
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (true, true) => return RangeAsk::Whole,
    };
    if parsed.0 >= size {
        RangeAsk::Unsatisfiable
    } else {
        RangeAsk::Part(parsed.0, parsed.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeAsk::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=90-500", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), RangeAsk::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeAsk::Whole);
        assert_eq!(parse_range("bytes=9-2", 100), RangeAsk::Whole);
        assert_eq!(parse_range("items=0-1", 100), RangeAsk::Whole);
    }

    #[test]
    fn conditionals() {
        let entry = Entry {
            blob: String::new(),
            size: 1,
            etag: Some("\"v1\"".into()),
            last_modified: Some("Sun, 01 Nov 2026 10:00:00 GMT".into()),
            content_type: None,
            validated_at: 0,
            verified: true,
        };
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v0\", \"v1\""));
        assert!(not_modified(&h, &entry));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v2\""));
        assert!(!not_modified(&h, &entry));
        let mut h = HeaderMap::new();
        h.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_static("Sun, 01 Nov 2026 10:00:00 GMT"));
        assert!(not_modified(&h, &entry));
        h.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_static("Sun, 01 Nov 2026 09:59:59 GMT"));
        assert!(!not_modified(&h, &entry));
    }
}
