//! Wrapper commands over several containers, as root: ten Debian roots from one tarball
//! installing in parallel through one proxy, a held lock failing one of them, --fail-fast,
//! Ctrl-C, and what @GROUP, @all and `vzpkg containers` stand for.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::cli::Served;
use crate::util::repo::{deb_repo, Pkg};
use crate::util::rootfs::Rootfs;

fn packages() -> Vec<Pkg> {
    vec![
        Pkg::new("vzt-alpha", "1.0", 300_000).depends("vzt-beta"),
        Pkg::new("vzt-beta", "2.1", 1_200_000),
        Pkg::new("vzt-gamma", "0.3", 40_000),
        Pkg::new("vzt-delta", "1.1", 20_000),
        Pkg::new("vzt-epsilon", "0.9", 20_000),
    ]
}

/// The summary `--json` printed, parsed.
fn summary(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{stdout}"))
}

/// Container name → its result, from a summary.
fn results(summary: &serde_json::Value) -> Vec<(String, String)> {
    summary["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["container"].as_str().unwrap().to_string(), c["result"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn ten_containers_install_in_parallel_each_package_fetched_once_and_a_held_lock_fails_only_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let debs = deb_repo(&tmp.path().join("upstream/debian"), &packages());
    let served = Served::start(tmp.path(), "");
    let source = format!("deb [trusted=yes] {}/debian stable main", served.upstream.url());
    let roots: Vec<Rootfs> = (1..=10).map(|i| Rootfs::new(&tmp.path().join(format!("ct{i}")), &source)).collect();
    let names: Vec<String> = (1..=10).map(|i| format!("ct{i}")).collect();
    let mut config = String::from("[containers]\n");
    for (name, root) in names.iter().zip(&roots) {
        config.push_str(&format!("{name} = {:?}\n", root.path.display().to_string()));
    }
    std::fs::write(&served.cli.config, config).unwrap();
    let all = names.join(",");

    // --quiet: each container's output in a log of its own, named in the summary.
    let out = served.ok("update", &["--parallel", "4", "--quiet", &all]);
    assert!(!out.contains("Reading package lists"), "{out}");
    for name in &names {
        let row = out.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{out}"));
        let log = row.split("log: ").nth(1).unwrap_or_else(|| panic!("{row}"));
        assert!(log.starts_with(&served.cli.state) && log.ends_with(&format!("-{name}.log")), "{row}");
        assert!(std::fs::read_to_string(log).unwrap().contains("Reading package lists"), "{log}");
    }
    let (code, out, err) = served.run("install", &["--parallel", "4", "--json", &all, "vzt-alpha", "vzt-gamma"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report = summary(&out);
    assert_eq!(results(&report), names.iter().map(|n| (n.clone(), "ok".to_string())).collect::<Vec<_>>());
    assert_eq!(report["ok"], 10);
    for row in report["containers"].as_array().unwrap() {
        assert_eq!(row["changed"], 3, "{row}");
        assert_eq!(row["exit_status"], 0, "{row}");
    }
    for root in &roots {
        assert_eq!(root.installed_version("vzt-alpha").as_deref(), Some("1.0"), "{}", root.path.display());
        assert_eq!(root.installed_version("vzt-beta").as_deref(), Some("2.1"));
        assert_eq!(root.installed_version("vzt-gamma").as_deref(), Some("0.3"));
    }
    // Ten containers asked for each package, most of them at once: one upstream download each.
    for deb in debs.iter().filter(|d| !d.contains("delta") && !d.contains("epsilon")) {
        assert_eq!(served.upstream.count(&format!("/debian/{deb}")), 1, "{deb}");
    }
    // Each container's run has its own audit record.
    let (code, audit, _) =
        crate::util::vzpkg(&["--config", &served.cli.config, "--state-dir", &served.cli.state, "audit", "--json"]);
    assert_eq!(code, 0);
    let installs: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["command"] == "install")
        .collect();
    let mut specs: Vec<&str> = installs.iter().map(|r| r["container"]["spec"].as_str().unwrap()).collect();
    specs.sort();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(specs, want, "{audit}");
    // Each container's output came prefixed with its name.
    for name in &names {
        assert!(err.contains(&format!("[{name}] vzpkg: installed vzt-alpha:all 1.0")), "{err}");
    }

    // ct3's dpkg is locked by someone: it fails naming the holder, the nine others succeed.
    let holder = crate::util::hold_lock(&roots[2].path.join("var/lib/dpkg/lock-frontend"));
    let (code, out, err) = served.run("install", &["--parallel", "4", "--timeout", "1", &all, "vzt-delta"]);
    assert_ne!(code, 0, "{out}\n{err}");
    let ct3 = out.lines().find(|l| l.starts_with("ct3 ")).unwrap_or_else(|| panic!("no row for ct3:\n{out}"));
    assert!(ct3.contains("refused") && ct3.contains(&format!("held by pid {}", holder.id())), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("ct") && l.contains(" ok ")).count(), 9, "{out}");
    assert!(out.contains("10 containers: 9 ok, 1 failed"), "{out}");
    for (i, root) in roots.iter().enumerate() {
        let want = if i == 2 { None } else { Some("1.1") };
        assert_eq!(root.installed_version("vzt-delta").as_deref(), want, "{}", root.path.display());
    }

    // --fail-fast: after ct3 fails, no further container starts.
    let (code, out, err) = served
        .run("install", &["--parallel", "1", "--fail-fast", "--json", "--timeout", "1", "ct3,ct1,ct2", "vzt-epsilon"]);
    assert_ne!(code, 0);
    let report = summary(&out);
    assert_eq!(
        results(&report),
        [("ct3", "refused"), ("ct1", "not started"), ("ct2", "not started")]
            .map(|(c, r)| (c.to_string(), r.to_string()))
    );
    assert!(err.contains("--fail-fast: starting no further container"), "{err}");
    assert!(roots.iter().all(|r| r.installed_version("vzt-epsilon").is_none()));
    drop(holder);

    // Several containers need -y: their package managers cannot each ask a question.
    let argv = ["--config", &served.cli.config, "--state-dir", &served.cli.state, "install", &all, "vzt-epsilon"];
    let (code, _, err) = crate::util::vzpkg(&argv);
    assert_ne!(code, 0);
    assert!(err.contains("needs -y"), "{err}");
}

#[test]
fn ctrl_c_starts_nothing_new_and_a_second_one_ends_the_running_sandboxes_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let roots: Vec<Rootfs> = (1..=3).map(|i| Rootfs::busybox(&tmp.path().join(format!("ct{i}")))).collect();
    let list = roots.iter().map(|r| r.ct()).collect::<Vec<_>>().join(",");
    let state = tmp.path().join("state");
    let mut fleet = Command::new(env!("CARGO_BIN_EXE_vzpkg"))
        .args(["--state-dir", &state.display().to_string(), "exec", "--parallel", "2", "--json", &list, "--"])
        .args(["sh", "-c", "echo started; exec sleep 3600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(fleet.id() as i32);
    // The guests' output goes to stderr with --json: wait for both running ones to say so.
    let mut stderr = BufReader::new(fleet.stderr.take().unwrap());
    let mut seen = String::new();
    while seen.matches("] started").count() < 2 {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "vzpkg ended early:\n{seen}");
        seen.push_str(&line);
    }
    nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).unwrap();
    while !seen.contains("interrupt again to end them") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = fleet.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{seen}{rest}");
    let report = summary(&String::from_utf8_lossy(&out.stdout));
    let results: Vec<String> = results(&report).into_iter().map(|(_, r)| r).collect();
    assert_eq!(results, ["interrupted", "interrupted", "not started"], "{seen}{rest}");
    // vzpkg waited for the sandboxes' keepers: no guest process and no run cgroup is left.
    let sleeping = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path().join("cmdline")).ok())
        .filter(|cmdline| cmdline == b"sleep\x003600\x00")
        .count();
    let ps = crate::util::run(Command::new("ps").args(["-eo", "pid,ppid,stat,wchan:30,cgroup:80,cmd"]));
    assert_eq!(sleeping, 0, "a guest outlived its run:\n{ps}");
    // A run's cgroup is `run-PID-MILLIS`, PID its vzpkg's: one whose vzpkg is gone was leaked
    // (other tests' runs have theirs alive).
    for hierarchy in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let leaked: Vec<_> = crate::util::walk(Path::new(hierarchy), &[])
            .into_iter()
            .filter(|(p, m)| m.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("run-")))
            .filter(|(p, _)| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let pid = name.split('-').nth(1).unwrap_or_default().to_string();
                !Path::new("/proc").join(pid).exists()
            })
            .collect();
        assert!(
            leaked.is_empty(),
            "cgroups of ended runs under {hierarchy}: {:?}",
            leaked.iter().map(|l| &l.0).collect::<Vec<_>>()
        );
    }
}

