//! Finding the session on a terminal: its leader, the process serving it, its user,
//! kind and remote peer, from /proc.
//!
//! The probes only say "terminal K was written to". Everything else is resolved here,
//! in batches: one pass over /proc/*/stat finds the leaders of every pending terminal.

use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::PathBuf, time::SystemTime};

use session_monitor_common::{TtyKey, dev};

use super::{
    kind::{self, ContainerInfo, SessionKind},
    procs::{self, ProcInfo, ProcRef},
    tty::key_from_stat,
};

/// Leaders that are not a login yet: a getty waiting at the login prompt.
const PRE_LOGIN: [&str; 5] = ["agetty", "getty", "mingetty", "login", "systemd-getty"];

/// Everything needed to create a session for one terminal.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub key: TtyKey,
    pub leader: ProcRef,
    pub server: Option<ProcRef>,
    pub server_exe: Option<PathBuf>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub kind: SessionKind,
    pub container: Option<ContainerInfo>,
    pub remote: Option<String>,
    /// Last access time of the terminal device: the best evidence of the last input
    /// before the daemon was watching.
    pub tty_atime: Option<SystemTime>,
    /// Audit session ids (see [`procs::audit_session`]) of the leader and the server.
    pub audit_session: Option<u32>,
    pub server_audit_session: Option<u32>,
    /// The terminal the server itself runs on, if any (`script`, `expect` and
    /// multiplexer clients started inside another session).
    pub server_ctty: Option<TtyKey>,
}

#[derive(Default)]
pub struct Resolver {
    processes: Vec<ProcInfo>,
    by_pid: HashMap<u32, usize>,
    /// Session leaders by controlling terminal (major, minor).
    leaders_by_tty: HashMap<(u32, u32), Vec<usize>>,
    /// pid -> slave keys of the pty masters it holds (read once per snapshot).
    masters_of: HashMap<u32, Vec<TtyKey>>,
    /// Lazily built: slave key -> pids holding its master.
    masters: Option<HashMap<TtyKey, Vec<u32>>>,
}

