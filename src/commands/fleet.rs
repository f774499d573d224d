//! A wrapper command over several containers (`ct1,ct2`, `@GROUP`, `@all`): one vzpkg process
//! per container — its own sandbox, lock, audit record and cgroup, since a sandbox forks before
//! any thread exists and so runs once per process — at most `--parallel` at once; their output
//! prefixed with the container's name (or kept in a log each), a progress display on a terminal,
//! and a summary at the end. Ctrl-C starts nothing new and lets the running ones finish; a
//! second one ends them, each sandbox killed as a whole by its keeper.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::audit::{Bytes, Record};
use crate::cli::ManyArgs;
use crate::commands::human_bytes;
use crate::config::FileConfig;
use crate::untrusted::{json_text, printable};

/// Most containers run at once, whatever `--parallel` says.
const MAX_PARALLEL: usize = 64;

/// Bytes of one output line kept (more than is shown of it); the rest of a longer one is read
/// and dropped. The output is the guest's: a line without end must not grow this process.
const MAX_LINE: usize = 16 << 10;

/// Events waiting for the display at most. When it falls behind (a slow terminal, a paused
/// pager) the runs' output waits in their pipes, as a single container's would, instead of
/// piling up in this process.
const MAX_QUEUED: usize = 1024;

/// `--parallel`'s default: twice the CPUs (a run waits on fsync and the network about as much
/// as it computes), at least 2 and at most 8.
pub fn default_parallel() -> usize {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (2 * cpus).clamp(2, 8)
}

/// What each container's vzpkg runs: the global options, then `SUBCOMMAND CT ARGS…`.
pub struct Job {
    pub global: Vec<String>,
    pub subcommand: &'static str,
    pub args: Vec<String>,
}

/// How one container's run ended, as the summary shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub container: String,
    /// ok, failed, refused, error, interrupted or not started.
    pub result: String,
    pub exit_status: Option<i32>,
    /// Packages installed, removed or changed.
    pub changed: usize,
    pub bytes: Bytes,
    pub seconds: f64,
    /// Why it did not succeed, as vzpkg said it.
    pub error: Option<String>,
    /// Its output, with `--quiet`.
    pub log: Option<PathBuf>,
}

enum Event {
    Line { index: usize, stderr: bool, text: String },
    Exited { index: usize, status: std::process::ExitStatus },
    Signal,
}

