//! One module per subcommand; each takes the parsed arguments and the loaded config.

pub mod audit;
pub mod containers;
pub mod create;
pub mod fleet;
pub mod proxy;
pub mod prune;
pub mod status;
pub mod wrapper;

/// Milliseconds since the epoch, for names that must differ between runs.
pub fn now_millis() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// Bytes for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Unix milliseconds as `2026-11-22 06:01:02Z`.
pub fn show_time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string().replacen('T', " ", 1)
}
