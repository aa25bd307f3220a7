//! The daemon's state, and how logins come and go.
//!
//! One [`Login`] record per login holds everything about it: its identity process,
//! terminals, policy resolution, warning and single pending deadline. Terminals are
//! found through the probes' first writes, ssh connections without a terminal
//! through the listener's forks (and a /proc sweep); both resolve to the login
//! whose identity process carries them.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use session_monitor_common::{TtyKey, state::proc_flags};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    audit::{AuditEvent, AuditLog, BlockedIn, Ended, SessionFields},
    clock,
    control::Incoming,
    enforce::{
        EndReason, GivenWarnings, Warned,
        terminate::{Outcome, daemon_ancestors},
    },
    labels::SessionOrigin,
    metrics::{LiveSample, Metrics},
    policy::{Mode, Policy, Resolution, Subject},
    probes::{Blocked, KernelEvent, KernelMaps, Probes},
    revoke::Revocations,
    sessions::{
        Login, LoginKey, LoginTable, ProcRef, Resolved, Resolver, SessionKind, Terminal,
        discover_existing,
    },
};

/// A terminal the probes reported that is not resolved to a session yet.
struct Pending {
    /// A process seen writing to it (the transport, for input).
    hint: Option<u32>,
    attempts: u32,
    next_try: Instant,
}

/// Quick retries cover the moment between a pty's first write and its shell
/// becoming session leader; after that, reconcile retries at its own pace.
const RESOLVE_BATCH_DELAY: Duration = Duration::from_millis(20);
const RESOLVE_QUICK_ATTEMPTS: u32 = 6;
/// A terminal written to but without a login session for this long is forgotten in
/// the kernel's terminal maps (it is noticed again on its next write).
const UNRESOLVED_FORGET_AFTER: Duration = Duration::from_secs(60);

/// An ssh connection the listener forked, waiting to authenticate.
struct PendingConnection {
    process: ProcRef,
    attempts: u32,
    next_try: Instant,
}

/// How long a new connection is retried quickly: its authentication (LoginGraceTime
/// allows minutes; reconcile's sweep finds slower ones).
const CONNECTION_QUICK_ATTEMPTS: u32 = 8;

/// How long the core resolves pending terminals and connections at a time before it
/// looks at its other work (due warnings and ends, exits, requests) again: a burst of
/// a thousand new logins must not make the deadlines late.
const RESOLVE_SLICE: Duration = Duration::from_millis(10);

/// How many resolved sessions start-up discovery's resolver may be ahead of the
/// core (see [`Core::discover_existing`]).
const DISCOVERY_AHEAD: usize = 64;

/// How long a snapshot of /proc asked for is waited for before it is asked again.
const SNAPSHOT_GIVEN_UP: Duration = Duration::from_secs(10);

/// A termination that finished (all targets gone, or SIGKILL sent).
pub struct TerminationDone {
    pub key: LoginKey,
    pub session_id: String,
    pub reason: EndReason,
    /// When the end was decided (boot-time ns): what the record's times refer to.
    pub decided_ns: u64,
    /// The last input as it was then (the hangup makes the transport write).
    pub last_input_ns: u64,
    pub outcome: Outcome,
    /// Why the closing line was not written to a terminal, when the daemon refused
    /// to write it.
    pub notice_refused: Option<(TtyKey, String)>,
    /// Why the termination did not complete (a task panicked): the session is
    /// still there, and its end is tried again.
    pub failed: Option<String>,
}

/// A warning written to a login's terminals, with those that refused it.
pub struct WarningWritten {
    pub key: LoginKey,
    pub session_id: String,
    /// Terminals the daemon did not write to, and why (see `notice::write_to_terminal`).
    pub refused: Vec<(TtyKey, String)>,
}

/// How many warnings and closing lines are written to terminals at the same time,
/// each on a blocking thread (a few system calls per terminal; a closing line also
/// the /proc reads that find the processes to end).
pub(super) const NOTICE_WRITERS: usize = 16;

pub struct CoreParts {
    pub probes: Probes,
    pub maps: KernelMaps,
    pub received: Arc<AtomicU64>,
    pub policy: Policy,
    pub config_path: PathBuf,
    pub force_dry_run: bool,
    pub audit: AuditLog,
    pub terminations: mpsc::Sender<TerminationDone>,
    pub warnings_written: mpsc::Sender<WarningWritten>,
    /// Where the /proc snapshots taken on the blocking pool come back.
    pub snapshots: mpsc::Sender<Resolver>,
    pub revocations: Revocations,
    pub access: tokio::sync::watch::Sender<crate::control::Access>,
    pub metrics: Arc<Metrics>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Fingerprint of the policy file as it was read at start.
    pub policy_fingerprint: Option<String>,
    /// Warnings given before a restart, kept in the state directory.
    pub given: GivenWarnings,
}

