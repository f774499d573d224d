//! One module per subcommand; each takes the parsed arguments and the loaded config.

pub mod proxy;
pub mod wrapper;

/// Milliseconds since the epoch, for names that must differ between runs.
pub fn now_millis() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}
