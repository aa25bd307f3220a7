//! Policy reloads (SIGHUP, or the file changing). A policy that fails validation is
//! rejected as a whole: the last good one keeps running.

use std::path::Path;

use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::core::Core;
use crate::{audit::Fields, policy};

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
        let mut f = Fields::new();
        f.insert("file".into(), json!(path.display().to_string()));
        if fingerprint.is_none() {
            // A ConfigMap update briefly removes the file; a deleted policy keeps
            // the last good one rather than falling back to defaults.
            tracing::warn!(
                "policy file {} is unreadable; keeping the current policy",
                path.display()
            );
            f.insert("result".into(), json!("rejected"));
            f.insert("error".into(), json!("file missing or unreadable"));
            self.reloads.1 += 1;
            self.metrics.reload(false);
            self.audit.record("policy_reload", f);
            return;
        }
        match policy::load_file(&path) {
            Ok(policy) => {
                tracing::info!("policy reloaded: {}", policy.describe());
                self.reloads.0 += 1;
                self.metrics.reload(true);
                f.insert("result".into(), json!("ok"));
                f.insert("sha256".into(), json!(fingerprint));
                f.insert("mode".into(), json!(policy.mode));
                f.insert("rules".into(), json!(policy.rules.len()));
                self.audit.set_rotation(policy.audit_rotation);
                self.policy = policy;
                self.audit.record("policy_reload", f);
                self.access.send_replace(super::access_of(&self.policy));
                self.apply_policy();
                self.sync_policy_revocations();
            }
            Err(errors) => {
                tracing::error!("policy reload rejected, keeping the last good policy:\n{errors}");
                self.reloads.1 += 1;
                self.metrics.reload(false);
                f.insert("result".into(), json!("rejected"));
                f.insert("error".into(), json!(errors.to_string()));
                self.audit.record("policy_reload", f);
            }
        }
    }

    /// Re-resolves every login's limits and reschedules its deadline.
    fn apply_policy(&mut self) {
        for key in self.table.keys() {
            let Some(login) = self.table.get(&key) else {
                continue;
            };
            let resolution = self.resolve_policy(login);
            if let Some(login) = self.table.get_mut(&key) {
                if login.resolution != resolution {
                    login.reported_end = None;
                }
                login.resolution = resolution;
            }
            self.schedule_session(&key);
        }
    }
}