/// Runs `job` in each of `containers`; the exit status is 0 only if every one succeeded.
pub fn run(containers: &[String], job: &Job, many: &ManyArgs, file: &FileConfig) -> Result<i32> {
    let parallel = match many.parallel {
        Some(0) => bail!("--parallel 0: at least one container must run"),
        Some(n) => n.min(MAX_PARALLEL),
        None => default_parallel(),
    };
    let exe = std::env::current_exe().context("finding vzpkg's own executable")?;
    std::fs::create_dir_all(&file.state_dir).with_context(|| format!("creating {}", file.state_dir.display()))?;
    let records = tempfile::Builder::new()
        .prefix("fleet-")
        .tempdir_in(&file.state_dir)
        .with_context(|| format!("making a directory for the runs' records in {}", file.state_dir.display()))?;
    let logs = many.quiet.then(|| log_dir(&file.state_dir)).transpose()?;

    // The keeper of a container's sandbox outlives its vzpkg when that is killed (it then kills
    // the sandbox and removes its cgroup): as their subreaper, this process waits for that too.
    nix::sys::prctl::set_child_subreaper(true).context("becoming the runs' subreaper")?;
    let (events, received) = mpsc::sync_channel(MAX_QUEUED);
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
        .context("installing the Ctrl-C handler")?;
    let signal_events = events.clone();
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if signal_events.send(Event::Signal).is_err() {
                break;
            }
        }
    });

    let display = Display::new(containers.len(), many.summary_json);
    let mut rows: Vec<Row> = containers.iter().map(|c| not_started(c)).collect();
    let mut running: Vec<Running> = Vec::new();
    let mut next = 0;
    let (mut stop_starting, mut interrupts) = (false, 0);
    loop {
        while !stop_starting && next < containers.len() && running.len() < parallel {
            let index = next;
            next += 1;
            let record = records.path().join(format!("{index}.json"));
            let log = logs.as_ref().map(|dir| dir.join(log_name(index, &containers[index])));
            match start(&exe, job, &containers[index], &record, log.as_deref(), index, &events) {
                Ok(pidfd) => {
                    let bar = display.started(&containers[index]);
                    running.push(Running {
                        index,
                        pidfd,
                        started: Instant::now(),
                        record,
                        log,
                        bar,
                        last: String::new(),
                    });
                }
                Err(e) => {
                    rows[index] = Row {
                        result: "error".into(),
                        error: Some(format!("{e:#}")),
                        ..not_started(&containers[index])
                    };
                    stop_starting |= many.fail_fast;
                }
            }
        }
        if running.is_empty() {
            break;
        }
        match received.recv().expect("the sender is held here") {
            Event::Line { index, stderr, text } => {
                let Some(run) = running.iter_mut().find(|r| r.index == index) else { continue };
                let line = printable(&text, 8192);
                if let Some(bar) = &run.bar {
                    bar.set_message(printable(&text, 200));
                }
                run.last = line.clone();
                display.line(&containers[index], &line, stderr || many.summary_json);
            }
            Event::Exited { index, status } => {
                let at = running.iter().position(|r| r.index == index).expect("a running container");
                let run = running.remove(at);
                let row = finished(&containers[index], &run, status, interrupts > 1);
                display.finished(run.bar.as_ref(), &row);
                if row.result != "ok" && many.fail_fast && !stop_starting {
                    stop_starting = true;
                    if next < containers.len() {
                        display.say(&format!(
                            "vzpkg: {} {}: --fail-fast: starting no further container",
                            printable(&row.container, 200),
                            row.result
                        ));
                    }
                }
                rows[index] = row;
            }
            Event::Signal => {
                interrupts += 1;
                stop_starting = true;
                if interrupts == 1 {
                    display.say(&format!(
                        "vzpkg: interrupted: starting no further container; waiting for the {} running (interrupt again to \
                         end them)",
                        running.len()
                    ));
                } else {
                    display.say(&format!("vzpkg: interrupted again: ending the {} running", running.len()));
                    for run in &running {
                        // vzpkg's own process for that container: its sandbox's keeper then kills the
                        // whole sandbox and removes its cgroup.
                        let _ = rustix::process::pidfd_send_signal(&run.pidfd, rustix::process::Signal::TERM);
                    }
                }
            }
        }
    }
    display.clear();
    reap_orphans();
    if interrupts > 0 {
        for row in rows.iter_mut().filter(|r| r.result == "not started") {
            row.error = Some("interrupted before it started".into());
        }
    }
    summarize(&rows, many.summary_json)?;
    let all_ok = rows.iter().all(|r| r.result == "ok");
    Ok(match (all_ok, interrupts) {
        (true, 0) => 0,
        (_, 0) => 1,
        _ => 130,
    })
}

struct Running {
    index: usize,
    /// Its vzpkg, held so that a signal never reaches another process that took its pid.
    pidfd: std::os::fd::OwnedFd,
    started: Instant,
    record: PathBuf,
    log: Option<PathBuf>,
    bar: Option<ProgressBar>,
    /// The last line it printed, for a run that ended without a record.
    last: String,
}

fn not_started(container: &str) -> Row {
    Row {
        container: container.to_string(),
        result: "not started".into(),
        exit_status: None,
        changed: 0,
        bytes: Bytes::default(),
        seconds: 0.0,
        error: None,
        log: None,
    }
}

