//! The daemon's state, and how sessions come and go.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use session_monitor_common::{Event, EventKind, TtyKey, state::proc_flags};
use tokio::{sync::mpsc, time::Instant};

use super::audit_fields;
use crate::{
    audit::{AuditLog, Fields},
    clock,
    control::Incoming,
    enforce::{EndReason, Warned, terminate::Outcome},
    metrics::{LiveSample, Metrics},
    policy::{Mode, Policy, Resolution, Subject},
    probes::{KernelMaps, Probes},
    revoke::Revocations,
    sessions::{Resolved, Resolver, Session, SessionKind, SessionTable, discover_existing},
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
/// the kernel map (it is noticed again on its next write).
const UNRESOLVED_FORGET_AFTER: Duration = Duration::from_secs(60);

/// Per-session enforcement state.
pub struct Enforcement {
    pub resolution: Resolution,
    pub warned: Option<Warned>,
    /// Dry-run: the end already reported, so it is not reported again until the
    /// session's deadline moves.
    pub reported_end: Option<(EndReason, u64)>,
}

/// A termination that finished (all targets gone, or SIGKILL sent).
pub struct TerminationDone {
    pub key: TtyKey,
    pub session_id: String,
    pub reason: EndReason,
    /// When the end was decided (boot-time ns): what the record's times refer to.
    pub decided_ns: u64,
    pub outcome: Outcome,
}

pub struct CoreParts {
    pub probes: Probes,
    pub maps: KernelMaps,
    pub received: Arc<AtomicU64>,
    pub policy: Policy,
    pub config_path: PathBuf,
    pub force_dry_run: bool,
    pub audit: AuditLog,
    pub terminations: mpsc::Sender<TerminationDone>,
    pub revocations: Revocations,
    pub access: tokio::sync::watch::Sender<crate::control::Access>,
    pub metrics: Arc<Metrics>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Fingerprint of the policy file as it was read at start.
    pub policy_fingerprint: Option<String>,
}

pub struct Core {
    pub(super) probes: Probes,
    pub(super) maps: KernelMaps,
    pub(super) table: SessionTable,
    pending: HashMap<TtyKey, Pending>,
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
    pub(super) enforcement: HashMap<TtyKey, Enforcement>,
    /// Pending deadlines, ordered by time (CLOCK_BOOTTIME ns), and each session's.
    pub(super) schedule: BTreeSet<(u64, TtyKey)>,
    pub(super) due: HashMap<TtyKey, u64>,
    /// Sessions being ended, and why.
    pub(super) ending: HashMap<TtyKey, EndReason>,
    pub(super) terminations: mpsc::Sender<TerminationDone>,
    pub(super) reloads: (u64, u64),
    pub(super) revocations: Revocations,
    /// Who may use the control socket (changes with the policy's `control_group`).
    pub(super) access: tokio::sync::watch::Sender<crate::control::Access>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) metrics_addr: Option<std::net::SocketAddr>,
    /// Per uid: the last input on a session of theirs that is not nested and has
    /// ended (see `nesting`).
    pub(super) presence: HashMap<u32, u64>,
    /// Processes by session id, from one walk of /proc shared by the ends decided
    /// within [`MEMBERS_MAX_AGE`] (a thousand sessions due at once walk /proc once).
    pub(super) members: Option<(Instant, HashMap<u32, Vec<crate::sessions::ProcRef>>)>,
    /// Reconcile ticks so far.
    ticks: u64,
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
            table: SessionTable::default(),
            pending: HashMap::new(),
            unresolved: HashMap::new(),
            received: parts.received,
            started: Instant::now(),
            policy: parts.policy,
            policy_fingerprint: fingerprint,
            config_path: parts.config_path,
            force_dry_run: parts.force_dry_run,
            audit: parts.audit,
            enforcement: HashMap::new(),
            schedule: BTreeSet::new(),
            due: HashMap::new(),
            ending: HashMap::new(),
            terminations: parts.terminations,
            reloads: (0, 0),
            revocations: parts.revocations,
            access: parts.access,
            metrics: parts.metrics,
            metrics_addr: parts.metrics_addr,
            presence: HashMap::new(),
            members: None,
            ticks: 0,
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
        let mut f = Fields::new();
        f.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        f.insert("pid".into(), json!(std::process::id()));
        f.insert("backend".into(), json!(self.probes.backend.to_string()));
        f.insert("policy".into(), json!(self.policy.describe()));
        f.insert("mode".into(), json!(self.mode()));
        self.audit.record("daemon_start", f);
    }

    pub fn record_stop(&mut self) {
        let mut f = Fields::new();
        f.insert("pid".into(), json!(std::process::id()));
        f.insert("sessions".into(), json!(self.table.len()));
        self.audit.record("daemon_stop", f);
    }

    /// Sessions opened before the daemon started. Their idle time starts from the
    /// terminal's last access time, which the kernel updates when input is read.
    pub fn discover_existing(&mut self) {
        let found = discover_existing();
        let count = found.len();
        for resolved in found {
            let last_input = resolved.tty_atime.map(clock::system_to_boot).unwrap_or(0);
            if let Err(err) = self
                .maps
                .seed_activity(resolved.key, clock::boot_ns(), last_input)
            {
                tracing::warn!("{err:#}");
            }
            self.add_session(resolved, "discovered");
        }
        tracing::info!(sessions = count, "start-up discovery done");
        // Discovery reads all of /proc once; give the memory it used back.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    pub(super) fn resolve_policy(&self, session: &Session) -> Resolution {
        let mut resolution = self.policy.resolve(&Subject {
            user: &session.user,
            groups: &session.group_names,
            kind: session.kind,
        });
        // The daemon never ends the terminal session it runs in: its own ancestors
        // are protected from signals, so it could only close the terminal under
        // itself, again and again.
        if nix::unistd::getsid(None).is_ok_and(|sid| sid.as_raw() as u32 == session.leader.pid) {
            resolution.limits.exempt = true;
            resolution.rule = "daemon's own session".into();
        }
        resolution
    }

    fn add_session(&mut self, resolved: Resolved, how: &str) {
        let mut session = Session::from_resolved(resolved, clock::boot_ns());
        session.nested_in = self.outer_of(&session).map(|outer| outer.id.clone());
        // Interim (issue 11): the session is the login, numbered by its id; its
        // leader's descendants join it in the kernel at fork.
        let login = u64::from_str_radix(&session.id, 16).unwrap_or_default();
        let flags = self
            .maps
            .proc_state(session.leader.pid)
            .map_or(0, |s| s.flags)
            | proc_flags::WATCH_EXIT;
        if let Err(err) = self.maps.adopt(session.leader.pid, login, flags) {
            tracing::warn!("{err:#}");
        }
        // A leader that exited between the /proc read and the tracking above sends
        // no exit event: check once now that the kernel watches it.
        if !session.leader.is_alive() {
            if !self.table.pid_in_use(session.leader.pid) {
                self.maps.untrack(session.leader.pid);
            }
            return;
        }
        if let Some(server) = session.server {
            let mut flags = proc_flags::WATCH_EXIT;
            if session.kind == SessionKind::Mosh {
                flags |= proc_flags::WATCH_UDP;
            }
            if let Err(err) = self.maps.track(server.pid, flags) {
                tracing::warn!("{err:#}");
            }
        }
        let resolution = self.resolve_policy(&session);
        tracing::info!(
            id = %session.id,
            tty = %session.tty,
            kind = %session.kind,
            user = %session.user,
            leader = session.leader.pid,
            server = ?session.server.map(|s| s.pid),
            remote = ?session.remote,
            rule = %resolution.rule,
            nested_in = ?session.nested_in,
            "session {how}"
        );
        let key = session.key;
        let now = clock::boot_ns();
        let last_input = session.last_input_ns(self.maps.activity(&key).as_ref());
        let mut fields = audit_fields::session(&session, &resolution.rule, last_input, now);
        fields.insert("how".into(), json!(how));
        if let Some(parent) = &session.nested_in {
            fields.insert("nested_in".into(), json!(parent));
        }
        self.metrics.session_started(session.kind);
        self.audit.record("session_start", fields);
        self.unresolved.remove(&key);
        self.table.insert(session);
        self.enforcement.insert(
            key,
            Enforcement {
                resolution,
                warned: None,
                reported_end: None,
            },
        );
        if !self.enforce_revocation(&key) {
            self.schedule_session(&key);
        }
    }

    /// Removes a session that is gone and records why. `ended` is the termination
    /// this daemon carried out (when the end was decided, and what it took).
    pub(super) fn end_session(
        &mut self,
        key: &TtyKey,
        reason: EndReason,
        ended: Option<(u64, &Outcome)>,
    ) {
        let now = ended.map_or_else(clock::boot_ns, |(decided, _)| decided);
        let last_input = self
            .table
            .get(key)
            .map(|s| self.timing(s).last_input_ns)
            .unwrap_or(now);
        let Some(session) = self.table.remove(key) else {
            return;
        };
        self.remember_presence(&session, last_input);
        let rule = self
            .enforcement
            .remove(key)
            .map_or_else(|| "default".to_string(), |e| e.resolution.rule);
        self.ending.remove(key);
        self.unschedule(key);
        self.maps.forget_tty(key);
        for pid in std::iter::once(session.leader.pid).chain(session.server.map(|s| s.pid)) {
            if !self.table.pid_in_use(pid) {
                self.maps.untrack(pid);
            }
        }
        let mut fields = audit_fields::session(&session, &rule, last_input, now);
        fields.insert("reason".into(), json!(reason.as_str()));
        if let Some((_, outcome)) = ended {
            fields.insert("signals".into(), json!(outcome.signals));
            fields.insert("took_ms".into(), json!(outcome.took_ms));
            fields.insert("processes".into(), json!(outcome.targets));
            fields.insert("server_ended".into(), json!(outcome.server));
            if outcome.escaped > 0 {
                fields.insert("escaped_processes".into(), json!(outcome.escaped));
            }
            if !outcome.survivors.is_empty() {
                fields.insert("survivors".into(), json!(outcome.survivors));
            }
        }
        self.audit.record("session_end", fields);
        self.metrics.session_ended(
            session.kind,
            reason.as_str(),
            clock::seconds_between(session.started_ns, now),
            &session.user,
        );
        tracing::info!(id = %session.id, tty = %session.tty, user = %session.user, %reason, "session ended");
    }

    pub fn on_event(&mut self, event: Event) {
        match event.kind() {
            Some(EventKind::TtyFirstInput) | Some(EventKind::TtyFirstOutput) => {
                if !self.table.contains(&event.key) {
                    self.queue_resolution(event.key, Some(event.tgid));
                }
            }
            Some(EventKind::TtyInput) => {
                if self.table.contains(&event.key) {
                    self.on_input(&event.key);
                } else if !self.pending.contains_key(&event.key) {
                    self.queue_resolution(event.key, Some(event.tgid));
                }
            }
            Some(EventKind::ProcessExit) => {
                for key in self.table.keys_of_pid(event.tgid) {
                    // A session being ended is recorded when its termination completes.
                    if !self.ending.contains_key(&key) {
                        self.end_session(&key, EndReason::Logout, None);
                    }
                }
            }
            Some(EventKind::RevokedInputBlocked) => {
                tracing::warn!(
                    pid = event.tgid,
                    uid = event.value,
                    "input of a revoked user stopped in the kernel"
                );
                let mut f = Fields::new();
                f.insert("pid".into(), json!(event.tgid));
                f.insert("uid".into(), json!(event.value));
                f.insert("comm".into(), json!(comm(&event.comm)));
                if let Some(s) = self.table.get(&event.key) {
                    f.insert("session_id".into(), json!(s.id));
                    f.insert("tty".into(), json!(s.tty));
                }
                if event.login != 0 {
                    f.insert("login".into(), json!(format!("{:012x}", event.login)));
                }
                self.audit.record("input_blocked", f);
                if event.login != 0 {
                    // A transport's write into a pipe or socket: no terminal to
                    // resolve (issue 11: the login model acts on `event.login`).
                } else if self.table.contains(&event.key) {
                    self.enforce_revocation(&event.key);
                } else {
                    self.queue_resolution(event.key, None);
                }
            }
            // Logins without a terminal: not acted on yet (issue 11).
            Some(EventKind::LoginInput) | Some(EventKind::ListenerForked) => {}
            None => tracing::warn!(kind = event.kind, "unknown event kind"),
        }
    }

    fn queue_resolution(&mut self, key: TtyKey, hint: Option<u32>) {
        self.pending.entry(key).or_insert(Pending {
            hint,
            attempts: 0,
            next_try: Instant::now() + RESOLVE_BATCH_DELAY,
        });
    }

    pub fn next_resolution(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next_try).min()
    }

    /// Resolves every due terminal from one snapshot of /proc.
    pub fn resolve_pending(&mut self) {
        let now = Instant::now();
        let due: Vec<TtyKey> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return;
        }
        let mut resolver = Resolver::snapshot();
        for key in due {
            let Some(pending) = self.pending.get_mut(&key) else {
                continue;
            };
            if self.table.contains(&key) {
                self.pending.remove(&key);
                continue;
            }
            match resolver.resolve(key, pending.hint) {
                Some(resolved) => {
                    self.pending.remove(&key);
                    self.add_session(resolved, "started");
                }
                None => {
                    pending.attempts += 1;
                    if pending.attempts >= RESOLVE_QUICK_ATTEMPTS {
                        self.pending.remove(&key);
                        self.unresolved.entry(key).or_insert(now);
                    } else {
                        pending.next_try = now + Duration::from_millis(25 << pending.attempts);
                    }
                }
            }
        }
    }

    /// Runs every [`super::RECONCILE_INTERVAL`]. Exit events end sessions; this
    /// catches what events alone would miss: terminals not resolved yet (every
    /// tick), and a sweep of /proc and of the kernel map for exits and terminals the
    /// events missed (every 15th). Metrics are refreshed every tick. From
    /// [`LARGE`] sessions on, metrics and the /proc sweep slow down, so that the
    /// daemon stays cheap with ten thousand sessions.
    pub fn reconcile(&mut self) {
        self.ticks += 1;
        let large = self.table.len() >= LARGE;
        self.expire_revocations();
        self.nest_pending();
        if !large || self.ticks.is_multiple_of(5) {
            self.publish_metrics();
        }
        let sweep = self.ticks.is_multiple_of(15);
        if !large || sweep {
            self.sweep_exits();
        }
        let mut retry: Vec<TtyKey> = self.unresolved.keys().copied().collect();
        if sweep {
            retry.extend(self.maps.tty_keys());
            retry.sort();
            retry.dedup();
        }
        retry.retain(|k| !self.table.contains(k) && !self.pending.contains_key(k));
        if retry.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut resolver = Resolver::snapshot();
        for key in retry {
            match resolver.resolve(key, None) {
                Some(resolved) => self.add_session(resolved, "started"),
                None => {
                    let since = *self.unresolved.entry(key).or_insert(now);
                    if now.duration_since(since) >= UNRESOLVED_FORGET_AFTER {
                        self.unresolved.remove(&key);
                        self.maps.forget_tty(&key);
                    }
                }
            }
        }
    }

    /// Ends sessions whose leader or server is gone without an exit event (each
    /// process checked once, however many sessions it serves).
    fn sweep_exits(&mut self) {
        let mut alive: HashMap<crate::sessions::ProcRef, bool> = HashMap::new();
        let mut is_alive =
            |p: crate::sessions::ProcRef| *alive.entry(p).or_insert_with(|| p.is_alive());
        let dead: Vec<TtyKey> = self
            .table
            .iter()
            .filter(|s| !self.ending.contains_key(&s.key))
            .filter(|s| !is_alive(s.leader) || s.server.is_some_and(|srv| !is_alive(srv)))
            .map(|s| s.key)
            .collect();
        for key in dead {
            self.end_session(&key, EndReason::Logout, None);
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
                let mut f = Fields::new();
                f.insert("caller_uid".into(), json!(caller.uid));
                f.insert("caller_pid".into(), json!(caller.pid));
                f.insert("command".into(), json!(name));
                f.insert("ok".into(), json!(response.ok));
                if let Some(error) = &response.error {
                    f.insert("error".into(), json!(error));
                }
                self.audit.record("control_request", f);
                let _ = reply.send(response);
            }
            Incoming::Refused { caller, reason } => {
                tracing::warn!(uid = caller.uid, pid = ?caller.pid, "control request refused: {reason}");
                let mut f = Fields::new();
                f.insert("caller_uid".into(), json!(caller.uid));
                f.insert("caller_pid".into(), json!(caller.pid));
                f.insert("error".into(), json!(reason));
                self.audit.record("control_refused", f);
                self.metrics.control_refused();
            }
        }
    }

    /// Refreshes the metrics that describe the present: live sessions and the
    /// kernel's counters.
    fn publish_metrics(&self) {
        let now = clock::boot_ns();
        let samples: Vec<(crate::sessions::SessionKind, f64, Option<f64>, &str)> = self
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

/// A `comm` field as text.
fn comm(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
