//! The table of live logins, and the view of one that the CLI prints.
//!
//! A login is what a person opened: an ssh connection, a mosh-server, a console
//! login, a container exec, a local terminal. It is identified by one process (its
//! *identity*: the per-connection sshd, the mosh-server, the terminal's leader) and
//! has zero or more terminals (`ssh -T`, `-N` and sftp have none; an ssh
//! ControlMaster connection has several). Everything the daemon knows and decides
//! about a login is in its one [`Login`] record.

use std::{collections::HashMap, path::PathBuf, sync::OnceLock};

use serde::{Deserialize, Serialize};
use session_monitor_common::{ProcState, TtyActivity, TtyKey};
use sha2::{Digest, Sha256};

use super::{
    discover::Resolved,
    kind::{ContainerInfo, SessionKind},
    names,
    procs::ProcRef,
    tty::tty_name,
};
use crate::{
    clock,
    enforce::{EndReason, Warned},
    policy::Resolution,
};

/// A login's number: the key of the daemon's table and of the kernel's per-login
/// maps (never 0, which the kernel reads as "no login").
pub type LoginKey = u64;

/// What a login carries, where it can be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Carry {
    /// An interactive shell (on a terminal, or `ssh -T` without a command).
    Shell,
    /// A command (`ssh host cmd`).
    Exec,
    /// A subsystem such as sftp.
    Subsystem,
    /// Nothing but forwarded connections (`ssh -N -L ...`).
    Forwarding,
}

/// One terminal of a login: the pty slave (or console) and who is on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terminal {
    pub key: TtyKey,
    /// The terminal's session leader (the shell).
    pub leader: ProcRef,
    /// The process holding the pty master (sshd, mosh-server, tmux, a shim).
    pub server: Option<ProcRef>,
}

#[derive(Clone, Debug)]
pub struct Login {
    /// Stable for the life of the login, also across daemon restarts.
    pub id: String,
    pub key: LoginKey,
    /// The process that carries the person's connection; the login ends with it.
    pub identity: ProcRef,
    /// Zero or more terminals, the first one opened first.
    pub terminals: Vec<Terminal>,
    /// The connection's sshd processes (the identity among them): what they write
    /// into pipes and sockets is the login's input.
    pub transports: Vec<u32>,
    pub kind: SessionKind,
    pub carries: Vec<Carry>,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Names of the primary and supplementary groups, for group rules.
    pub group_names: Vec<String>,
    pub server_exe: Option<PathBuf>,
    pub remote: Option<String>,
    pub container: Option<ContainerInfo>,
    /// Audit session ids of the leader and the server (see `procs::audit_session`).
    pub audit_session: Option<u32>,
    pub server_audit_session: Option<u32>,
    /// The terminal the server runs on, when it runs on one.
    pub server_ctty: Option<TtyKey>,
    /// The outer login this one is nested in (a multiplexer or `expect` started
    /// inside it): its own input does not count, its user's presence does.
    pub nested_in: Option<String>,
    /// Identity process start, CLOCK_BOOTTIME ns.
    pub started_ns: u64,
    /// When the daemon began to track it: the baseline for network idle time.
    pub tracked_since_ns: u64,
    /// The policy that applies.
    pub resolution: Resolution,
    pub warned: Option<Warned>,
    /// Dry-run: the end already reported, so it is not reported again until the
    /// login's deadline moves.
    pub reported_end: Option<(EndReason, u64)>,
    /// The single pending deadline (its next warning or end), CLOCK_BOOTTIME ns.
    pub due: Option<u64>,
    /// Being ended, and why.
    pub ending: Option<EndReason>,
}

