//! A login's user, learned again when its leader stops being root.
//!
//! A terminal is resolved when it is first written, and its login's user is its
//! leader's. A leader that writes to the terminal as root and only then switches to
//! the user it logs in (a login program other than the getty names the resolver
//! waits for, `setpriv` run by a root shell) keeps its pid across the switch:
//! resolved before it, the login would stay root's, under root's rule, and a
//! revocation of the user would not name it.

use super::core::Core;
use crate::{
    audit::{AuditEvent, SessionFields},
    clock,
    sessions::{LoginKey, credentials},
};

impl Core {
    /// On an input notice of login `key` (at most one per terminal per notice
    /// interval): while the login is root's, reads its leader's credentials again
    /// and, once the leader runs as another user, makes the login that user's. One
    /// read of /proc per notice of a root login; nothing for any other login.
    pub(super) fn recheck_user(&mut self, key: &LoginKey) {
        let Some(leader) = self
            .table
            .get(key)
            .filter(|login| login.uid == 0 && login.ending.is_none())
            .map(|login| login.leader())
        else {
            return;
        };
        let Some((uid, gid, groups)) = credentials(leader.pid) else {
            return;
        };
        // Read by pid: the leader's only if it is still the same process.
        if uid == 0 || !leader.is_alive() {
            return;
        }
        let Some(login) = self.table.get_mut(key) else {
            return;
        };
        let previous_user = std::mem::take(&mut login.user);
        self.table.set_user(key, uid, gid, groups);
        self.apply_policy_to(key);
        let Some(login) = self.table.get(key) else {
            return;
        };
        let rule = &login.resolution.rule;
        tracing::info!(
            id = %login.id,
            user = %login.user,
            %previous_user,
            leader = leader.pid,
            %rule,
            "the session's leader switched from root to its user"
        );
        let last_input = self.own_last_input(login);
        self.audit.record(AuditEvent::SessionUser {
            session: SessionFields::of(login, rule, last_input, clock::boot_ns()),
            previous_user,
            previous_uid: 0,
        });
        if self.enforce_revocation(key) {
            // A revoked user got in: whatever else of theirs runs ends too.
            self.end_user_processes(vec![uid]);
        }
    }
}