#[test]
fn groups_and_all_resolve_as_documented_and_containers_lists_what_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let named = Rootfs::busybox(&t.join("named"));
    let other = Rootfs::busybox(&t.join("other"));
    // A stopped LXC container (its config names its root), an nspawn machine and an OpenVZ
    // private area, each in a directory of the test's own.
    let lxc_root = Rootfs::busybox(&t.join("lxc-roots/web"));
    std::fs::create_dir_all(t.join("lxc/web")).unwrap();
    std::fs::write(t.join("lxc/web/config"), format!("lxc.rootfs.path = dir:{}\n", lxc_root.path.display())).unwrap();
    std::fs::create_dir_all(t.join("lxc/not-a-container")).unwrap();
    Rootfs::busybox(&t.join("machines/m1"));
    Rootfs::busybox(&t.join("vz/101"));
    let config = t.join("vzpkg.toml");
    std::fs::write(
        &config,
        format!(
            "[containers]\nnamed = {:?}\n[groups]\npair = [\"named\", {:?}]\n\
             [discovery]\nlxc_path = {:?}\nmachines_dir = {:?}\nopenvz_private = {:?}\n",
            named.path.display().to_string(),
            other.ct(),
            t.join("lxc").display().to_string(),
            t.join("machines").display().to_string(),
            t.join("vz").display().to_string(),
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let state = t.join("state").display().to_string();
    let vzpkg = |args: &[&str]| {
        let mut argv = vec!["--config", &config, "--state-dir", &state];
        argv.extend(args);
        crate::util::vzpkg(&argv)
    };

    let (code, out, err) = vzpkg(&["containers", "--json"]);
    assert_eq!(code, 0, "{err}");
    let found: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let row = |name: &str| found.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name}: {out}"));
    assert_eq!(found.len(), 4, "{out}");
    assert_eq!((row("named")["kind"].as_str(), row("named")["state"].as_str()), (Some("dir"), Some("stopped")));
    assert_eq!(row("lxc:web")["root"], lxc_root.path.display().to_string());
    assert_eq!(
        (row("nspawn:m1")["kind"].as_str(), row("openvz:101")["kind"].as_str()),
        (Some("nspawn"), Some("openvz"))
    );
    assert!(found.iter().all(|c| c["backend"] == "apt" && c["state"] == "stopped"), "{out}");
    let (code, table, _) = vzpkg(&["containers"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("NAME") && table.lines().count() == 5, "{table}");

    // Each container is told apart by the file it gets written.
    let mark = ["sh", "-c", "echo marked > /marked"];
    let (code, out, err) = vzpkg(&["exec", "--json", "@pair", "--"].iter().chain(&mark).copied().collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let pair: Vec<String> = results(&summary(&out)).into_iter().map(|(c, _)| c).collect();
    assert_eq!(pair, ["named".to_string(), other.ct()]);
    assert!(named.path.join("marked").is_file() && other.path.join("marked").is_file());

    let (code, out, err) = vzpkg(&["exec", "--json", "@all", "--"].iter().chain(&mark).copied().collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let every: Vec<(String, String)> = results(&summary(&out));
    assert_eq!(
        every,
        ["named", "lxc:web", "nspawn:m1", "openvz:101"].map(|c| (c.to_string(), "ok".to_string())),
        "{err}"
    );
    for dir in ["lxc-roots/web", "machines/m1", "vz/101"] {
        assert!(t.join(dir).join("marked").is_file(), "{dir}");
    }
    let (code, _, err) = vzpkg(&["exec", "@nope", "--", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("no group @nope") && err.contains("@pair"), "{err}");

    // A stopped unprivileged LXC container: its files carry its range on disk, and its guest
    // runs with that range (root inside is its host uid 300000, not vzpkg's range idmapped).
    let shifted = Rootfs::busybox(&t.join("lxc-roots/shifted"));
    crate::util::run(Command::new("chown").args(["-R", "-h", "300000:300000"]).arg(&shifted.path));
    std::fs::create_dir_all(t.join("lxc/shifted")).unwrap();
    std::fs::write(
        t.join("lxc/shifted/config"),
        format!(
            "lxc.rootfs.path = dir:{}\nlxc.idmap = u 0 300000 65536\nlxc.idmap = g 0 300000 65536\n",
            shifted.path.display()
        ),
    )
    .unwrap();
    let (code, out, err) =
        vzpkg(&["exec", "lxc:shifted", "--", "sh", "-c", "id -u; stat -c %u /bin/busybox; touch /made"]);
    assert_eq!((code, out.as_str()), (0, "0\n0\n"), "{err}");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(shifted.path.join("made")).unwrap()), 300_000);
}

/// How many children of `pid` (of any of its threads) are alive, not zombies.
fn live_children(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
            state.is_some_and(|s| s != 'Z')
        })
        .count()
}