impl Login {
    pub fn from_resolved(r: Resolved, now_ns: u64) -> Self {
        let (key, id) = login_key(&r.identity);
        let mut login = Self {
            id,
            key,
            group_names: Vec::new(),
            identity: r.identity,
            terminals: r.terminal.into_iter().collect(),
            transports: r.transports,
            kind: r.kind,
            carries: r.carries,
            user: String::new(),
            uid: r.uid,
            gid: r.gid,
            groups: Vec::new(),
            started_ns: r.identity.start_boot_ns(),
            audit_session: r.audit_session,
            server_audit_session: r.server_audit_session,
            server_ctty: r.server_ctty,
            nested_in: None,
            server_exe: r.server_exe,
            remote: r.remote,
            container: r.container,
            tracked_since_ns: now_ns,
            resolution: Resolution::default(),
            warned: None,
            reported_end: None,
            due: None,
            ending: None,
        };
        login.set_user(r.uid, r.gid, r.groups);
        login
    }

    /// Who the login is: the user, their primary and supplementary groups, and the
    /// names that user and group rules match. Private: a login in the table changes
    /// user through [`LoginTable::set_user`], which keeps its indexes by user.
    fn set_user(&mut self, uid: u32, gid: u32, groups: Vec<u32>) {
        let mut gids = vec![gid];
        gids.extend(groups.iter().copied().filter(|g| *g != gid));
        self.group_names = gids.iter().map(|&gid| names::group_name(gid)).collect();
        self.user = names::user_name(uid);
        self.uid = uid;
        self.gid = gid;
        self.groups = groups;
    }

    /// The first terminal, if any.
    pub fn terminal(&self) -> Option<&Terminal> {
        self.terminals.first()
    }

    /// The first terminal's name, or `-` for a login without one.
    pub fn tty(&self) -> String {
        self.terminal()
            .map_or_else(|| "-".to_string(), |t| tty_name(&t.key))
    }

    /// The first terminal's leader, else the identity process.
    pub fn leader(&self) -> ProcRef {
        self.terminal().map_or(self.identity, |t| t.leader)
    }

    /// The process serving the first terminal, else the identity when it is not the
    /// leader (an sshd serving `ssh -T`).
    pub fn server(&self) -> Option<ProcRef> {
        match self.terminal() {
            Some(t) => t.server,
            None => Some(self.identity),
        }
    }

