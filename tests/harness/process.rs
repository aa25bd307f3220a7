//! Looking at and stopping processes through /proc and signals, by pid only.

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

/// One process as /proc shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// The kernel's short name (`comm`, at most 15 characters).
    pub comm: String,
    /// `R`, `S`, `Z`, ... from /proc/PID/stat.
    pub state: char,
}

/// Reads one process; `None` if it is gone.
pub fn get(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may contain anything, so split at the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())?;
    Some(Proc {
        pid,
        ppid,
        uid,
        comm,
        state,
    })
}

/// Every process (threads excluded).
pub fn all() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(get)
        .collect()
}

/// The command line, arguments separated by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    Some(words.join(" "))
}

/// True while the process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    get(pid).is_some_and(|p| p.state != 'Z')
}

/// Children, grandchildren, ... of `pid` (not `pid` itself), parents first.
pub fn descendants(pid: u32) -> Vec<u32> {
    let procs = all();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(procs.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// Live processes called `comm` (the kernel's 15-character name), of `uid` if given.
pub fn by_comm(comm: &str, uid: Option<u32>) -> Vec<u32> {
    all()
        .into_iter()
        .filter(|p| p.comm == comm && p.state != 'Z' && uid.is_none_or(|u| p.uid == u))
        .map(|p| p.pid)
        .collect()
}

/// Sends a signal; a process that is already gone is not an error.
pub fn signal(pid: u32, signal: Signal) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), signal);
}

/// SIGKILLs `pids` and waits (up to 5 s) until none is alive.
pub fn kill_all(pids: &[u32]) {
    for &pid in pids {
        signal(pid, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `timeout` for a child to exit.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`; always reaps the child.
pub fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child.id(), Signal::SIGTERM);
    if let Some(status) = wait_child(child, grace) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Runs a command to completion, input from /dev/null, output captured.
pub fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs a command that must succeed and returns its standard output.
pub fn run_ok(command: &mut Command) -> String {
    let out = run(command);
    if !out.status.success() {
        panic!(
            "{command:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cgroup v2 hierarchy: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified
/// (hybrid). Fails the test when none is mounted: the tests that need one must run.
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts");
    mounts
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, path, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(path))
        })
        .expect("this test needs a cgroup v2 hierarchy, and this machine has none mounted")
}
