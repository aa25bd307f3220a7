//! Scale: many concurrent pty sessions that exist before the daemon starts. How long
//! start-up discovery takes, what the daemon and its maps weigh, what it costs while
//! they idle, and whether a burst of input into every one loses events.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::{
    bpf::{self, MapInfo},
    daemon::{Counters, Daemon, DaemonSpec},
    profile::{SyscallCounter, SyscallCounts},
    sys::{self, LeaderMode},
};
use crate::cmd::step;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ScaleResult {
    pub sessions: usize,
    /// Creating the ptys and their session leaders (before the daemon starts).
    pub create_s: f64,
    /// Spawn to the first answer of the control socket (the daemon answers after
    /// its start-up discovery).
    pub ready_s: f64,
    /// Spawn to every benchmark session listed by `sessions --json`.
    pub discovered_s: f64,
    /// The daemon's CPU time (all threads) by then: less noisy than the wall
    /// clock when other work shares the machine, and more than it once start-up
    /// runs on several CPUs.
    pub discovered_cpu_s: f64,
    pub rss_kib_discovered: u64,
    pub rss_kib_end: u64,
    /// Daemon CPU while the sessions idle, as a share of one CPU.
    pub idle_cpu_share: f64,
    pub idle_window_s: f64,
    /// One keystroke into every pty, as fast as possible.
    pub burst_s: f64,
    pub burst: Counters,
    /// The daemon's CPU time from the burst until it has read every event (and
    /// acted on it: each is an input notice of a login).
    pub burst_cpu_s: f64,
    /// Time `sessions --json` takes with all of them.
    pub list_s: f64,
    /// The daemon's system calls while the sessions idle (when profiled), and over
    /// how many seconds.
    pub idle_syscalls: Option<(SyscallCounts, f64)>,
    /// The daemon's system calls during a second start-up with the same sessions.
    pub discovery_syscalls: Option<SyscallCounts>,
    pub maps: Vec<MapInfo>,
    pub stop_s: f64,
}

impl ScaleResult {
    pub fn map_memlock_bytes(&self) -> u64 {
        self.maps.iter().map(|m| m.memlock_bytes).sum()
    }
}

pub fn run(
    spec: &DaemonSpec,
    policy: &Path,
    count: usize,
    idle: Duration,
    profile: bool,
) -> Result<ScaleResult> {
    step(format!(
        "scale: {count} pty sessions created before the daemon starts"
    ));
    let mut result = ScaleResult {
        sessions: count,
        ..ScaleResult::default()
    };
    let started = Instant::now();
    let (ptys, leaders) = sys::sessions(count, true, LeaderMode::Sleep, None)?;
    result.create_s = started.elapsed().as_secs_f64();
    println!("    {count} sessions created in {:.2} s", result.create_s);

    let daemon = Daemon::start(spec, policy)?;
    result.ready_s = daemon.ready_after.as_secs_f64();
    result.discovered_s = daemon
        .wait_for_sessions(&leaders.pids, Duration::from_secs(300))?
        .as_secs_f64();
    result.discovered_cpu_s = daemon.cpu_ns()? as f64 / 1e9;
    result.rss_kib_discovered = daemon.rss_kib()?;
    println!(
        "    daemon answered after {:.2} s, tracked all {count} after {:.2} s ({:.2} s of CPU), RSS {:.1} MiB",
        result.ready_s,
        result.discovered_s,
        result.discovered_cpu_s,
        result.rss_kib_discovered as f64 / 1024.0
    );
    let (_, map_ids) = daemon.bpf_ids()?;
    result.maps = bpf::maps(&map_ids)?;

    let t = Instant::now();
    let listed = daemon.session_leaders()?;
    result.list_s = t.elapsed().as_secs_f64();
    if listed.len() < count {
        bail!(
            "`sessions --json` lists {} sessions, expected at least {count}",
            listed.len()
        );
    }

    let cpu = daemon.cpu_ns()?;
    let t = Instant::now();
    sys::sleep(idle)?;
    result.idle_window_s = t.elapsed().as_secs_f64();
    result.idle_cpu_share =
        daemon.cpu_ns()?.saturating_sub(cpu) as f64 / 1e9 / result.idle_window_s;
    println!(
        "    idle: daemon used {:.1}% of a CPU",
        result.idle_cpu_share * 100.0
    );
    if profile {
        let counted = SyscallCounter::attach(daemon.pid, &spec.workdir).and_then(|counter| {
            let t = Instant::now();
            sys::sleep(idle)?;
            let seconds = t.elapsed().as_secs_f64();
            Ok((counter.finish()?, seconds))
        });
        match counted {
            Ok(c) => result.idle_syscalls = Some(c),
            Err(err) => println!("    system call counts unavailable: {err:#}"),
        }
    }

    let before = Counters::of(&daemon.status()?);
    let cpu = daemon.cpu_ns()?;
    let t = Instant::now();
    for pty in &ptys {
        if rustix::io::write(&pty.master, b"k").map_err(std::io::Error::from)? != 1 {
            bail!("keystroke burst: a short write");
        }
    }
    result.burst_s = t.elapsed().as_secs_f64();
    // Let the daemon read what the burst produced.
    let mut last = before;
    loop {
        sys::sleep(Duration::from_millis(500))?;
        let now = Counters::of(&daemon.status()?);
        if now.events_received == last.events_received && now.sent == last.sent {
            break;
        }
        last = now;
    }
    result.burst = last.since(&before);
    result.burst_cpu_s = daemon.cpu_ns()?.saturating_sub(cpu) as f64 / 1e9;
    result.rss_kib_end = daemon.rss_kib()?;
    println!(
        "    burst of {count} keystrokes in {:.3} s: {} events sent, {} received, {} dropped; \
         {:.3} s of the daemon's CPU",
        result.burst_s,
        result.burst.sent,
        result.burst.events_received,
        result.burst.dropped,
        result.burst_cpu_s
    );
    result.stop_s = daemon.stop()?.as_secs_f64();
    drop(leaders);
    drop(ptys);
    Ok(result)
}

/// A second start-up with `count` sessions, its system calls counted: which ones
/// discovery makes, per session.
pub fn discovery_syscalls(spec: &DaemonSpec, policy: &Path, count: usize) -> Result<SyscallCounts> {
    step(format!(
        "counting the system calls of start-up with {count} sessions"
    ));
    let (_ptys, leaders) = sys::sessions(count, true, LeaderMode::Sleep, None)?;
    let mut daemon = Daemon::spawn(spec, policy)?;
    // Loading the programs takes the daemon most of a second: discovery comes after.
    let counter = SyscallCounter::attach(daemon.pid, &spec.workdir)?;
    daemon.wait_ready()?;
    let counts = counter.finish();
    daemon.wait_for_sessions(&leaders.pids, Duration::from_secs(600))?;
    daemon.stop()?;
    counts
}
