//! [`Metrics`]: every metric family of the daemon, and the methods the core calls when
//! something happens.

use std::sync::Arc;

use prometheus_client::{
    encoding::{prometheus_text, text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::{Registry, Unit},
};

use super::{
    info::BackendInfo,
    kernel::KernelCollector,
    labels::{
        ActionLabels, DEADLINE_REASONS, EndLabels, KindLabels, KindReasonLabels, ResultLabels,
        VersionLabels, WARNING_REASONS,
    },
    live::{LiveCollector, LiveSample},
};
use crate::{
    enforce::EndReason,
    labels::{ReloadResult, RevocationAction},
    probes::CounterSnapshot,
    sessions::SessionKind,
};

/// Prefix of every metric name.
pub const PREFIX: &str = "session_monitor";

/// Bucket bounds for session durations, in seconds: 10 s to 7 days.
pub const DURATION_BUCKETS: [f64; 14] = [
    10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
    172800.0, 604800.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Bucket bounds for how late an end was decided after its deadline, in seconds.
pub const LATENESS_BUCKETS: [f64; 11] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

fn lateness_histogram() -> Histogram {
    Histogram::new(LATENESS_BUCKETS)
}

/// The daemon's metrics. Shared as `Arc<Metrics>` between the core (which records)
/// and the HTTP server (which encodes); every method takes `&self`.
///
/// Label values come from closed sets, typed ([`EndReason`], [`RevocationAction`],
/// [`ReloadResult`]): no other value can be recorded. Users appear in labels only when the
/// operator turned per-user labels on: user names are unbounded and personal.
pub struct Metrics {
    registry: Registry,
    user_labels: bool,
    sessions_started: Family<KindLabels, Counter>,
    session_ends: Family<EndLabels, Counter>,
    session_durations: Family<KindLabels, Histogram, fn() -> Histogram>,
    warnings: Family<KindReasonLabels, Counter>,
    would_end: Family<KindReasonLabels, Counter>,
    revocations: Family<ActionLabels, Counter>,
    control_refused: Counter,
    audit_write_errors: Counter,
    policy_reloads: Family<ResultLabels, Counter>,
    end_lateness: Family<KindReasonLabels, Histogram, fn() -> Histogram>,
    ready: Gauge,
    backend: Arc<BackendInfo>,
    live: Arc<LiveCollector>,
    kernel: Arc<KernelCollector>,
}

impl Metrics {
    /// Registers every family. With `user_labels`, session ends carry a `user` label
    /// and `session_monitor_user_sessions{kind,user}` is exported.
    pub fn new(user_labels: bool) -> Arc<Self> {
        let mut registry = Registry::with_prefix(PREFIX);

        let sessions_started = Family::<KindLabels, Counter>::default();
        registry.register(
            "sessions_started",
            "Sessions that started, by kind",
            sessions_started.clone(),
        );
        let session_ends = Family::<EndLabels, Counter>::default();
        registry.register(
            "session_ends",
            if user_labels {
                "Sessions that ended, by kind, reason and user"
            } else {
                "Sessions that ended, by kind and reason"
            },
            session_ends.clone(),
        );
        let session_durations =
            Family::<KindLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "session_duration",
            "How long sessions lasted, observed when they end, by kind",
            Unit::Seconds,
            session_durations.clone(),
        );
        let warnings = Family::<KindReasonLabels, Counter>::default();
        registry.register(
            "warnings",
            "Warnings shown to users that their session will end, by kind and reason",
            warnings.clone(),
        );
        let would_end = Family::<KindReasonLabels, Counter>::default();
        registry.register(
            "dry_run_ends",
            "Sessions that would have been ended in dry-run mode, by kind and reason",
            would_end.clone(),
        );
        let revocations = Family::<ActionLabels, Counter>::default();
        registry.register(
            "revocations",
            "Changes to the revoked users: revoke, unrevoke, expire",
            revocations.clone(),
        );
        let control_refused = Counter::default();
        registry.register(
            "control_refused",
            "Control-socket requests refused (caller not allowed, malformed or oversized)",
            control_refused.clone(),
        );
        let audit_write_errors = Counter::default();
        registry.register(
            "audit_write_errors",
            "Audit records that could not be written (full disk, I/O error); a `gap` record says how many once writing works again",
            audit_write_errors.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads, by result (ok, or rejected and the previous policy kept)",
            policy_reloads.clone(),
        );
        let end_lateness =
            Family::<KindReasonLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                lateness_histogram,
            );
        registry.register_with_unit(
            "end_lateness",
            "How long after its deadline the end of a session was decided (idle, lifetime, network; also in dry-run), by kind and reason",
            Unit::Seconds,
            end_lateness.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when /readyz answers 200 (probes attached, ring buffer read, audit log writable), else 0",
            ready.clone(),
        );
        registry.register(
            "build",
            "The running session-monitor version; the value is always 1",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );

        let backend = Arc::new(BackendInfo::default());
        registry.register_collector(Box::new(Arc::clone(&backend)));
        let live = Arc::new(LiveCollector::new(user_labels));
        registry.register_collector(Box::new(Arc::clone(&live)));
        let kernel = Arc::new(KernelCollector::default());
        registry.register_collector(Box::new(Arc::clone(&kernel)));

        // Series that exist from the start read 0 rather than missing, so that
        // increase() and alerts see the first event.
        for kind in SessionKind::ALL {
            let kind = kind.as_str();
            let _ = sessions_started.get_or_create(&KindLabels { kind });
            let _ = session_durations.get_or_create(&KindLabels { kind });
            if !user_labels {
                for reason in EndReason::ALL {
                    let _ = session_ends.get_or_create(&EndLabels {
                        kind,
                        reason: reason.as_str(),
                        user: None,
                    });
                }
            }
            for reason in WARNING_REASONS {
                let reason = reason.as_str();
                let _ = warnings.get_or_create(&KindReasonLabels { kind, reason });
            }
            for reason in EndReason::ALL {
                let reason = reason.as_str();
                let _ = would_end.get_or_create(&KindReasonLabels { kind, reason });
            }
            for reason in DEADLINE_REASONS {
                let reason = reason.as_str();
                let _ = end_lateness.get_or_create(&KindReasonLabels { kind, reason });
            }
        }
        for action in RevocationAction::ALL {
            let action = action.as_str();
            let _ = revocations.get_or_create(&ActionLabels { action });
        }
        for result in ReloadResult::ALL {
            let result = result.as_str();
            let _ = policy_reloads.get_or_create(&ResultLabels { result });
        }

        Arc::new(Self {
            registry,
            user_labels,
            sessions_started,
            session_ends,
            session_durations,
            warnings,
            would_end,
            revocations,
            control_refused,
            audit_write_errors,
            policy_reloads,
            end_lateness,
            ready,
            backend,
            live,
            kernel,
        })
    }

    /// A session started.
    pub fn session_started(&self, kind: SessionKind) {
        self.sessions_started
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// A session ended after `duration_seconds`; `user` is recorded only with per-user
    /// labels on.
    pub fn session_ended(
        &self,
        kind: SessionKind,
        reason: EndReason,
        duration_seconds: f64,
        user: &str,
    ) {
        let labels = EndLabels {
            kind: kind.as_str(),
            reason: reason.as_str(),
            user: self.user_labels.then(|| user.to_string()),
        };
        self.session_ends.get_or_create(&labels).inc();
        if duration_seconds.is_finite() {
            self.session_durations
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .observe(duration_seconds.max(0.0));
        }
    }

    /// A user was warned that their session will end.
    pub fn warning(&self, kind: SessionKind, reason: EndReason) {
        self.warnings
            .get_or_create(&KindReasonLabels {
                kind: kind.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Dry-run: a session would have been ended for `reason`.
    pub fn would_end(&self, kind: SessionKind, reason: EndReason) {
        self.would_end
            .get_or_create(&KindReasonLabels {
                kind: kind.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A user was revoked, unrevoked, or their revocation expired.
    pub fn revocation(&self, action: RevocationAction) {
        self.revocations
            .get_or_create(&ActionLabels {
                action: action.as_str(),
            })
            .inc();
    }

    /// The policy was reloaded, or the new one was rejected.
    pub fn reload(&self, result: ReloadResult) {
        self.policy_reloads
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }

    /// Control-socket requests were refused.
    pub fn control_refused(&self, count: u64) {
        self.control_refused.inc_by(count);
    }

    /// The counter the audit log increments for each record it cannot write.
    pub fn audit_write_errors(&self) -> Counter {
        self.audit_write_errors.clone()
    }

    /// The end of a session was decided `seconds` after its deadline.
    pub fn end_lateness(&self, kind: SessionKind, reason: EndReason, seconds: f64) {
        if seconds.is_finite() {
            self.end_lateness
                .get_or_create(&KindReasonLabels {
                    kind: kind.as_str(),
                    reason: reason.as_str(),
                })
                .observe(seconds.max(0.0));
        }
    }

    /// Whether `/readyz` would answer 200, set before each encoding.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The probe backend in use (`fentry` or `tracepoint`).
    pub fn set_backend(&self, backend: &str) {
        self.backend.set(backend);
    }

    /// The kernel probes' counters, as last read from their map. They are totals:
    /// pass every read, not differences.
    pub fn set_kernel_counters(&self, counters: &CounterSnapshot) {
        self.kernel.update(counters);
    }

    /// Replaces the snapshot of live sessions (the sessions gauge and the idle-time
    /// histograms). Pass every live session each time.
    pub fn update_live(&self, sessions: &[LiveSample<'_>]) {
        self.live.update(sessions);
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4), served
    /// with [`super::http::PROMETHEUS_CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {err}");
        }
        out
    }

    /// Every metric in the OpenMetrics text format (1.0.0), served with
    /// [`super::http::OPENMETRICS_CONTENT_TYPE`] to scrapers that ask for it.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        if let Err(err) = text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {err}");
        }
        out
    }
}
