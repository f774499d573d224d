//! The operator's kit in contrib/: the systemd units pass `systemd-analyze verify` (where
//! systemd is installed) without a warning, the cron file is well formed, and the binary takes
//! the sample config. (Completions and man pages: the xtask crate's own test.)

use std::path::Path;
use std::process::Command;

use crate::util::vzpkg;

fn contrib() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib"))
}

#[test]
fn the_systemd_units_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed here: units not verified");
        return;
    }
    // The units name the installed binary; here it is the one just built.
    let tmp = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in ["vzpkg-proxy.service", "vzpkg-prune.service", "vzpkg-prune.timer"] {
        let text = std::fs::read_to_string(contrib().join("systemd").join(name)).unwrap();
        assert!(text.contains("/usr/local/bin/vzpkg") || name.ends_with(".timer"), "{name}");
        let path = tmp.path().join(name);
        std::fs::write(&path, text.replace("/usr/local/bin/vzpkg", env!("CARGO_BIN_EXE_vzpkg"))).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).args(&units).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "systemd-analyze verify:\n{err}");

    // The check is a real one: a key systemd does not know is reported.
    std::fs::write(
        &units[2],
        std::fs::read_to_string(&units[2]).unwrap().replace("Persistent=true", "Persistant=true"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&units[2]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Persistant"));

    let proxy = std::fs::read_to_string(contrib().join("systemd/vzpkg-proxy.service")).unwrap();
    for hardening in
        ["ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "User=vzpkg", "CapabilityBoundingSet="]
    {
        assert!(proxy.lines().any(|l| l.starts_with(hardening)), "vzpkg-proxy.service lacks {hardening}");
    }
}

#[test]
fn the_cron_file_is_well_formed() {
    let text = std::fs::read_to_string(contrib().join("cron.d/vzpkg")).unwrap();
    let jobs: Vec<&str> =
        text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains('=')).collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let fields: Vec<&str> = jobs[0].split_whitespace().collect();
    // minute hour day month weekday user command…
    assert!(fields[..5].iter().all(|f| *f == "*" || f.parse::<u32>().is_ok()), "{}", jobs[0]);
    assert_eq!(fields[5], "vzpkg");
    assert_eq!(&fields[6..8], ["vzpkg", "prune"]);
    assert!(text.ends_with('\n'), "cron ignores a last line without a newline");
}

#[test]
fn the_binary_takes_the_sample_config() {
    let tmp = tempfile::tempdir().unwrap();
    let config = contrib().join("vzpkg.toml").display().to_string();
    let cache = tmp.path().join("cache").display().to_string();
    let state = tmp.path().join("state").display().to_string();
    let (code, out, err) =
        vzpkg(&["--config", &config, "--cache-dir", &cache, "--state-dir", &state, "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["running"], false);
}
