//! Label sets of the metric families, and the closed sets of label values.
//!
//! Every label value comes from a closed set (session kinds, end reasons, actions, probe
//! names), so the number of series is bounded. The one exception is `user`, which only
//! exists when the operator turns per-user labels on.

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

/// Why a session ended: `session_monitor_session_ends_total{reason}`.
pub const END_REASONS: [&str; 5] = ["idle", "lifetime", "network", "revoked", "logout"];

/// Why a user was warned that their session will end:
/// `session_monitor_warnings_total{reason}`.
pub const WARNING_REASONS: [&str; 4] = ["idle", "lifetime", "network", "revoked"];

/// Changes to the set of revoked users: `session_monitor_revocations_total{action}`.
pub const REVOCATION_ACTIONS: [&str; 3] = ["revoke", "unrevoke", "expire"];

/// Outcomes of a policy reload: `session_monitor_policy_reloads_total{result}`.
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "rejected"];

/// The value recorded for anything outside a closed set, so that a caller's typo can
/// neither create new series nor go uncounted.
pub const OTHER: &str = "other";

/// `value` when it is one of `allowed`, else [`OTHER`].
pub(super) fn bounded(value: &str, allowed: &[&'static str]) -> &'static str {
    allowed
        .iter()
        .copied()
        .find(|&known| known == value)
        .unwrap_or(OTHER)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindReasonLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// `{kind, reason}`, plus `user` when per-user labels are on.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct EndLabels {
    pub kind: &'static str,
    pub reason: &'static str,
    pub user: Option<String>,
}

impl EncodeLabelSet for EndLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel as _;
        ("kind", self.kind).encode(encoder.encode_label())?;
        ("reason", self.reason).encode(encoder.encode_label())?;
        if let Some(user) = &self.user {
            ("user", user.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct KindUserLabels {
    pub kind: &'static str,
    pub user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProbeStatLabels {
    pub probe: &'static str,
    pub stat: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionLabels {
    pub version: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_the_closed_sets_become_other() {
        assert_eq!(bounded("idle", &END_REASONS), "idle");
        assert_eq!(bounded("logout", &END_REASONS), "logout");
        assert_eq!(bounded("Idle", &END_REASONS), OTHER);
        assert_eq!(bounded("", &REVOCATION_ACTIONS), OTHER);
    }
}