pub struct Core {
    pub(super) probes: Probes,
    pub(super) maps: KernelMaps,
    pub(super) table: LoginTable,
    pending: HashMap<TtyKey, Pending>,
    /// Connections forked by an sshd listener, by pid, until they authenticate.
    pending_connections: HashMap<u32, PendingConnection>,
    /// The /proc snapshot pending terminals and connections are resolved from, with
    /// when it was asked for: it serves those due by then.
    resolver: Option<(Instant, Resolver)>,
    /// When the snapshot being taken on the blocking pool was asked for.
    snapshot_asked: Option<Instant>,
    snapshots: mpsc::Sender<Resolver>,
    /// sshd listeners marked in the kernel (never signalled).
    pub(super) listeners: HashSet<u32>,
    /// Terminals without a login session, with when that was first found.
    pub(super) unresolved: HashMap<TtyKey, Instant>,
    pub(super) received: Arc<AtomicU64>,
    pub(super) started: Instant,
    pub(super) policy: Policy,
    /// SHA-256 of the policy file content last read, to skip reloads of no change.
    pub(super) policy_fingerprint: Option<String>,
    pub(super) config_path: PathBuf,
    pub(super) force_dry_run: bool,
    pub(super) audit: AuditLog,
    /// Every login's pending deadline (its `due`), ordered by time (CLOCK_BOOTTIME ns).
    pub(super) schedule: BTreeSet<(u64, LoginKey)>,
    pub(super) terminations: mpsc::Sender<TerminationDone>,
    pub(super) warnings_written: mpsc::Sender<WarningWritten>,
    /// Bounds the warnings and closing lines being written at once ([`NOTICE_WRITERS`]).
    pub(super) notice_writers: Arc<tokio::sync::Semaphore>,
    pub(super) reloads: (u64, u64),
    pub(super) revocations: Revocations,
    /// Who may use the control socket (changes with the policy's `control_group`).
    pub(super) access: tokio::sync::watch::Sender<crate::control::Access>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) metrics_addr: Option<std::net::SocketAddr>,
    /// Per uid: the last input on a session of theirs that is not nested and has
    /// ended (see `nesting`).
    pub(super) presence: HashMap<u32, u64>,
    /// The kernel's members of each login, from one walk of its map shared by the
    /// ends decided within [`MEMBERS_MAX_AGE`].
    pub(super) members: Option<(Instant, HashMap<LoginKey, Vec<u32>>)>,
    /// The /proc snapshot the ends being carried out share (taken off the core).
    pub(super) proc_snapshots: super::enforcement::SharedSnapshot,
    /// Warnings and ends decided in this turn of the core, carried out together
    /// after it ([`Core::carry_out_decisions`]).
    pub(super) pending_warnings: Vec<super::warning::Warning>,
    pub(super) pending_ends: Vec<super::ending::End>,
    /// Reconcile ticks so far.
    ticks: u64,
    /// Where the warnings given are kept across restarts, and those a previous
    /// daemon gave to sessions not found again yet (emptied after discovery).
    pub(super) given: GivenWarnings,
    pub(super) given_before: HashMap<String, Warned>,
    /// A warning was given or withdrawn since the file was last written.
    pub(super) given_changed: bool,
}

/// From this many sessions on, reconcile does its periodic work less often.
const LARGE: usize = 1000;

/// How old the shared process snapshot may be when ending a session. A process
/// forked after it still gets the hangup the kernel sends when the leader exits.
pub(super) const MEMBERS_MAX_AGE: Duration = Duration::from_millis(100);

impl Core {
    pub fn new(parts: CoreParts) -> Self {
        let fingerprint = parts.policy_fingerprint;
        Self {
            probes: parts.probes,
            maps: parts.maps,
            table: LoginTable::default(),
            pending: HashMap::new(),
            pending_connections: HashMap::new(),
            resolver: None,
            snapshot_asked: None,
            snapshots: parts.snapshots,
            listeners: HashSet::new(),
            unresolved: HashMap::new(),
            received: parts.received,
            started: Instant::now(),
            policy: parts.policy,
            policy_fingerprint: fingerprint,
            config_path: parts.config_path,
            force_dry_run: parts.force_dry_run,
            audit: parts.audit,
            schedule: BTreeSet::new(),
            terminations: parts.terminations,
            warnings_written: parts.warnings_written,
            notice_writers: Arc::new(tokio::sync::Semaphore::new(NOTICE_WRITERS)),
            reloads: (0, 0),
            revocations: parts.revocations,
            access: parts.access,
            metrics: parts.metrics,
            metrics_addr: parts.metrics_addr,
            presence: HashMap::new(),
            members: None,
            proc_snapshots: Default::default(),
            pending_warnings: Vec::new(),
            pending_ends: Vec::new(),
            ticks: 0,
            given_before: parts.given.load(),
            given: parts.given,
            given_changed: false,
        }
    }

    pub fn mode(&self) -> Mode {
        if self.force_dry_run {
            Mode::DryRun
        } else {
            self.policy.mode
        }
    }

    pub fn record_start(&mut self) {
        self.audit.record(AuditEvent::DaemonStart {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            backend: self.probes.backend.to_string(),
            policy: self.policy.describe(),
            mode: self.mode(),
        });
    }

    pub fn record_stop(&mut self) {
        self.audit.record(AuditEvent::DaemonStop {
            pid: std::process::id(),
            sessions: self.table.len(),
        });
    }

