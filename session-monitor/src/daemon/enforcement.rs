//! Deadlines: scheduling, warnings and ends.
//!
//! Each session has at most one pending deadline — its next warning or end — kept
//! in an ordered set, so the daemon sleeps exactly until the next one (no polling).
//! When a deadline fires, the decision is taken again from the kernel maps, which
//! always hold the latest input: a deadline that input has moved is just rescheduled.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    core::{Core, TerminationDone, WarningWritten},
    ending, warning,
};
use session_monitor_common::TtyKey;

use crate::{
    audit::{AuditEvent, SessionFields},
    clock,
    enforce::{
        EndReason, Next, Timing, Warned, notice, plan,
        terminate::{self},
    },
    labels::Notice,
    policy::Mode,
    sessions::{Login, LoginKey, ProcInfo, ProcRef, SessionKind},
};

/// Timers may fire a hair before the boot-clock instant they were converted from.
const TOLERANCE_NS: u64 = 1_000_000;

/// One walk of /proc: processes by session id and by parent, to reconstruct the
/// process trees of logins (processes older than the daemon, whose forks the kernel
/// did not see).
#[derive(Default)]
pub struct ProcSnapshot {
    by_sid: HashMap<u32, Vec<ProcRef>>,
    by_parent: HashMap<u32, Vec<ProcInfo>>,
    by_pid: HashMap<u32, ProcRef>,
}

impl ProcSnapshot {
    fn take() -> Self {
        let by_parent = crate::sessions::processes_by_parent();
        let mut by_sid: HashMap<u32, Vec<ProcRef>> = HashMap::new();
        let mut by_pid = HashMap::new();
        for p in by_parent.values().flatten() {
            by_sid.entry(p.sid).or_default().push(p.proc_ref());
            by_pid.insert(p.pid, p.proc_ref());
        }
        Self {
            by_sid,
            by_parent,
            by_pid,
        }
    }

    /// Process `pid` as the snapshot saw it, or as /proc shows it now when it is
    /// younger. A pid reused since is no risk: the target is opened by its start
    /// time, and a process that is gone is no target.
    fn process(&self, pid: u32) -> Option<ProcRef> {
        self.by_pid.get(&pid).copied().or_else(|| ProcRef::of(pid))
    }

    fn session(&self, sid: u32) -> Vec<ProcRef> {
        self.by_sid.get(&sid).cloned().unwrap_or_default()
    }

    /// Every process under `root` by the parent chain (`root` itself not included).
    fn descendants(&self, root: u32) -> Vec<ProcRef> {
        let mut out: Vec<ProcRef> = Vec::new();
        let mut todo = vec![root];
        while let Some(pid) = todo.pop() {
            for child in self.by_parent.get(&pid).into_iter().flatten() {
                if child.pid != root && !out.iter().any(|p| p.pid == child.pid) {
                    out.push(child.proc_ref());
                    todo.push(child.pid);
                }
            }
        }
        out
    }
}

/// The /proc snapshot shared by the ends being carried out: taken on the blocking
/// pool by the first one that needs it, reused by those that follow (a thousand
/// logins due at once walk /proc once, not a thousand times, and never on the
/// core: the core goes on deciding).
#[derive(Clone, Default)]
pub struct SharedSnapshot(Arc<Mutex<Option<Taken>>>);

/// A snapshot and when its walk began (CLOCK_BOOTTIME ns).
type Taken = (u64, Arc<ProcSnapshot>);

/// How old a shared /proc snapshot may be. A walk of a few thousand processes
/// takes some 30 ms on two CPUs, and the ends waiting for it wait that long:
/// taken every 100 ms, it stalled a burst of a thousand ends four times. What the
/// snapshot adds to the kernel's members is what the kernel did not see fork:
/// processes older than the daemon, and those forked just before a login was
/// tracked. The snapshot must therefore begin after the login was tracked (see
/// [`SharedSnapshot::fresh`]); a process forked after it by one the kernel tracks
/// is among the kernel's members, and every process on the terminal gets the
/// hangup when its leader exits.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