    /// Every process the login is made of as the daemon sees it: the identity, the
    /// terminals' leaders and servers.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.identity.pid];
        pids.extend(&self.transports);
        for t in &self.terminals {
            pids.push(t.leader.pid);
            pids.extend(t.server.map(|s| s.pid));
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// A login carrying nothing but forwarded connections: forwarded data is not a
    /// person's input, so it is idle from its start.
    pub fn forwarding_only(&self) -> bool {
        self.terminals.is_empty() && self.carries == [Carry::Forwarding]
    }

    /// Network liveness is tracked for logins whose peer talks UDP to the server.
    pub fn has_network_peer(&self) -> bool {
        self.kind == SessionKind::Mosh
    }

    /// Last input (or the login's start when nobody typed yet), boot-time ns: the
    /// latest input on any of its terminals, or written by its transport into its
    /// pipes and sockets. A terminal access time seeded at start-up may predate the
    /// shell (a terminal reused by a new shell); it still counts as the last input.
    pub fn last_input_ns(&self, terminals: &[Option<TtyActivity>], login_input_ns: u64) -> u64 {
        let tty = terminals
            .iter()
            .flatten()
            .map(|a| a.last_input_ns)
            .max()
            .unwrap_or(0);
        let login = if self.forwarding_only() {
            0
        } else {
            login_input_ns
        };
        match tty.max(login) {
            0 => self.started_ns,
            input => input,
        }
    }

    /// Last datagram from the peer (or when tracking began), boot-time ns.
    pub fn last_network_ns(&self, server: Option<&ProcState>) -> Option<u64> {
        if !self.has_network_peer() {
            return None;
        }
        let udp = server.map_or(0, |s| s.last_udp_ns);
        Some(udp.max(self.tracked_since_ns))
    }

    /// The login as the CLI shows it. `input` is (bytes, count) of its input so far;
    /// `own_input_ns` the time of its own last input (0: none yet); `server` the
    /// kernel's entry of its server, for network liveness; `last_input_ns` the time
    /// the daemon's decisions use (for a nested login, its user's presence elsewhere).
    pub fn view(
        &self,
        input: (u64, u64),
        own_input_ns: u64,
        server: Option<&ProcState>,
        last_input_ns: u64,
        now_ns: u64,
    ) -> SessionView {
        let own = (own_input_ns > 0).then_some(own_input_ns);
        let last_input = if self.nested_in.is_some() {
            Some(last_input_ns)
        } else {
            own
        };
        let terminals: Vec<String> = self.terminals.iter().map(|t| tty_name(&t.key)).collect();
        SessionView {
            id: self.id.clone(),
            tty: terminals.first().cloned(),
            terminals,
            carries: self.carries.clone(),
            kind: self.kind,
            user: self.user.clone(),
            uid: self.uid,
            identity_pid: self.identity.pid,
            leader_pid: self.leader().pid,
            server_pid: self.server().map(|s| s.pid),
            server: self
                .server_exe
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
            remote: self.remote.clone(),
            container: self.container.clone(),
            started_at: clock::rfc3339(clock::boot_to_system(self.started_ns)),
            last_input_at: last_input.map(|t| clock::rfc3339(clock::boot_to_system(t))),
            idle_seconds: clock::seconds_between(last_input_ns, now_ns),
            network_idle_seconds: self
                .last_network_ns(server)
                .map(|t| clock::seconds_between(t, now_ns)),
            input_bytes: input.0,
            input_count: input.1,
            nested_in: self.nested_in.clone(),
        }
    }
}

/// A login as `sessions --json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionView {
    pub id: String,
    /// The first terminal, or null for a login without one.
    pub tty: Option<String>,
    /// Every terminal of the login (`pts/3`, `tty2`), the first one opened first.
    #[serde(default)]
    pub terminals: Vec<String>,
    /// What the login carries where it can be told (`shell`, `exec`, `subsystem`,
    /// `forwarding`).
    #[serde(default)]
    pub carries: Vec<Carry>,
    pub kind: SessionKind,
    pub user: String,
    pub uid: u32,
    /// The process that carries the connection (the login ends with it).
    #[serde(default)]
    pub identity_pid: u32,
    pub leader_pid: u32,
    pub server_pid: Option<u32>,
    pub server: Option<String>,
    pub remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container: Option<ContainerInfo>,
    pub started_at: String,
    pub last_input_at: Option<String>,
    pub idle_seconds: f64,
    pub network_idle_seconds: Option<f64>,
    pub input_bytes: u64,
    pub input_count: u64,
    /// The outer login, for one nested in another.
    #[serde(default)]
    pub nested_in: Option<String>,
}

/// The login's key and short id, derived from what identifies its identity process
/// on this boot: the same login gets the same id after a daemon restart, another
/// one never does.
pub fn login_key(identity: &ProcRef) -> (LoginKey, String) {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    let boot_id = BOOT_ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    });
    let mut hash = Sha256::new();
    hash.update(boot_id.as_bytes());
    hash.update(identity.pid.to_le_bytes());
    hash.update(identity.start_ticks.to_le_bytes());
    let digest = hash.finalize();
    // 48 bits: the id is the key in hex, so the kernel's maps and the audit log name
    // a login the way `sessions` does.
    let mut bytes = [0u8; 8];
    bytes[2..].copy_from_slice(&digest[..6]);
    let key = u64::from_be_bytes(bytes).max(1);
    (key, format!("{key:012x}"))
}

