//! The audit log, as root (wrapper commands create namespaces and mounts): what `vzpkg audit`
//! reports of real apt runs in two Debian roots, byte counts checked against the proxy's own
//! request log, tampering found by `vzpkg audit verify`, and hostile package data from a
//! container's database stored bounded and printed harmlessly.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::repo::{deb_repo, Pkg};
use crate::util::rootfs::Rootfs;
use crate::util::{run, vzpkg, ProxyProcess, Upstream};

/// A test upstream, a proxy allowed to reach it, and the global options every command gets.
struct Setup {
    upstream: Upstream,
    proxy: ProxyProcess,
    config: String,
    state: PathBuf,
}

impl Setup {
    fn new(tmp: &Path) -> Setup {
        deb_repo(
            &tmp.join("upstream/debian"),
            &[
                Pkg::new("vzt-alpha", "1.0", 300_000).depends("vzt-beta"),
                Pkg::new("vzt-beta", "2.1", 600_000),
                Pkg::new("vzt-gamma", "0.3", 40_000),
            ],
        );
        let upstream = Upstream::start(&tmp.join("upstream"));
        // Index roots revalidated at every update, so that the repository's change is seen.
        let proxy = ProxyProcess::start(
            &tmp.join("cache"),
            "[proxy]\nindex_ttl_secs = 0\n",
            &["--allow-host", &upstream.host()],
        );
        std::fs::write(tmp.join("vzpkg.toml"), "").unwrap();
        Setup { upstream, proxy, config: tmp.join("vzpkg.toml").display().to_string(), state: tmp.join("state") }
    }

    fn root(&self, dir: &Path) -> Rootfs {
        Rootfs::new(dir, &format!("deb [trusted=yes] {}/debian stable main", self.upstream.url()))
    }

    fn global(&self) -> Vec<String> {
        let cache = self.proxy.cache_dir.display().to_string();
        ["--config", &self.config, "--cache-dir", &cache, "--state-dir", &self.state.display().to_string()]
            .map(String::from)
            .to_vec()
    }

