//! Revoking access: ending every live session of a user at once, keeping the user
//! out (new sessions end as soon as they appear, and the kernel stops their input
//! before it reaches a shell), lifting and expiring revocations.

use super::core::Core;
use crate::{
    audit::{AuditEvent, RevokedBy},
    control::{Caller, Lifted, Response, Revoke, Revoked, Who},
    enforce::EndReason,
    revoke::{Revocation, Source, Target},
    sessions::LoginKey,
};

impl Core {
    /// Ends `key` if a revocation applies to it; true if it does.
    pub(super) fn enforce_revocation(&mut self, key: &LoginKey) -> bool {
        let Some(session) = self.table.get(key) else {
            return false;
        };
        let Some(revocation) = self.revocations.matching(session) else {
            return false;
        };
        let detail = revocation.reason_text();
        self.start_termination(key, EndReason::Revoked, &detail);
        true
    }

    /// Makes the kernel map and the live sessions agree with the revocation list.
    pub(super) fn apply_revocations(&mut self) {
        let matched_uids: Vec<u32> = self
            .table
            .iter()
            .filter(|s| self.revocations.matching(s).is_some())
            .map(|s| s.uid)
            .collect();
        let wanted = self.revocations.kernel_uids(matched_uids);
        if self.probes.kernel_revoke {
            for uid in self.maps.revoked_uids() {
                if !wanted.contains(&uid)
                    && let Err(err) = self.maps.set_revoked_uid(uid, false)
                {
                    tracing::error!("{err:#}");
                }
            }
            for &uid in &wanted {
                if let Err(err) = self.maps.set_revoked_uid(uid, true) {
                    tracing::error!("{err:#}");
                }
            }
        }
        for key in self.table.keys() {
            self.enforce_revocation(&key);
        }
    }

    /// Ends every process of the revoked users, in a login or not (a job started
    /// before the revocation, a process whose login the daemon never saw). Never
    /// root's: revoking uid 0 ends root's logins only.
    pub(super) fn end_user_processes(&mut self, mut uids: Vec<u32>) {
        uids.retain(|&u| u != 0);
        uids.sort_unstable();
        uids.dedup();
        if uids.is_empty() {
            return;
        }
        let never: Vec<u32> = self.listeners.iter().copied().collect();
        let grace = self.policy.kill_grace;
        let decided = std::time::Instant::now();
        tokio::spawn(async move {
            let processes = crate::sessions::processes_of_uids(&uids);
            let Some(first) = processes.first().copied() else {
                return;
            };
            let plan = crate::enforce::terminate::collect_targets(
                first,
                uids[0],
                Vec::new(),
                crate::enforce::terminate::Tree {
                    exact: processes,
                    through: Vec::new(),
                },
                &never,
            );
            let outcome = crate::enforce::terminate::escalate(
                plan.hold(Vec::new()),
                grace,
                std::time::Duration::ZERO,
                decided,
            )
            .await;
            tracing::info!(?uids, processes = outcome.targets, signals = ?outcome.signals, "revoked users' processes ended");
        });
    }

    pub(super) fn revoke(
        &mut self,
        caller: Caller,
        Revoke {
            who,
            duration_secs,
            reason,
        }: Revoke,
    ) -> Response {
        let target = match who.target() {
            Ok(t) => t,
            Err(e) => return Response::error(e),
        };
        if duration_secs == Some(0) {
            return Response::error(
                "a revocation needs a duration above zero (or none: until lifted)",
            );
        }
        let revocation = Revocation::new(
            target.clone(),
            duration_secs.map(std::time::Duration::from_secs),
            reason.filter(|r| !r.trim().is_empty()),
            Some(caller.uid),
        );
        if let Err(err) = self.revocations.add(revocation.clone()) {
            tracing::error!("{err:#}");
            return Response::error(format!("could not persist the revocation: {err:#}"));
        }
        let affected: Vec<LoginKey> = self
            .table
            .iter()
            .filter(|s| target.matches(s))
            .map(|s| s.key)
            .collect();
        let ids: Vec<String> = affected
            .iter()
            .filter_map(|k| self.table.get(k).map(|s| s.id.clone()))
            .collect();
        self.record_revocation(AuditEvent::Revoke {
            target: revocation.target.clone(),
            by: RevokedBy::Request {
                until: revocation.until,
                reason: revocation.reason.clone(),
                caller_uid: caller.uid,
                sessions: ids.clone(),
            },
        });
        tracing::warn!(%target, sessions = ids.len(), by = caller.uid, "access revoked");
        let mut uids: Vec<u32> = affected
            .iter()
            .filter_map(|k| self.table.get(k).map(|s| s.uid))
            .collect();
        match &target {
            Target::User { uid: Some(uid), .. } | Target::Uid { uid } => uids.push(*uid),
            _ => {}
        }
        self.apply_revocations();
        self.end_user_processes(uids);
        Response::ok(Revoked {
            revoked: revocation,
            sessions_ended: ids,
        })
    }

    pub(super) fn unrevoke(&mut self, caller: Caller, who: &Who) -> Response {
        let target = match who.target() {
            Ok(t) => t,
            Err(e) => return Response::error(e),
        };
        let lifted = match self.revocations.remove(&target) {
            Ok(n) => n,
            Err(err) => return Response::error(format!("could not persist: {err:#}")),
        };
        if lifted == 0 {
            let why = if self.revocations.is_policy_revoked(&target) {
                format!("{target} is revoked by the policy file; remove it there")
            } else {
                format!("{target} is not revoked")
            };
            return Response::error(why);
        }
        self.record_revocation(AuditEvent::Unrevoke {
            target: target.clone(),
            caller_uid: caller.uid,
        });
        tracing::info!(%target, by = caller.uid, "revocation lifted");
        self.apply_revocations();
        Response::ok(Lifted { lifted: target })
    }

    /// Lifts revocations whose time is up (called from reconcile).
    pub(super) fn expire_revocations(&mut self) {
        match self.revocations.expire() {
            Ok(expired) if !expired.is_empty() => {
                for r in expired {
                    self.record_revocation(AuditEvent::RevocationExpired {
                        target: r.target.clone(),
                    });
                    tracing::info!(target = %r.target, "revocation expired");
                }
                self.apply_revocations();
            }
            Ok(_) => {}
            Err(err) => tracing::error!("{err:#}"),
        }
    }

    /// Audits a change to the revoked users and counts it under its action.
    fn record_revocation(&mut self, event: AuditEvent) {
        if let Some(action) = event.revocation_action() {
            self.metrics.revocation(action);
        }
        self.audit.record(event);
    }

    /// Takes the policy's `revoked_users` / `revoked_groups` (at start and reload).
    pub(super) fn sync_policy_revocations(&mut self) {
        let added = self.revocations.set_policy(
            &self.policy.revoked_users.clone(),
            &self.policy.revoked_groups.clone(),
        );
        for r in &added {
            self.record_revocation(AuditEvent::Revoke {
                target: r.target.clone(),
                by: RevokedBy::Policy {
                    source: Source::Policy,
                },
            });
            tracing::warn!(target = %r.target, "access revoked by the policy file");
        }
        self.apply_revocations();
    }
}
