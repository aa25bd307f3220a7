//! Finding the session on a terminal: its leader, the process serving it, its user,
//! kind and remote peer, from /proc.
//!
//! The probes only say "terminal K was written to". Everything else is resolved here,
//! in batches: one pass over /proc/*/stat finds the leaders of every pending terminal.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    time::SystemTime,
};

use session_monitor_common::{TtyKey, dev};

use super::{
    cgroup_trust::{TrustVerdicts, trusted_cgroup_paths},
    kind::{self, ContainerInfo, SessionKind},
    procs::{self, ProcInfo, ProcRef},
    table::{Carry, Terminal},
    tty::key_from_stat,
};

/// Leaders that are not a login yet: a getty waiting at the login prompt, `login`
/// asking for the password. Only a root process is passed over (see
/// [`is_pre_login`]).
const PRE_LOGIN: [&str; 5] = ["agetty", "getty", "mingetty", "login", "systemd-getty"];

/// True for a leader that is not a login yet: one of [`PRE_LOGIN`], run by root.
/// A name is the process's own to choose (a copy of any program called `login`,
/// `prctl(PR_SET_NAME)`): a user's leader named so is a login like any other, or
/// naming a shell `login` would hide a session from the daemon.
fn is_pre_login(p: &ProcInfo) -> bool {
    PRE_LOGIN.contains(&p.comm.as_str())
        && procs::credentials(p.pid).is_some_and(|(uid, _, _)| uid == 0)
}

/// A container runtime's init (runc's `runc:[2:INIT]`): it makes the exec's
/// terminal its controlling terminal as root, then switches to the exec's user and
/// executes the shell. Until then the terminal has no login yet (resolution is
/// retried); taken as the leader, it would make a `podman exec --user U` session
/// root's. Only a root process is deferred: a user naming their shell so cannot
/// hide a session of their own.
fn is_runtime_init(comm: &str) -> bool {
    comm.starts_with("runc:[")
}

/// How long after authentication an ssh connection is left to start its shell,
/// command or terminal before it is resolved without a terminal.
const SETTLE_NS: u64 = 2_000_000_000;

/// Everything needed to create a login, or to add a terminal to one.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The process carrying the connection (see [`super::Login::identity`]).
    pub identity: ProcRef,
    /// The terminal that was resolved; none for a connection without one.
    pub terminal: Option<Terminal>,
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
    pub carries: Vec<Carry>,
    /// The sshd processes of this connection (the root monitor and the user's
    /// process): what they write into pipes and sockets is the login's input.
    pub transports: Vec<u32>,
    /// The sshd listener that forked the connection.
    pub listener: Option<u32>,
    /// The identity's descendants in /proc when it was resolved: processes forked
    /// before the kernel knew the login.
    pub tree: Vec<u32>,
}

#[cfg(test)]
impl Resolved {
    /// An ssh login of uid 1000 with one shell and nothing else known: the base
    /// of the fixtures in unit tests (`Resolved { field: .., ..Resolved::example(p) }`).
    pub fn example(identity: ProcRef) -> Self {
        Self {
            identity,
            terminal: None,
            server_exe: None,
            uid: 1000,
            gid: 1000,
            groups: vec![],
            kind: SessionKind::Ssh,
            container: None,
            remote: None,
            tty_atime: None,
            audit_session: None,
            server_audit_session: None,
            server_ctty: None,
            carries: vec![Carry::Shell],
            transports: vec![],
            listener: None,
            tree: vec![],
        }
    }
}

#[derive(Default)]
pub struct Resolver {
    processes: Vec<ProcInfo>,
    by_pid: HashMap<u32, usize>,
    /// Session leaders by controlling terminal (major, minor).
    leaders_by_tty: HashMap<(u32, u32), Vec<usize>>,
    /// pid -> slave keys of the pty masters it holds (read once per snapshot; a set:
    /// one terminal server may hold ten thousand, each looked up once).
    masters_of: HashMap<u32, HashSet<TtyKey>>,
    /// Lazily built: slave key -> pids holding its master.
    masters: Option<HashMap<TtyKey, Vec<u32>>>,
    /// pid -> its controlling terminal as seen through its descriptors (read once).
    cttys: HashMap<u32, Option<Ctty>>,
    /// pid -> what is known of it as a server (read once; one tmux or a container
    /// shim serves many terminals).
    servers: HashMap<u32, ServerFacts>,
    /// pid -> its role if it is a trusted sshd (read once).
    sshd: HashMap<u32, Option<SshdRole>>,
    /// Lazily built: pid -> indexes of its children.
    children: Option<HashMap<u32, Vec<usize>>>,
    /// Processes of the snapshot that had exited (zombies not reaped yet).
    zombies: HashSet<u32>,
    /// Which cgroup paths only root can have made (checked once per snapshot).
    cgroup_verdicts: TrustVerdicts,
    /// Servers found alive after their facts were read: one terminal server (a
    /// tmux, a container shim) serves many terminals, and its cached facts need
    /// that check once, not once per terminal.
    servers_confirmed: HashSet<ProcRef>,
}