    /// `vzpkg [global] command [-y --proxy URL] args…`
    fn run(&self, command: &str, args: &[&str]) -> (i32, String, String) {
        let mut argv = self.global();
        argv.push(command.into());
        if !matches!(command, "list" | "audit" | "status") {
            argv.extend(["-y".into(), "--proxy".into(), self.proxy.url()]);
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        vzpkg(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn ok(&self, command: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(command, args);
        assert_eq!(code, 0, "vzpkg {command} {args:?} failed:\nstdout:\n{out}\nstderr:\n{err}");
        out
    }

    /// `vzpkg audit CT --json`, parsed.
    fn audit(&self, ct: &str) -> Vec<serde_json::Value> {
        let out = self.ok("audit", &[ct, "--json"]);
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }
}

/// (action, name, old version, new version) of every change a record lists.
fn changes(record: &serde_json::Value) -> Vec<(String, String, String, String)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    record["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (s(&c["action"]), s(&c["name"]), s(&c["old_version"]), s(&c["new_version"])))
        .collect()
}

fn change(action: &str, name: &str, old: &str, new: &str) -> (String, String, String, String) {
    (action.into(), name.into(), old.into(), new.into())
}

/// Body bytes the proxy's request log says it sent for one run, by its `cache=` label.
fn logged_bytes(log: &str, tag: &str) -> (u64, u64, u64) {
    let (mut cache, mut upstream, mut other) = (0, 0, 0);
    for line in log.lines().filter(|l| l.contains(&format!("run=\"{tag}\"")) || l.contains(&format!("run={tag} "))) {
        let field = |name: &str| {
            let at = line.find(&format!(" {name}="))? + name.len() + 2;
            Some(line[at..].split_whitespace().next()?.trim_matches('"').to_string())
        };
        let bytes: u64 = field("bytes").and_then(|b| b.parse().ok()).unwrap_or(0);
        match field("cache").as_deref() {
            Some("hit" | "revalidated") => cache += bytes,
            Some("miss" | "joined" | "pass") => upstream += bytes,
            _ => other += bytes,
        }
    }
    (cache, upstream, other)
}

/// Must-show 1.
#[test]
fn audit_lists_each_containers_changes_users_exit_status_refusals_and_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let (one, two) = (setup.root(&tmp.path().join("one")), setup.root(&tmp.path().join("two")));
    let (ct1, ct2) = (one.ct(), two.ct());

    setup.ok("update", &[&ct1]);
    setup.ok("install", &[&ct1, "vzt-alpha", "vzt-gamma"]);
    setup.ok("update", &[&ct2]);
    // gamma is in the store, verified, and two's lists name it: it comes from the view.
    setup.ok("install", &[&ct2, "vzt-gamma"]);
    setup.ok("remove", &[&ct1, "vzt-gamma"]);
    // A newer alpha upstream: update, then upgrade.
    // Added to the pool, which is indexed anew.
    let repo = setup.upstream.root.join("debian");
    deb_repo(&repo, &[Pkg::new("vzt-alpha", "1.1", 310_000).depends("vzt-beta")]);
    setup.ok("update", &[&ct1]);
    setup.ok("upgrade", &[&ct1]);

    // Refused: dpkg's frontend lock is held in the container.
    let frontend = one.path.join("var/lib/dpkg/lock-frontend");
    let hold = "import fcntl, sys\nf = open(sys.argv[1], 'r+')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()\n";
    let mut holder = Command::new("python3")
        .args(["-c", hold])
        .arg(&frontend)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line, "locked\n");
    let (code, _, err) = setup.run("install", &["--timeout", "1", &ct1, "vzt-gamma"]);
    assert_ne!(code, 0, "{err}");
    drop(holder.stdin.take());
    holder.wait().unwrap();

    // A downgrade, by the container's own apt, from the view (1.0 is still listed and stored).
    setup.ok("exec", &[&ct1, "--", "apt-get", "install", "-y", "--allow-downgrades", "vzt-alpha=1.0"]);
    // A failed command: its exit status is apt's.
    let (code, _, _) = setup.run("install", &[&ct1, "no-such-package"]);
    assert_eq!(code, 100);

    let records = setup.audit(&ct1);
    let commands: Vec<&str> = records.iter().map(|r| r["command"].as_str().unwrap()).collect();
    assert_eq!(
        commands,
        ["update", "install", "remove", "update", "upgrade", "install", "exec", "install"],
        "{records:#?}"
    );
    let all: Vec<_> = records.iter().flat_map(changes).collect();
    assert_eq!(
        all,
        [
            change("install", "vzt-alpha", "", "1.0"),
            change("install", "vzt-beta", "", "2.1"),
            change("install", "vzt-gamma", "", "0.3"),
            change("remove", "vzt-gamma", "0.3", ""),
            change("upgrade", "vzt-alpha", "1.0", "1.1"),
            change("downgrade", "vzt-alpha", "1.1", "1.0"),
        ],
        "ct1's audit lists exactly its changes"
    );
    for r in &records {
        assert_eq!(r["user"]["uid"], 0);
        assert_eq!(r["user"]["name"], "root");
        assert_eq!(r["container"]["spec"], ct1.as_str());
        assert_eq!(r["backend"], "apt");
        assert!(r["ended_ms"].as_u64().unwrap() >= r["started_ms"].as_u64().unwrap());
        assert!(r["argv"].as_array().unwrap().iter().any(|a| a == ct1.as_str()), "{r}");
    }
    let exits: Vec<_> = records.iter().map(|r| (r["outcome"].as_str().unwrap(), r["exit_status"].as_i64())).collect();
    assert_eq!(
        exits,
        [
            ("ok", Some(0)),
            ("ok", Some(0)),
            ("ok", Some(0)),
            ("ok", Some(0)),
            ("ok", Some(0)),
            ("refused", None),
            ("ok", Some(0)),
            ("failed", Some(100))
        ]
    );
    let refused = &records[5];
    assert!(refused["error"].as_str().unwrap().contains(&format!("held by pid {}", holder.id())), "{refused}");
    assert_eq!(refused["changes"].as_array().unwrap().len(), 0);
    assert_eq!(
        records[6]["bytes"]["view"].as_u64().unwrap(),
        std::fs::metadata(repo.join("pool/main/vzt-alpha_1.0_all.deb")).unwrap().len()
    );

    // ct2 sees only its own: one install, from the view.
    let records2 = setup.audit(&ct2);
    let all2: Vec<_> = records2.iter().flat_map(changes).collect();
    assert_eq!(all2, [change("install", "vzt-gamma", "", "0.3")]);
    let gamma = std::fs::metadata(repo.join("pool/main/vzt-gamma_0.3_all.deb")).unwrap().len();
    assert_eq!(records2[1]["bytes"]["view"].as_u64(), Some(gamma), "{}", records2[1]);
    assert_eq!(records2[1]["bytes"]["upstream"].as_u64(), Some(0), "gamma came from the view: {}", records2[1]);

    // Bytes by source add up to what the proxy's log says it served for each run.
    for r in records.iter().chain(&records2) {
        let Some(tag) = r["run_tag"].as_str() else { continue };
        let b = &r["bytes"];
        assert_eq!(b["proxy_counted"], true, "{r}");
        let counted = (b["cache"].as_u64().unwrap(), b["upstream"].as_u64().unwrap(), b["other"].as_u64().unwrap());
        // Log lines are written as each response ends, on the proxy's own time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while logged_bytes(&setup.proxy.log_text(), tag) != counted {
            assert!(
                std::time::Instant::now() < deadline,
                "run {tag}: the record says {counted:?}, the proxy's log {:?}",
                logged_bytes(&setup.proxy.log_text(), tag)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let install = &records[1]["bytes"];
    assert!(install["upstream"].as_u64().unwrap() > 900_000, "alpha, beta and gamma were downloaded: {install}");
    assert!(records[0]["bytes"]["upstream"].as_u64().unwrap() > 0, "update fetched the indexes");

    // Filters: --package, --since.
    let out = setup.ok("audit", &[&ct1, "--json", "--package", "vzt-beta"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let out = setup.ok("audit", &["--json", "--since", "2000-01-01"]);
    assert_eq!(out.lines().count(), records.len() + records2.len());
    let out = setup.ok("audit", &["--json", "--since", "2999-01-01"]);
    assert_eq!(out, "");
    // The readable table.
    let table = setup.ok("audit", &[&ct1]);
    assert!(table.contains("upgrade   vzt-alpha:all 1.0 -> 1.1"), "{table}");
    assert!(table.contains("refused: "), "{table}");
    // Status ranks the containers by bytes from the same log.
    let status: serde_json::Value = serde_json::from_str(&setup.ok("status", &["--json"])).unwrap();
    let top = status["top_containers"].as_array().unwrap();
    assert_eq!(top.len(), 2, "{status}");
    assert_eq!(top[0]["container"], std::fs::canonicalize(&one.path).unwrap().display().to_string());
    assert_eq!(status["running"], true);
}

/// A root of busybox only: wrapper commands that run no package manager, fast.
fn busybox_setup(tmp: &Path) -> (Rootfs, Vec<String>) {
    let root = Rootfs::busybox(&tmp.join("ct"));
    std::fs::write(tmp.join("vzpkg.toml"), "").unwrap();
    let global = [
        "--config",
        &tmp.join("vzpkg.toml").display().to_string(),
        "--cache-dir",
        &tmp.join("cache").display().to_string(),
        "--state-dir",
        &tmp.join("state").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    (root, global)
}

fn vzpkg_with(global: &[String], args: &[&str]) -> (i32, String, String) {
    let mut argv: Vec<&str> = global.iter().map(String::as_str).collect();
    argv.extend(args);
    vzpkg(&argv)
}

/// Must-show 2: edits, deletions and swaps made with the sqlite3 command line are named.
#[test]
fn audit_verify_names_the_record_edited_deleted_or_swapped() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, global) = busybox_setup(tmp.path());
    let ct = root.ct();
    for word in ["one", "two", "three", "four", "five"] {
        // The proxy is never contacted: nothing inside opens a connection.
        let (code, _, err) = vzpkg_with(&global, &["exec", "--proxy", "http://127.0.0.1:9", &ct, "--", "echo", word]);
        assert_eq!(code, 0, "{err}");
    }
    let state = tmp.path().join("state");
    let db = state.join("audit.sqlite");
    let sqlite = |db: &Path, sql: &str| run(Command::new("sqlite3").arg(db).arg(sql));
    sqlite(&db, "PRAGMA wal_checkpoint(TRUNCATE);");
    let (code, out, err) = vzpkg_with(&global, &["audit", "verify"]);
    assert_eq!(code, 0, "an untouched log verifies: {out}{err}");
    assert!(out.contains("intact: 5 records"), "{out}");
    let (_, json, _) = vzpkg_with(&global, &["audit", "verify", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((v["intact"].as_bool(), v["records"].as_u64()), (Some(true), Some(5)));

    let cases = [
        ("edited", "UPDATE records SET body = replace(body, '\"three\"', '\"THREE\"') WHERE id = 3", 3),
        ("deleted", "DELETE FROM records WHERE id = 2", 2),
        (
            "swapped",
            "UPDATE records SET id = -4 WHERE id = 4; UPDATE records SET id = 4 WHERE id = 3; \
             UPDATE records SET id = 3 WHERE id = -4;",
            3,
        ),
        (
            "swapped contents",
            "CREATE TEMP TABLE t AS SELECT * FROM records WHERE id IN (2, 4);
             UPDATE records SET body = (SELECT body FROM t WHERE id = 4), prev_hash = (SELECT prev_hash FROM t WHERE id = 4),
                hash = (SELECT hash FROM t WHERE id = 4) WHERE id = 2;
             UPDATE records SET body = (SELECT body FROM t WHERE id = 2), prev_hash = (SELECT prev_hash FROM t WHERE id = 2),
                hash = (SELECT hash FROM t WHERE id = 2) WHERE id = 4;",
            2,
        ),
        ("last deleted", "DELETE FROM records WHERE id = 5", 5),
        ("edited with its hash recomputed by someone without the chain", "UPDATE records SET hash = 'ab' WHERE id = 1", 1),
    ];
    for (what, sql, record) in cases {
        let copy = tmp.path().join(format!("state-{}", what.replace(' ', "-")));
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::copy(&db, copy.join("audit.sqlite")).unwrap();
        sqlite(&copy.join("audit.sqlite"), sql);
        let mut g = global.clone();
        let at = g.iter().position(|a| a == "--state-dir").unwrap();
        g[at + 1] = copy.display().to_string();
        let (code, out, err) = vzpkg_with(&g, &["audit", "verify"]);
        assert_ne!(code, 0, "{what}: verify passed:\n{out}{err}");
        assert!(err.contains(&format!("broken at record {record}:")), "{what}: {err}");
        let (code, json, _) = vzpkg_with(&g, &["audit", "verify", "--json"]);
        assert_ne!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["broken"]["record"], record, "{what}: {json}");
    }
    // The original is still intact.
    assert_eq!(vzpkg_with(&global, &["audit", "verify"]).0, 0);
}

/// Must-show 3: a package whose name, version and description carry terminal escapes and a
/// megabyte of text each, written into the container's dpkg database by the guest.
#[test]
fn hostile_package_data_is_stored_bounded_and_printed_harmlessly() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, global) = busybox_setup(tmp.path());
    let ct = root.ct();
    let mega = "A".repeat(1 << 20);
    let stanza = format!(
        "Package: evil\u{1b}]0;pwned\u{7}\u{1b}[31m{mega}\nStatus: install ok installed\nArchitecture: all\u{1b}[2J\n\
         Version: 1.0\u{9b}31m\u{1b}]52;c;ZWNobyBwd25lZA==\u{7}{mega}\nDescription: \u{1b}]8;;http://mirror.example.org/\u{7}{mega}\n\n"
    );
    std::fs::write(root.path.join("tmp/stanza"), &stanza).unwrap();
    let (code, _, err) = vzpkg_with(
        &global,
        &["exec", "--proxy", "http://127.0.0.1:9", &ct, "--", "sh", "-c", "cat /tmp/stanza >> /var/lib/dpkg/status"],
    );
    assert_eq!(code, 0, "{err}");
    let harmless = |what: &str, text: &[u8], max: usize| {
        assert!(!text.contains(&0x1b) && !text.contains(&0x07), "{what}: a raw escape was printed");
        assert!(!text.windows(2).any(|w| w == [0xc2, 0x9b]), "{what}: a raw C1 CSI was printed");
        assert!(text.len() < max, "{what}: {} bytes printed", text.len());
    };
    harmless("the wrapper's report", err.as_bytes(), 8192);

    let db = tmp.path().join("state/audit.sqlite");
    let longest = run(Command::new("sqlite3").arg(&db).arg("SELECT max(length(body)) FROM records"));
    assert!(longest.trim().parse::<u64>().unwrap() < 8192, "a record of {} bytes was stored", longest.trim());

    for args in [
        vec!["audit", ct.as_str(), "--json"],
        vec!["audit", ct.as_str()],
        vec!["list", &ct],
        vec!["list", &ct, "--json"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vzpkg")).args(&global).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        harmless(&format!("vzpkg {args:?}"), &out.stdout, 8192);
        harmless(&format!("vzpkg {args:?} (stderr)"), &out.stderr, 8192);
    }
    let (_, json, _) = vzpkg_with(&global, &["audit", &ct, "--json"]);
    let record: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    let change = &record["changes"][0];
    assert_eq!(change["action"], "install");
    let name = change["name"].as_str().unwrap();
    assert!(name.starts_with("evil\u{1b}]0;pwned"), "stored as data, escapes and all: {name:?}");
    assert_eq!(name.chars().count(), 257, "bounded to 256 characters and a mark");
    assert!(change["new_version"].as_str().unwrap().chars().count() <= 257);
    assert_eq!(vzpkg_with(&global, &["audit", "verify"]).0, 0);
}

/// When the proxy refuses an upstream host during a run (a container's sources name a host
/// this machine's do not), vzpkg names it with the exact option and config line that allow it,
/// and the audit record keeps it.
#[test]
fn a_refused_upstream_host_is_named_with_the_line_that_allows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let root = setup.root(&tmp.path().join("ct"));
    let sources = root.path.join("etc/apt/sources.list");
    let mut text = std::fs::read_to_string(&sources).unwrap();
    // Never contacted: the proxy refuses it before any network is touched.
    text.push_str("deb [trusted=yes] http://mirror.example.org/debian-security stable-security main\n");
    std::fs::write(&sources, text).unwrap();
    let (code, _, err) = setup.run("update", &[&root.ct()]);
    assert_ne!(code, 0, "apt reports the source it could not fetch: {err}");
    assert!(err.contains("the proxy refused upstream host mirror.example.org"), "{err}");
    assert!(err.contains("`--allow-host mirror.example.org`"), "{err}");
    assert!(err.contains("allow_hosts = [\"mirror.example.org\"]"), "{err}");
    let records = setup.audit(&root.ct());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["refused_hosts"], serde_json::json!(["mirror.example.org"]));
    assert_eq!(records[0]["outcome"], "failed");
    let table = setup.ok("audit", &[&root.ct()]);
    assert!(table.contains("refused upstream host: mirror.example.org"), "{table}");
}
