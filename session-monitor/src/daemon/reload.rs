//! Policy reloads (SIGHUP, or the file changing). A policy that fails validation is
//! rejected as a whole: the last good one keeps running.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::core::Core;
use crate::{
    audit::{AuditEvent, ReloadOutcome},
    labels::ReloadResult,
    policy,
    sessions::LoginKey,
};

/// SHA-256 of the file's content, or None when it cannot be read.
pub fn fingerprint(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

impl Core {
    /// Reloads the policy. `force` (SIGHUP) reloads even an unchanged file.
    pub fn reload(&mut self, force: bool) {
        let fingerprint = fingerprint(&self.config_path);
        if !force && fingerprint == self.policy_fingerprint {
            return;
        }
        self.policy_fingerprint = fingerprint.clone();
        let path = self.config_path.clone();
        let Some(fingerprint) = fingerprint else {
            // A ConfigMap update briefly removes the file; a deleted policy keeps
            // the last good one rather than falling back to defaults.
            tracing::warn!(
                "policy file {} is unreadable; keeping the current policy",
                path.display()
            );
            self.record_reload(
                &path,
                ReloadOutcome::Rejected {
                    error: "file missing or unreadable".into(),
                },
            );
            return;
        };
        match policy::load_file(&path) {
            Ok(policy) => {
                tracing::info!("policy reloaded: {}", policy.describe());
                let outcome = ReloadOutcome::Ok {
                    sha256: fingerprint,
                    mode: policy.mode,
                    rules: policy.rules.len(),
                };
                self.audit.set_rotation(policy.audit_rotation);
                self.policy = policy;
                self.record_reload(&path, outcome);
                self.access.send_replace(super::access_of(&self.policy));
                self.apply_policy();
                self.sync_policy_revocations();
            }
            Err(errors) => {
                tracing::error!("policy reload rejected, keeping the last good policy:\n{errors}");
                self.record_reload(
                    &path,
                    ReloadOutcome::Rejected {
                        error: errors.to_string(),
                    },
                );
            }
        }
    }

    /// Counts a reload (in `status` and the metrics) and audits it.
    fn record_reload(&mut self, path: &Path, outcome: ReloadOutcome) {
        let result = outcome.result();
        match result {
            ReloadResult::Ok => self.reloads.0 += 1,
            ReloadResult::Rejected => self.reloads.1 += 1,
        }
        self.metrics.reload(result);
        self.audit.record(AuditEvent::PolicyReload {
            file: path.display().to_string(),
            outcome,
        });
    }

    /// Re-resolves every login's limits and reschedules its deadline.
    fn apply_policy(&mut self) {
        for key in self.table.keys() {
            self.apply_policy_to(&key);
        }
    }

    /// Re-resolves login `key`'s limits (after a reload, or when its user changed)
    /// and reschedules its deadline.
    pub(super) fn apply_policy_to(&mut self, key: &LoginKey) {
        let Some(login) = self.table.get(key) else {
            return;
        };
        let resolution = self.resolve_policy(login);
        if let Some(login) = self.table.get_mut(key) {
            if login.resolution != resolution {
                login.reported_end = None;
            }
            login.resolution = resolution;
        }
        self.schedule_session(key);
    }
}
