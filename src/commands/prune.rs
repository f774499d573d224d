//! `vzpkg prune`: through the running proxy's admin socket when a proxy serves the cache (it
//! holds the cache's lock, and prunes while it serves), else on the cache directly. A
//! progress bar on a terminal, a summary of files and bytes freed, or one JSON object.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vzpkg_proxy::prune::Options;

use crate::cli::PruneArgs;
use crate::commands::human_bytes;
use crate::config::FileConfig;
use crate::untrusted::json_text;

pub fn run(args: PruneArgs, file: &FileConfig) -> Result<i32> {
    let duration = |flag: &str, text: &str| {
        humantime::parse_duration(text)
            .with_context(|| format!("{flag} {text:?}: use a duration such as 12h or 30days"))
    };
    let max_size = match &args.max_size {
        Some(text) => Some(vzpkg_proxy::parse_size(text).map_err(|e| anyhow::anyhow!("--max-size: {e}"))?),
        None => file.proxy.max_cache_size,
    };
    let options = Options {
        max_size,
        max_age: args.max_age.as_deref().map(|t| duration("--max-age", t)).transpose()?,
        grace: duration("--grace", &args.grace)?,
        dry_run: args.dry_run,
    };
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} files ({eta})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(if args.dry_run { "checking" } else { "pruning" });
        bar
    });
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };

    let (report, via) = match through_proxy(file, &options, &mut progress)? {
        Some(report) => (report, "proxy"),
        None => {
            let report = vzpkg_proxy::admin::prune_cache(&file.cache_dir, &options, &mut progress).map_err(|e| {
                anyhow::anyhow!(
                    "{e}; no proxy answers on {}",
                    vzpkg_proxy::admin::socket_path(&file.cache_dir).display()
                )
            })?;
            (serde_json::to_value(report)?, "cache")
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if args.json {
        let mut value = report;
        value["via"] = via.into();
        println!("{}", json_text(&value));
        return Ok(0);
    }
    let n = |path: &[&str]| path.iter().fold(&report, |v, k| &v[*k]).as_u64().unwrap_or(0);
    let what = if args.dry_run { "would remove" } else { "removed" };
    println!(
        "vzpkg prune ({}): {what} {} files, {} ({} unreferenced, {} past max age, {} for the size cap); {} in use kept; \
         {} expected hashes of old index generations {}; cache {} files, {} -> {} files, {}",
        if via == "proxy" { "through the running proxy" } else { "on the cache directly" },
        n(&["removed", "files"]),
        human_bytes(n(&["removed", "bytes"])),
        n(&["unreferenced", "files"]),
        n(&["max_age", "files"]),
        n(&["size", "files"]),
        n(&["kept_in_use"]),
        n(&["expected_removed"]),
        if args.dry_run { "to forget" } else { "forgotten" },
        n(&["before", "blobs"]),
        human_bytes(n(&["before", "bytes"])),
        n(&["after", "blobs"]),
        human_bytes(n(&["after", "bytes"])),
    );
    Ok(0)
}

/// Asks the running proxy to prune; `None` when no proxy runs on this cache.
fn through_proxy(
    file: &FileConfig,
    options: &Options,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Option<serde_json::Value>> {
    let mut query = vec![format!("grace={}", options.grace.as_secs())];
    if let Some(size) = options.max_size {
        query.push(format!("max_size={size}"));
    }
    if let Some(age) = options.max_age {
        query.push(format!("max_age={}", age.as_secs()));
    }
    if options.dry_run {
        query.push("dry_run=1".into());
    }
    let path = format!("/prune?{}", query.join("&"));
    // No read timeout: a large prune takes as long as it takes; progress keeps coming.
    let Some(answer) = crate::admin::request(&file.cache_dir, "POST", &path, None::<Duration>)? else {
        return Ok(None);
    };
    if answer.status != 200 {
        let status = answer.status;
        bail!("the proxy answered {status} to prune: {}", answer.json().unwrap_or_default());
    }
    for line in answer.body.lines() {
        let line = line.context("reading the proxy's prune progress")?;
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("the proxy sent {line:?}"))?;
        if let Some(p) = value.get("progress") {
            progress(p["done"].as_u64().unwrap_or(0), p["total"].as_u64().unwrap_or(0));
        } else if let Some(report) = value.get("report") {
            return Ok(Some(report.clone()));
        } else if let Some(error) = value.get("error") {
            bail!("{}", error.as_str().unwrap_or("prune failed"));
        }
    }
    bail!("the proxy ended the prune without a report (was it stopped?)")
}