impl SharedSnapshot {
    /// A snapshot begun after `not_before_ns` (CLOCK_BOOTTIME) and at most
    /// [`SNAPSHOT_MAX_AGE`] old. Blocking: the others that need one meanwhile wait
    /// for this walk instead of starting their own.
    fn fresh(&self, not_before_ns: u64) -> Arc<ProcSnapshot> {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = clock::boot_ns();
        if let Some((at, snapshot)) = held.as_ref()
            && *at > not_before_ns
            && now.saturating_sub(*at) <= SNAPSHOT_MAX_AGE.as_nanos() as u64
        {
            return snapshot.clone();
        }
        let snapshot = Arc::new(ProcSnapshot::take());
        *held = Some((now, snapshot.clone()));
        snapshot
    }
}

/// What a login's process tree is found from: the kernel's members (exact) and the
/// processes whose descendants (the identity) or session (each terminal's leader)
/// belong to it, looked up in a [`ProcSnapshot`] begun after the login was tracked.
pub(super) struct TreeRoots {
    exact: Vec<u32>,
    identity: ProcRef,
    leaders: Vec<ProcRef>,
    tracked_since_ns: u64,
}

impl TreeRoots {
    pub(super) fn tree(self, snapshots: &SharedSnapshot) -> terminate::Tree {
        let snapshot = snapshots.fresh(self.tracked_since_ns);
        // Through a process the snapshot saw as the one recorded: its pid may have
        // been another process's by then (see `terminate::Tree::through`).
        let seen = |p: &ProcRef| snapshot.by_pid.get(&p.pid) == Some(p);
        let mut through = Vec::new();
        if seen(&self.identity) {
            through.extend(snapshot.descendants(self.identity.pid));
        }
        for leader in self.leaders.iter().filter(|l| seen(l)) {
            through.extend(snapshot.session(leader.pid));
        }
        terminate::Tree {
            exact: self
                .exact
                .into_iter()
                .filter_map(|pid| snapshot.process(pid))
                .collect(),
            through,
        }
    }
}

impl Core {
    /// The login's own last input: its terminals' and its transport's, for the view
    /// and for its user's presence.
    pub(super) fn own_last_input(&self, login: &Login) -> u64 {
        let terminals: Vec<_> = login
            .terminals
            .iter()
            .map(|t| self.maps.activity(&t.key))
            .collect();
        let transport = self
            .maps
            .login_activity(login.key)
            .map_or(0, |a| a.last_input_ns);
        login.last_input_ns(&terminals, transport)
    }

    pub(super) fn timing(&self, login: &Login) -> Timing {
        let server = login
            .has_network_peer()
            .then(|| self.maps.proc_state(login.identity.pid))
            .flatten();
        let last_input_ns = match login.nested_in {
            // A nested login's own input may be a loop feeding it.
            Some(_) => match self.presence_ns(login.uid) {
                0 => login.started_ns,
                seen => seen,
            },
            None => self.own_last_input(login),
        };
        Timing {
            started_ns: login.started_ns,
            last_input_ns,
            last_network_ns: login.last_network_ns(server.as_ref()),
        }
    }

    /// The login's next warning or end, from its current state.
    pub(super) fn next_for(&self, key: &LoginKey) -> Next {
        let Some(login) = self.table.get(key) else {
            return Next::Never;
        };
        self.next_with(login, &self.timing(login))
    }

    /// The same from timestamps already read (each read is a few map lookups, and a
    /// thousand logins fall due together).
    fn next_with(&self, login: &Login, timing: &Timing) -> Next {
        plan(&login.resolution.limits, timing, login.warned.as_ref())
    }

    pub(super) fn schedule_session(&mut self, key: &LoginKey) {
        let Some(login) = self.table.get(key).filter(|l| l.ending.is_none()) else {
            self.unschedule(key);
            return;
        };
        let timing = self.timing(login);
        self.schedule_with(key, &timing);
    }

    /// Schedules the login's next deadline from `timing`, read just now.
    fn schedule_with(&mut self, key: &LoginKey, timing: &Timing) {
        self.unschedule(key);
        let Some(login) = self.table.get(key) else {
            return;
        };
        if login.ending.is_some() {
            return;
        }
        let next = self.next_with(login, timing);
        let Some(at) = next.at_ns() else {
            return;
        };
        if let Next::End { reason, .. } = next
            && login.reported_end == Some((reason, at))
        {
            return; // dry-run: already reported; wait for the deadline to move
        }
        self.schedule.insert((at, *key));
        if let Some(login) = self.table.get_mut(key) {
            login.due = Some(at);
        }
    }

    pub(super) fn unschedule(&mut self, key: &LoginKey) {
        let due = self.table.get_mut(key).and_then(|l| l.due.take());
        self.unschedule_at(key, due);
    }