/// Live logins by key, with indexes from terminal, process, user and audit session
/// to login.
#[derive(Default)]
pub struct LoginTable {
    /// Boxed: a hash table holds a power of two of slots, and each unboxed slot would
    /// be a whole [`Login`] (hundreds of bytes), used or not.
    logins: HashMap<LoginKey, Box<Login>>,
    by_tty: HashMap<TtyKey, LoginKey>,
    by_pid: HashMap<u32, Vec<LoginKey>>,
    /// Nested logins by the id of the login they are nested in: ending a login
    /// ends those too, and a thousand ends must not each scan every login.
    by_outer: HashMap<String, Vec<LoginKey>>,
    /// Logins by user: a nested terminal's idle time is its user's presence on the
    /// others, asked for on every check of it.
    by_uid: HashMap<u32, Vec<LoginKey>>,
    /// Nested logins by user: every input notice moves the deadlines of its user's
    /// nested terminals, and a scan of every login on each notice made a burst of
    /// notices quadratic.
    nested_by_uid: HashMap<u32, Vec<LoginKey>>,
    /// Logins a local terminal can be nested in (every kind but local), by audit
    /// session id: asked for each local terminal not nested yet, on every tick.
    outer_by_audit_session: HashMap<u32, Vec<LoginKey>>,
    /// Console terminals (not pseudo-terminals) of all logins: while there is one,
    /// the console read probe is attached (see `probes::standby`).
    consoles: usize,
}

/// Adds `key` to the list of `index` under `at`.
fn list<K: std::hash::Hash + Eq>(index: &mut HashMap<K, Vec<LoginKey>>, at: K, key: LoginKey) {
    index.entry(at).or_default().push(key);
}

/// Takes `key` out of the list of `index` under `at`, and the list once empty.
fn unlist<K: std::hash::Hash + Eq>(index: &mut HashMap<K, Vec<LoginKey>>, at: &K, key: &LoginKey) {
    if let Some(keys) = index.get_mut(at) {
        keys.retain(|k| k != key);
        if keys.is_empty() {
            index.remove(at);
        }
    }
}

impl LoginTable {
    pub fn insert(&mut self, login: Login) {
        let key = login.key;
        if let Some(old) = self.logins.remove(&key) {
            self.unindex(&old);
        }
        self.index(&login);
        self.logins.insert(key, Box::new(login));
    }

    fn index(&mut self, login: &Login) {
        let key = login.key;
        for pid in login.pids() {
            list(&mut self.by_pid, pid, key);
        }
        for t in &login.terminals {
            self.by_tty.insert(t.key, key);
        }
        self.consoles += consoles(login);
        list(&mut self.by_uid, login.uid, key);
        if let Some(outer) = &login.nested_in {
            list(&mut self.by_outer, outer.clone(), key);
            list(&mut self.nested_by_uid, login.uid, key);
        }
        if let Some(audit_session) = login.audit_session
            && login.kind != SessionKind::Local
        {
            list(&mut self.outer_by_audit_session, audit_session, key);
        }
    }

    pub fn remove(&mut self, key: &LoginKey) -> Option<Login> {
        let login = self.logins.remove(key)?;
        self.unindex(&login);
        Some(*login)
    }

    fn unindex(&mut self, login: &Login) {
        let key = &login.key;
        for pid in login.pids() {
            unlist(&mut self.by_pid, &pid, key);
        }
        for t in &login.terminals {
            if self.by_tty.get(&t.key) == Some(key) {
                self.by_tty.remove(&t.key);
            }
        }
        self.consoles -= consoles(login);
        unlist(&mut self.by_uid, &login.uid, key);
        if let Some(outer) = &login.nested_in {
            unlist(&mut self.by_outer, outer, key);
            unlist(&mut self.nested_by_uid, &login.uid, key);
        }
        if let Some(audit_session) = login.audit_session {
            unlist(&mut self.outer_by_audit_session, &audit_session, key);
        }
    }

    /// Makes login `key` user `uid`'s (see [`Login::set_user`]), kept in the
    /// indexes by user.
    pub fn set_user(&mut self, key: &LoginKey, uid: u32, gid: u32, groups: Vec<u32>) {
        if let Some(mut login) = self.remove(key) {
            login.set_user(uid, gid, groups);
            self.insert(login);
        }
    }

    /// The logins of user `uid`.
    pub fn of_uid(&self, uid: u32) -> impl Iterator<Item = &Login> {
        self.logins_in(self.by_uid.get(&uid))
    }

