//! The upstream client: HTTP(S) requests to a repository (optionally through a parent proxy),
//! failover across a remap's base URLs, conditional requests, and resuming a transfer with
//! Range/If-Range. Redirects are followed only to allowed hosts.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header;
use reqwest::{Response, StatusCode};

use crate::access::Access;
use crate::catalog::Entry;
use crate::config::{Config, UpstreamConfig};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub struct Upstream {
    client: reqwest::Client,
    pub config: UpstreamConfig,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(config: &Config, access: Arc<Access>, metrics: Arc<Metrics>) -> Result<Upstream> {
        // A redirect is a new upstream request: it must go to an allowed host like any other.
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else if access.url_allowed(attempt.url()) {
                attempt.follow()
            } else {
                let to = attempt.url();
                let host = match to.port() {
                    Some(port) => format!("{}:{port}", to.host_str().unwrap_or("")),
                    None => to.host_str().unwrap_or("").to_string(),
                };
                let why = format!("redirected to {to}, whose host is not allowed: add `--allow-host {host}` to follow");
                attempt.error(why)
            }
        });
        let mut builder = reqwest::Client::builder()
            .redirect(redirects)
            .user_agent(concat!("vzpkg/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(config.upstream.connect_timeout_secs))
            .read_timeout(Duration::from_secs(config.upstream.low_speed_secs))
            .no_proxy();
        if let Some(parent) = &config.parent {
            let proxy = reqwest::Proxy::all(parent).map_err(|e| Error::Upstream(format!("parent {parent}: {e}")))?;
            builder = builder.proxy(proxy);
        }
        if let Some(path) = &config.upstream.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| Error::Config(format!("upstream.ca_file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("upstream.ca_file {}: {e}", path.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| Error::Config(chain(&e)))?;
        Ok(Upstream { client, config: config.upstream.clone(), metrics })
    }

    /// GETs the first of `urls` that answers with content (or 304 to a conditional request).
    pub async fn get(&self, urls: &[String], validators: Option<&Entry>) -> Result<Response> {
        self.send(reqwest::Method::GET, urls, validators).await
    }

    /// HEAD, with the same failover: for a client's HEAD of a file not stored, which should not
    /// cost a download.
    pub async fn head(&self, urls: &[String]) -> Result<Response> {
        self.send(reqwest::Method::HEAD, urls, None).await
    }

    async fn send(&self, method: reqwest::Method, urls: &[String], validators: Option<&Entry>) -> Result<Response> {
        let mut last = Error::Upstream("no upstream URL".into());
        for url in urls {
            let mut request = self.client.request(method.clone(), url);
            if let Some(entry) = validators {
                if let Some(etag) = &entry.etag {
                    request = request.header(header::IF_NONE_MATCH, etag);
                }
                if let Some(lm) = &entry.last_modified {
                    request = request.header(header::IF_MODIFIED_SINCE, lm);
                }
            }
            self.metrics.upstream_requests.inc();
            match request.send().await {
                Ok(resp) if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    tracing::info!(%url, %status, "upstream refused");
                    last =
                        Error::UpstreamStatus { status: status.as_u16(), reason: format!("{url} answered {status}") };
                }
                Err(e) => {
                    self.metrics.upstream_failures.inc();
                    tracing::warn!(%url, error = %chain(&e), "upstream unreachable");
                    last = Error::Upstream(format!("{url}: {}", chain(&e)));
                }
            }
        }
        Err(last)
    }

    /// Asks for the rest of a transfer, from `offset`, only if the file is still the same one.
    pub async fn resume(&self, url: &str, offset: u64, validator: &str) -> Result<Response> {
        self.metrics.upstream_requests.inc();
        let resp = self
            .client
            .get(url)
            .header(header::RANGE, format!("bytes={offset}-"))
            .header(header::IF_RANGE, validator)
            .send()
            .await
            .map_err(|e| Error::Upstream(format!("resuming {url}: {}", chain(&e))))?;
        let starts_at_offset = resp
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok())
            == Some(offset);
        if resp.status() != StatusCode::PARTIAL_CONTENT || !starts_at_offset {
            return Err(Error::Upstream(format!(
                "resuming {url}: upstream answered {} instead of the rest of the file",
                resp.status()
            )));
        }
        Ok(resp)
    }
}

/// An error with its causes, which reqwest keeps in `source()`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
