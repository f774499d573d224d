//! vzpkg-proxy: the host-side caching HTTP proxy for apt and dnf/yum/zypper repositories.
//! One upstream download per file however many clients ask, streamed to all of them, stored
//! once by content hash.

mod access;
pub mod admin;
mod backoff;
mod catalog;
pub mod config;
mod download;
mod error;
pub mod evict;
mod flight;
mod handler;
mod listen;
mod metrics;
pub mod prune;
mod respond;
mod store;
pub mod target;
mod upstream;
mod verify;
pub mod view;

pub use config::{parse_size, Config, UpstreamConfig};
pub use error::Error;
pub use handler::Proxy;
pub use listen::listen;
