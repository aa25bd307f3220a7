//! Metrics of the sessions alive right now, computed from a snapshot the daemon core
//! pushes ([`LiveSample`]s), so they describe the present, not the history.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, histogram::Histogram},
    registry::Unit,
};

use super::labels::{KindLabels, KindUserLabels};
use crate::sessions::SessionKind;

/// Bucket bounds for idle times, in seconds: 1 s to 24 h, denser where idle
/// timeouts usually sit (5 min to 1 h).
pub const IDLE_BUCKETS: [f64; 16] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 2700.0, 3600.0, 7200.0,
    14400.0, 43200.0, 86400.0,
];

/// One live session, as the core sees it at the moment of the snapshot.
#[derive(Clone, Copy, Debug)]
pub struct LiveSample<'a> {
    pub kind: SessionKind,
    /// Seconds since the user last gave input.
    pub idle_seconds: f64,
    /// Seconds since the session's peer was last heard from on the network (Mosh's
    /// UDP), when the session has such a signal.
    pub network_idle_seconds: Option<f64>,
    /// Login name; used only when per-user labels are on.
    pub user: &'a str,
}

/// What one snapshot adds up to.
#[derive(Debug)]
struct Snapshot {
    /// Indexed like [`SessionKind::ALL`].
    sessions: [u64; SessionKind::ALL.len()],
    idle: Vec<(KindLabels, Histogram)>,
    network_idle: Vec<(KindLabels, Histogram)>,
    /// Empty unless per-user labels are on.
    by_user: BTreeMap<KindUserLabels, u64>,
}

impl Snapshot {
    fn new(samples: &[LiveSample<'_>], user_labels: bool) -> Self {
        let histograms = || -> Vec<(KindLabels, Histogram)> {
            SessionKind::ALL
                .iter()
                .map(|kind| {
                    let labels = KindLabels {
                        kind: kind.as_str(),
                    };
                    (labels, Histogram::new(IDLE_BUCKETS))
                })
                .collect()
        };
        let mut snapshot = Snapshot {
            sessions: [0; SessionKind::ALL.len()],
            idle: histograms(),
            network_idle: histograms(),
            by_user: BTreeMap::new(),
        };
        for sample in samples {
            let Some(index) = SessionKind::ALL.iter().position(|&k| k == sample.kind) else {
                continue;
            };
            snapshot.sessions[index] += 1;
            if let Some(idle) = seconds(sample.idle_seconds) {
                snapshot.idle[index].1.observe(idle);
            }
            if let Some(idle) = sample.network_idle_seconds.and_then(seconds) {
                snapshot.network_idle[index].1.observe(idle);
            }
            if user_labels {
                let labels = KindUserLabels {
                    kind: sample.kind.as_str(),
                    user: sample.user.to_string(),
                };
                *snapshot.by_user.entry(labels).or_default() += 1;
            }
        }
        snapshot
    }
}

/// A duration the core measured, or `None` when it is not a usable number. Clock
/// steps can make an idle time slightly negative: that is 0, not an error.
fn seconds(value: f64) -> Option<f64> {
    value.is_finite().then(|| value.max(0.0))
}

/// Encodes the latest snapshot on every scrape.
#[derive(Debug)]
pub(super) struct LiveCollector {
    user_labels: bool,
    snapshot: Mutex<Snapshot>,
}

impl LiveCollector {
    pub fn new(user_labels: bool) -> Self {
        Self {
            user_labels,
            snapshot: Mutex::new(Snapshot::new(&[], user_labels)),
        }
    }

    /// Replaces the previous snapshot.
    pub fn update(&self, samples: &[LiveSample<'_>]) {
        let snapshot = Snapshot::new(samples, self.user_labels);
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }
}

impl Collector for LiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);

        let mut family = encoder.encode_descriptor(
            "sessions",
            "Live sessions, by kind.",
            None,
            MetricType::Gauge,
        )?;
        for (kind, count) in SessionKind::ALL.iter().zip(snapshot.sessions) {
            let labels = KindLabels {
                kind: kind.as_str(),
            };
            family.encode_family(&labels)?.encode_gauge(&count)?;
        }

        let mut family = encoder.encode_descriptor(
            "session_idle",
            "Time since the last user input, of the live sessions (a snapshot of the \
             present distribution: it can go down; do not use rate() on it).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, histogram) in &snapshot.idle {
            histogram.encode(family.encode_family(labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "session_network_idle",
            "Time since the peer was last heard from on the network, of the live sessions \
             that have such a signal (Mosh); a snapshot like session_idle_seconds.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, histogram) in &snapshot.network_idle {
            histogram.encode(family.encode_family(labels)?)?;
        }

        if self.user_labels {
            let mut family = encoder.encode_descriptor(
                "user_sessions",
                "Live sessions, by kind and user (only with per-user labels on).",
                None,
                MetricType::Gauge,
            )?;
            for (labels, count) in &snapshot.by_user {
                family.encode_family(labels)?.encode_gauge(count)?;
            }
        }
        Ok(())
    }
}