    /// The nested logins of user `uid`.
    pub fn nested_of_uid(&self, uid: u32) -> impl Iterator<Item = &Login> {
        self.logins_in(self.nested_by_uid.get(&uid))
    }

    /// A login of audit session `audit_session` that a local terminal can be nested
    /// in (any kind but local), other than `except`.
    pub fn outer_in_audit_session(&self, audit_session: u32, except: &LoginKey) -> Option<&Login> {
        self.logins_in(self.outer_by_audit_session.get(&audit_session))
            .find(|login| login.key != *except)
    }

    fn logins_in<'a>(&'a self, keys: Option<&'a Vec<LoginKey>>) -> impl Iterator<Item = &'a Login> {
        keys.into_iter().flatten().filter_map(|key| self.get(key))
    }

    /// Marks login `key` as nested in the login with id `outer`.
    pub fn nest(&mut self, key: &LoginKey, outer: String) {
        if let Some(mut login) = self.remove(key) {
            login.nested_in = Some(outer);
            self.insert(login);
        }
    }

    /// The logins nested in the login with id `outer`.
    pub fn nested_in(&self, outer: &str) -> Vec<LoginKey> {
        self.by_outer.get(outer).cloned().unwrap_or_default()
    }

    /// Adds a terminal to a login (ssh multiplexes several on one connection).
    pub fn add_terminal(&mut self, key: &LoginKey, terminal: Terminal) {
        let Some(mut login) = self.remove(key) else {
            return;
        };
        login.terminals.retain(|t| t.key != terminal.key);
        login.terminals.push(terminal);
        self.insert(login);
    }

    /// Removes a terminal from its login; returns the login's key.
    pub fn remove_terminal(&mut self, tty: &TtyKey) -> Option<LoginKey> {
        let key = *self.by_tty.get(tty)?;
        let mut login = self.remove(&key)?;
        login.terminals.retain(|t| t.key != *tty);
        self.insert(login);
        Some(key)
    }

    pub fn get(&self, key: &LoginKey) -> Option<&Login> {
        self.logins.get(key).map(|l| &**l)
    }

    /// Mutable access for facts learned after insertion (enforcement); the fields
    /// the indexes are built from (identity, terminals, user, kind, audit session,
    /// nesting) change only through the table ([`Self::nest`], [`Self::set_user`]).
    pub fn get_mut(&mut self, key: &LoginKey) -> Option<&mut Login> {
        self.logins.get_mut(key).map(|l| &mut **l)
    }

    pub fn contains(&self, key: &LoginKey) -> bool {
        self.logins.contains_key(key)
    }

    /// The login a terminal belongs to.
    pub fn of_tty(&self, tty: &TtyKey) -> Option<LoginKey> {
        self.by_tty.get(tty).copied()
    }

    pub fn has_tty(&self, tty: &TtyKey) -> bool {
        self.by_tty.contains_key(tty)
    }

    pub fn by_id(&self, id: &str) -> Option<&Login> {
        self.iter().find(|s| s.id == id)
    }

    /// Logins in which `pid` is the identity, a terminal's leader or its server.
    pub fn keys_of_pid(&self, pid: u32) -> Vec<LoginKey> {
        self.logins_of_pid(pid).to_vec()
    }

    /// The same, borrowed: a terminal server of a thousand logins is asked about
    /// once per end, and copying the list each time made ending them quadratic.
    pub fn logins_of_pid(&self, pid: u32) -> &[LoginKey] {
        self.by_pid.get(&pid).map_or(&[], Vec::as_slice)
    }