/// The peak memory (KiB) of the process `command` starts, and its exit code: from wait4.
#[allow(clippy::zombie_processes)] // waited for by wait4, which std does not know of
fn peak_kib(command: &mut Command) -> (i64, i32) {
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<nix::libc::rusage>() });
    // SAFETY: waits for the child just spawned, filling two values owned here.
    let pid = unsafe { nix::libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (usage.ru_maxrss, nix::libc::WEXITSTATUS(status))
}

#[test]
fn a_guests_endless_line_or_flood_of_output_does_not_grow_the_fleet_process() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let roots: Vec<Rootfs> = (1..=2).map(|i| Rootfs::busybox(&t.join(format!("ct{i}")))).collect();
    let targets = roots.iter().map(|r| r.ct()).collect::<Vec<_>>().join(",");
    let state = t.join("state").display().to_string();
    let exe = env!("CARGO_BIN_EXE_vzpkg");

    // 300 MB without a newline from each guest: what the operator sees of it is a line of 8 KiB.
    let endless = "yes x | tr -d '\\n' | head -c 300000000; echo; echo done";
    let (peak, code) =
        peak_kib(Command::new(exe).args(["--state-dir", &state, "exec", &targets, "--", "sh", "-c", endless]));
    assert_eq!(code, 0);
    // Unbounded, this grew by gigabytes; the bound leaves room for a debug build under load.
    assert!(peak < 512 << 10, "the fleet process (or one of its runs) reached {peak} KiB");

    // A flood of short lines while the display is stalled (a paused pager): the output waits in
    // the runs' pipes, not in the fleet process.
    let mut fleet = Command::new(exe)
        .args(["--state-dir", &state, "exec", "--max-time", "8", &targets, "--", "sh", "-c", "yes flooding"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = fleet.id();
    // Nothing reads its output until every run has ended (at --max-time): the runs' own
    // processes are then zombies or gone, whatever the fleet process still holds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while live_children(pid) > 0 {
        assert!(std::time::Instant::now() < deadline, "the runs did not end at --max-time");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Its peak, whenever it came.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    // Now read it all: the runs end at --max-time.
    let mut out = String::new();
    std::io::Read::read_to_string(fleet.stdout.as_mut().unwrap(), &mut out).unwrap();
    fleet.wait().unwrap();
    assert!(rss < 512 << 10, "with its output unread the fleet process grew to {rss} KiB");
    assert!(out.lines().any(|l| l.ends_with("] flooding")), "{}", &out[..out.len().min(2000)]);
}