    /// Drops the schedule entry of a login (also one already out of the table).
    pub(super) fn unschedule_at(&mut self, key: &LoginKey, due: Option<u64>) {
        if let Some(at) = due {
            self.schedule.remove(&(at, *key));
        }
    }

    /// Input moved the idle deadline; a pending idle warning is now obsolete. Input
    /// that comes after the end was decided saves nothing: the end goes on, and its
    /// warning stays given.
    pub(super) fn on_input(&mut self, key: &LoginKey) {
        if let Some(s) = self.table.get(key)
            && s.nested_in.is_none()
        {
            let uid = s.uid;
            self.reschedule_nested_of(uid);
        }
        let last_input = self.table.get(key).map(|s| self.timing(s).last_input_ns);
        if let (Some(login), Some(last)) = (self.table.get_mut(key), last_input)
            && login.ending.is_none()
            && login
                .warned
                .is_some_and(|w| w.reason == EndReason::Idle && last > w.at_ns)
        {
            login.warned = None;
            login.reported_end = None;
            self.given_changed = true;
            tracing::info!(id = %login.id, "input after the idle warning: the session stays open");
        }
        self.schedule_session(key);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let (at, _) = self.schedule.first()?;
        let now = clock::boot_ns();
        Some(Instant::now() + Duration::from_nanos(at.saturating_sub(now)))
    }

    /// Acts on every deadline that is due.
    pub fn on_deadlines(&mut self) {
        let now = clock::boot_ns();
        while let Some(&(at, key)) = self.schedule.first() {
            if at > now + TOLERANCE_NS {
                break;
            }
            self.unschedule(&key);
            self.act(&key, now);
        }
        self.save_given_warnings();
    }

    fn act(&mut self, key: &LoginKey, now: u64) {
        let Some(login) = self.table.get(key).filter(|l| l.ending.is_none()) else {
            return;
        };
        // Read once: the warning's record and the next deadline use the same.
        let timing = self.timing(login);
        match self.next_with(login, &timing) {
            Next::Warn {
                at_ns,
                end_ns,
                reason,
            } if at_ns <= now + TOLERANCE_NS => {
                self.warn(key, reason, end_ns, now, &timing);
                self.schedule_with(key, &timing);
            }
            Next::End { at_ns, reason } if at_ns <= now + TOLERANCE_NS => {
                self.end_by_policy(key, reason, at_ns)
            }
            _ => self.schedule_with(key, &timing),
        }
    }

    fn warn(&mut self, key: &LoginKey, reason: EndReason, end_ns: u64, now: u64, timing: &Timing) {
        let Some(login) = self.table.get(key) else {
            return;
        };
        let limits = &login.resolution.limits;
        let end_at = end_ns.max(now + limits.warn_before.as_nanos() as u64);
        let in_secs = (end_at - now).div_ceil(1_000_000_000);
        let limit = match reason {
            EndReason::Lifetime => limits.max_session,
            _ => limits.idle_timeout,
        }
        .unwrap_or_default();
        let dry_run = self.mode() == Mode::DryRun;
        // A login without a terminal has nowhere to show the warning: the audit log
        // and the metrics say what happened.
        if !dry_run && !login.terminals.is_empty() {
            // Written off the core's loop, with the other warnings of this turn
            // ([`Core::carry_out_decisions`]); refusals come back to the core
            // ([`Core::on_warning_written`]) to be audited.
            let text = notice::warning_text(reason, in_secs, limit.as_secs());
            self.pending_warnings
                .push(warning::Warning::to(login, text));
        }
        tracing::info!(id = %login.id, tty = %login.tty(), user = %login.user, %reason, in_secs, dry_run, "warning");
        self.audit.record(AuditEvent::Warning {
            session: SessionFields::of(login, &login.resolution.rule, timing.last_input_ns, now),
            reason,
            end_in_seconds: in_secs,
            dry_run,
            on_screen: !login.terminals.is_empty(),
        });
        self.metrics.warning(login.kind, reason);
        if let Some(login) = self.table.get_mut(key) {
            login.warned = Some(Warned {
                reason,
                end_ns,
                at_ns: now,
            });
            self.given_changed = true;
        }
    }

