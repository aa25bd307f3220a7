//! The daemon under test: started and stopped for every attached run, asked for its
//! status through its own CLI, and measured from /proc.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::sys;

/// How the daemon is started; the same for every run of one benchmark.
#[derive(Clone, Debug)]
pub struct DaemonSpec {
    pub binary: PathBuf,
    /// `--backend` as given to `cargo xtask bench`.
    pub backend: String,
    /// Scratch directory: policy, socket, state, logs.
    pub workdir: PathBuf,
}

impl DaemonSpec {
    /// The command line, with `policy` as the policy file.
    pub fn command(&self, policy: &Path) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("run")
            .arg("--socket")
            .arg(self.socket())
            .arg("--config")
            .arg(policy)
            .arg("--audit-log")
            .arg(self.audit_log())
            .arg("--state-dir")
            .arg(self.workdir.join("state"))
            .args(["--metrics-addr", "", "--backend", &self.backend])
            // Each run starts from empty maps, and the machine's pinned state is
            // never touched.
            .args(["--pin-dir", ""]);
        command
    }

    pub fn socket(&self) -> PathBuf {
        self.workdir.join("run/control.sock")
    }

    pub fn audit_log(&self) -> PathBuf {
        self.workdir.join("log/audit.jsonl")
    }

    fn daemon_log(&self) -> PathBuf {
        self.workdir.join("log/daemon.log")
    }

    /// Writes a policy file into its own directory (the daemon watches that
    /// directory; the socket and logs live elsewhere so that they do not wake it).
    pub fn write_policy(&self, name: &str, text: &str) -> Result<PathBuf> {
        let dir = self.workdir.join("policy");
        fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let out = Command::new(&self.binary)
            .arg("check-config")
            .arg(&path)
            .output()
            .context("running session-monitor check-config")?;
        if !out.status.success() {
            bail!(
                "the benchmark's policy {} is invalid: {}{}",
                path.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(path)
    }

    /// Runs a client command (`status --json`, `sessions --json`) against the daemon.
    pub fn client_json(&self, args: &[&str]) -> Result<Value> {
        let out = Command::new(&self.binary)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running session-monitor {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "session-monitor {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing the output of session-monitor {}", args.join(" ")))
    }
}

/// A running daemon. Dropping it kills it; [`Daemon::stop`] ends it the normal way.
pub struct Daemon {
    spec: DaemonSpec,
    child: Option<Child>,
    pub pid: u32,
    /// From spawn to the first answer on the control socket. The daemon answers only
    /// after its start-up discovery, so this includes loading, attaching and discovery.
    pub ready_after: Duration,
    pub spawned_at: Instant,
}

impl Daemon {
    /// Starts the daemon and waits until it answers.
    pub fn start(spec: &DaemonSpec, policy: &Path) -> Result<Self> {
        let mut daemon = Self::spawn(spec, policy)?;
        daemon.wait_ready()?;
        Ok(daemon)
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn(spec: &DaemonSpec, policy: &Path) -> Result<Self> {
        for dir in ["run", "log", "state"] {
            fs::create_dir_all(spec.workdir.join(dir))?;
        }
        let _ = fs::remove_file(spec.socket());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.daemon_log())?;
        let mut command = spec.command(policy);
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. The daemon ends with the benchmark.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let spawned_at = Instant::now();
        let child = command.spawn().context("starting session-monitor")?;
        Ok(Self {
            spec: spec.clone(),
            pid: child.id(),
            child: Some(child),
            ready_after: Duration::ZERO,
            spawned_at,
        })
    }

