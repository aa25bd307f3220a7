//! Probe backends: `--backend fentry` either runs on fentry programs or fails at once,
//! naming the program the kernel refused and why; `--backend auto` takes fentry where
//! the kernel allows it and otherwise falls back to tracepoints, saying why; and
//! `--backend tracepoint` works everywhere, with the UDP tracepoint this kernel has.
//!
//! Hardened kernels such as our CI machines' refuse BPF trampolines: there the refusal
//! is checked. Stock distribution kernels allow them: there fentry must work.
//! `cargo xtask vm-test` boots such kernels and sets `SESSION_MONITOR_EXPECT_FENTRY=1`,
//! so that a broken fentry backend cannot pass for a refused one; `=0` expects the
//! refusal. Unset, whichever happens is checked.

use std::{
    fs::File,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use harness::{Daemon, TempDir, daemon_binary, process, test_guard};
use serde_json::Value;

/// Under software emulation (`cargo xtask vm-test`) a daemon takes up to ~20 s to load.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether the environment says this kernel allows fentry.
fn expect_fentry() -> Option<bool> {
    match std::env::var("SESSION_MONITOR_EXPECT_FENTRY").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    }
}

/// A daemon started by hand (not through [`Daemon`], which panics when the daemon
/// does not start, and here not starting can be the right outcome).
struct Attempt {
    child: Child,
    dir: TempDir,
}

enum Outcome {
    /// It answers `status --json`: this status.
    Running(Value),
    /// It exited: its exit status and everything it printed.
    Exited(std::process::ExitStatus, String),
}

impl Attempt {
    fn start(backend: &str) -> Attempt {
        let dir = TempDir::new("backend");
        let log = File::create(dir.join("daemon.log")).expect("create daemon.log");
        let child = Command::new(daemon_binary())
            .arg("run")
            .arg("--socket")
            .arg(dir.join("control.sock"))
            .arg("--config")
            .arg(dir.join("policy.toml"))
            .arg("--audit-log")
            .arg(dir.join("audit.jsonl"))
            // Kernel state pinned nowhere: the machine's pin directory is not the
            // test's to use.
            .args(["--pin-dir", ""])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--backend", backend])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", daemon_binary().display()));
        Attempt { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Waits until the daemon answers or exits.
    fn outcome(&mut self) -> Outcome {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Outcome::Exited(status, self.log());
            }
            let out = process::run(
                Command::new(daemon_binary())
                    .arg("--socket")
                    .arg(self.dir.join("control.sock"))
                    .args(["status", "--json"]),
            );
            if out.status.success() {
                let status = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!(
                        "`status --json` printed invalid JSON ({e}): {}",
                        String::from_utf8_lossy(&out.stdout)
                    )
                });
                return Outcome::Running(status);
            }
            assert!(
                Instant::now() < deadline,
                "the daemon neither answered nor exited within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        process::stop_child(&mut self.child, Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!("----- daemon log -----\n{}----- end -----", self.log());
        }
    }
}