    /// The warning's terminals that refused it (see [`super::warning::start`]).
    pub fn on_warning_written(&mut self, written: WarningWritten) {
        if self
            .table
            .get(&written.key)
            .is_none_or(|s| s.id != written.session_id)
        {
            return;
        }
        for (tty, why) in written.refused {
            self.record_notice_refused(&written.key, &tty, Notice::Warning, &why);
        }
    }

    fn end_by_policy(&mut self, key: &LoginKey, reason: EndReason, at_ns: u64) {
        let Some(login) = self.table.get(key) else {
            return;
        };
        let limits = &login.resolution.limits;
        let limit = match reason {
            EndReason::Idle => limits.idle_timeout,
            EndReason::Lifetime => limits.max_session,
            EndReason::Network => limits.network_timeout,
            _ => None,
        };
        let detail = notice::spoken_duration(limit.unwrap_or_default().as_secs());
        self.metrics.end_lateness(
            login.kind,
            reason,
            clock::seconds_between(at_ns, clock::boot_ns()),
        );
        if self.mode() == Mode::DryRun {
            let now = clock::boot_ns();
            let timing = self.timing(login);
            tracing::info!(id = %login.id, tty = %login.tty(), user = %login.user, %reason, "dry-run: would end the session");
            self.audit.record(AuditEvent::WouldEnd {
                session: SessionFields::of(
                    login,
                    &login.resolution.rule,
                    timing.last_input_ns,
                    now,
                ),
                reason,
                dry_run: true,
            });
            self.metrics.would_end(login.kind, reason);
            if let Some(login) = self.table.get_mut(key) {
                login.reported_end = Some((reason, at_ns));
            }
            return;
        }
        self.start_termination(key, reason, &detail);
    }

    /// Writes the closing line and ends the login's whole process tree in the
    /// background; the end is recorded when that finishes
    /// ([`Core::on_termination_done`]).
    ///
    /// The tree: every process the kernel saw forked from the login (whatever
    /// `setsid`, `nohup` or a double fork did), plus what /proc shows for processes
    /// older than the daemon: the identity's descendants by parent, each terminal's
    /// session, and the login's own logind scope. (A revocation also ends every
    /// process of the user, separately: see `end_user_processes`.) Never the
    /// daemon, its ancestors, pid 1 or an sshd listener; a terminal server (tmux)
    /// only when it serves this login alone.
    ///
    /// The core task only decides: the closing line, the cgroup and the signals are
    /// /proc and terminal I/O, done off the core with the other ends of the same
    /// turn ([`Core::carry_out_decisions`], [`ending`]), so that when many logins
    /// fall due together the last decision is not late by all the others' I/O. The
    /// kernel's members are read here (one walk of the map shared by the ends of
    /// [`super::core::MEMBERS_MAX_AGE`]); the /proc snapshot is taken or shared off
    /// the core.
    pub(super) fn start_termination(&mut self, key: &LoginKey, reason: EndReason, detail: &str) {
        let decided = std::time::Instant::now();
        let Some(login) = self.table.get(key) else {
            return;
        };
        if login.ending.is_some() {
            return;
        }
        // A terminal's server is ended only when it serves this login alone: one
        // tmux server holds many terminals, an sshd or mosh-server process only one
        // login's.
        let mut servers: Vec<ProcRef> = vec![login.identity];
        // A container runtime's holder never is: containerd-shim serves the whole
        // container (its main process and every exec), and an exec ends with its shell.
        for t in &login.terminals {
            if let Some(srv) = t.server
                && login.kind != SessionKind::Container
                && self.table.logins_of_pid(srv.pid).iter().all(|k| k == key)
                && !servers.contains(&srv)
            {
                servers.push(srv);
            }
        }
        let terminals: Vec<(ProcRef, TtyKey)> =
            login.terminals.iter().map(|t| (t.leader, t.key)).collect();
        let done = TerminationDone {
            key: *key,
            session_id: login.id.clone(),
            reason,
            decided_ns: clock::boot_ns(),
            last_input_ns: self.timing(login).last_input_ns,
            outcome: Default::default(),
            notice_refused: None,
            failed: None,
        };
        // Terminal servers that serve other logins too are not this login's to end.
        let mut never: Vec<u32> = self.listeners.iter().copied().collect();
        never.extend(
            login
                .terminals
                .iter()
                .filter_map(|t| t.server)
                .filter(|s| !servers.contains(s))
                .map(|s| s.pid),
        );
        // Only a server apart from the terminals' leaders forwards the closing line
        // (sshd, mosh-server); a login whose identity is its terminal's own leader (a
        // local shell) has no one to wait for: the line is already in the terminal.
        let forwarding = servers
            .iter()
            .any(|s| !terminals.iter().any(|(leader, _)| leader == s));
        let (first_leader, uid, id) = (login.leader(), login.uid, login.id.clone());
        let (identity, tracked_since_ns) = (login.identity, login.tracked_since_ns);
        let (tty, user) = (login.tty(), login.user.clone());
        let transports = login.transports.clone();
        let roots = self.tree_roots(*key, identity, &terminals, tracked_since_ns);
        self.pending_ends.push(ending::End {
            done,
            decided,
            grace: self.policy.kill_grace,
            work: ending::Work {
                terminals,
                closing: notice::closing_text(reason, detail),
                forwarding,
                first_leader,
                uid,
                servers,
                roots,
                snapshots: self.proc_snapshots.clone(),
                never,
                tty,
                user,
                transports,
            },
        });
        if let Some(login) = self.table.get_mut(key) {
            login.ending = Some(reason);
        }
        self.unschedule(key);
        // Logins nested in this one (a multiplexer started from it) are in its tree:
        // they end now, for the same reason.
        for inner in self.table.nested_in(&id) {
            self.start_termination(&inner, reason, detail);
        }
    }

