//! Deadlines: scheduling, warnings and ends.
//!
//! Each session has at most one pending deadline — its next warning or end — kept
//! in an ordered set, so the daemon sleeps exactly until the next one (no polling).
//! When a deadline fires, the decision is taken again from the kernel maps, which
//! always hold the latest input: a deadline that input has moved is just rescheduled.

use std::time::Duration;

use serde_json::json;
use session_monitor_common::TtyKey;
use tokio::time::Instant;

use super::{
    audit_fields,
    core::{Core, TerminationDone},
};
use crate::{
    clock,
    enforce::{
        EndReason, Next, Timing, Warned, notice, plan,
        terminate::{self},
    },
    policy::Mode,
    sessions::{Session, SessionKind},
};

/// How long a session's server (sshd, mosh-server) may take to exit by itself after
/// the shell, forwarding the closing line, before it is signalled too.
const SERVER_FORWARDS_CLOSING_LINE: Duration = Duration::from_millis(200);

/// Timers may fire a hair before the boot-clock instant they were converted from.
const TOLERANCE_NS: u64 = 1_000_000;

impl Core {
    pub(super) fn timing(&self, session: &Session) -> Timing {
        let activity = self.maps.activity(&session.key);
        let server = session.server.and_then(|s| self.maps.proc_state(s.pid));
        let last_input_ns = match session.nested_in {
            // A nested terminal's own input may be a loop feeding it.
            Some(_) => match self.presence_ns(session.uid) {
                0 => session.started_ns,
                seen => seen,
            },
            None => session.last_input_ns(activity.as_ref()),
        };
        Timing {
            started_ns: session.started_ns,
            last_input_ns,
            last_network_ns: session.last_network_ns(server.as_ref()),
        }
    }

    /// The session's next warning or end, from its current state.
    pub(super) fn next_for(&self, key: &TtyKey) -> Next {
        let (Some(session), Some(e)) = (self.table.get(key), self.enforcement.get(key)) else {
            return Next::Never;
        };
        plan(
            &e.resolution.limits,
            &self.timing(session),
            e.warned.as_ref(),
        )
    }

    pub(super) fn schedule_session(&mut self, key: &TtyKey) {
        self.unschedule(key);
        if self.ending.contains_key(key) {
            return;
        }
        let next = self.next_for(key);
        let Some(at) = next.at_ns() else {
            return;
        };
        if let (Next::End { reason, .. }, Some(e)) = (next, self.enforcement.get(key))
            && e.reported_end == Some((reason, at))
        {
            return; // dry-run: already reported; wait for the deadline to move
        }
        self.schedule.insert((at, *key));
        self.due.insert(*key, at);
    }

    pub(super) fn unschedule(&mut self, key: &TtyKey) {
        if let Some(at) = self.due.remove(key) {
            self.schedule.remove(&(at, *key));
        }
    }

