//! Nested terminals: a multiplexer or `expect` started inside a session opens
//! terminals of its own, and a loop that feeds them (`tmux send-keys`) would keep
//! them "active" forever. Only input on the outermost terminal proves a person:
//! a nested terminal's own input does not count; its activity is its user's
//! presence on the sessions that are not nested (and, once those are gone, the
//! last presence seen there).
//!
//! A `local` terminal is nested when its transport runs on another session's
//! terminal (its controlling tty), or belongs to the same login (audit session id,
//! set by pam_loginuid and not changeable by the user) as a live ssh, mosh, console
//! or container session. A terminal emulator on a desktop belongs to no such
//! session and keeps counting its own input.

use super::core::Core;
use crate::sessions::{Login as Session, LoginKey, SessionKind};

impl Core {
    /// The outer session of `session`, if it is nested.
    pub(super) fn outer_of(&self, session: &Session) -> Option<&Session> {
        if session.kind != SessionKind::Local {
            return None;
        }
        if let Some(ctty) = session.server_ctty
            && let Some(outer) = self.table.of_tty(&ctty)
            && outer != session.key
            && let Some(outer) = self.table.get(&outer)
        {
            return Some(outer);
        }
        let login = session.server_audit_session?;
        self.table.outer_in_audit_session(login, &session.key)
    }

    /// Marks `key` as nested when its outer session is known. Once nested, always
    /// nested: the outer session ending does not make the inner one a person's.
    pub(super) fn nest(&mut self, key: &LoginKey) {
        let Some(session) = self.table.get(key) else {
            return;
        };
        if session.nested_in.is_some() {
            return;
        }
        let Some(outer) = self.outer_of(session).map(|o| o.id.clone()) else {
            return;
        };
        tracing::info!(id = %session.id, tty = %session.tty(), outer = %outer, "terminal nested in another session: its own input does not count");
        self.table.nest(key, outer);
        self.schedule_session(key);
    }

    /// Local terminals whose outer session may have appeared after them.
    pub(super) fn nest_pending(&mut self) {
        let candidates: Vec<LoginKey> = self
            .table
            .iter()
            .filter(|s| s.kind == SessionKind::Local && s.nested_in.is_none())
            .filter(|s| s.server_ctty.is_some() || s.server_audit_session.is_some())
            .map(|s| s.key)
            .collect();
        for key in candidates {
            self.nest(&key);
        }
    }

    /// When user `uid` was last present: the latest input on their sessions that
    /// are not nested, or what was remembered when such a session ended.
    pub(super) fn presence_ns(&self, uid: u32) -> u64 {
        let live = self
            .table
            .of_uid(uid)
            .filter(|s| s.nested_in.is_none())
            .map(|s| self.own_last_input(s))
            .max()
            .unwrap_or(0);
        live.max(self.presence.get(&uid).copied().unwrap_or(0))
    }

    /// A session that is not nested ended: remember its user's last presence.
    pub(super) fn remember_presence(&mut self, session: &Session, last_input_ns: u64) {
        if session.nested_in.is_none() {
            let seen = self.presence.entry(session.uid).or_insert(0);
            *seen = (*seen).max(last_input_ns);
        }
    }

    /// Input on a session that is not nested moves the deadlines of its user's
    /// nested terminals too.
    pub(super) fn reschedule_nested_of(&mut self, uid: u32) {
        let nested: Vec<LoginKey> = self.table.nested_of_uid(uid).map(|s| s.key).collect();
        for key in nested {
            self.schedule_session(&key);
        }
    }
}