/// What an OpenSSH server process is, from the title it gives itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SshdRole {
    /// Accepts connections and forks one process per connection.
    Listener,
    /// Serves one connection (`sshd: user [priv]`, `sshd: user@pts/0`, ...).
    Connection,
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
    /// How long after authentication a connection is left to settle ([`SETTLE_NS`]).
    pub const CONNECTION_SETTLE_NS: u64 = SETTLE_NS;

    /// Takes one snapshot of /proc for a batch of resolutions.
    pub fn snapshot() -> Self {
        let mut zombies = HashSet::new();
        let processes: Vec<ProcInfo> = procs::all_processes_with_state()
            .into_iter()
            .map(|(p, zombie)| {
                if zombie {
                    zombies.insert(p.pid);
                }
                p
            })
            .collect();
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
            sshd: HashMap::new(),
            children: None,
            zombies,
            cgroup_verdicts: TrustVerdicts::default(),
            servers_confirmed: HashSet::new(),
        }
    }

    /// Whether `p` (the same process, not a pid reuse) was alive and not a zombie
    /// when the snapshot was taken: [`ProcRef::is_alive`] without a read of /proc
    /// per process, for sweeps over every login.
    pub fn was_alive(&self, p: ProcRef) -> bool {
        self.process(p.pid)
            .is_some_and(|i| i.start_ticks == p.start_ticks && !self.zombies.contains(&p.pid))
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
            .or_insert_with(|| procs::pty_masters(pid).into_iter().collect())
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
        if uid == 0 && is_runtime_init(&leader.comm) {
            return None;
        }
        let facts = server.map(|s| self.server_facts(s.pid)).unwrap_or_default();
        // Only cgroups root made: a user can name their own `docker-<id>.scope`.
        let cgroups = trusted_cgroup_paths(leader.pid, &mut self.cgroup_verdicts);
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
        if !leader.proc_ref().is_alive()
            || server.is_some_and(|s| !self.server_still_alive(s, kind))
        {
            return None;
        }
        // The login: an ssh connection's monitor process, a mosh-server, else the
        // terminal's own leader (a console login, a container exec, a local terminal:
        // ending one pane of a multiplexer must not end the others).
        let (identity, transports, listener) = match (kind, server) {
            (SessionKind::Ssh, Some(server)) => {
                self.ssh_connection(server.pid)
                    .unwrap_or((server, vec![server.pid], None))
            }
            (SessionKind::Mosh, Some(server)) => (server, Vec::new(), None),
            _ => (leader.proc_ref(), Vec::new(), None),
        };
        Some(Resolved {
            audit_session,
            server_audit_session: facts.audit_session,
            server_ctty: facts.ctty,
            identity,
            terminal: Some(Terminal {
                key,
                leader: leader.proc_ref(),
                server,
            }),
            server_exe: facts.exe,
            uid,
            gid,
            groups,
            kind,
            container,
            remote,
            tty_atime: ctty.atime,
            carries: vec![Carry::Shell],
            tree: self.descendant_pids(identity.pid),
            transports,
            listener,
        })
    }

    /// Whether `server`, whose facts [`Self::resolve`] just used, is still the
    /// process they were read from. Its facts are read once per snapshot, so a
    /// server confirmed once needs no new read, unless this resolution read more by
    /// its pid (an ssh or Mosh server's peer).
    fn server_still_alive(&mut self, server: ProcRef, kind: SessionKind) -> bool {
        let read_by_pid_now = matches!(kind, SessionKind::Ssh | SessionKind::Mosh);
        if !read_by_pid_now && self.servers_confirmed.contains(&server) {
            return true;
        }
        let alive = server.is_alive();
        if alive {
            self.servers_confirmed.insert(server);
        }
        alive
    }

    /// The role of `pid` if it runs a trusted sshd executable. A user can name a
    /// process `sshd` and give it any title, but cannot make its executable root's.
    fn sshd_role(&mut self, pid: u32) -> Option<SshdRole> {
        if let Some(known) = self.sshd.get(&pid) {
            return *known;
        }
        let comm_ok = self
            .process(pid)
            .is_some_and(|p| matches!(p.comm.as_str(), "sshd" | "sshd-session"));
        let role = comm_ok
            .then(|| {
                let exe = procs::exe(pid)?;
                let name = exe.file_name()?.to_string_lossy().into_owned();
                let trusted = matches!(name.as_str(), "sshd" | "sshd-session")
                    && kind::trusted_executable(std::path::Path::new(&format!("/proc/{pid}/exe")));
                trusted.then(|| {
                    let title = procs::cmdline(pid).join(" ");
                    let connection = (title.starts_with("sshd: ")
                        || title.starts_with("sshd-session: "))
                        && !title.contains("[listener]");
                    if connection {
                        SshdRole::Connection
                    } else {
                        SshdRole::Listener
                    }
                })
            })
            .flatten();
        self.sshd.insert(pid, role);
        role
    }

    /// For a process serving an ssh connection: the connection's topmost process
    /// (the child of the listener), every sshd of the connection from `pid` up, and
    /// the listener.
    fn ssh_connection(&mut self, pid: u32) -> Option<(ProcRef, Vec<u32>, Option<u32>)> {
        if self.sshd_role(pid) != Some(SshdRole::Connection) {
            return None;
        }
        let mut chain = vec![pid];
        let mut top = pid;
        let mut listener = None;
        for _ in 0..8 {
            let ppid = self.process(top)?.ppid;
            if ppid <= 1 {
                break;
            }
            match self.sshd_role(ppid) {
                Some(SshdRole::Connection) => {
                    chain.push(ppid);
                    top = ppid;
                }
                Some(SshdRole::Listener) => {
                    listener = Some(ppid);
                    break;
                }
                None => break,
            }
        }
        let identity = self.process(top)?.proc_ref();
        Some((identity, chain, listener))
    }

    /// Children of `pid` in the snapshot.
    fn children_of(&mut self, pid: u32) -> Vec<ProcInfo> {
        let processes = &self.processes;
        let map = self.children.get_or_insert_with(|| {
            let mut map: HashMap<u32, Vec<usize>> = HashMap::new();
            for (i, p) in processes.iter().enumerate() {
                map.entry(p.ppid).or_default().push(i);
            }
            map
        });
        map.get(&pid)
            .map(|v| v.iter().map(|&i| processes[i].clone()).collect())
            .unwrap_or_default()
    }

    /// Every process of the snapshot under `pid`, by the parent chain.
    pub fn descendants(&mut self, pid: u32) -> Vec<ProcRef> {
        let mut out = Vec::new();
        let mut todo = vec![pid];
        while let Some(p) = todo.pop() {
            for c in self.children_of(p) {
                if c.pid != pid && !out.iter().any(|r: &ProcRef| r.pid == c.pid) {
                    out.push(c.proc_ref());
                    todo.push(c.pid);
                }
            }
        }
        out
    }

    /// The pids of [`Self::descendants`]: a resolved login's process tree.
    fn descendant_pids(&mut self, pid: u32) -> Vec<u32> {
        self.descendants(pid).iter().map(|p| p.pid).collect()
    }

    /// sshd listeners (their children are connections).
    pub fn ssh_listeners(&mut self) -> Vec<u32> {
        let candidates: Vec<u32> = self
            .processes
            .iter()
            .filter(|p| matches!(p.comm.as_str(), "sshd" | "sshd-session"))
            .map(|p| p.pid)
            .collect();
        candidates
            .into_iter()
            .filter(|&pid| self.sshd_role(pid) == Some(SshdRole::Listener))
            .collect()
    }

    /// Every connection process forked by an sshd listener (the login's identity).
    pub fn ssh_connections(&mut self) -> Vec<ProcRef> {
        let mut out = Vec::new();
        for listener in self.ssh_listeners() {
            for child in self.children_of(listener) {
                if self.sshd_role(child.pid) == Some(SshdRole::Connection) {
                    out.push(child.proc_ref());
                }
            }
        }
        out
    }

    /// An ssh connection (`identity`: the child of the listener) as a login, once it
    /// has authenticated: once a process of the connection runs as the user. None
    /// before that, and when it is not a connection process.
    pub fn resolve_connection(&mut self, identity: ProcRef) -> Option<Resolved> {
        let me = self.process(identity.pid)?.clone();
        if me.start_ticks != identity.start_ticks
            || self.sshd_role(identity.pid) != Some(SshdRole::Connection)
        {
            return None;
        }
        let listener = Some(me.ppid).filter(|&p| self.sshd_role(p) == Some(SshdRole::Listener));
        // The connection's sshd processes: the monitor and, under it, the user's.
        let mut transports = vec![identity.pid];
        let mut user_side = None;
        for child in self.children_of(identity.pid) {
            if self.sshd_role(child.pid) != Some(SshdRole::Connection) {
                continue;
            }
            // After authentication the connection's second process runs as the user
            // (root too), titled `sshd: USER` or `sshd: USER@notty`; before, it runs
            // as the privilege separation user, titled `sshd: USER [net]` (or
            // `[preauth]`, `[accepted]`).
            let authenticated = procs::cmdline(child.pid)
                .first()
                .is_some_and(|t| !t.contains('['));
            let Some((uid, gid, groups)) = procs::credentials(child.pid) else {
                continue;
            };
            transports.push(child.pid);
            if authenticated {
                user_side = Some((child.pid, uid, gid, groups));
            }
        }
        let (user_pid, uid, gid, groups) = user_side?;
        // A connection with a shell on a terminal is resolved through its terminal
        // (which names its leader and server); this path is for those without.
        if self
            .children_of(user_pid)
            .iter()
            .any(|c| c.tty.is_some() && c.is_session_leader())
        {
            return None;
        }
        let carries = self.carries_of(user_pid);
        // Right after authentication the shell, command or terminal is still being
        // set up: give it a moment, so that what the login carries is known (nothing
        // yet is not forwarding-only) and a terminal login is found as one.
        if let Some(user) = self.process(user_pid)
            && crate::clock::boot_ns().saturating_sub(user.proc_ref().start_boot_ns()) < SETTLE_NS
        {
            return None;
        }
        let facts = self.server_facts(user_pid);
        // Only cgroups root made: a user can name their own `docker-<id>.scope`.
        let cgroups = trusted_cgroup_paths(user_pid, &mut self.cgroup_verdicts);
        let container = cgroups
            .iter()
            .find_map(|path| kind::container_from_cgroup(path));
        let remote = procs::tcp_peer(user_pid).or_else(|| procs::tcp_peer(identity.pid));
        let audit_session = procs::audit_session(user_pid);
        // Everything above was read by pid: it is the connection's only if both its
        // processes are still those of the snapshot, not a pid reuse.
        let user_process = self.process(user_pid)?.proc_ref();
        if !identity.is_alive() || !user_process.is_alive() {
            return None;
        }
        Some(Resolved {
            identity,
            terminal: None,
            server_exe: facts.exe,
            uid,
            gid,
            groups,
            kind: SessionKind::Ssh,
            container,
            remote,
            tty_atime: None,
            audit_session,
            server_audit_session: facts.audit_session,
            server_ctty: None,
            carries,
            tree: self.descendant_pids(identity.pid),
            transports,
            listener,
        })
    }

    /// What the user's sshd of a connection runs: a shell (on a terminal, or a login
    /// shell: `-bash`), the sftp server, a command; nothing: forwarding only.
    fn carries_of(&mut self, user_sshd: u32) -> Vec<Carry> {
        let mut carries: Vec<Carry> = self
            .children_of(user_sshd)
            .into_iter()
            .map(|c| {
                let argv = procs::cmdline(c.pid);
                let argv0 = argv.first().map(String::as_str).unwrap_or("");
                if c.comm.contains("sftp-server") || argv0.ends_with("sftp-server") {
                    Carry::Subsystem
                } else if c.tty.is_some() || argv0.starts_with('-') {
                    Carry::Shell
                } else {
                    Carry::Exec
                }
            })
            .collect();
        carries.sort();
        carries.dedup();
        if carries.is_empty() {
            carries.push(Carry::Forwarding);
        }
        carries
    }

    /// What a known connection carries now (it changes: a shell starts after the
    /// login, a ControlMaster connection gains channels).
    pub fn connection_carries(&mut self, identity: u32) -> Option<Vec<Carry>> {
        let user = self.authenticated_side(identity)?;
        Some(self.carries_of(user.pid))
    }

    /// The connection's sshd process that runs as the user, once it has
    /// authenticated.
    fn authenticated_side(&mut self, identity: u32) -> Option<ProcInfo> {
        self.children_of(identity).into_iter().find(|c| {
            self.sshd_role(c.pid) == Some(SshdRole::Connection)
                && procs::cmdline(c.pid)
                    .first()
                    .is_some_and(|t| !t.contains('['))
        })
    }

    /// When connection `identity` may resolve at the earliest (boot-time ns): its
    /// authenticated side's start plus [`SETTLE_NS`]. None before it authenticated.
    /// Trying sooner only reads /proc for nothing.
    pub fn connection_settles_at(&mut self, identity: u32) -> Option<u64> {
        let user = self.authenticated_side(identity)?;
        Some(user.proc_ref().start_boot_ns().saturating_add(SETTLE_NS))
    }

    /// The session leader whose controlling terminal is `key` (in the same devpts
    /// instance), the oldest if several, and that terminal.
    fn leader_of(&mut self, key: TtyKey) -> Option<(ProcInfo, Ctty)> {
        let want = (dev::major(key.rdev), dev::minor(key.rdev));
        let candidates = self.leaders_by_tty.get(&want)?.clone();
        let mut best: Option<(usize, Ctty)> = None;
        for i in candidates {
            if is_pre_login(&self.processes[i]) {
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
                    .or_insert_with(|| procs::pty_masters(pid).into_iter().collect());
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

    /// Consoles (not pseudo-terminals) that have a session leader right now.
    pub fn consoles_in_use(&self) -> Vec<TtyKey> {
        let mut keys: Vec<TtyKey> = self
            .leaders_by_tty
            .keys()
            .filter(|(major, _)| dev::is_console_major(*major))
            .map(|&(major, minor)| key_from_stat(libc::makedev(major, minor), 0))
            .collect();
        keys.sort();
        keys
    }

    /// Every terminal that has a session leader right now.
    pub fn terminals_in_use(&mut self) -> Vec<TtyKey> {
        let leaders: Vec<usize> = self.leaders_by_tty.values().flatten().copied().collect();
        // Each leader's terminal is one look at its descriptors: with thousands of
        // sessions, on every CPU (see `procs::map_in_parallel`).
        let unknown: Vec<&ProcInfo> = leaders
            .iter()
            .map(|&i| &self.processes[i])
            .filter(|p| !self.cttys.contains_key(&p.pid))
            .collect();
        let found = procs::map_in_parallel(&unknown, |p| (p.pid, ctty_of(p)));
        self.cttys.extend(found);
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

/// Logins that existed before the daemon started, from `resolver`'s snapshot: one
/// per terminal in use (several terminals of one ssh connection are merged by the
/// caller), and every authenticated ssh connection, with or without a terminal.
/// Each is handed to `found` as soon as it is resolved: with ten thousand sessions,
/// collecting them first would hold every resolution in memory at once.
pub fn discover_existing(resolver: &mut Resolver, mut found: impl FnMut(Resolved)) {
    for key in resolver.terminals_in_use() {
        if let Some(r) = resolver.resolve(key, None) {
            found(r);
        }
    }
    for connection in resolver.ssh_connections() {
        if let Some(r) = resolver.resolve_connection(connection) {
            found(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_tells_live_processes_from_gone_and_reused_pids() {
        let me = ProcRef::of(std::process::id()).expect("this process is in /proc");
        let snapshot = Resolver::snapshot();
        assert!(snapshot.was_alive(me));
        // The same pid with another start time is another process.
        let reused = ProcRef {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!snapshot.was_alive(reused));
        let gone = ProcRef {
            pid: u32::MAX,
            start_ticks: 1,
        };
        assert!(!snapshot.was_alive(gone));
    }

    #[test]
    fn runc_init_is_not_a_login_yet() {
        for comm in ["runc:[2:INIT]", "runc:[1:CHILD]"] {
            assert!(is_runtime_init(comm), "{comm}");
        }
        for comm in ["bash", "runc", "sh", "conmon"] {
            assert!(!is_runtime_init(comm), "{comm}");
        }
    }
}