    /// Waits until the daemon answers on its control socket.
    pub fn wait_ready(&mut self) -> Result<()> {
        let daemon = self;
        let spawned_at = daemon.spawned_at;
        let deadline = spawned_at + Duration::from_secs(180);
        loop {
            sys::check_interrupted()?;
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "session-monitor exited during start-up ({status}); its log:\n{}",
                    daemon.log_tail()
                );
            }
            if daemon.spec.socket().exists() && daemon.status().is_ok() {
                daemon.ready_after = spawned_at.elapsed();
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "session-monitor did not answer within 180 s; its log:\n{}",
                    daemon.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.spec.daemon_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn status(&self) -> Result<Value> {
        self.spec.client_json(&["status", "--json"])
    }

    pub fn sessions(&self) -> Result<Value> {
        self.spec.client_json(&["sessions", "--json"])
    }

    /// Leader pids of the daemon's sessions.
    pub fn session_leaders(&self) -> Result<BTreeSet<i64>> {
        Ok(self
            .sessions()?
            .as_array()
            .context("`sessions --json` is not an array")?
            .iter()
            .filter_map(|s| s["leader_pid"].as_i64())
            .collect())
    }

    /// Waits until every one of `leaders` is a session of the daemon; returns how
    /// long that took from the daemon's spawn, up to when the request that found
    /// them all was sent.
    pub fn wait_for_sessions(&self, leaders: &[i32], timeout: Duration) -> Result<Duration> {
        if leaders.is_empty() {
            return Ok(self.spawned_at.elapsed());
        }
        let deadline = Instant::now() + timeout;
        let mut poll = Duration::from_millis(20);
        loop {
            sys::check_interrupted()?;
            let asked = self.spawned_at.elapsed();
            let known = self.session_leaders()?;
            let missing = leaders
                .iter()
                .filter(|&&p| !known.contains(&(p as i64)))
                .count();
            if missing == 0 {
                return Ok(asked);
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon tracks {} of {} benchmark sessions after {timeout:?}",
                    leaders.len() - missing,
                    leaders.len()
                );
            }
            std::thread::sleep(poll);
            poll = (poll * 2).min(Duration::from_millis(250));
        }
    }

    /// CPU time of the daemon so far, in ns: all its threads, those that have exited
    /// too (see [`sys::cpu_ns_of`]).
    pub fn cpu_ns(&self) -> Result<u64> {
        sys::cpu_ns_of(self.pid)
    }

    pub fn rss_kib(&self) -> Result<u64> {
        sys::process_status_kib(self.pid, "VmRSS")
    }

    /// Ids of the BPF programs and maps the daemon holds, from its fdinfo.
    pub fn bpf_ids(&self) -> Result<(Vec<u32>, Vec<u32>)> {
        let dir = format!("/proc/{}/fdinfo", self.pid);
        let mut progs = Vec::new();
        let mut maps = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let Ok(text) = fs::read_to_string(entry?.path()) else {
                continue;
            };
            for line in text.lines() {
                let mut parts = line.split(':');
                let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let Ok(id) = value.trim().parse::<u32>() else {
                    continue;
                };
                match key.trim() {
                    "prog_id" => progs.push(id),
                    "map_id" => maps.push(id),
                    _ => {}
                }
            }
        }
        progs.sort_unstable();
        progs.dedup();
        maps.sort_unstable();
        maps.dedup();
        Ok((progs, maps))
    }

    /// SIGTERM, then waits for the process to be gone (its programs are detached
    /// when its descriptors close). Returns how long the daemon took to exit.
    pub fn stop(mut self) -> Result<Duration> {
        let started = Instant::now();
        let mut child = self.child.take().expect("running");
        // Our child, not reaped yet: its pid is still its own.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        );
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!(
                        "session-monitor exited with {status} on SIGTERM; its log:\n{}",
                        self.log_tail()
                    );
                }
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("session-monitor did not exit within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kernel-side counters from `status --json`, summed over the probes.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Counters {
    pub seen: u64,
    pub matched: u64,
    pub sent: u64,
    pub dropped: u64,
    pub events_received: u64,
}

impl Counters {
    pub fn of(status: &Value) -> Self {
        let mut c = Self {
            events_received: status["events_received"].as_u64().unwrap_or(0),
            ..Self::default()
        };
        for probe in status["counters"]["probes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            c.seen += probe["seen"].as_u64().unwrap_or(0);
            c.matched += probe["matched"].as_u64().unwrap_or(0);
            c.sent += probe["sent"].as_u64().unwrap_or(0);
            c.dropped += probe["dropped"].as_u64().unwrap_or(0);
        }
        c
    }

    pub fn since(&self, before: &Self) -> Self {
        Self {
            seen: self.seen.saturating_sub(before.seen),
            matched: self.matched.saturating_sub(before.matched),
            sent: self.sent.saturating_sub(before.sent),
            dropped: self.dropped.saturating_sub(before.dropped),
            events_received: self.events_received.saturating_sub(before.events_received),
        }
    }
}

/// Other session-monitor daemons on the machine (their probes would run during
/// both kinds of runs, diluting the measured difference).
pub fn other_daemons(own: Option<u32>) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| Some(pid) != own)
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "session-monitor")
                && fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"run"))
        })
        .collect()
}