/// The `attach` of every program in a status.
fn attach_points(status: &Value) -> Vec<String> {
    status["programs"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no programs: {status:#}"))
        .iter()
        .map(|p| p["attach"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The process life-cycle programs both backends use: BTF tracepoints either way.
const LIFE_CYCLE: [&str; 2] = ["tp_btf/sched_process_exit", "tp_btf/sched_process_fork"];

fn assert_life_cycle(attach: &[String]) {
    for required in LIFE_CYCLE {
        assert!(
            attach.iter().any(|a| a == required),
            "{required} not attached: {attach:?}"
        );
    }
}

/// The fentry backend's attach points: fentry programs, plus the process life-cycle
/// tracepoints both backends use.
fn assert_fentry_backend(status: &Value) {
    assert_eq!(status["backend"], "fentry", "{status:#}");
    let attach = attach_points(status);
    assert_life_cycle(&attach);
    for required in [
        "fentry/tty_write",
        "fentry/tty_ioctl",
        "fentry/skb_consume_udp",
        "fentry/unix_stream_sendmsg",
        "fentry/unix_dgram_sendmsg",
    ] {
        assert!(
            attach.iter().any(|a| a == required),
            "{required} not attached: {attach:?}"
        );
    }
    assert!(
        attach
            .iter()
            .any(|a| a == "fentry/n_tty_receive_buf" || a == "fentry/n_tty_receive_buf2"),
        "no console receive program attached: {attach:?}"
    );
    // `anon_pipe_write` since Linux 6.14.
    assert!(
        attach
            .iter()
            .any(|a| a == "fentry/pipe_write" || a == "fentry/anon_pipe_write"),
        "no pipe write program attached: {attach:?}"
    );
    // Its console programs run on console input only: none waits on standby.
    assert_eq!(
        status["standby_programs"].as_array().map(Vec::len),
        Some(0),
        "{status:#}"
    );
    for a in &attach {
        assert!(
            a.starts_with("fentry/") || LIFE_CYCLE.contains(&a.as_str()),
            "unexpected program {a} in the fentry backend: {attach:?}"
        );
    }
}

fn assert_tracepoint_backend(status: &Value) {
    assert_eq!(status["backend"], "tracepoint", "{status:#}");
    let attach = attach_points(status);
    assert_life_cycle(&attach);
    for a in &attach {
        assert!(
            a.starts_with("tracepoint/")
                || a == "tp_btf/sock_recv_length"
                || LIFE_CYCLE.contains(&a.as_str()),
            "unexpected program {a} in the tracepoint backend: {attach:?}"
        );
    }
    assert!(
        attach
            .iter()
            .any(|a| a == "tracepoint/syscalls/sys_enter_write"),
        "{attach:?}"
    );
    // Console input: loaded, but attached only while a login has a console terminal
    // (every read on the host passes the hook); `console` tests the attaching.
    let standby = status["standby_programs"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no standby programs: {status:#}"));
    assert!(
        standby
            .iter()
            .any(|p| p["attach"] == "tracepoint/syscalls/sys_exit_read"
                && p["attached_while"] == "while a login has a console terminal"),
        "the console read program is not on standby: {status:#}"
    );
    // UDP liveness: sock:sock_recv_length where the kernel has it (6.3+; not Debian
    // 12's 6.1), otherwise the exits of recvmsg and recvfrom.
    let has_sock_recv_length = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|t| Path::new(t).join("events/sock/sock_recv_length").exists());
    let expected: &[&str] = if has_sock_recv_length {
        &["tp_btf/sock_recv_length"]
    } else {
        &[
            "tracepoint/syscalls/sys_exit_recvmsg",
            "tracepoint/syscalls/sys_exit_recvfrom",
        ]
    };
    // `udp_source` names every tracepoint the signal comes from.
    let source = status["udp_source"].as_str().unwrap_or_default();
    assert!(source.starts_with(expected[0]), "{status:#}");
    for program in expected {
        assert!(attach.iter().any(|a| a == program), "{attach:?}");
        let name = program.rsplit('/').next().unwrap_or(program);
        assert!(
            source.contains(name),
            "udp_source misses {name}: {status:#}"
        );
    }
}

#[test]
fn fentry_runs_or_is_refused_clearly_and_auto_agrees() {
    let _guard = test_guard!();
    let expect = expect_fentry();

    let mut fentry = Attempt::start("fentry");
    match fentry.outcome() {
        Outcome::Running(status) => {
            assert_ne!(
                expect,
                Some(false),
                "SESSION_MONITOR_EXPECT_FENTRY=0, yet --backend fentry runs: {status:#}"
            );
            assert_fentry_backend(&status);
            assert!(status["fallback_reason"].is_null(), "{status:#}");
            drop(fentry);

            let auto = Daemon::builder()
                .args(["--backend", "auto"])
                .start_timeout(START_TIMEOUT)
                .start();
            let status = auto.status();
            assert_fentry_backend(&status);
            assert!(
                status["fallback_reason"].is_null(),
                "auto must take fentry where the kernel allows it: {status:#}"
            );
        }
        Outcome::Exited(exit, log) => {
            assert_ne!(
                expect,
                Some(true),
                "this kernel should allow fentry, but --backend fentry failed ({exit}):\n{log}"
            );
            assert!(!exit.success(), "exited successfully?\n{log}");
            // The error names the option, the program, where it attaches and why.
            let error = log
                .lines()
                .find(|l| l.starts_with("session-monitor: "))
                .unwrap_or_else(|| panic!("no `session-monitor: ...` error line:\n{log}"));
            for needle in [
                "--backend fentry",
                "the kernel refused program fe_",
                "(fentry/",
                "does not allow BPF trampolines",
                "--backend tracepoint",
            ] {
                assert!(error.contains(needle), "{needle:?} missing in: {error}");
            }
            drop(fentry);

            let auto = Daemon::builder()
                .args(["--backend", "auto"])
                .start_timeout(START_TIMEOUT)
                .start();
            let status = auto.status();
            assert_tracepoint_backend(&status);
            let reason = status["fallback_reason"]
                .as_str()
                .unwrap_or_else(|| panic!("auto fell back without a reason: {status:#}"));
            assert!(
                reason.contains("the kernel refused program fe_")
                    && reason.contains("does not allow BPF trampolines"),
                "fallback reason: {reason}"
            );
        }
    }
}

#[test]
fn tracepoint_backend_works_on_every_kernel() {
    let _guard = test_guard!();
    let mut daemon = Attempt::start("tracepoint");
    match daemon.outcome() {
        Outcome::Running(status) => {
            assert_tracepoint_backend(&status);
            assert!(status["fallback_reason"].is_null(), "{status:#}");
        }
        Outcome::Exited(exit, log) => panic!("--backend tracepoint failed ({exit}):\n{log}"),
    }
}