    /// Sessions opened before the daemon started. Their idle time starts from the
    /// terminal's last access time, which the kernel updates when input is read.
    pub fn discover_existing(&mut self) {
        // One walk of /proc for everything start-up needs.
        let mut resolver = Resolver::snapshot();
        for listener in resolver.ssh_listeners() {
            self.mark_listener(listener);
        }
        // Resolving (reads of /proc) and adding (the kernel's maps, the audit log)
        // take about the same time per session: the resolver runs on a thread of
        // its own, a few sessions ahead of the core, and the two share the work
        // of ten thousand sessions between two CPUs. The channel is bounded, so
        // that the resolutions are not all held at once.
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(DISCOVERY_AHEAD);
            scope.spawn(move || {
                discover_existing(&mut resolver, |resolved| {
                    let _ = tx.send(resolved);
                });
            });
            for resolved in rx {
                if let Some(t) = &resolved.terminal {
                    let last_input = resolved.tty_atime.map(clock::system_to_boot).unwrap_or(0);
                    if let Err(err) = self.maps.seed_activity(t.key, last_input) {
                        tracing::warn!("{err:#}");
                    }
                }
                self.add_resolved(resolved, SessionOrigin::Discovered);
            }
        });
        tracing::info!(
            logins = self.table.len(),
            terminals = self.table.terminal_count(),
            "start-up discovery done"
        );
        // Warnings of sessions that ended while no daemon ran.
        self.given_before.clear();
        self.given_changed = true;
        self.save_given_warnings();
        // Discovery reads all of /proc once; give the memory it used back.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Attaches the probes on standby that the tracked logins need and detaches the
    /// others, after every turn of the loop: before a request can see a new console
    /// login, its reads are watched.
    pub fn follow_logins(&mut self) {
        self.probes.follow_logins(self.table.has_console());
    }

    /// Writes the warnings given to live logins, when they changed.
    pub(super) fn save_given_warnings(&mut self) {
        if !std::mem::take(&mut self.given_changed) {
            return;
        }
        let warned = self
            .table
            .iter()
            .filter_map(|s| Some((s.id.as_str(), s.warned.as_ref()?)));
        if let Err(err) = self.given.save(warned) {
            tracing::warn!("{err:#}; a restart would warn these sessions again");
        }
    }

    pub(super) fn resolve_policy(&self, login: &Login) -> Resolution {
        let mut resolution = self.policy.resolve(&Subject {
            user: &login.user,
            groups: &login.group_names,
            kind: login.kind,
        });
        // The daemon never ends the login it runs in: its own ancestors are
        // protected from signals, so it could only close the terminal under itself,
        // again and again (the login's identity or a terminal's leader is then the
        // daemon's session leader or one of its ancestors).
        let sid = nix::unistd::getsid(None).map_or(0, |sid| sid.as_raw() as u32);
        let own = |pid: u32| pid == sid || daemon_ancestors().contains(&pid);
        if own(login.identity.pid) || login.terminals.iter().any(|t| own(t.leader.pid)) {
            resolution.limits.exempt = true;
            resolution.rule = "daemon's own session".into();
        }
        resolution
    }

    /// Marks an sshd listener in the kernel: each connection it forks is reported.
    pub(super) fn mark_listener(&mut self, pid: u32) {
        if self.listeners.insert(pid)
            && let Err(err) = self.maps.set_flags(pid, proc_flags::LISTENER)
        {
            tracing::warn!("{err:#}");
        }
    }

    /// A resolved terminal or connection: a new login, or a terminal (or facts) for
    /// one the daemon has.
    fn add_resolved(&mut self, resolved: Resolved, how: SessionOrigin) {
        if let Some(listener) = resolved.listener {
            self.mark_listener(listener);
        }
        // A connection found through its terminal needs no resolution of its own
        // (it would fail: it has a terminal), so no more /proc walks for it.
        let identity = resolved.identity;
        if self
            .pending_connections
            .get(&identity.pid)
            .is_some_and(|p| p.process == identity)
        {
            self.pending_connections.remove(&identity.pid);
        }
        let (key, _) = crate::sessions::login_key(&resolved.identity);
        let Some(login) = self.table.get(&key) else {
            self.add_login(resolved, how);
            return;
        };
        if login.ending.is_some() {
            return;
        }
        if let Some(terminal) = resolved.terminal {
            self.add_terminal(key, terminal);
        } else if login.terminals.is_empty() && login.carries != resolved.carries {
            let carries = resolved.carries;
            if let Some(login) = self.table.get_mut(&key) {
                tracing::info!(id = %login.id, ?carries, "the login carries something else now");
                login.carries = carries;
            }
            self.schedule_session(&key);
        }
    }

    /// A further terminal of a live login (ssh channels multiplexed on one
    /// connection).
    fn add_terminal(&mut self, key: LoginKey, terminal: Terminal) {
        self.unresolved.remove(&terminal.key);
        self.pending.remove(&terminal.key);
        if self.table.of_tty(&terminal.key) == Some(key) {
            return;
        }
        if let Some(old) = self.table.of_tty(&terminal.key) {
            // The terminal changed hands (a pts reused by another login).
            self.remove_terminal(old, &terminal.key);
        }
        let Some(login) = self.table.get(&key) else {
            return;
        };
        let nested = login.nested_in.is_some();
        let id = login.id.clone();
        let pids: Vec<(u32, u32, bool)> = std::iter::once(terminal.leader.pid)
            .chain(terminal.server.map(|s| s.pid))
            .map(|pid| {
                let flags = flags_for(login, pid) | proc_flags::WATCH_EXIT;
                let member = pid == terminal.leader.pid || is_member(login, pid);
                (pid, flags, member)
            })
            .collect();
        for (pid, flags, member) in pids {
            self.adopt(key, pid, flags, nested || !member);
        }
        if !terminal.leader.is_alive() {
            // Gone already: its next user gets a first write of its own.
            self.maps.forget_tty(&terminal.key);
            return;
        }
        tracing::info!(%id, tty = %crate::sessions::tty_name(&terminal.key), "terminal added to the login");
        self.table.add_terminal(&key, terminal);
        if let Some(login) = self.table.get_mut(&key)
            && !login.carries.contains(&crate::sessions::Carry::Shell)
        {
            login
                .carries
                .retain(|c| *c != crate::sessions::Carry::Forwarding);
            login.carries.push(crate::sessions::Carry::Shell);
            login.carries.sort();
        }
        self.schedule_session(&key);
    }

    /// A terminal of a login is gone (its shell or its server exited); the login
    /// lives on as long as its identity process does.
    pub(super) fn remove_terminal(&mut self, key: LoginKey, tty: &TtyKey) {
        let Some(login) = self.table.get(&key) else {
            return;
        };
        let Some(terminal) = login.terminals.iter().find(|t| t.key == *tty).copied() else {
            return;
        };
        let id = login.id.clone();
        self.table.remove_terminal(tty);
        self.maps.forget_tty(tty);
        for pid in std::iter::once(terminal.leader.pid).chain(terminal.server.map(|s| s.pid)) {
            self.release(pid);
        }
        tracing::info!(%id, tty = %crate::sessions::tty_name(tty), "terminal closed");
        self.schedule_session(&key);
    }

    /// Tracks `pid` in the kernel as part of login `key` with `flags`; with
    /// `flags_only`, only its flags are set and it stays in whatever login it is (a
    /// nested login lies inside another login's process tree and stays there, so
    /// that ending the outer login still finds it; a terminal server is nobody's).
    fn adopt(&mut self, key: LoginKey, pid: u32, flags: u32, flags_only: bool) {
        let result = if flags_only {
            self.maps.set_flags(pid, flags)
        } else {
            self.maps.adopt(pid, key, flags)
        };
        if let Err(err) = result {
            tracing::warn!("{err:#}");
        }
    }

    fn add_login(&mut self, resolved: Resolved, how: SessionOrigin) {
        let tree = resolved.tree.clone();
        let mut login = Login::from_resolved(resolved, clock::boot_ns());
        login.nested_in = self.outer_of(&login).map(|outer| outer.id.clone());
        // A local terminal whose process the kernel already counts in another live
        // login (a multiplexer started from an ssh login) is nested in that one.
        if login.nested_in.is_none() && login.kind == SessionKind::Local {
            let outer = self
                .maps
                .proc_state(login.identity.pid)
                .map_or(0, |s| s.login);
            if outer != 0
                && outer != login.key
                && let Some(o) = self.table.get(&outer)
            {
                login.nested_in = Some(o.id.clone());
            }
        }
        let nested = login.nested_in.is_some();
        let key = login.key;
        // The identity process first: every process it forks from now on is the
        // login's in the kernel (a mosh-server forked by an ssh login becomes its
        // own login here).
        self.adopt(
            key,
            login.identity.pid,
            flags_for(&login, login.identity.pid),
            nested,
        );
        // What the identity forked before the kernel knew the login (the shell of an
        // `ssh -T` login, anything running when the daemon started) is the login's
        // too, and so is everything it forks from now on.
        if !nested {
            let own = login.pids();
            for pid in tree {
                if !own.contains(&pid)
                    && !self.table.pid_in_use(pid)
                    && !self.listeners.contains(&pid)
                {
                    self.adopt(key, pid, 0, false);
                }
            }
        }
        for pid in login.pids() {
            if pid != login.identity.pid {
                // A terminal server (tmux, a container shim) serves other logins
                // too and is not forked from this one: watched, never adopted.
                let member = is_member(&login, pid);
                self.adopt(key, pid, flags_for(&login, pid), nested || !member);
            }
        }
        // An identity that exited between the /proc read and the tracking above sends
        // no exit event: check once now that the kernel watches it.
        // Likewise a terminal whose leader is gone: the resolution is stale, and the
        // terminal is forgotten so that its next user gets a first write of its own
        // (a connection without a terminal is found by the listener's sweep).
        // (A local login's identity is its terminal's leader: read once.)
        let identity = login.identity;
        if !identity.is_alive()
            || login
                .terminals
                .iter()
                .any(|t| t.leader != identity && !t.leader.is_alive())
        {
            self.untrack_unused(&login);
            for t in &login.terminals {
                if !self.table.has_tty(&t.key) {
                    self.maps.forget_tty(&t.key);
                }
            }
            return;
        }
        login.resolution = self.resolve_policy(&login);
        // A warning a crashed daemon gave this login still stands.
        login.warned = self.given_before.remove(&login.id);
        tracing::info!(
            id = %login.id,
            tty = %login.tty(),
            terminals = login.terminals.len(),
            kind = %login.kind,
            carries = ?login.carries,
            user = %login.user,
            identity = login.identity.pid,
            leader = login.leader().pid,
            server = ?login.server().map(|s| s.pid),
            remote = ?login.remote,
            rule = %login.resolution.rule,
            nested_in = ?login.nested_in,
            "session {how}"
        );
        let now = clock::boot_ns();
        let last_input = self.own_last_input(&login);
        self.metrics.session_started(login.kind);
        self.audit.record(AuditEvent::SessionStart {
            session: SessionFields::of(&login, &login.resolution.rule, last_input, now),
            how,
            nested_in: login.nested_in.clone(),
        });
        for t in &login.terminals {
            self.unresolved.remove(&t.key);
        }
        let uid = login.uid;
        self.table.insert(login);
        if self.enforce_revocation(&key) {
            // A revoked user got in: whatever else of theirs runs ends too.
            self.end_user_processes(vec![uid]);
        } else {
            self.schedule_session(&key);
        }
    }

    /// Stops watching the processes of `login` that no live login uses.
    ///
    /// A process other logins still use keeps its flags when this login only
    /// watched its exit: every login that uses a process watches its exit, so the
    /// flags they need are the same without this one (a terminal server of a
    /// thousand logins is not asked about each of the others at every end).
    fn untrack_unused(&mut self, login: &Login) {
        for pid in login.pids() {
            let own = flags_for(login, pid);
            if own & !proc_flags::WATCH_EXIT == 0 && self.table.pid_in_use(pid) {
                continue;
            }
            self.release(pid);
        }
    }

    /// Clears the flags of `pid` (exit watch, transport, UDP) when no live login
    /// uses it any more, or sets them to what the logins that do need. Its login
    /// membership stays: a live process stays in its login's tree (a tmux server of a
    /// closed nested terminal still ends with the outer login); the kernel drops the
    /// entry when the process exits.
    fn release(&mut self, pid: u32) {
        let flags = self
            .table
            .logins_of_pid(pid)
            .iter()
            .filter_map(|k| self.table.get(k))
            .fold(0, |f, login| f | flags_for(login, pid));
        let result = if flags == 0 && !process_exists(pid) {
            self.maps.untrack(pid);
            Ok(())
        } else {
            self.maps.set_flags(pid, flags)
        };
        if let Err(err) = result {
            tracing::debug!("{err:#}");
        }
    }

    /// Removes a login that is gone and records why. `ended` is the termination
    /// this daemon carried out (when the end was decided, the last input then, and
    /// what it took).
    pub(super) fn end_session(
        &mut self,
        key: &LoginKey,
        reason: EndReason,
        ended: Option<(u64, u64, &Outcome)>,
    ) {
        let now = ended.map_or_else(clock::boot_ns, |(decided, _, _)| decided);
        let last_input = match ended {
            Some((_, last_input, _)) => last_input,
            None => self
                .table
                .get(key)
                .map(|s| self.timing(s).last_input_ns)
                .unwrap_or(now),
        };
        let Some(login) = self.table.remove(key) else {
            return;
        };
        self.remember_presence(&login, last_input);
        self.unschedule_at(key, login.due);
        for t in &login.terminals {
            self.maps.forget_tty(&t.key);
        }
        self.maps.forget_login(*key);
        self.untrack_unused(&login);
        self.audit.record(AuditEvent::SessionEnd {
            session: SessionFields::of(&login, &login.resolution.rule, last_input, now),
            reason,
            ended: ended.map(|(_, _, outcome)| Ended {
                signals: outcome.signals.clone(),
                took_ms: outcome.took_ms,
                processes: outcome.targets,
                server_ended: outcome.server,
                escaped_processes: outcome.escaped,
                survivors: outcome.survivors.clone(),
            }),
        });
        self.metrics.session_ended(
            login.kind,
            reason,
            clock::seconds_between(login.started_ns, now),
            &login.user,
        );
        match ended {
            Some((_, _, outcome)) => tracing::info!(
                id = %login.id, tty = %login.tty(), user = %login.user, %reason,
                processes = outcome.targets, signals = ?outcome.signals, took_ms = outcome.took_ms,
                "session ended"
            ),
            None => {
                tracing::info!(id = %login.id, tty = %login.tty(), user = %login.user, %reason, "session ended")
            }
        }
    }

    /// A process of some logins exited: the identity ends its login, a terminal's
    /// leader or server closes that terminal.
    fn on_exit(&mut self, pid: u32) {
        self.pending_connections.remove(&pid);
        for key in self.table.keys_of_pid(pid) {
            let Some(login) = self.table.get(&key) else {
                continue;
            };
            // A login being ended is recorded when its termination completes.
            if login.ending.is_some() {
                continue;
            }
            if login.identity.pid == pid {
                self.end_session(&key, EndReason::Logout, None);
                continue;
            }
            let closed: Vec<TtyKey> = login
                .terminals
                .iter()
                .filter(|t| t.leader.pid == pid || t.server.is_some_and(|s| s.pid == pid))
                .map(|t| t.key)
                .collect();
            for tty in closed {
                self.remove_terminal(key, &tty);
            }
        }
    }

    pub fn on_event(&mut self, event: KernelEvent) {
        match event {
            KernelEvent::TtyFirstInput { key, writer }
            | KernelEvent::TtyFirstOutput { key, writer } => {
                if !self.table.has_tty(&key) {
                    self.queue_resolution(key, Some(writer));
                }
            }
            KernelEvent::TtyInput { key, writer } => match self.table.of_tty(&key) {
                Some(login) => {
                    self.recheck_user(&login);
                    self.on_input(&login)
                }
                None => {
                    if !self.pending.contains_key(&key) {
                        self.queue_resolution(key, Some(writer));
                    }
                }
            },
            KernelEvent::ProcessExit { tgid } => self.on_exit(tgid),
            KernelEvent::InputBlocked {
                writer,
                uid,
                comm,
                into,
            } => {
                tracing::warn!(
                    pid = writer,
                    uid,
                    "input of a revoked user stopped in the kernel"
                );
                // A write into a pipe or socket names the transport's login instead.
                let login = match into {
                    Blocked::Terminal(key) => self.table.of_tty(&key),
                    Blocked::Login(login) => Some(login).filter(|l| self.table.contains(l)),
                };
                self.audit.record(AuditEvent::InputBlocked {
                    pid: writer,
                    uid,
                    comm,
                    session: login.and_then(|k| self.table.get(&k)).map(|s| BlockedIn {
                        session_id: s.id.clone(),
                        tty: crate::sessions::tty_name(&into.tty()),
                    }),
                    login: match into {
                        Blocked::Login(login) => Some(format!("{login:012x}")),
                        Blocked::Terminal(_) => None,
                    },
                });
                match (login, into) {
                    (Some(login), _) => {
                        self.enforce_revocation(&login);
                    }
                    (None, Blocked::Terminal(key)) => self.queue_resolution(key, None),
                    (None, Blocked::Login(_)) => {}
                }
            }
            KernelEvent::LoginInput { login } => self.on_login_input(login),
            KernelEvent::ListenerForked { child } => self.on_listener_forked(child),
        }
    }

    /// The kernel saw an sshd listener fork: a new connection, resolved to a login
    /// once it has authenticated.
    ///
    /// A connection resolves no sooner than [`Resolver::CONNECTION_SETTLE_NS`] after
    /// it started (its authenticated side is younger still): the first try waits
    /// that long instead of walking /proc every few milliseconds in vain, and a
    /// short connection (an `scp`) that is gone by then costs no walk at all.
    pub(super) fn on_listener_forked(&mut self, child: u32) {
        let Some(process) = ProcRef::of(child) else {
            return;
        };
        let age = clock::boot_ns().saturating_sub(process.start_boot_ns());
        let wait = Duration::from_nanos(Resolver::CONNECTION_SETTLE_NS.saturating_sub(age))
            .max(RESOLVE_BATCH_DELAY);
        self.pending_connections
            .entry(child)
            .or_insert(PendingConnection {
                process,
                attempts: 0,
                next_try: Instant::now() + wait,
            });
    }

    /// The kernel counted input written by a login's transport into its pipes or
    /// sockets (rate-limited, like terminal input).
    pub(super) fn on_login_input(&mut self, key: LoginKey) {
        if self.table.contains(&key) {
            self.on_input(&key);
        }
    }

    fn queue_resolution(&mut self, key: TtyKey, hint: Option<u32>) {
        self.pending.entry(key).or_insert(Pending {
            hint,
            attempts: 0,
            next_try: Instant::now() + RESOLVE_BATCH_DELAY,
        });
    }

    /// When [`Self::resolve_pending`] has work: at once while the snapshot at hand
    /// serves due terminals or connections, else when the next one is due (nothing
    /// while a snapshot is being taken: its arrival is the next step).
    pub fn next_resolution(&self) -> Option<Instant> {
        if let Some((asked, _)) = &self.resolver
            && self.due_by(*asked)
        {
            return Some(Instant::now());
        }
        if self.snapshot_in_flight() {
            return None;
        }
        let terminals = self.pending.values().map(|p| p.next_try);
        let connections = self.pending_connections.values().map(|p| p.next_try);
        terminals.chain(connections).min()
    }

    /// A snapshot was asked for and may still come (one that never comes, its
    /// task having failed, is asked for again after [`SNAPSHOT_GIVEN_UP`]).
    fn snapshot_in_flight(&self) -> bool {
        self.snapshot_asked
            .is_some_and(|asked| asked.elapsed() < SNAPSHOT_GIVEN_UP)
    }

    /// Whether any terminal or connection was due to be resolved by `at`.
    fn due_by(&self, at: Instant) -> bool {
        self.pending.values().any(|p| p.next_try <= at)
            || self.pending_connections.values().any(|p| p.next_try <= at)
    }

    /// Asks for a snapshot of /proc, taken on the blocking pool: with ten thousand
    /// processes one walk takes long enough to make deadlines late if the core did it.
    fn ask_snapshot(&mut self) {
        if self.snapshot_in_flight() {
            return;
        }
        self.snapshot_asked = Some(Instant::now());
        let tx = self.snapshots.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.blocking_send(Resolver::snapshot());
        });
    }

    /// A snapshot asked for by [`Self::ask_snapshot`]: it serves what was due when it
    /// was asked for.
    pub fn on_snapshot(&mut self, resolver: Resolver) {
        let asked = self.snapshot_asked.take().unwrap_or_else(Instant::now);
        // What it was for may have gone meanwhile (exited): then it is not kept.
        if self.due_by(asked) {
            self.resolver = Some((asked, resolver));
        }
    }

    /// Resolves due terminals and connections from a snapshot of /proc taken after
    /// they fell due, for at most [`RESOLVE_SLICE`] at a time (the rest stays due
    /// and is resolved on the next turn of the core's loop, after any deadline that
    /// fell due meanwhile).
    pub fn resolve_pending(&mut self) {
        let Some((asked, mut resolver)) = self.resolver.take() else {
            if self.due_by(Instant::now()) {
                self.ask_snapshot();
            }
            return;
        };
        let due: Vec<TtyKey> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_try <= asked)
            .map(|(k, _)| *k)
            .collect();
        let due_connections: Vec<u32> = self
            .pending_connections
            .iter()
            .filter(|(_, p)| p.next_try <= asked)
            .map(|(k, _)| *k)
            .collect();
        let slice_ends = Instant::now() + RESOLVE_SLICE;
        for pid in due_connections {
            if Instant::now() >= slice_ends {
                break;
            }
            let Some(pending) = self.pending_connections.get_mut(&pid) else {
                continue;
            };
            let process = pending.process;
            if !process.is_alive() {
                self.pending_connections.remove(&pid);
                continue;
            }
            match resolver.resolve_connection(process) {
                Some(resolved) => {
                    self.pending_connections.remove(&pid);
                    self.add_resolved(resolved, SessionOrigin::Started);
                }
                None => {
                    pending.attempts += 1;
                    if pending.attempts >= CONNECTION_QUICK_ATTEMPTS {
                        // Reconcile's sweep of the listeners' children takes over.
                        self.pending_connections.remove(&pid);
                    } else {
                        let now = Instant::now();
                        let backoff = now + Duration::from_millis(25 << pending.attempts);
                        // Authenticated but not settled: retry when it has.
                        let settled = resolver.connection_settles_at(pid).map(|at| {
                            now + Duration::from_nanos(at.saturating_sub(clock::boot_ns()))
                        });
                        pending.next_try = settled.map_or(backoff, |s| s.max(backoff));
                    }
                }
            }
        }
        for key in due {
            if Instant::now() >= slice_ends {
                break;
            }
            let Some(pending) = self.pending.get_mut(&key) else {
                continue;
            };
            if self.table.has_tty(&key) {
                self.pending.remove(&key);
                continue;
            }
            match resolver.resolve(key, pending.hint) {
                Some(resolved) => {
                    self.pending.remove(&key);
                    self.add_resolved(resolved, SessionOrigin::Started);
                }
                None => {
                    pending.attempts += 1;
                    let now = Instant::now();
                    if pending.attempts >= RESOLVE_QUICK_ATTEMPTS {
                        self.pending.remove(&key);
                        self.unresolved.entry(key).or_insert(now);
                    } else {
                        pending.next_try = now + Duration::from_millis(25 << pending.attempts);
                    }
                }
            }
        }
        if self.due_by(asked) {
            // Unfinished: the same snapshot serves the rest on the next turn.
            self.resolver = Some((asked, resolver));
        } else if self.due_by(Instant::now()) {
            // Fell due after the snapshot was asked for: they need a newer one.
            self.ask_snapshot();
        }
    }

    /// Runs every [`super::RECONCILE_INTERVAL`]. Exit events end sessions; this
    /// catches what events alone would miss: terminals not resolved yet (every
    /// tick), a sweep of /proc for exits, connections and consoles (every tick; every
    /// 15th from [`LARGE`] sessions on) and of the kernel's terminal maps for
    /// terminals the events missed (every 15th). Metrics are refreshed every tick
    /// (every 5th from [`LARGE`] sessions on), so that the daemon stays cheap with ten
    /// thousand sessions.
    pub fn reconcile(&mut self) {
        self.ticks += 1;
        let large = self.table.len() >= LARGE;
        self.expire_revocations();
        self.nest_pending();
        if !large || self.ticks.is_multiple_of(5) {
            self.publish_metrics();
        }
        let sweep = self.ticks.is_multiple_of(15);
        // The sweeps of exits and connections, and the retries, all read one
        // snapshot of /proc (not one read per login on top of it).
        let sweeps = !large || sweep;
        let mut retry: Vec<TtyKey> = self.unresolved.keys().copied().collect();
        if sweep {
            retry.extend(self.maps.tty_keys());
            retry.sort();
            retry.dedup();
        }
        retry.retain(|k| !self.table.has_tty(k) && !self.pending.contains_key(k));
        if retry.is_empty() && !sweeps {
            return;
        }
        let now = Instant::now();
        let mut resolver = Resolver::snapshot();
        if sweeps {
            self.sweep_exits(&resolver);
            self.sweep_connections(&mut resolver);
        }
        for key in retry {
            match resolver.resolve(key, None) {
                Some(resolved) => self.add_resolved(resolved, SessionOrigin::Started),
                None => {
                    let since = *self.unresolved.entry(key).or_insert(now);
                    if now.duration_since(since) >= UNRESOLVED_FORGET_AFTER {
                        self.unresolved.remove(&key);
                        self.maps.forget_tty(&key);
                    }
                }
            }
        }
        if sweeps {
            self.sweep_consoles(&mut resolver);
        }
    }

    /// Console logins from /proc. One announces itself by writing to its console or
    /// by its input, but a login can do neither (no prompt, nothing typed), and the
    /// tracepoint backend's console read probe waits on standby until a console
    /// login is known: such a login would never be found, nor ended. A console with
    /// no login yet (a getty) is asked about again on the next sweep, without being
    /// listed among the unresolved terminals.
    fn sweep_consoles(&mut self, resolver: &mut Resolver) {
        for key in resolver.consoles_in_use() {
            if self.table.has_tty(&key)
                || self.pending.contains_key(&key)
                || self.unresolved.contains_key(&key)
            {
                continue;
            }
            if let Some(resolved) = resolver.resolve(key, None) {
                self.add_resolved(resolved, SessionOrigin::Started);
            }
        }
    }

    /// sshd listeners and their connections, from /proc: what the kernel's fork
    /// reports would miss (a listener started after the daemon, a connection that
    /// took long to authenticate), and what terminal-less logins carry now.
    fn sweep_connections(&mut self, resolver: &mut Resolver) {
        for listener in resolver.ssh_listeners() {
            self.mark_listener(listener);
        }
        for connection in resolver.ssh_connections() {
            let (key, _) = crate::sessions::login_key(&connection);
            match self.table.get(&key) {
                Some(login) if login.terminals.is_empty() && login.ending.is_none() => {
                    if let Some(carries) = resolver.connection_carries(connection.pid)
                        && carries != login.carries
                        && let Some(login) = self.table.get_mut(&key)
                    {
                        tracing::info!(id = %login.id, ?carries, "the login carries something else now");
                        login.carries = carries;
                        self.schedule_session(&key);
                    }
                }
                Some(_) => {}
                None => {
                    if let Some(resolved) = resolver.resolve_connection(connection) {
                        self.add_resolved(resolved, SessionOrigin::Started);
                    }
                }
            }
        }
    }

    /// Ends logins whose identity is gone and closes terminals whose leader or server
    /// is gone, without an exit event, as `snapshot` saw them. A process that exited
    /// after the snapshot sends its exit event, or is found by the next sweep.
    fn sweep_exits(&mut self, snapshot: &Resolver) {
        let is_alive = |p: ProcRef| snapshot.was_alive(p);
        let mut dead = Vec::new();
        let mut closed = Vec::new();
        for login in self.table.iter().filter(|s| s.ending.is_none()) {
            if !is_alive(login.identity) {
                dead.push(login.key);
                continue;
            }
            for t in &login.terminals {
                if !is_alive(t.leader) || t.server.is_some_and(|srv| !is_alive(srv)) {
                    closed.push((login.key, t.key));
                }
            }
        }
        for key in dead {
            self.end_session(&key, EndReason::Logout, None);
        }
        for (key, tty) in closed {
            self.remove_terminal(key, &tty);
        }
    }

    pub fn on_control(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Request {
                request,
                caller,
                reply,
            } => {
                let name = request.name();
                let response = self.handle(request, caller);
                self.audit.record(AuditEvent::ControlRequest {
                    caller_uid: caller.uid,
                    caller_pid: caller.pid,
                    command: name,
                    ok: response.ok,
                    error: response.error.clone(),
                });
                let _ = reply.send(response);
            }
            Incoming::Refused { caller, reason } => {
                tracing::warn!(uid = caller.uid, pid = ?caller.pid, "control request refused: {reason}");
                self.audit.record(AuditEvent::ControlRefused {
                    caller_uid: caller.uid,
                    caller_pid: caller.pid,
                    error: reason,
                });
                self.metrics.control_refused(1);
            }
            Incoming::RefusedMore(summary) => {
                tracing::warn!("control requests refused: {}", summary.describe());
                self.audit.record_refusals(&summary);
                self.metrics.control_refused(summary.count);
            }
        }
    }

    /// Refreshes the metrics that describe the present: live sessions and the
    /// kernel's counters.
    fn publish_metrics(&self) {
        let now = clock::boot_ns();
        let samples: Vec<(SessionKind, f64, Option<f64>, &str)> = self
            .table
            .iter()
            .map(|s| {
                let t = self.timing(s);
                (
                    s.kind,
                    clock::seconds_between(t.last_input_ns, now),
                    t.last_network_ns.map(|n| clock::seconds_between(n, now)),
                    s.user.as_str(),
                )
            })
            .collect();
        let live: Vec<LiveSample<'_>> = samples
            .iter()
            .map(
                |&(kind, idle_seconds, network_idle_seconds, user)| LiveSample {
                    kind,
                    idle_seconds,
                    network_idle_seconds,
                    user,
                },
            )
            .collect();
        self.metrics.update_live(&live);
        self.metrics.set_kernel_counters(&self.maps.counters());
    }

    pub(super) fn events_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// True when `pid` is one of the login's own processes (its identity, its sshd