    /// Starts the warnings and ends decided in this turn of the core (by deadlines,
    /// a revocation, a request), in batches (see [`warning`], [`ending`]).
    pub fn carry_out_decisions(&mut self) {
        if !self.pending_warnings.is_empty() {
            let warnings = std::mem::take(&mut self.pending_warnings);
            warning::start(warnings, &self.notice_writers, &self.warnings_written);
        }
        if !self.pending_ends.is_empty() {
            let ends = std::mem::take(&mut self.pending_ends);
            ending::start(ends, &self.notice_writers, &self.terminations);
        }
    }

    /// Where the login's process tree is found: the kernel's members of the login
    /// (exact, from one walk of the kernel map at most
    /// [`super::core::MEMBERS_MAX_AGE`] old), and the identity and the terminals'
    /// leaders, whose descendants and sessions the termination looks up in /proc
    /// (off the core, like the members' start times).
    fn tree_roots(
        &mut self,
        key: LoginKey,
        identity: ProcRef,
        terminals: &[(ProcRef, TtyKey)],
        tracked_since_ns: u64,
    ) -> TreeRoots {
        let fresh = self
            .members
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() <= super::core::MEMBERS_MAX_AGE);
        if !fresh {
            let mut by_login: HashMap<LoginKey, Vec<u32>> = HashMap::new();
            for (tgid, state) in self.maps.memberships() {
                if state.login != 0 {
                    by_login.entry(state.login).or_default().push(tgid);
                }
            }
            self.members = Some((Instant::now(), by_login));
        }
        let exact = self
            .members
            .as_ref()
            .and_then(|(_, by_login)| by_login.get(&key))
            .cloned()
            .unwrap_or_default();
        TreeRoots {
            exact,
            identity,
            leaders: terminals.iter().map(|(leader, _)| *leader).collect(),
            tracked_since_ns,
        }
    }

    /// A line the daemon did not write because what it found was not the session's
    /// terminal (see [`notice::write_to_terminal`]): recorded, as it may be a user
    /// trying to turn the daemon's write against another file.
    fn record_notice_refused(&mut self, key: &LoginKey, tty: &TtyKey, notice: Notice, why: &str) {
        let Some(session) = self.table.get(key) else {
            return;
        };
        let now = clock::boot_ns();
        let timing = self.timing(session);
        let tty = crate::sessions::tty_name(tty);
        tracing::warn!(id = %session.id, %tty, user = %session.user, %notice, why, "did not write to the terminal: refused");
        self.audit.record(AuditEvent::NoticeRefused {
            session: SessionFields::of(
                session,
                &session.resolution.rule,
                timing.last_input_ns,
                now,
            ),
            terminal: tty,
            notice,
            why: why.to_string(),
        });
    }

    pub fn on_termination_done(&mut self, done: TerminationDone) {
        if let Some(error) = &done.failed {
            self.on_termination_failed(&done, error);
            return;
        }
        if let Some(why) = &done.notice_refused
            && self
                .table
                .get(&done.key)
                .is_some_and(|s| s.id == done.session_id)
        {
            self.record_notice_refused(&done.key, &why.0, Notice::Closing, &why.1);
        }
        if !done.outcome.survivors.is_empty() {
            tracing::error!(survivors = ?done.outcome.survivors, "processes survived SIGKILL");
        }
        if self
            .table
            .get(&done.key)
            .is_some_and(|s| s.id == done.session_id)
        {
            self.end_session(
                &done.key,
                done.reason,
                Some((done.decided_ns, done.last_input_ns, &done.outcome)),
            );
        }
    }

    /// A termination that did not complete: audited, and the session, still open,
    /// is ended again after [`TERMINATION_RETRY`] (sooner if input or a revocation
    /// reschedules it).
    fn on_termination_failed(&mut self, done: &TerminationDone, error: &str) {
        let Some(login) = self
            .table
            .get(&done.key)
            .filter(|s| s.id == done.session_id)
        else {
            return;
        };
        let now = clock::boot_ns();
        let timing = self.timing(login);
        tracing::error!(id = %login.id, reason = %done.reason, "ending the session failed: {error}; trying again");
        self.audit.record(AuditEvent::TerminationFailed {
            session: SessionFields::of(login, &login.resolution.rule, timing.last_input_ns, now),
            reason: done.reason,
            error: error.to_string(),
            retry_in_seconds: TERMINATION_RETRY.as_secs(),
        });
        let key = done.key;
        self.unschedule(&key);
        let at = now + TERMINATION_RETRY.as_nanos() as u64;
        if let Some(login) = self.table.get_mut(&key) {
            login.ending = None;
            login.due = Some(at);
        }
        // The deadline then finds the end due again (or input moved it meanwhile).
        self.schedule.insert((at, key));
    }
}

