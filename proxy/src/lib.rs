//! vzpkg-proxy: the host-side caching HTTP proxy for apt and dnf/yum/zypper repositories.
//! One upstream download per file however many clients ask, streamed to all of them, stored
//! once by content hash.

mod access;
mod backoff;
mod catalog;
pub mod config;
mod error;
mod fetch;
mod flight;
mod metrics;
mod serve;
mod server;
mod service;
mod store;
mod target;
mod verify;
pub mod view;

pub use config::{Config, UpstreamConfig};
pub use error::Error;
pub use server::serve;
pub use service::Proxy;