/// processes, a terminal's leader), which the kernel counts in the login; a
/// terminal's server is not unless it is one of those.
fn is_member(login: &Login, pid: u32) -> bool {
    pid == login.identity.pid
        || login.transports.contains(&pid)
        || login.terminals.iter().any(|t| t.leader.pid == pid)
}

/// Whether process `pid` exists (a zombie does), by a null signal: a /proc read
/// would format the whole stat line, once per process of every end.
fn process_exists(pid: u32) -> bool {
    // Not 0 or negative: those name process groups, not a process.
    let Ok(pid @ 1..) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH)
}

/// The kernel flags login `login` needs on its process `pid`: exit watch on its
/// identity, terminals' leaders and servers, and sshd processes; transport on the
/// sshd process that relays what the person sends; UDP on a mosh-server.
fn flags_for(login: &Login, pid: u32) -> u32 {
    let mut flags = 0;
    if pid == login.identity.pid {
        flags |= proc_flags::WATCH_EXIT;
        if login.kind == SessionKind::Mosh {
            flags |= proc_flags::WATCH_UDP;
        }
    }
    if login.transports.contains(&pid) {
        flags |= proc_flags::WATCH_EXIT;
        if relays_input(login, pid) {
            flags |= proc_flags::TRANSPORT;
        }
    }
    if login
        .terminals
        .iter()
        .any(|t| t.leader.pid == pid || t.server.is_some_and(|s| s.pid == pid))
    {
        flags |= proc_flags::WATCH_EXIT;
    }
    flags
}

