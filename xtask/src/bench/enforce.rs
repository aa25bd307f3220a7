//! Enforcement latency: sessions of a test user on a short idle timeout. Each gets one
//! keystroke, then nothing; how late after its deadline (keystroke + timeout) does
//! the daemon decide to end it, and when does its leader actually die?

use std::{
    collections::{HashMap, HashSet},
    os::fd::OwnedFd,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{
    daemon::{Daemon, DaemonSpec},
    profile::{SyscallCounter, SyscallCounts},
    sys::{self, LeaderMode},
};
use crate::cmd::{self, step};

pub const USER: &str = "sm-bench";
pub const IDLE_TIMEOUT_S: f64 = 2.0;
pub const WARN_BEFORE_S: f64 = 1.0;

pub fn policy_text() -> String {
    format!(
        "# Nothing is limited but the benchmark's own test user.\n\
         idle_timeout = \"none\"\n\
         network_timeout = \"none\"\n\
         max_session = \"none\"\n\
         \n\
         [[rule]]\n\
         name = \"bench-enforcement\"\n\
         users = [\"{USER}\"]\n\
         idle_timeout = \"{IDLE_TIMEOUT_S}s\"\n\
         warn_before = \"{WARN_BEFORE_S}s\"\n"
    )
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EnforcementResult {
    pub sessions: usize,
    /// Leader death minus deadline (keystroke + idle timeout), ms, one per session.
    pub death_late_ms: Vec<f64>,
    /// The audit log's `idle_seconds` at the decision minus the idle timeout, ms (the
    /// log gives it to a tenth of a second).
    pub decided_late_ms: Vec<f64>,
    /// The `session_start` record's time minus the keystroke, ms: how long the
    /// daemon took to know the session (negative: known before the keystroke).
    pub known_after_ms: Vec<f64>,
    /// The `warning` record's time minus when it was due (keystroke + idle timeout −
    /// warning time), ms. A late warning moves the end: the user is promised the
    /// whole warning time.
    pub warned_late_ms: Vec<f64>,
    /// The audit log's `took_ms`: decision to all processes gone.
    pub took_ms: Vec<f64>,
    pub warnings: usize,
    pub idle_ends: usize,
    /// Keystroke to the last leader's death.
    pub total_s: f64,
    /// Writing the keystrokes, first to last.
    pub keystrokes_s: f64,
    /// Processes on the machine while the sessions were ended.
    pub processes: usize,
    /// The p99 of `death_late_ms` of each run, lowest first, when the part ran more
    /// than once (this is the median run).
    pub death_p99_of_runs_ms: Vec<f64>,
}

impl EnforcementResult {
    /// The 99th percentile of leader death after the deadline.
    pub fn death_p99_ms(&self) -> f64 {
        let mut v = self.death_late_ms.clone();
        v.sort_by(f64::total_cmp);
        super::stats::percentile(&v, 99.0)
    }
}

/// The test user, created for the benchmark and removed afterwards.
struct TestUser {
    uid: u32,
    gid: u32,
    created: bool,
}

impl TestUser {
    fn ensure() -> Result<Self> {
        if let Some((uid, gid)) = lookup(USER) {
            println!("    using existing user {USER} (uid {uid})");
            return Ok(Self {
                uid,
                gid,
                created: false,
            });
        }
        cmd::run(
            &format!("creating test user {USER}"),
            Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ]),
        )?;
        let (uid, gid) =
            lookup(USER).with_context(|| format!("user {USER} not found after useradd"))?;
        Ok(Self {
            uid,
            gid,
            created: true,
        })
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if self.created {
            let ok = Command::new("userdel")
                .arg(USER)
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                println!("    test user {USER} removed");
            } else {
                eprintln!("xtask: warning: could not remove test user {USER} (userdel {USER})");
            }
        }
    }
}