    /// Input moved the idle deadline; a pending idle warning is now obsolete.
    pub(super) fn on_input(&mut self, key: &TtyKey) {
        if let Some(s) = self.table.get(key)
            && s.nested_in.is_none()
        {
            let uid = s.uid;
            self.reschedule_nested_of(uid);
        }
        let last_input = self.table.get(key).map(|s| self.timing(s).last_input_ns);
        if let (Some(e), Some(last)) = (self.enforcement.get_mut(key), last_input)
            && e.warned
                .is_some_and(|w| w.reason == EndReason::Idle && last > w.at_ns)
        {
            e.warned = None;
            e.reported_end = None;
            self.given_changed = true;
            tracing::info!(tty = ?key, "input after the idle warning: the session stays open");
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

    fn act(&mut self, key: &TtyKey, now: u64) {
        if self.ending.contains_key(key) {
            return;
        }
        match self.next_for(key) {
            Next::Warn {
                at_ns,
                end_ns,
                reason,
            } if at_ns <= now + TOLERANCE_NS => {
                self.warn(key, reason, end_ns, now);
                self.schedule_session(key);
            }
            Next::End { at_ns, reason } if at_ns <= now + TOLERANCE_NS => {
                self.end_by_policy(key, reason, at_ns)
            }
            _ => self.schedule_session(key),
        }
    }

    fn warn(&mut self, key: &TtyKey, reason: EndReason, end_ns: u64, now: u64) {
        let (Some(session), Some(e)) = (self.table.get(key), self.enforcement.get(key)) else {
            return;
        };
        let limits = &e.resolution.limits;
        let end_at = end_ns.max(now + limits.warn_before.as_nanos() as u64);
        let in_secs = (end_at - now).div_ceil(1_000_000_000);
        let limit = match reason {
            EndReason::Lifetime => limits.max_session,
            _ => limits.idle_timeout,
        }
        .unwrap_or_default();
        let dry_run = self.mode() == Mode::DryRun;
        let refused = if dry_run {
            None
        } else {
            let text = notice::warning_text(reason, in_secs, limit.as_secs());
            match notice::write_to_terminal(session.leader, *key, &text) {
                Ok(()) => None,
                Err(notice::NoticeError::Refused(why)) => Some(why),
                Err(err) => {
                    tracing::warn!(id = %session.id, "could not write the warning to {}: {err}", session.tty);
                    None
                }
            }
        };
        if let Some(why) = refused {
            self.record_notice_refused(key, "warning", &why);
        }
        let (Some(session), Some(e)) = (self.table.get(key), self.enforcement.get(key)) else {
            return;
        };
        let timing = self.timing(session);
        let mut fields =
            audit_fields::session(session, &e.resolution.rule, timing.last_input_ns, now);
        fields.insert("reason".into(), json!(reason.as_str()));
        fields.insert("end_in_seconds".into(), json!(in_secs));
        fields.insert("dry_run".into(), json!(dry_run));
        tracing::info!(id = %session.id, tty = %session.tty, user = %session.user, %reason, in_secs, dry_run, "warning");
        self.audit.record("warning", fields);
        self.metrics.warning(session.kind, reason.as_str());
        if let Some(e) = self.enforcement.get_mut(key) {
            e.warned = Some(Warned {
                reason,
                end_ns,
                at_ns: now,
            });
            self.given_changed = true;
        }
    }

    fn end_by_policy(&mut self, key: &TtyKey, reason: EndReason, at_ns: u64) {
        let (Some(session), Some(e)) = (self.table.get(key), self.enforcement.get(key)) else {
            return;
        };
        let limits = &e.resolution.limits;
        let limit = match reason {
            EndReason::Idle => limits.idle_timeout,
            EndReason::Lifetime => limits.max_session,
            EndReason::Network => limits.network_timeout,
            _ => None,
        };
        let detail = notice::spoken_duration(limit.unwrap_or_default().as_secs());
        self.metrics.end_lateness(
            session.kind,
            reason.as_str(),
            clock::seconds_between(at_ns, clock::boot_ns()),
        );
        if self.mode() == Mode::DryRun {
            let now = clock::boot_ns();
            let timing = self.timing(session);
            let mut fields =
                audit_fields::session(session, &e.resolution.rule, timing.last_input_ns, now);
            fields.insert("reason".into(), json!(reason.as_str()));
            fields.insert("dry_run".into(), json!(true));
            tracing::info!(id = %session.id, tty = %session.tty, user = %session.user, %reason, "dry-run: would end the session");
            self.audit.record("would_end", fields);
            self.metrics.would_end(session.kind, reason.as_str());
            if let Some(e) = self.enforcement.get_mut(key) {
                e.reported_end = Some((reason, at_ns));
            }
            return;
        }
        self.start_termination(key, reason, &detail);
    }

    /// Writes the closing line and ends the session's processes in the background;
    /// the end is recorded when that finishes ([`Core::on_termination_done`]).
    ///
    /// The core task only decides: the closing line, the session's cgroup and the
    /// signals are /proc and terminal I/O, done in the spawned task, so that when many
    /// sessions fall due together the last decision is not late by all the others'
    /// I/O. The member list comes from the shared snapshot, taken here.
    pub(super) fn start_termination(&mut self, key: &TtyKey, reason: EndReason, detail: &str) {
        let Some(session) = self.table.get(key) else {
            return;
        };
        if self.ending.contains_key(key) {
            return;
        }
        // The server is ended only when it serves this terminal alone: one tmux
        // server holds many terminals, an sshd or mosh-server process only one. A
        // container runtime's holder never is: containerd-shim serves the whole
        // container (its main process and every exec), and an exec ends with its shell.
        let server = session
            .server
            .filter(|_| session.kind != SessionKind::Container)
            .filter(|srv| self.table.keys_of_pid(srv.pid).iter().all(|k| k == key));
        let (leader, uid) = (session.leader, session.uid);
        let (tty, user) = (session.tty.clone(), session.user.clone());
        let done = TerminationDone {
            key: *key,
            session_id: session.id.clone(),
            reason,
            decided_ns: clock::boot_ns(),
            outcome: Default::default(),
            notice_refused: None,
        };
        let members = self.session_members(leader.pid);
        let closing = notice::closing_text(reason, detail);
        let grace = self.policy.kill_grace;
        let tx = self.terminations.clone();
        let key = *key;
        self.ending.insert(key, reason);
        self.unschedule(&key);
        tokio::spawn(async move {
            let written = notice::write_to_terminal(leader, key, &closing);
            // The server forwards the line to the client once the shell is gone;
            // give it that moment before signalling it.
            let server_grace = match written {
                Ok(()) => SERVER_FORWARDS_CLOSING_LINE,
                Err(_) => Duration::ZERO,
            };
            let notice_refused = match written {
                Ok(()) => None,
                Err(notice::NoticeError::Refused(why)) => Some(why),
                Err(err) => {
                    tracing::debug!(id = %done.session_id, "closing line not written: {err}");
                    None
                }
            };
            let plan = terminate::collect_targets(leader, uid, server, members);
            tracing::info!(id = %done.session_id, %tty, %user, %reason, processes = plan.targets.len(), own_cgroup = ?plan.cgroup, "ending session");
            let outcome = terminate::escalate(plan, grace, server_grace).await;
            let _ = tx
                .send(TerminationDone {
                    outcome,
                    notice_refused,
                    ..done
                })
                .await;
        });
    }

    /// The processes of terminal session `sid`, from a snapshot at most
    /// [`super::core::MEMBERS_MAX_AGE`] old.
    fn session_members(&mut self, sid: u32) -> Vec<crate::sessions::ProcRef> {
        let fresh = self
            .members
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() <= super::core::MEMBERS_MAX_AGE);
        if !fresh {
            self.members = Some((Instant::now(), crate::sessions::processes_by_session()));
        }
        self.members
            .as_ref()
            .and_then(|(_, by_sid)| by_sid.get(&sid).cloned())
            .unwrap_or_default()
    }

    /// A line the daemon did not write because what it found was not the session's
    /// terminal (see [`notice::write_to_terminal`]): recorded, as it may be a user
    /// trying to turn the daemon's write against another file.
    fn record_notice_refused(&mut self, key: &TtyKey, notice: &str, why: &str) {
        let Some(session) = self.table.get(key) else {
            return;
        };
        let rule = self
            .enforcement
            .get(key)
            .map_or_else(|| "default".to_string(), |e| e.resolution.rule.clone());
        let now = clock::boot_ns();
        let timing = self.timing(session);
        let mut fields = audit_fields::session(session, &rule, timing.last_input_ns, now);
        fields.insert("notice".into(), json!(notice));
        fields.insert("why".into(), json!(why));
        tracing::warn!(id = %session.id, tty = %session.tty, user = %session.user, notice, why, "did not write to the terminal: refused");
        self.audit.record("notice_refused", fields);
    }

    pub fn on_termination_done(&mut self, done: TerminationDone) {
        if let Some(why) = &done.notice_refused
            && self
                .table
                .get(&done.key)
                .is_some_and(|s| s.id == done.session_id)
        {
            self.record_notice_refused(&done.key, "closing", why);
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
                Some((done.decided_ns, &done.outcome)),
            );
        }
    }
}
