//! The audit log as an operator runs it: torn lines after a crash, logrotate (mv +
//! SIGUSR1, copytruncate), built-in size rotation, a full disk, and a caller flooding
//! the control socket.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use harness::{Daemon, TempDir, TestUser, Wait, http, test_guard};
use nix::sys::signal::Signal;
use serde_json::Value;

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn events(path: &Path) -> Vec<String> {
    records(path)
        .iter()
        .map(|r| r["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `session-monitor audit verify FILES...`.
fn verify(daemon: &Daemon, files: &[PathBuf]) -> Output {
    let mut args: Vec<std::ffi::OsString> = vec!["audit".into(), "verify".into()];
    args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
    daemon.cli(args)
}

fn verify_ok(daemon: &Daemon, files: &[PathBuf]) -> String {
    let out = verify(daemon, files);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "audit verify {files:?} failed: {text}"
    );
    text
}

/// A control request: the daemon audits it (`control_request`).
fn poke(daemon: &Daemon) {
    daemon.status();
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

fn metrics_addr(daemon: &Daemon) -> String {
    daemon.status()["metrics_addr"]
        .as_str()
        .expect("metrics_addr in status")
        .to_string()
}

fn metric(addr: &str, name: &str) -> f64 {
    let (_, body) = http::get(addr, "/metrics").expect("GET /metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
}

#[test]
fn a_torn_last_line_is_cut_off_and_the_repair_audited() {
    let _guard = test_guard!();
    let mut daemon = Daemon::start();
    poke(&daemon);
    daemon.stop();
    let audit = daemon.audit_path().to_path_buf();
    let whole = std::fs::read_to_string(&audit).unwrap();
    // A write cut short by a crash or a full disk.
    let torn = "{\"seq\":99,\"event\":\"sess";
    std::fs::write(&audit, format!("{whole}{torn}")).unwrap();

    let daemon = Daemon::builder().arg("--audit-log").arg(&audit).start();
    poke(&daemon);
    let after = records(&audit);
    let repair = after
        .iter()
        .find(|r| r["event"] == "audit_repaired")
        .unwrap_or_else(|| panic!("no audit_repaired record: {after:?}"));
    assert_eq!(repair["removed_bytes"], torn.len(), "{repair}");
    assert!(
        repair["removed"]
            .as_str()
            .unwrap()
            .starts_with("{\"seq\":99")
    );
    let text = verify_ok(&daemon, std::slice::from_ref(&audit));
    assert!(text.contains("chain intact"), "{text}");
}

#[test]
fn mv_and_sigusr1_start_a_new_file_that_continues_the_chain() {
    let _guard = test_guard!();
    let daemon = Daemon::start();
    poke(&daemon);
    let audit = daemon.audit_path().to_path_buf();
    let moved = numbered(&audit, 1);
    std::fs::rename(&audit, &moved).unwrap();
    daemon.signal(Signal::SIGUSR1);
    Wait::new("the daemon to reopen its audit log")
        .timeout(Duration::from_secs(20))
        .until(|| audit.exists().then_some(()));
    let old_len = std::fs::metadata(&moved).unwrap().len();
    poke(&daemon);
    poke(&daemon);
    assert_eq!(
        std::fs::metadata(&moved).unwrap().len(),
        old_len,
        "records still go into the moved file"
    );
    let new = events(&audit);
    assert_eq!(
        new.first().map(String::as_str),
        Some("audit_reopened"),
        "{new:?}"
    );
    assert!(
        new.iter().filter(|e| *e == "control_request").count() >= 2,
        "{new:?}"
    );
    // The new file alone starts mid-chain; the set verifies (given in any order).
    let alone = verify_ok(&daemon, std::slice::from_ref(&audit));
    assert!(alone.contains("starts mid-chain"), "{alone}");
    let set = verify_ok(&daemon, &[audit.clone(), moved.clone()]);
    assert!(!set.contains("starts mid-chain"), "{set}");
}

#[test]
fn the_shipped_logrotate_snippet_rotates_and_the_daemon_follows() {
    let _guard = test_guard!();
    let daemon = Daemon::start();
    poke(&daemon);
    let audit = daemon.audit_path().to_path_buf();
    // The shipped snippet, for this daemon's log, signalling this daemon (the
    // snippet signals the systemd unit's main process).
    let snippet = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/logrotate/session-monitor"),
    )
    .unwrap();
    assert!(snippet.contains("/var/log/session-monitor/audit.jsonl {"));
    assert!(snippet.contains("--signal=SIGUSR1 --kill-whom=main session-monitor.service"));
    let config = snippet
        .replace(
            "/var/log/session-monitor/audit.jsonl",
            &audit.display().to_string(),
        )
        .lines()
        .map(|l| {
            if l.contains("systemctl kill") {
                format!("        kill -USR1 {}", daemon.pid())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = TempDir::new("logrotate");
    let config_path = dir.write("session-monitor", config);
    let out = harness::process::run(
        Command::new("logrotate")
            .arg("--force")
            .arg("--state")
            .arg(dir.join("state"))
            .arg(&config_path),
    );
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = numbered(&audit, 1);
    assert!(rotated.exists(), "logrotate did not rotate");
    Wait::new("the daemon to reopen its audit log")
        .timeout(Duration::from_secs(20))
        .until(|| {
            events(&audit)
                .contains(&"audit_reopened".to_string())
                .then_some(())
        });
    poke(&daemon);
    let set = verify_ok(&daemon, &[rotated, audit.clone()]);
    assert!(!set.contains("starts mid-chain"), "{set}");
    assert!(events(&audit).contains(&"control_request".to_string()));
}

#[test]
fn copytruncate_is_recorded_not_reported_as_tampering() {
    let _guard = test_guard!();
    let daemon = Daemon::start();
    poke(&daemon);
    let audit = daemon.audit_path().to_path_buf();
    // What logrotate's copytruncate does.
    let copy = numbered(&audit, 1);
    std::fs::copy(&audit, &copy).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&audit)
        .unwrap()
        .set_len(0)
        .unwrap();
    poke(&daemon);
    let new = records(&audit);
    assert_eq!(new[0]["event"], "audit_truncated", "{new:?}");
    assert!(new[0]["size_before"].as_u64().unwrap() > 0);
    let alone = verify_ok(&daemon, std::slice::from_ref(&audit));
    assert!(alone.contains("starts mid-chain"), "{alone}");
    let set = verify_ok(&daemon, &[copy, audit]);
    assert!(set.contains("shrank under the daemon"), "{set}");
}

#[test]
fn size_rotation_keeps_files_small_and_the_set_verifies() {
    let _guard = test_guard!();
    let daemon = Daemon::builder()
        .policy(&format!(
            "{}\naudit_max_size = \"8K\"\naudit_keep = 3\n",
            harness::UNLIMITED_POLICY
        ))
        .start();
    let audit = daemon.audit_path().to_path_buf();
    Wait::new("three rotations")
        .timeout(Duration::from_secs(120))
        .poll(Duration::from_millis(1))
        .until(|| {
            poke(&daemon);
            numbered(&audit, 3).exists().then_some(())
        });
    for _ in 0..20 {
        poke(&daemon);
    }
    assert!(
        !numbered(&audit, 4).exists(),
        "more than audit_keep files kept"
    );
    let mut set = vec![audit.clone()];
    for n in 1..=3 {
        let file = numbered(&audit, n);
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(size <= 8192, "{}: {size} bytes", file.display());
        set.push(file);
    }
    assert_eq!(events(&audit)[0], "audit_rotated");
    let text = verify_ok(&daemon, &set);
    assert!(text.contains("chain intact"), "{text}");
}

/// A small tmpfs, unmounted when dropped.
struct SmallFs {
    dir: TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Self {
        let dir = TempDir::new("smallfs");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(ok.success(), "mount -t tmpfs failed");
        Self { dir }
    }

    /// Fills the file system; returns the filler to delete.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.dir.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![b'x'; 4096];
        while file.write_all(&chunk).is_ok() {}
        // Down to the last byte.
        while file.write_all(b"x").is_ok() {}
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_is_a_metric_a_degraded_readyz_and_a_gap_record() {
    let _guard = test_guard!();
    let fs = SmallFs::mount("256k");
    let audit = fs.dir.join("audit.jsonl");
    let daemon = Daemon::builder().arg("--audit-log").arg(&audit).start();
    let addr = metrics_addr(&daemon);
    poke(&daemon);
    assert_eq!(http::get(&addr, "/readyz").unwrap().0, 200);

    let filler = fs.fill();
    // The log's last page may still hold a few records: write until they fail.
    let mut pokes = 0;
    let errors = Wait::new("audit writes to fail on the full file system")
        .timeout(Duration::from_secs(60))
        .until(|| {
            poke(&daemon);
            pokes += 1;
            let errors = metric(&addr, "session_monitor_audit_write_errors_total");
            (errors >= 3.0).then_some(errors)
        });
    eprintln!("{pokes} requests until 3 records failed; {errors} write errors");
    let (code, body) = http::get(&addr, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("audit log") && body.contains("No space left"),
        "{body}"
    );
    // Nothing half-written: every line is a whole record and the chain holds.
    let while_full = records(&audit).len();
    verify_ok(&daemon, std::slice::from_ref(&audit));
    poke(&daemon);
    assert_eq!(
        records(&audit).len(),
        while_full,
        "a record was written to a full disk"
    );

    std::fs::remove_file(filler).unwrap();
    poke(&daemon);
    let after = records(&audit);
    let gap = after
        .iter()
        .find(|r| r["event"] == "gap")
        .unwrap_or_else(|| panic!("no gap record: {after:?}"));
    assert!(gap["lost_records"].as_u64().unwrap() >= 4, "{gap}");
    assert!(
        gap["error"].as_str().unwrap().contains("No space left"),
        "{gap}"
    );
    let text = verify_ok(&daemon, std::slice::from_ref(&audit));
    assert!(text.contains("records were not written"), "{text}");
    assert_eq!(http::get(&addr, "/readyz").unwrap().0, 200);
}

const FLOOD: &str = r#"
use IO::Socket::UNIX; use Time::HiRes qw(time);
my $end = time + $ARGV[1]; my $n = 0;
while (time < $end) {
    my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or next;
    print $s "{\"command\":\"status\"}\n"; my $answer = <$s>; close $s; $n++;
}
print "$n\n";
"#;

#[test]
fn a_refused_flood_grows_the_log_by_a_bounded_amount_and_root_is_answered() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let daemon = Daemon::start();
    daemon.allow_others();
    let audit = daemon.audit_path().to_path_buf();
    let addr = metrics_addr(&daemon);
    let size_before = std::fs::metadata(&audit).unwrap().len();

    let flood = user
        .command("perl")
        .arg("-e")
        .arg(FLOOD)
        .arg(daemon.socket())
        .arg("6")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("perl");
    std::thread::sleep(Duration::from_secs(1));
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let status = daemon.status();
        slowest = slowest.max(started.elapsed());
        assert!(status["pid"].as_u64().is_some());
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = flood.wait_with_output().unwrap();
    let sent: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(sent > 100, "the flood made only {sent} connections");
    // Every refusal is counted: one record for the first, summaries for the rest.
    let counted = |records: &[Value]| -> u64 {
        records
            .iter()
            .filter(|r| r["caller_uid"] == user.uid())
            .map(|r| match r["event"].as_str() {
                Some("control_refused") => 1,
                Some("control_refused_summary") => r["refused"].as_u64().unwrap_or(0),
                _ => 0,
            })
            .sum()
    };
    let all = Wait::new("the flood's summaries")
        .timeout(Duration::from_secs(30))
        .until(|| {
            let all = records(&audit);
            (counted(&all) >= sent).then_some(all)
        });
    // A connection perl gave up on after the daemon refused it may be counted by
    // the daemon only.
    assert!(
        counted(&all) <= sent + 5,
        "{} refusals counted for {sent}",
        counted(&all)
    );
    let summary = all
        .iter()
        .find(|r| r["event"] == "control_refused_summary")
        .expect("a summary record");
    let text = summary["summary"].as_str().unwrap();
    assert!(text.starts_with(&format!("uid {}: ", user.uid())), "{text}");
    assert!(text.contains("refused requests in"), "{text}");
    let grown = std::fs::metadata(&audit).unwrap().len() - size_before;
    // The control requests of root's `status` calls are audited too (5 x ~200 B);
    // the flood adds one record per 5 s interval.
    eprintln!(
        "flood: {sent} refused connections, audit log grew {grown} bytes, slowest root status {slowest:?}"
    );
    assert!(
        grown < 8 * 1024,
        "the audit log grew {grown} bytes for {sent} refusals"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "root's status took {slowest:?}"
    );
    assert!(metric(&addr, "session_monitor_control_refused_total") >= sent as f64);
}
