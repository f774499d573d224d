//! `vzpkg audit [CT] [--since TIME] [--package NAME] [--json]` and `vzpkg audit verify`: the
//! audit log as a readable listing or JSON lines, and its hash chain checked. Every string in
//! a record that came from a guest is printed with control characters escaped.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::audit::{self, Log, Stored};
use crate::cli::{AuditAction, AuditArgs};
use crate::commands::{human_bytes, show_time};
use crate::config::FileConfig;
use crate::untrusted::{json_text, printable};

pub fn run(args: AuditArgs, file: &FileConfig) -> Result<i32> {
    if let Some(AuditAction::Verify { json }) = args.action {
        return verify(file, json);
    }
    let Some(log) = Log::open_existing(&file.state_dir)? else {
        if !args.json {
            eprintln!("vzpkg: no audit log yet in {}", file.state_dir.display());
        }
        return Ok(0);
    };
    let container = match &args.ct {
        Some(ct) => Some(audit::root_of(ct, &file.containers).with_context(|| {
            format!("unknown container {ct:?}: use dir:/path/to/rootfs, or a name under [containers] in the config")
        })?),
        None => None,
    };
    let since = args.since.as_deref().map(since_ms).transpose()?;
    let mut out = std::io::stdout().lock();
    for stored in log.records(container.as_deref(), since)? {
        if let Some(name) = &args.package {
            let r = &stored.record;
            if !r.changes.iter().any(|c| &c.name == name) && !r.argv.iter().skip(1).any(|a| a == name) {
                continue;
            }
        }
        if args.json {
            let mut value = serde_json::to_value(&stored.record)?;
            value["id"] = stored.id.into();
            value["prev_hash"] = stored.prev_hash.clone().into();
            value["hash"] = stored.hash.clone().into();
            writeln!(out, "{}", json_text(&value))?;
        } else {
            show(&mut out, &stored)?;
        }
    }
    out.flush()?;
    Ok(0)
}

/// `--since`: a date, a date and time (UTC), or a duration ago.
fn since_ms(text: &str) -> Result<u64> {
    let t = text.trim();
    let at = if let Ok(ago) = humantime::parse_duration(t) {
        SystemTime::now() - ago
    } else if t.len() == 10 {
        humantime::parse_rfc3339_weak(&format!("{t} 00:00:00"))?
    } else {
        humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).with_context(|| {
            format!("--since {t:?}: use a date (2026-11-22), a UTC time (\"2026-11-22 10:00:00\") or a duration ago (2h, 7days)")
        })?
    };
    Ok(at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64)
}

fn show(out: &mut impl Write, stored: &Stored) -> Result<()> {
    let r = &stored.record;
    let user = match (&r.user.name, &r.user.sudo_user) {
        (Some(name), Some(sudo)) => format!("{name} (sudo from {})", printable(sudo, 64)),
        (Some(name), None) => name.clone(),
        (None, _) => format!("uid {}", r.user.uid),
    };
    let status = match (r.exit_status, r.outcome.as_str()) {
        (Some(code), _) => format!("exit {code}"),
        (None, outcome) => outcome.to_string(),
    };
    let took = r.ended_ms.saturating_sub(r.started_ms) as f64 / 1000.0;
    writeln!(
        out,
        "#{} {}  {}  {}  {}  {status}  {took:.1} s",
        stored.id,
        show_time(r.started_ms),
        printable(&r.container.spec, 200),
        printable(&user, 100),
        printable(&r.argv.iter().skip(1).cloned().collect::<Vec<_>>().join(" "), 300),
    )?;
    for c in &r.changes {
        let version = match (&c.old_version, &c.new_version) {
            (Some(old), Some(new)) => format!("{} -> {}", printable(old, 300), printable(new, 300)),
            (Some(v), None) | (None, Some(v)) => printable(v, 300),
            (None, None) => String::new(),
        };
        writeln!(out, "    {:<9} {}:{} {version}", c.action, printable(&c.name, 300), printable(&c.arch, 80))?;
    }
    for action in &r.lock_actions {
        writeln!(out, "    lock: {}", printable(action, 300))?;
    }
    let b = &r.bytes;
    if b.proxy_counted {
        writeln!(
            out,
            "    bytes: view {}, proxy cache {}, upstream {}",
            human_bytes(b.view),
            human_bytes(b.cache),
            human_bytes(b.upstream)
        )?;
    } else if b.view > 0 {
        writeln!(out, "    bytes: view {} (the proxy was not asked)", human_bytes(b.view))?;
    }
    for host in &r.refused_hosts {
        writeln!(out, "    refused upstream host: {}", printable(host, 300))?;
    }
    if r.oom {
        writeln!(out, "    killed: over its memory limit")?;
    }
    if r.timed_out {
        writeln!(out, "    killed: over --max-time")?;
    }
    if let Some(error) = &r.error {
        writeln!(out, "    {}: {}", r.outcome, printable(error, 1000))?;
    }
    Ok(())
}

fn verify(file: &FileConfig, json: bool) -> Result<i32> {
    let Some(log) = Log::open_existing(&file.state_dir)? else {
        if json {
            println!("{}", serde_json::json!({"intact": true, "records": 0, "head": null, "broken": null}));
        } else {
            println!("no audit log yet in {}", file.state_dir.display());
        }
        return Ok(0);
    };
    let v = log.verify()?;
    if json {
        let head = v.head.as_ref().map(|(id, hash)| serde_json::json!({"record": id, "hash": hash}));
        println!(
            "{}",
            serde_json::json!({"intact": v.broken.is_none(), "records": v.records, "head": head, "broken": v.broken})
        );
        return Ok(if v.broken.is_none() { 0 } else { 1 });
    }
    if let Some(b) = &v.broken {
        bail!("audit log {} broken at record {}: {}", log.path().display(), b.record, b.reason);
    }
    match &v.head {
        Some((id, hash)) => println!("audit log intact: {} records; head: record {id}, sha256 {hash}", v.records),
        None => println!("audit log intact: no records"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_times_and_durations() {
        assert_eq!(since_ms("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(since_ms("1970-01-01 00:01:00").unwrap(), 60_000);
        assert_eq!(since_ms("1970-01-01T00:01:00Z").unwrap(), 60_000);
        let ago = since_ms("2h").unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(now - ago >= 7_200_000 && now - ago < 7_260_000);
        assert!(since_ms("yesterday-ish").is_err());
    }
}