/// How long after a failed termination the session's end is tried again.
const TERMINATION_RETRY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn a_snapshot_is_shared_only_by_logins_tracked_before_it() {
        let shared = SharedSnapshot::default();
        let tracked_long_ago = 0;
        let first = shared.fresh(tracked_long_ago);
        assert!(Arc::ptr_eq(&first, &shared.fresh(tracked_long_ago)));
        // A login tracked after the walk began needs a walk of its own: the
        // processes it forked just before it was tracked may be missing from it.
        let tracked_now = clock::boot_ns();
        let second = shared.fresh(tracked_now);
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(&second, &shared.fresh(tracked_long_ago)));
        let me = std::process::id();
        assert_eq!(second.process(me), ProcRef::of(me));
    }

    /// A new session whose id is its leader's pid, with one more member: what a
    /// session leader's pid can belong to once the leader has exited and the pid is
    /// reused. Killed when dropped (also when the test fails).
    struct NewSession {
        leader: std::process::Child,
        members: Vec<ProcRef>,
    }

    impl NewSession {
        fn start() -> Self {
            let leader = Command::new("setsid")
                .args(["sh", "-c", "sleep 600 & exec sleep 600"])
                .stdin(Stdio::null())
                .spawn()
                .expect("setsid");
            let mut session = NewSession {
                leader,
                members: Vec::new(),
            };
            let pid = session.leader.id();
            let started = std::time::Instant::now();
            while session.members.len() != 2 {
                assert!(started.elapsed() < Duration::from_secs(10), "no member");
                std::thread::sleep(Duration::from_millis(10));
                session.members = crate::sessions::processes_by_parent()
                    .into_values()
                    .flatten()
                    .filter(|p| p.sid == pid)
                    .map(|p| p.proc_ref())
                    .collect();
            }
            session
        }
    }

    impl Drop for NewSession {
        fn drop(&mut self) {
            for member in &self.members {
                // SAFETY: kill(2) with a pid and a signal number has no memory effects.
                unsafe { libc::kill(member.pid as i32, libc::SIGKILL) };
            }
            let _ = self.leader.kill();
            let _ = self.leader.wait();
        }
    }

    #[test]
    fn the_session_of_a_process_that_reused_the_leaders_pid_is_not_a_target() {
        let session = NewSession::start();
        let pid = session.leader.id();
        let uid = rustix::process::getuid().as_raw();
        let now_there = ProcRef::of(pid).expect("the new leader");
        // The leader the daemon recorded: the same pid, an earlier start.
        let ended = ProcRef {
            pid,
            start_ticks: now_there.start_ticks.saturating_sub(1),
        };
        let tree = |leader| {
            TreeRoots {
                exact: Vec::new(),
                identity: leader,
                leaders: vec![leader],
                tracked_since_ns: 0,
            }
            .tree(&SharedSnapshot::default())
        };
        let plan = terminate::collect_targets(ended, uid, Vec::new(), tree(ended), &[]);
        assert!(
            plan.targets.is_empty(),
            "{:?}",
            plan.targets.iter().map(|t| t.process).collect::<Vec<_>>()
        );
        // The same members are targets when their leader is the one recorded.
        let plan = terminate::collect_targets(now_there, uid, Vec::new(), tree(now_there), &[]);
        assert_eq!(plan.targets.len(), 2);
    }

    /// The ends of one turn are carried out together; each comes back to the core
    /// on its own, with its own processes ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_end_of_a_batch_comes_back_with_its_own_outcome() {
        const ENDS: usize = 11; // more than one blocking step's worth
        let sessions: Vec<NewSession> = (0..ENDS).map(|_| NewSession::start()).collect();
        let uid = rustix::process::getuid().as_raw();
        let snapshots = SharedSnapshot::default();
        let ends = sessions
            .iter()
            .enumerate()
            .map(|(i, session)| {
                let leader = ProcRef::of(session.leader.id()).expect("the leader");
                ending::End {
                    done: TerminationDone {
                        key: i as LoginKey,
                        session_id: format!("test-{i}"),
                        reason: EndReason::Idle,
                        decided_ns: clock::boot_ns(),
                        last_input_ns: 0,
                        outcome: Default::default(),
                        notice_refused: None,
                        failed: None,
                    },
                    decided: std::time::Instant::now(),
                    grace: Duration::from_secs(5),
                    work: ending::Work {
                        terminals: Vec::new(),
                        closing: String::new(),
                        forwarding: false,
                        first_leader: leader,
                        uid,
                        servers: Vec::new(),
                        roots: TreeRoots {
                            exact: Vec::new(),
                            identity: leader,
                            leaders: vec![leader],
                            tracked_since_ns: 0,
                        },
                        snapshots: snapshots.clone(),
                        never: Vec::new(),
                        tty: "-".into(),
                        user: "test".into(),
                        transports: Vec::new(),
                    },
                }
            })
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(ENDS);
        ending::start(ends, &Arc::new(tokio::sync::Semaphore::new(2)), &tx);
        let mut back = HashMap::new();
        for _ in 0..ENDS {
            let done = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("every end comes back")
                .expect("the channel is open");
            assert!(done.failed.is_none(), "{:?}", done.failed);
            back.insert(done.key, done);
        }
        for (i, session) in sessions.iter().enumerate() {
            let done = &back[&(i as LoginKey)];
            assert_eq!(done.session_id, format!("test-{i}"));
            // The leader (sleep, exec'd by sh) and the sleep it started.
            assert_eq!(done.outcome.targets, 2, "{:?}", done.outcome);
            assert_eq!(done.outcome.signals, ["SIGHUP"]);
            assert!(done.outcome.survivors.is_empty());
            for member in &session.members {
                assert!(!member.is_alive(), "{member:?} of session {i} survived");
            }
        }
    }

    fn proc(pid: u32, ppid: u32, sid: u32) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            sid,
            tty: None,
            start_ticks: pid as u64,
            comm: String::new(),
        }
    }

    #[test]
    fn the_tree_follows_parents_and_sessions() {
        // 10 (identity) -> 11 -> 12 (own session) -> 13; 20 is elsewhere in
        // session 11's terminal session, 30 is unrelated.
        let mut snapshot = ProcSnapshot::default();
        for p in [
            proc(11, 10, 11),
            proc(12, 11, 12),
            proc(13, 12, 12),
            proc(20, 1, 11),
            proc(30, 1, 30),
        ] {
            snapshot.by_sid.entry(p.sid).or_default().push(p.proc_ref());
            snapshot.by_parent.entry(p.ppid).or_default().push(p);
        }
        let mut tree: Vec<u32> = snapshot.descendants(10).iter().map(|p| p.pid).collect();
        tree.sort_unstable();
        assert_eq!(tree, [11, 12, 13]);
        let mut session: Vec<u32> = snapshot.session(11).iter().map(|p| p.pid).collect();
        session.sort_unstable();
        assert_eq!(session, [11, 20]);
        assert!(snapshot.descendants(30).is_empty());
    }
}
