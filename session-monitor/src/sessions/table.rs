//! The table of live sessions, and the view of one that the CLI prints.

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
use crate::clock;

#[derive(Clone, Debug)]
pub struct Session {
    /// Stable for the life of the session, also across daemon restarts.
    pub id: String,
    pub key: TtyKey,
    pub tty: String,
    pub kind: SessionKind,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Names of the primary and supplementary groups, for group rules.
    pub group_names: Vec<String>,
    pub leader: ProcRef,
    /// The process holding the pty master (sshd, mosh-server, tmux, a container shim).
    pub server: Option<ProcRef>,
    pub server_exe: Option<PathBuf>,
    pub remote: Option<String>,
    pub container: Option<ContainerInfo>,
    /// Audit session ids of the leader and the server (see `procs::audit_session`).
    pub audit_session: Option<u32>,
    pub server_audit_session: Option<u32>,
    /// The terminal the server runs on, when it runs on one.
    pub server_ctty: Option<TtyKey>,
    /// The outer session this terminal is nested in (a multiplexer or `expect`
    /// started inside it): its own input does not count, its user's presence does.
    pub nested_in: Option<String>,
    /// Leader start, CLOCK_BOOTTIME ns.
    pub started_ns: u64,
    /// When the daemon began to track it: the baseline for network idle time.
    pub tracked_since_ns: u64,
}

impl Session {
    pub fn from_resolved(r: Resolved, now_ns: u64) -> Self {
        let user = names::user_name(r.uid);
        let mut gids = vec![r.gid];
        gids.extend(r.groups.iter().copied().filter(|g| *g != r.gid));
        let group_names = gids.iter().map(|&gid| names::group_name(gid)).collect();
        Self {
            id: session_id(&r.key, &r.leader),
            group_names,
            tty: tty_name(&r.key),
            key: r.key,
            kind: r.kind,
            user,
            uid: r.uid,
            gid: r.gid,
            groups: r.groups,
            started_ns: r.leader.start_boot_ns(),
            audit_session: r.audit_session,
            server_audit_session: r.server_audit_session,
            server_ctty: r.server_ctty,
            nested_in: None,
            leader: r.leader,
            server: r.server,
            server_exe: r.server_exe,
            remote: r.remote,
            container: r.container,
            tracked_since_ns: now_ns,
        }
    }

    /// Network liveness is tracked for sessions whose peer talks UDP to the server.
    pub fn has_network_peer(&self) -> bool {
        self.kind == SessionKind::Mosh && self.server.is_some()
    }

    /// Last input (or the session start when nobody typed yet), boot-time ns. A
    /// terminal access time seeded at start-up may predate the shell (a terminal
    /// reused by a new shell); it still counts as the last input.
    pub fn last_input_ns(&self, activity: Option<&TtyActivity>) -> u64 {
        match activity.map_or(0, |a| a.last_input_ns) {
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

    /// The session as the CLI shows it; `last_input_ns` is the daemon's view of the
    /// last input (for a nested terminal, its user's presence elsewhere).
    pub fn view(
        &self,
        activity: Option<&TtyActivity>,
        server: Option<&ProcState>,
        last_input_ns: u64,
        now_ns: u64,
    ) -> SessionView {
        let own = activity.map(|a| a.last_input_ns).filter(|&t| t > 0);
        let last_input = if self.nested_in.is_some() {
            Some(last_input_ns)
        } else {
            own
        };
        SessionView {
            id: self.id.clone(),
            tty: self.tty.clone(),
            kind: self.kind,
            user: self.user.clone(),
            uid: self.uid,
            leader_pid: self.leader.pid,
            server_pid: self.server.map(|s| s.pid),
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
            input_bytes: activity.map_or(0, |a| a.input_bytes),
            input_count: activity.map_or(0, |a| a.input_count),
            nested_in: self.nested_in.clone(),
        }
    }
}

/// A session as `sessions --json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionView {
    pub id: String,
    pub tty: String,
    pub kind: SessionKind,
    pub user: String,
    pub uid: u32,
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
    /// The outer session, for a terminal nested in another session.
    #[serde(default)]
    pub nested_in: Option<String>,
}

/// A short id derived from what identifies the session on this boot: the same
/// session gets the same id after a daemon restart, another one never does.
fn session_id(key: &TtyKey, leader: &ProcRef) -> String {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    let boot_id = BOOT_ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    });
    let mut hash = Sha256::new();
    hash.update(boot_id.as_bytes());
    hash.update(key.rdev.to_le_bytes());
    hash.update(key.pts_dev.to_le_bytes());
    hash.update(leader.pid.to_le_bytes());
    hash.update(leader.start_ticks.to_le_bytes());
    let digest = hash.finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Live sessions by terminal, with an index from process to sessions for exits.
#[derive(Default)]
pub struct SessionTable {
    sessions: HashMap<TtyKey, Session>,
    by_pid: HashMap<u32, Vec<TtyKey>>,
}

impl SessionTable {
    pub fn insert(&mut self, session: Session) {
        let key = session.key;
        if let Some(old) = self.sessions.remove(&key) {
            self.unindex(&old);
        }
        for pid in std::iter::once(session.leader.pid).chain(session.server.map(|s| s.pid)) {
            self.by_pid.entry(pid).or_default().push(key);
        }
        self.sessions.insert(key, session);
    }

    pub fn remove(&mut self, key: &TtyKey) -> Option<Session> {
        let session = self.sessions.remove(key)?;
        self.unindex(&session);
        Some(session)
    }

    fn unindex(&mut self, session: &Session) {
        for pid in std::iter::once(session.leader.pid).chain(session.server.map(|s| s.pid)) {
            if let Some(keys) = self.by_pid.get_mut(&pid) {
                keys.retain(|k| k != &session.key);
                if keys.is_empty() {
                    self.by_pid.remove(&pid);
                }
            }
        }
    }

    pub fn get(&self, key: &TtyKey) -> Option<&Session> {
        self.sessions.get(key)
    }

    /// Mutable access for facts learned after insertion (nesting); the fields the
    /// pid index is built from (leader, server) must not change.
    pub fn get_mut(&mut self, key: &TtyKey) -> Option<&mut Session> {
        self.sessions.get_mut(key)
    }

    pub fn contains(&self, key: &TtyKey) -> bool {
        self.sessions.contains_key(key)
    }

    pub fn by_id(&self, id: &str) -> Option<&Session> {
        self.sessions.values().find(|s| s.id == id)
    }

    /// Sessions in which `pid` is the leader or the server.
    pub fn keys_of_pid(&self, pid: u32) -> Vec<TtyKey> {
        self.by_pid.get(&pid).cloned().unwrap_or_default()
    }

    /// True when some session other than `except` is served by `pid`.
    pub fn pid_in_use(&self, pid: u32) -> bool {
        self.by_pid.get(&pid).is_some_and(|keys| !keys.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn keys(&self) -> Vec<TtyKey> {
        self.sessions.keys().copied().collect()
    }
}