impl Resolver {
    /// Takes one snapshot of /proc for a batch of resolutions.
    pub fn snapshot() -> Self {
        let processes = procs::all_processes();
        let by_pid = processes
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pid, i))
            .collect();
        let mut leaders_by_tty: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
        for (i, p) in processes.iter().enumerate() {
            if let Some(tty) = p.tty.filter(|_| p.is_session_leader()) {
                leaders_by_tty.entry(tty).or_default().push(i);
            }
        }
        Self {
            processes,
            by_pid,
            leaders_by_tty,
            masters_of: HashMap::new(),
            masters: None,
        }
    }

    fn holds_master(&mut self, pid: u32, key: TtyKey) -> bool {
        self.masters_of
            .entry(pid)
            .or_insert_with(|| procs::pty_masters(pid))
            .contains(&key)
    }

    fn process(&self, pid: u32) -> Option<&ProcInfo> {
        self.by_pid.get(&pid).map(|&i| &self.processes[i])
    }

    /// Resolves the session on `key`, or `None` when the terminal has no login
    /// session on it (not yet, or not any more). `hint` is a process the probes saw
    /// writing to it, checked first as the holder of the master.
    pub fn resolve(&mut self, key: TtyKey, hint: Option<u32>) -> Option<Resolved> {
        let leader = self.leader_of(key)?;
        let server = if key.is_pty() {
            self.server_of(key, &leader, hint)
        } else {
            None
        };
        let (uid, gid, groups) = procs::credentials(leader.pid)?;
        let server_exe = server.and_then(|s| procs::exe(s.pid));
        // Through /proc/PID/exe: the file itself, even when the daemon runs in a
        // container whose file system has no /usr/sbin/sshd.
        let trusted = server.is_some_and(|s| {
            kind::trusted_executable(std::path::Path::new(&format!("/proc/{}/exe", s.pid)))
        });
        let cgroups = procs::cgroup_paths(leader.pid);
        let (kind, container) =
            kind::classify(key.is_pty(), server_exe.as_deref(), trusted, &cgroups);
        let remote = match (kind, server) {
            (SessionKind::Ssh, Some(server)) => self.ssh_peer(server.pid),
            (SessionKind::Mosh, Some(server)) => procs::environ_var(server.pid, "SSH_CONNECTION")
                .and_then(|c| c.split_whitespace().next().map(str::to_string)),
            _ => None,
        };
        let tty_atime = tty_metadata(leader.pid, key).and_then(|m| {
            SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(
                m.atime() as u64,
                m.atime_nsec() as u32,
            ))
        });
        let server_info = server.and_then(|s| self.process(s.pid).cloned());
        Some(Resolved {
            audit_session: procs::audit_session(leader.pid),
            server_audit_session: server.and_then(|s| procs::audit_session(s.pid)),
            server_ctty: server_info.as_ref().and_then(ctty_key),
            key,
            leader: leader.proc_ref(),
            server,
            server_exe,
            uid,
            gid,
            groups,
            kind,
            container,
            remote,
            tty_atime,
        })
    }

    /// The session leader whose controlling terminal is `key`, the oldest if several.
    fn leader_of(&self, key: TtyKey) -> Option<ProcInfo> {
        let want = (dev::major(key.rdev), dev::minor(key.rdev));
        self.leaders_by_tty
            .get(&want)?
            .iter()
            .map(|&i| &self.processes[i])
            .filter(|p| !PRE_LOGIN.contains(&p.comm.as_str()))
            .filter(|p| !key.is_pty() || same_devpts(p.pid, key))
            .min_by_key(|p| p.start_ticks)
            .cloned()
    }

    /// The process holding the master of `key`: the probes' hint, else the leader's
    /// ancestors (sshd, mosh-server, tmux and container shims are parents of the
    /// shell they serve), else anybody.
    fn server_of(&mut self, key: TtyKey, leader: &ProcInfo, hint: Option<u32>) -> Option<ProcRef> {
        if let Some(pid) = hint
            && self.holds_master(pid, key)
        {
            return ProcRef::of(pid);
        }
        let mut pid = leader.ppid;
        for _ in 0..8 {
            if pid <= 1 {
                break;
            }
            if self.holds_master(pid, key) {
                return self.process(pid).map(ProcInfo::proc_ref);
            }
            pid = self.process(pid)?.ppid;
        }
        if self.masters.is_none() {
            let mut map: HashMap<TtyKey, Vec<u32>> = HashMap::new();
            for i in 0..self.processes.len() {
                let pid = self.processes[i].pid;
                let keys = self
                    .masters_of
                    .entry(pid)
                    .or_insert_with(|| procs::pty_masters(pid));
                for k in keys.iter() {
                    map.entry(*k).or_default().push(pid);
                }
            }
            self.masters = Some(map);
        }
        let masters = self.masters.as_ref()?;
        let pid = *masters.get(&key)?.first()?;
        self.process(pid).map(ProcInfo::proc_ref)
    }

    /// OpenSSH's per-connection process or its privileged monitor holds the socket.
    fn ssh_peer(&self, server: u32) -> Option<String> {
        procs::tcp_peer(server).or_else(|| {
            let parent = self.process(server)?.ppid;
            procs::tcp_peer(parent)
        })
    }

    /// Every terminal that has a session leader right now.
    pub fn terminals_in_use(&self) -> Vec<TtyKey> {
        let mut keys: Vec<TtyKey> = self
            .processes
            .iter()
            .filter(|p| p.is_session_leader())
            .filter_map(ctty_key)
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// The key of a process's controlling terminal.
fn ctty_key(p: &ProcInfo) -> Option<TtyKey> {
    let (major, minor) = p.tty?;
    procs::open_tty_key(p.pid, major, minor).or_else(|| {
        let rdev = libc::makedev(major, minor);
        if (dev::PTY_SLAVE_MAJOR_FIRST..=dev::PTY_SLAVE_MAJOR_LAST).contains(&major) {
            procs::devpts_of(p.pid).map(|d| key_from_stat(rdev, d))
        } else {
            Some(key_from_stat(rdev, 0))
        }
    })
}

/// Does `pid` see terminal `key` in its devpts instance?
fn same_devpts(pid: u32, key: TtyKey) -> bool {
    let (major, minor) = (dev::major(key.rdev), dev::minor(key.rdev));
    match procs::open_tty_key(pid, major, minor) {
        Some(found) => found == key,
        None => procs::devpts_of(pid)
            .is_some_and(|d| key_from_stat(libc::makedev(major, minor), d) == key),
    }
}

/// The terminal device's metadata, through a descriptor the leader has open.
fn tty_metadata(leader: u32, key: TtyKey) -> Option<std::fs::Metadata> {
    let (major, minor) = (dev::major(key.rdev), dev::minor(key.rdev));
    let dir = format!("/proc/{leader}/fd");
    std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let meta = std::fs::metadata(entry.path()).ok()?;
            let rdev = meta.rdev();
            (libc::major(rdev) == major
                && libc::minor(rdev) == minor
                && key_from_stat(rdev, meta.dev()) == key)
                .then_some(meta)
        })
}

/// Sessions that existed before the daemon started.
pub fn discover_existing() -> Vec<Resolved> {
    let mut resolver = Resolver::snapshot();
    resolver
        .terminals_in_use()
        .into_iter()
        .filter_map(|key| resolver.resolve(key, None))
        .collect()
}
