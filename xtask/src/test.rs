//! `cargo xtask test`: the whole suite as CI runs it. Unit tests first (fast, no root
//! needed), then the integration tests of `session-monitor-tests`, one at a time: they
//! start real daemons, sshd, mosh and tmux servers, and measure idle time, so they must
//! not compete for the machine's two cores.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build,
    cmd::{self, step},
    libtest,
    setup::{self, Purpose},
};

/// The tests crate; everything else in the workspace only has unit tests here.
const TESTS_PACKAGE: &str = "session-monitor-tests";
/// Built only for the BPF target, by the daemon's build script.
const EBPF_PACKAGE: &str = "session-monitor-ebpf";

pub fn test(filter_args: &[String]) -> Result<()> {
    let mut summary = Summary::default();

    let started = Instant::now();
    setup::setup(Purpose::Test)?;
    summary.note("set-up", true, String::new(), started.elapsed());

    let started = Instant::now();
    let daemon = build::build_daemon(false)?;
    summary.note("build", true, String::new(), started.elapsed());

    step("unit tests");
    let mut unit = cmd::cargo();
    // --no-fail-fast: report every failing test binary, not just the first.
    unit.args(["test", "--workspace", "--no-fail-fast"]).args([
        "--exclude",
        EBPF_PACKAGE,
        "--exclude",
        TESTS_PACKAGE,
    ]);
    summary.add("unit tests", run_tests(&mut unit)?);

    step("integration tests (one at a time)");
    let mut integration = cmd::cargo();
    integration
        .args(["test", "--no-fail-fast", "--package", TESTS_PACKAGE])
        .args(["--", "--test-threads=1"])
        .args(filter_args)
        // Cargo reports artifacts by absolute path.
        .env("SESSION_MONITOR_BIN", &daemon);
    summary.add("integration tests", run_tests(&mut integration)?);

    summary.print();
    if !summary.all_passed() {
        bail!("some tests failed (see the summary above)");
    }
    Ok(())
}

/// What one `cargo test` run reported.
#[derive(Default)]
struct TestRun {
    success: bool,
    counts: libtest::Counts,
    failures: Vec<String>,
    elapsed: Duration,
}

/// Runs `cargo test`, passing its output through while counting the results of the
/// libtest summaries (`test result: ok. 3 passed; 0 failed; 1 ignored; ...`).
fn run_tests(command: &mut Command) -> Result<TestRun> {
    println!("    $ {}", cmd::display(command));
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::display(command)))?;
    let mut run = TestRun::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        writeln!(out, "{line}")?;
        out.flush()?;
        if let Some(name) = run.counts.read_line(&line) {
            run.failures.push(name.to_string());
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    run.success = status.success();
    run.elapsed = started.elapsed();
    Ok(run)
}

#[derive(Default)]
struct Summary {
    rows: Vec<(String, bool, String, Duration)>,
    failures: Vec<String>,
}

impl Summary {
    fn note(&mut self, what: &str, ok: bool, detail: String, elapsed: Duration) {
        self.rows.push((what.to_string(), ok, detail, elapsed));
    }

    fn add(&mut self, what: &str, run: TestRun) {
        let libtest::Counts {
            passed,
            failed,
            ignored,
        } = run.counts;
        let detail = format!("{passed} passed, {failed} failed, {ignored} ignored");
        self.note(what, run.success, detail, run.elapsed);
        self.failures.extend(run.failures);
    }

    fn all_passed(&self) -> bool {
        self.rows.iter().all(|(_, ok, _, _)| *ok)
    }

    fn print(&self) {
        step("summary");
        for (what, ok, detail, elapsed) in &self.rows {
            let verdict = if *ok { "ok" } else { "FAILED" };
            let line = format!(
                "    {what:<18} {verdict:<7} {:>7.1} s  {detail}",
                elapsed.as_secs_f64()
            );
            println!("{}", line.trim_end());
        }
        for name in &self.failures {
            println!("    failed: {name}");
        }
    }
}