fn lookup(name: &str) -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name(name).ok()??;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// Runs the part `runs` times and keeps the run whose p99 is the median, with every
/// run's p99 beside it. One run's tail is one sample of the machine: on two CPUs,
/// back-to-back runs of the same daemon gave p99s from 167 to 283 ms.
pub fn run(spec: &DaemonSpec, count: usize, runs: usize) -> Result<EnforcementResult> {
    let mut all = (0..runs.max(1))
        .map(|_| Ok(run_with(spec, count, false)?.0))
        .collect::<Result<Vec<_>>>()?;
    all.sort_by(|a, b| a.death_p99_ms().total_cmp(&b.death_p99_ms()));
    let p99s = all.iter().map(EnforcementResult::death_p99_ms).collect();
    let mut median = all.swap_remove(all.len() / 2);
    median.death_p99_of_runs_ms = p99s;
    Ok(median)
}

/// The same again with the daemon's system calls counted (`perf stat`) while it ends
/// the sessions; the latencies of this second run are not reported.
pub fn syscalls(spec: &DaemonSpec, count: usize) -> Result<SyscallCounts> {
    step("counting the daemon's system calls while it ends the sessions");
    run_with(spec, count, true)?
        .1
        .context("no system call counts were taken")
}

fn run_with(
    spec: &DaemonSpec,
    count: usize,
    count_syscalls: bool,
) -> Result<(EnforcementResult, Option<SyscallCounts>)> {
    step(format!(
        "enforcement: {count} sessions of user {USER}, idle timeout {IDLE_TIMEOUT_S} s, \
         warning {WARN_BEFORE_S} s before"
    ));
    let user = TestUser::ensure()?;
    let policy = spec.write_policy("enforcement.toml", &policy_text())?;
    let _ = std::fs::remove_file(spec.audit_log());
    let daemon = Daemon::start(spec, &policy)?;

    let (ptys, leaders) =
        sys::sessions(count, true, LeaderMode::Sleep, Some((user.uid, user.gid)))?;
    let pidfds = leaders.pidfds()?;

    let counter = if count_syscalls {
        Some(SyscallCounter::attach(daemon.pid, &spec.workdir)?)
    } else {
        None
    };
    // One keystroke each; its time is when the idle clock starts.
    let mut deadline_ns = Vec::with_capacity(count);
    // The keystroke of each terminal (`pts/N`), to place the audit records on.
    let mut keystroke_ns: HashMap<String, u64> = HashMap::with_capacity(count);
    let first = Instant::now();
    for pty in &ptys {
        let t = sys::boot_ns();
        if rustix::io::write(&pty.master, b"k").map_err(std::io::Error::from)? != 1 {
            bail!("keystroke: a short write");
        }
        deadline_ns.push(t + (IDLE_TIMEOUT_S * 1e9) as u64);
        keystroke_ns.insert(format!("pts/{}", pty.index), t);
    }
    let keystrokes_s = first.elapsed().as_secs_f64();
    let processes = count_processes();
    let died_ns = wait_for_deaths(&pidfds, Duration::from_secs_f64(IDLE_TIMEOUT_S + 300.0))?;
    let total_s = first.elapsed().as_secs_f64();
    let counts = match counter {
        Some(s) => Some(s.finish()?),
        None => None,
    };
    let mut result = EnforcementResult {
        sessions: count,
        death_late_ms: died_ns
            .iter()
            .zip(&deadline_ns)
            .map(|(&d, &dl)| (d as f64 - dl as f64) / 1e6)
            .collect(),
        total_s,
        keystrokes_s,
        processes,
        ..EnforcementResult::default()
    };

    // The audit records of the ends follow the deaths closely.
    let pids: HashSet<i64> = leaders.pids.iter().map(|&p| i64::from(p)).collect();
    let wait_until = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = audit_records(spec, &pids)?;
        let ends = records
            .iter()
            .filter(|r| r["event"] == "session_end")
            .count();
        if ends >= count || Instant::now() > wait_until {
            break records;
        }
        sys::sleep(Duration::from_millis(100))?;
    };
    let wall_minus_boot = sys::wall_ns() as i128 - sys::boot_ns() as i128;
    // Milliseconds from `at` (boot time) to when record `r` was written.
    let after = |r: &Value, at: u64| -> Option<f64> {
        let wall = OffsetDateTime::parse(r["time"].as_str()?, &Rfc3339).ok()?;
        let boot = wall.unix_timestamp_nanos() - wall_minus_boot;
        Some((boot - at as i128) as f64 / 1e6)
    };
    let warn_after_ns = ((IDLE_TIMEOUT_S - WARN_BEFORE_S) * 1e9) as u64;
    for r in &records {
        let keystroke = r["tty"].as_str().and_then(|t| keystroke_ns.get(t)).copied();
        match r["event"].as_str() {
            Some("session_start") => {
                if let Some(ms) = keystroke.and_then(|k| after(r, k)) {
                    result.known_after_ms.push(ms);
                }
            }
            Some("warning") => {
                result.warnings += 1;
                if let Some(ms) = keystroke.and_then(|k| after(r, k + warn_after_ns)) {
                    result.warned_late_ms.push(ms);
                }
            }
            Some("session_end") if r["reason"] == "idle" => {
                result.idle_ends += 1;
                if let Some(idle) = r["idle_seconds"].as_f64() {
                    result.decided_late_ms.push((idle - IDLE_TIMEOUT_S) * 1e3);
                }
                if let Some(took) = r["took_ms"].as_f64() {
                    result.took_ms.push(took);
                }
            }
            _ => {}
        }
    }
    daemon.stop()?;
    drop(leaders);
    drop(ptys);
    drop(user);
    if result.idle_ends < count {
        bail!(
            "the audit log has {} idle ends of {count} sessions",
            result.idle_ends
        );
    }
    Ok((result, counts))
}

