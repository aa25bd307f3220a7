//! Label sets of the metric families, and the closed sets of label values.
//!
//! Every label value comes from a closed set (session kinds, [`EndReason`],
//! [`crate::labels::RevocationAction`], [`crate::labels::ReloadResult`], probe names),
//! typed so that no other value can be passed, and the number of series is bounded. The one exception is `user`, which only
//! exists when the operator turns per-user labels on.

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

use crate::enforce::EndReason;

/// The reasons a user is warned for: `session_monitor_warnings_total{reason}` (every
/// end reason but `logout`).
pub const WARNING_REASONS: [EndReason; 4] = [
    EndReason::Idle,
    EndReason::Lifetime,
    EndReason::Network,
    EndReason::Revoked,
];

/// The reasons whose ends have a deadline (`session_monitor_end_lateness_seconds`).
pub const DEADLINE_REASONS: [EndReason; 3] =
    [EndReason::Idle, EndReason::Lifetime, EndReason::Network];

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
