//! `vzpkg status [--json]`: the cache (size, files, hit ratio, bytes saved, downloads in flight,
//! last prune, failed index refreshes) from the running proxy, or from the cache itself when
//! none runs; and the containers that got the most bytes, from the audit log.

use std::collections::HashMap;

use anyhow::Result;

use crate::audit::Log;
use crate::commands::{human_bytes, show_time};
use crate::config::FileConfig;
use crate::untrusted::{json_text, printable};

/// Containers listed by bytes.
const TOP: usize = 5;

pub fn run(json: bool, file: &FileConfig) -> Result<i32> {
    let mut cache =
        match crate::admin::request(&file.cache_dir, "GET", "/status", Some(std::time::Duration::from_secs(10)))? {
            Some(answer) => {
                let mut v = answer.json()?;
                v["running"] = true.into();
                v
            }
            None if file.cache_dir.join("index.sqlite").exists() => vzpkg_proxy::admin::cache_status(&file.cache_dir)?,
            None => {
                serde_json::json!({"cache_dir": file.cache_dir, "running": false, "store": {"blobs": 0, "bytes": 0}})
            }
        };
    cache["top_containers"] = top_containers(file)?.into();
    if json {
        println!("{}", json_text(&cache));
        return Ok(0);
    }
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let running = cache["running"].as_bool().unwrap_or(false);
    println!("cache:       {}", cache["cache_dir"].as_str().unwrap_or("?"));
    println!(
        "proxy:       {}",
        if running { "running (figures since its start where marked *)" } else { "not running" }
    );
    println!("stored:      {} files, {}", n(&cache["store"]["blobs"]), human_bytes(n(&cache["store"]["bytes"])));
    if let Some(cap) = cache["max_cache_size"].as_u64() {
        println!("size cap:    {}", human_bytes(cap));
    }
    if let Some(ratio) = cache["hit_ratio"].as_f64() {
        println!("hit ratio:   {:.1} % *", ratio * 100.0);
    }
    if running {
        println!("bytes saved: {} served from the store *", human_bytes(n(&cache["bytes_saved"])));
        println!("in flight:   {} downloads", n(&cache["downloads_in_flight"]));
    } else if cache.get("bytes_saved").is_some() {
        println!("bytes saved: {} (stored files times their hits)", human_bytes(n(&cache["bytes_saved"])));
    }
    match cache["last_prune"].as_object() {
        Some(last) => println!(
            "last prune:  {}: {} files, {}",
            show_time(n(&last["at"]) * 1000),
            n(&last["files"]),
            human_bytes(n(&last["bytes"]))
        ),
        None => println!("last prune:  never"),
    }
    for f in cache["refresh_failures"].as_array().into_iter().flatten() {
        println!(
            "refresh failed: {} at {}: {}",
            printable(f["key"].as_str().unwrap_or(""), 300),
            show_time(n(&f["at"]) * 1000),
            printable(f["reason"].as_str().unwrap_or(""), 300)
        );
    }
    let top = cache["top_containers"].as_array().cloned().unwrap_or_default();
    if !top.is_empty() {
        println!("top containers by bytes (audit log):");
        for c in top {
            println!(
                "  {:>10}  {:>4} runs  {}",
                human_bytes(n(&c["bytes"])),
                n(&c["runs"]),
                printable(c["container"].as_str().unwrap_or(""), 300)
            );
        }
    }
    Ok(0)
}

/// The containers whose runs got the most bytes (view, proxy cache and upstream together).
fn top_containers(file: &FileConfig) -> Result<Vec<serde_json::Value>> {
    // Root's alone: for other users, status goes without it.
    let log = match Log::open_existing(&file.state_dir) {
        Ok(Some(log)) => log,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => {
            eprintln!("vzpkg: no top containers: {e:#}");
            return Ok(Vec::new());
        }
    };
    let mut totals: HashMap<String, (u64, u64)> = HashMap::new();
    for stored in log.records(None, None)? {
        let r = &stored.record;
        let key = r.container.root.clone().unwrap_or_else(|| r.container.spec.clone());
        let t = totals.entry(key).or_default();
        t.0 += r.bytes.view + r.bytes.cache + r.bytes.upstream;
        t.1 += 1;
    }
    let mut top: Vec<_> = totals.into_iter().collect();
    top.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(&b.0)));
    Ok(top
        .into_iter()
        .take(TOP)
        .map(|(container, (bytes, runs))| serde_json::json!({"container": container, "bytes": bytes, "runs": runs}))
        .collect())
}