    /// True when some login is made of `pid`.
    pub fn pid_in_use(&self, pid: u32) -> bool {
        self.by_pid.get(&pid).is_some_and(|keys| !keys.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Login> {
        self.logins.values().map(|l| &**l)
    }

    pub fn len(&self) -> usize {
        self.logins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.logins.is_empty()
    }

    pub fn keys(&self) -> Vec<LoginKey> {
        self.logins.keys().copied().collect()
    }

    /// Every terminal of every login.
    pub fn terminal_count(&self) -> usize {
        self.by_tty.len()
    }

    /// True while some login has a console terminal.
    pub fn has_console(&self) -> bool {
        self.consoles > 0
    }
}

/// How many of `login`'s terminals are consoles.
fn consoles(login: &Login) -> usize {
    login.terminals.iter().filter(|t| !t.key.is_pty()).count()
}

#[cfg(test)]
mod tests {
    use session_monitor_common::dev;

    use super::*;

    fn proc(pid: u32) -> ProcRef {
        ProcRef {
            pid,
            start_ticks: 1000 + pid as u64,
        }
    }

    fn login(identity: u32, terminals: &[(u32, u32)]) -> Login {
        let r = Resolved::example(proc(identity));
        let mut l = Login::from_resolved(r, 0);
        l.terminals = terminals
            .iter()
            .map(|&(rdev, leader)| Terminal {
                key: TtyKey { rdev, pts_dev: 5 },
                leader: proc(leader),
                server: Some(proc(identity + 1)),
            })
            .collect();
        l
    }

    #[test]
    fn the_table_knows_while_a_login_has_a_console() {
        let mut table = LoginTable::default();
        table.insert(login(10, &[(1, 20)]));
        assert!(!table.has_console(), "a pseudo-terminal is no console");
        let console = TtyKey {
            rdev: dev::mkdev(4, 1),
            pts_dev: 0,
        };
        let on_console = |leader| Terminal {
            key: console,
            leader: proc(leader),
            server: None,
        };
        let key = login(10, &[]).key;
        table.add_terminal(&key, on_console(21));
        assert!(table.has_console());
        // The same console added again, the user changed: still one console.
        table.add_terminal(&key, on_console(22));
        table.set_user(&key, 1000, 1000, vec![]);
        assert_eq!(table.consoles, 1);
        assert_eq!(table.remove_terminal(&console), Some(key));
        assert!(!table.has_console());
        table.add_terminal(&key, on_console(23));
        table.remove(&key);
        assert!(!table.has_console(), "its login ended");
    }

    #[test]
    fn nested_logins_are_found_by_their_outer_login() {
        let mut table = LoginTable::default();
        let outer = login(10, &[(1, 20)]);
        let outer_id = outer.id.clone();
        table.insert(outer);
        let mut inner = login(30, &[(2, 40)]);
        inner.nested_in = Some(outer_id.clone());
        let inner_key = inner.key;
        table.insert(inner);
        let later = login(50, &[(3, 60)]);
        let later_key = later.key;
        table.insert(later);
        assert_eq!(table.nested_in(&outer_id), vec![inner_key]);
        table.nest(&later_key, outer_id.clone());
        let mut nested = table.nested_in(&outer_id);
        nested.sort_unstable();
        let mut expected = vec![inner_key, later_key];
        expected.sort_unstable();
        assert_eq!(nested, expected);
        assert_eq!(
            table.get(&later_key).unwrap().nested_in.as_deref(),
            Some(outer_id.as_str())
        );
        // A terminal added re-indexes the login: it stays nested, once.
        table.add_terminal(
            &later_key,
            Terminal {
                key: TtyKey {
                    rdev: 4,
                    pts_dev: 5,
                },
                leader: proc(61),
                server: None,
            },
        );
        assert_eq!(table.nested_in(&outer_id).len(), 2);
        table.remove(&inner_key);
        table.remove(&later_key);
        assert!(table.nested_in(&outer_id).is_empty());
    }

    #[test]
    fn logins_are_found_by_user_and_by_audit_session() {
        fn keys<'a>(logins: impl Iterator<Item = &'a Login>) -> Vec<LoginKey> {
            let mut keys: Vec<LoginKey> = logins.map(|l| l.key).collect();
            keys.sort_unstable();
            keys
        }
        let mut table = LoginTable::default();
        let mut ssh = login(10, &[(1, 20)]);
        ssh.audit_session = Some(7);
        let (ssh_key, ssh_id) = (ssh.key, ssh.id.clone());
        table.insert(ssh);
        let mut local = login(30, &[(2, 40)]);
        local.kind = SessionKind::Local;
        local.audit_session = Some(7);
        let local_key = local.key;
        table.insert(local);
        let mut both = vec![ssh_key, local_key];
        both.sort_unstable();

        // A terminal is nested only in a login that is not local, never in itself.
        let outer = |except| table.outer_in_audit_session(7, except).map(|l| l.key);
        assert_eq!(outer(&local_key), Some(ssh_key));
        assert_eq!(outer(&ssh_key), None);
        assert!(table.outer_in_audit_session(8, &local_key).is_none());
        assert_eq!(keys(table.of_uid(1000)), both);
        assert!(table.nested_of_uid(1000).next().is_none());

        table.nest(&local_key, ssh_id);
        assert_eq!(keys(table.nested_of_uid(1000)), vec![local_key]);
        // A user learned later moves the login, nested, to that user.
        table.set_user(&local_key, 1001, 1001, Vec::new());
        assert_eq!(keys(table.of_uid(1000)), vec![ssh_key]);
        assert_eq!(keys(table.of_uid(1001)), vec![local_key]);
        assert_eq!(keys(table.nested_of_uid(1001)), vec![local_key]);
        assert!(table.nested_of_uid(1000).next().is_none());

        table.remove(&ssh_key);
        assert!(table.outer_in_audit_session(7, &local_key).is_none());
        assert!(table.of_uid(1000).next().is_none());
        table.remove(&local_key);
        assert!(table.by_uid.is_empty() && table.nested_by_uid.is_empty());
        assert!(table.outer_by_audit_session.is_empty());
    }

    #[test]
    fn ids_follow_the_identity_process() {
        let a = login_key(&proc(10));
        assert_eq!(a, login_key(&proc(10)));
        assert_ne!(a.0, login_key(&proc(11)).0);
        assert_ne!(a.0, 0);
        assert_eq!(a.1.len(), 12);
        assert_eq!(u64::from_str_radix(&a.1, 16), Ok(a.0));
    }

    #[test]
    fn a_login_owns_its_terminals_and_processes() {
        let mut table = LoginTable::default();
        let l = login(10, &[(1, 20), (2, 21)]);
        let key = l.key;
        table.insert(l);
        assert_eq!(
            table.of_tty(&TtyKey {
                rdev: 2,
                pts_dev: 5
            }),
            Some(key)
        );
        assert_eq!(table.keys_of_pid(21), vec![key]);
        assert_eq!(table.keys_of_pid(11), vec![key]);
        assert_eq!(table.logins_of_pid(11), &[key]);
        assert!(table.logins_of_pid(99).is_empty());
        assert_eq!(
            table.remove_terminal(&TtyKey {
                rdev: 1,
                pts_dev: 5
            }),
            Some(key)
        );
        assert!(!table.pid_in_use(20));
        assert_eq!(table.get(&key).unwrap().leader().pid, 21);
        table.remove(&key);
        assert!(!table.pid_in_use(10));
        assert_eq!(table.terminal_count(), 0);
    }

    #[test]
    fn last_input_is_the_latest_of_terminals_and_transport() {
        let mut l = login(10, &[]);
        l.started_ns = 5;
        let act = |t| {
            Some(TtyActivity {
                last_input_ns: t,
                ..Default::default()
            })
        };
        assert_eq!(l.last_input_ns(&[], 0), 5);
        assert_eq!(l.last_input_ns(&[act(7), act(9)], 8), 9);
        assert_eq!(l.last_input_ns(&[act(7)], 12), 12);
        // Forwarded data is not a person's input.
        l.carries = vec![Carry::Forwarding];
        assert_eq!(l.last_input_ns(&[], 12), 5);
    }
}