/// Starts vzpkg for one container, its output sent as events (or into `log`); its pidfd.
fn start(
    exe: &Path,
    job: &Job,
    container: &str,
    record: &Path,
    log: Option<&Path>,
    index: usize,
    events: &mpsc::SyncSender<Event>,
) -> Result<std::os::fd::OwnedFd> {
    let mut command = Command::new(exe);
    command
        .args(&job.global)
        .arg("--record-to")
        .arg(record)
        .arg(job.subcommand)
        .arg(container)
        .args(&job.args)
        .stdin(Stdio::null())
        // A group of its own: the terminal's Ctrl-C reaches this process only, which decides.
        .process_group(0);
    match log {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            command.stdout(file.try_clone()?).stderr(file);
        }
        None => {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
    }
    let mut child = command.spawn().with_context(|| format!("starting vzpkg for {container}"))?;
    // Opened before anything waits for it: the pid cannot have been reused yet.
    let pid = rustix::process::Pid::from_raw(child.id() as i32).context("a child of pid 0")?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .with_context(|| format!("holding the vzpkg process of {container}"))?;
    let pumps: Vec<_> = [
        child.stdout.take().map(|s| (Box::new(s) as Box<dyn Read + Send>, false)),
        child.stderr.take().map(|s| (Box::new(s) as Box<dyn Read + Send>, true)),
    ]
    .into_iter()
    .flatten()
    .map(|(stream, stderr)| {
        let events = events.clone();
        std::thread::spawn(move || {
            let mut stream = BufReader::new(stream);
            while let Some(line) = read_line(&mut stream, MAX_LINE) {
                let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
                // A progress line redrawn with \r shows as its last state.
                let text = text.rsplit('\r').next().unwrap_or_default().to_string();
                if events.send(Event::Line { index, stderr, text }).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    let events = events.clone();
    std::thread::spawn(move || {
        let status = child.wait();
        for pump in pumps {
            let _ = pump.join();
        }
        let status = status.unwrap_or_else(|_| std::process::ExitStatus::from_raw(1 << 8));
        let _ = events.send(Event::Exited { index, status });
    });
    Ok(pidfd)
}

/// The next line of `stream` without its newline, at most `max` bytes of it (the rest of a
/// longer line is read and dropped); `None` at the end or on an error.
fn read_line(stream: &mut impl BufRead, max: usize) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let chunk = match stream.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        if chunk.is_empty() {
            return (!line.is_empty()).then_some(line);
        }
        let (taken, ended) = match chunk.iter().position(|b| *b == b'\n') {
            Some(at) => (at, true),
            None => (chunk.len(), false),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..taken.min(room)]);
        stream.consume(taken + usize::from(ended));
        if ended {
            return Some(line);
        }
    }
}

/// A finished container's row: from the record its vzpkg wrote, else from how it ended.
fn finished(container: &str, run: &Running, status: std::process::ExitStatus, killed: bool) -> Row {
    let seconds = run.started.elapsed().as_secs_f64();
    let record: Option<Record> = std::fs::read(&run.record).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let base = Row { seconds, log: run.log.clone(), ..not_started(container) };
    match record {
        Some(record) => {
            let error = match (&record.error, record.outcome.as_str()) {
                (Some(e), _) => Some(e.clone()),
                (None, "ok") => None,
                (None, _) => Some(run.last.clone()).filter(|l| !l.is_empty()),
            };
            Row {
                result: record.outcome.clone(),
                exit_status: record.exit_status,
                changed: record.changes.len(),
                bytes: record.bytes,
                error,
                ..base
            }
        }
        None if killed || status.signal().is_some() => Row {
            result: "interrupted".into(),
            error: Some(match status.signal() {
                Some(signal) => format!("ended by signal {signal}; its sandbox was killed as a whole"),
                None => "ended on request".into(),
            }),
            ..base
        },
        None => Row {
            result: "error".into(),
            exit_status: status.code(),
            error: Some(if run.last.is_empty() { format!("vzpkg exited with {status}") } else { run.last.clone() }),
            ..base
        },
    }
}

/// Waits for every process left to this one (keepers tearing down a killed run's sandbox).
fn reap_orphans() {
    while let Ok(_) | Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(None, None) {}
}

/// `STATE_DIR/logs/TIME-PID/`, for `--quiet`.
fn log_dir(state_dir: &Path) -> Result<PathBuf> {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
    let dir = state_dir.join("logs").join(format!("{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A file name for a container's log: its position, then its spec with anything but letters,
/// digits, '.', '_' and '-' made '_'.
fn log_name(index: usize, container: &str) -> String {
    let safe: String = container
        .chars()
        .take(100)
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .collect();
    format!("{:03}-{safe}.log", index + 1)
}

/// Output while the containers run: prefixed lines, and on a terminal a line per running
/// container with its last output under a count of those done.
struct Display {
    bars: Option<MultiProgress>,
    total: Option<ProgressBar>,
}

impl Display {
    fn new(containers: usize, json: bool) -> Display {
        if !std::io::stderr().is_terminal() || (!json && !std::io::stdout().is_terminal()) {
            return Display { bars: None, total: None };
        }
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = bars.add(ProgressBar::new(containers as u64));
        total.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} containers done, {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        total.set_prefix("vzpkg");
        Display { bars: Some(bars), total: Some(total) }
    }

    fn started(&self, container: &str) -> Option<ProgressBar> {
        let bars = self.bars.as_ref()?;
        let bar = bars.add(ProgressBar::new_spinner());
        bar.set_style(ProgressStyle::with_template("  {spinner} {prefix:20} {wide_msg}").expect("a valid template"));
        bar.set_prefix(printable(container, 20));
        bar.set_message("starting");
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    }

    fn line(&self, container: &str, line: &str, stderr: bool) {
        let text = format!("[{}] {line}", printable(container, 200));
        let print = || {
            if stderr {
                eprintln!("{text}");
            } else {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
            }
        };
        match &self.bars {
            Some(bars) => bars.suspend(print),
            None => print(),
        }
    }

    fn say(&self, text: &str) {
        match &self.bars {
            Some(bars) => bars.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn finished(&self, bar: Option<&ProgressBar>, row: &Row) {
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if let Some(total) = &self.total {
            total.inc(1);
        }
        self.say(&format!("[{}] vzpkg: {} in {:.1} s", printable(&row.container, 200), row.result, row.seconds));
    }

    fn clear(&self) {
        if let Some(total) = &self.total {
            total.finish_and_clear();
        }
    }
}

/// The summary: a table on stdout, or one JSON object with `--json`.
fn summarize(rows: &[Row], json: bool) -> Result<()> {
    let count = |result: &str| rows.iter().filter(|r| r.result == result).count();
    let failed = rows.iter().filter(|r| !matches!(r.result.as_str(), "ok" | "not started" | "interrupted")).count();
    let mut out = std::io::stdout().lock();
    if json {
        let value = serde_json::json!({
            "containers": rows,
            "ok": count("ok"),
            "failed": failed,
            "interrupted": count("interrupted"),
            "not_started": count("not started"),
        });
        writeln!(out, "{}", json_text(&value))?;
        return Ok(out.flush()?);
    }
    let width = rows.iter().map(|r| printable(&r.container, 40).chars().count()).max().unwrap_or(9).max(9);
    writeln!(
        out,
        "{:width$}  {:11}  {:>7}  {:>10}  {:>10}  {:>10}  {:>7}  DETAIL",
        "CONTAINER", "RESULT", "CHANGED", "VIEW", "CACHE", "UPSTREAM", "TIME"
    )?;
    for row in rows {
        let detail = row
            .error
            .as_deref()
            .map(|e| printable(e.lines().last().unwrap_or_default(), 120))
            .or_else(|| row.log.as_ref().map(|l| format!("log: {}", l.display())))
            .unwrap_or_default();
        let bytes = |n: u64, counted: bool| if counted || n > 0 { human_bytes(n) } else { "-".into() };
        writeln!(
            out,
            "{:width$}  {:11}  {:>7}  {:>10}  {:>10}  {:>10}  {:>6.1}s  {detail}",
            printable(&row.container, 40),
            row.result,
            row.changed,
            bytes(row.bytes.view, true),
            bytes(row.bytes.cache, row.bytes.proxy_counted),
            bytes(row.bytes.upstream, row.bytes.proxy_counted),
            row.seconds,
        )?;
    }
    writeln!(
        out,
        "{} containers: {} ok, {failed} failed, {} interrupted, {} not started",
        rows.len(),
        count("ok"),
        count("interrupted"),
        count("not started")
    )?;
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_the_rest_of_a_long_one_dropped() {
        let mut input = std::io::Cursor::new([b"short\n".as_slice(), &[b'x'; 100_000], b"\nlast"].concat());
        let mut stream = BufReader::with_capacity(64, &mut input);
        assert_eq!(read_line(&mut stream, 1000).unwrap(), b"short");
        assert_eq!(read_line(&mut stream, 1000).unwrap(), vec![b'x'; 1000]);
        assert_eq!(read_line(&mut stream, 1000).unwrap(), b"last");
        assert_eq!(read_line(&mut stream, 1000), None);
    }

    #[test]
    fn log_names_are_plain_file_names() {
        assert_eq!(log_name(0, "dir:/srv/../etc"), "001-dir__srv_.._etc.log");
        assert_eq!(log_name(11, "lxc:web-1"), "012-lxc_web-1.log");
        assert!(!log_name(2, &"/".repeat(1000)).contains('/'));
    }

    #[test]
    fn the_default_is_between_two_and_eight() {
        assert!((2..=8).contains(&default_parallel()));
    }
}