/// True when `pid`, one of the ssh connection's processes, relays what the person
/// sends: the user's side, not the privileged monitor (the login's identity), which
/// only answers the user side's requests (signatures, log lines) over channels of
/// their own. A connection whose user side is not known yet has only the monitor.
fn relays_input(login: &Login, pid: u32) -> bool {
    login.kind == SessionKind::Ssh && (pid != login.identity.pid || login.transports.len() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::login_key;

    #[test]
    fn each_process_of_a_login_gets_the_flags_it_needs() {
        let p = |pid: u32| ProcRef {
            pid,
            start_ticks: pid as u64,
        };
        let resolved = Resolved {
            terminal: Some(Terminal {
                key: TtyKey {
                    rdev: 1,
                    pts_dev: 2,
                },
                leader: p(12),
                server: Some(p(11)),
            }),
            transports: vec![11, 10],
            listener: Some(1),
            ..Resolved::example(p(10))
        };
        let mut login = Login::from_resolved(resolved, 0);
        assert_eq!(login.key, login_key(&p(10)).0);
        let (exit, udp, transport) = (
            proc_flags::WATCH_EXIT,
            proc_flags::WATCH_UDP,
            proc_flags::TRANSPORT,
        );
        // The connection's monitor is watched; its user side relays the input.
        assert_eq!(flags_for(&login, 10), exit);
        assert_eq!(flags_for(&login, 11), exit | transport);
        assert_eq!(flags_for(&login, 12), exit);
        assert_eq!(flags_for(&login, 13), 0);
        // sshd's user process serves the terminal and is the connection's: a member.
        assert!(is_member(&login, 11) && is_member(&login, 12));
        // A multiplexer serving the terminal is watched, never adopted.
        login.transports.clear();
        assert!(!is_member(&login, 11));
        login.kind = SessionKind::Mosh;
        login.transports.clear();
        assert_eq!(flags_for(&login, 10), exit | udp);
    }
}
