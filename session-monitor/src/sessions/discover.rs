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
    /// pid -> its controlling terminal as seen through its descriptors (read once).
    cttys: HashMap<u32, Option<Ctty>>,
    /// pid -> what is known of it as a server (read once; one tmux or a container
    /// shim serves many terminals).
    servers: HashMap<u32, ServerFacts>,
}

/// A controlling terminal, and its access time where a descriptor shows it.
#[derive(Clone, Copy)]
struct Ctty {
    key: TtyKey,
    atime: Option<SystemTime>,
}

#[derive(Clone, Default)]
struct ServerFacts {
    exe: Option<PathBuf>,
    trusted: bool,
    audit_session: Option<u32>,
    ctty: Option<TtyKey>,
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
            cttys: HashMap::new(),
            servers: HashMap::new(),
        }
    }

    /// The controlling terminal of process `i` of the snapshot (cached).
    fn ctty(&mut self, i: usize) -> Option<Ctty> {
        let p = &self.processes[i];
        let pid = p.pid;
        if let Some(known) = self.cttys.get(&pid) {
            return *known;
        }
        let found = ctty_of(p);
        self.cttys.insert(pid, found);
        found
    }

    /// Facts about a server process (cached).
    fn server_facts(&mut self, pid: u32) -> ServerFacts {
        if let Some(known) = self.servers.get(&pid) {
            return known.clone();
        }
        // Through /proc/PID/exe: the file itself, even when the daemon runs in a
        // container whose file system has no /usr/sbin/sshd.
        let facts = ServerFacts {
            exe: procs::exe(pid),
            trusted: kind::trusted_executable(std::path::Path::new(&format!("/proc/{pid}/exe"))),
            audit_session: procs::audit_session(pid),
            ctty: self
                .by_pid
                .get(&pid)
                .copied()
                .and_then(|i| self.ctty(i))
                .map(|c| c.key),
        };
        self.servers.insert(pid, facts.clone());
        facts
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
        let (leader, ctty) = self.leader_of(key)?;
        let server = if key.is_pty() {
            self.server_of(key, &leader, hint)
        } else {
            None
        };
        let (uid, gid, groups) = procs::credentials(leader.pid)?;
        let facts = server.map(|s| self.server_facts(s.pid)).unwrap_or_default();
        // Only cgroups root made: a user can name their own `docker-<id>.scope`.
        let cgroups = super::cgroup_trust::trusted_cgroup_paths(leader.pid);
        let (kind, container) =
            kind::classify(key.is_pty(), facts.exe.as_deref(), facts.trusted, &cgroups);
        let remote = match (kind, server) {
            (SessionKind::Ssh, Some(server)) => self.ssh_peer(server.pid),
            (SessionKind::Mosh, Some(server)) => procs::environ_var(server.pid, "SSH_CONNECTION")
                .and_then(|c| c.split_whitespace().next().map(str::to_string)),
            _ => None,
        };
        let audit_session = procs::audit_session(leader.pid);
        // Everything above was read by pid: it is the leader's (and the server's)
        // only if they are still the processes of the snapshot, not a pid reuse.
        if !leader.proc_ref().is_alive() || server.is_some_and(|s| !s.is_alive()) {
            return None;
        }
        Some(Resolved {
            audit_session,
            server_audit_session: facts.audit_session,
            server_ctty: facts.ctty,
            key,
            leader: leader.proc_ref(),
            server,
            server_exe: facts.exe,
            uid,
            gid,
            groups,
            kind,
            container,
            remote,
            tty_atime: ctty.atime,
        })
    }

    /// The session leader whose controlling terminal is `key` (in the same devpts
    /// instance), the oldest if several, and that terminal.
    fn leader_of(&mut self, key: TtyKey) -> Option<(ProcInfo, Ctty)> {
        let want = (dev::major(key.rdev), dev::minor(key.rdev));
        let candidates = self.leaders_by_tty.get(&want)?.clone();
        let mut best: Option<(usize, Ctty)> = None;
        for i in candidates {
            if PRE_LOGIN.contains(&self.processes[i].comm.as_str()) {
                continue;
            }
            let Some(ctty) = self.ctty(i).filter(|c| c.key == key) else {
                continue;
            };
            let older = |(j, _): &(usize, Ctty)| {
                self.processes[i].start_ticks < self.processes[*j].start_ticks
            };
            if best.as_ref().is_none_or(older) {
                best = Some((i, ctty));
            }
        }
        best.map(|(i, c)| (self.processes[i].clone(), c))
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
    pub fn terminals_in_use(&mut self) -> Vec<TtyKey> {
        let leaders: Vec<usize> = self.leaders_by_tty.values().flatten().copied().collect();
        let mut keys: Vec<TtyKey> = leaders
            .into_iter()
            .filter_map(|i| self.ctty(i).map(|c| c.key))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// A process's controlling terminal: through a descriptor it holds (which also gives
/// the access time), else through the devpts of its root.
fn ctty_of(p: &ProcInfo) -> Option<Ctty> {
    let (major, minor) = p.tty?;
    if let Some((key, meta)) = procs::open_tty(p.pid, major, minor) {
        let atime = SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(
            meta.atime() as u64,
            meta.atime_nsec() as u32,
        ));
        return Some(Ctty { key, atime });
    }
    let rdev = libc::makedev(major, minor);
    let key = if (dev::PTY_SLAVE_MAJOR_FIRST..=dev::PTY_SLAVE_MAJOR_LAST).contains(&major) {
        key_from_stat(rdev, procs::devpts_of(p.pid)?)
    } else {
        key_from_stat(rdev, 0)
    };
    Some(Ctty { key, atime: None })
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