fn count_processes() -> usize {
    std::fs::read_dir("/proc").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count()
    })
}

/// When each process behind `pidfds` exited (CLOCK_BOOTTIME ns), in order. With
/// epoll: polling a thousand descriptors on every death would take the CPU the
/// daemon needs to end the rest, and make the measured lateness the observer's.
fn wait_for_deaths(pidfds: &[OwnedFd], timeout: Duration) -> Result<Vec<u64>> {
    use rustix::{
        buffer::spare_capacity,
        event::epoll::{self, CreateFlags, EventData, EventFlags},
    };
    let poller = epoll::create(CreateFlags::CLOEXEC).map_err(std::io::Error::from)?;
    for (i, fd) in pidfds.iter().enumerate() {
        epoll::add(&poller, fd, EventData::new_u64(i as u64), EventFlags::IN)
            .map_err(std::io::Error::from)?;
    }
    let mut died = vec![0u64; pidfds.len()];
    let mut pending = pidfds.len();
    let deadline = Instant::now() + timeout;
    let mut events = Vec::with_capacity(pidfds.len());
    while pending > 0 {
        sys::check_interrupted()?;
        if Instant::now() > deadline {
            bail!(
                "{pending} of {} session leaders still alive {timeout:?} after their keystroke",
                pidfds.len()
            );
        }
        let wait = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        events.clear();
        match epoll::wait(&poller, spare_capacity(&mut events), Some(&wait)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(std::io::Error::from(err).into()),
        }
        let now = sys::boot_ns();
        for event in &events {
            let i = event.data.u64() as usize;
            if died[i] == 0 {
                died[i] = now;
                pending -= 1;
                // An exited process's pidfd stays readable: not again.
                epoll::delete(&poller, &pidfds[i]).map_err(std::io::Error::from)?;
            }
        }
    }
    Ok(died)
}

/// Audit records about the given leaders, from the daemon's audit log.
fn audit_records(spec: &DaemonSpec, leaders: &HashSet<i64>) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(spec.audit_log()).unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| {
            r["leader_pid"]
                .as_i64()
                .is_some_and(|p| leaders.contains(&p))
        })
        .collect())
}
