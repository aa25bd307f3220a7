//! What the audit log records: one [`AuditEvent`] variant per kind of record, with
//! its fields typed. The README's "Audit log" section lists the same events (a test
//! below holds the two together).

use serde::Serialize;

use crate::{
    clock,
    enforce::EndReason,
    labels::{Notice, RevocationAction, SessionOrigin},
    policy::Mode,
    revoke::{Source, Target},
    sessions::{Carry, ContainerInfo, Login, SessionKind},
};

/// One audit record, besides `seq`, `time` and `prev`, which the log adds.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    DaemonStart {
        version: &'static str,
        pid: u32,
        backend: String,
        policy: String,
        mode: Mode,
    },
    DaemonStop {
        pid: u32,
        /// Sessions open when the daemon stopped.
        sessions: usize,
    },
    SessionStart {
        #[serde(flatten)]
        session: SessionFields,
        how: SessionOrigin,
        /// The id of the session this one was opened inside.
        #[serde(skip_serializing_if = "Option::is_none")]
        nested_in: Option<String>,
    },
    /// A session first seen while its leader ran as root is now its user's: the
    /// leader switched to that user (see `daemon::user`). `user` and `rule` are the
    /// new ones.
    SessionUser {
        #[serde(flatten)]
        session: SessionFields,
        previous_user: String,
        previous_uid: u32,
    },
    Warning {
        #[serde(flatten)]
        session: SessionFields,
        reason: EndReason,
        end_in_seconds: u64,
        dry_run: bool,
        /// Whether the session has a terminal to show the warning on.
        on_screen: bool,
    },
    /// Dry run: the session would have been ended now.
    WouldEnd {
        #[serde(flatten)]
        session: SessionFields,
        reason: EndReason,
        /// Always true: kept so that a filter on `dry_run` finds these records.
        dry_run: bool,
    },
    SessionEnd {
        #[serde(flatten)]
        session: SessionFields,
        reason: EndReason,
        /// What the termination took, for ends this daemon carried out.
        #[serde(flatten)]
        ended: Option<Ended>,
    },
    /// Ending a session failed before it completed (a task of the daemon's
    /// panicked): the session stays open and the end is tried again.
    TerminationFailed {
        #[serde(flatten)]
        session: SessionFields,
        reason: EndReason,
        error: String,
        /// When the end is tried again.
        retry_in_seconds: u64,
    },
    /// A line not written to a terminal because what the session leader held was
    /// not, when checked, the session's terminal.
    NoticeRefused {
        #[serde(flatten)]
        session: SessionFields,
        terminal: String,
        notice: Notice,
        why: String,
    },
    /// The kernel stopped a revoked user's input.
    InputBlocked {
        pid: u32,
        uid: u32,
        comm: String,
        /// The session the input was for, when it is known.
        #[serde(flatten)]
        session: Option<BlockedIn>,
        /// The kernel's login id (hex), when the input went through one.
        #[serde(skip_serializing_if = "Option::is_none")]
        login: Option<String>,
    },
    Revoke {
        target: Target,
        #[serde(flatten)]
        by: RevokedBy,
    },
    Unrevoke {
        target: Target,
        caller_uid: u32,
    },
    RevocationExpired {
        target: Target,
    },
    PolicyReload {
        file: String,
        #[serde(flatten)]
        outcome: ReloadOutcome,
    },
    ControlRequest {
        caller_uid: u32,
        caller_pid: Option<i32>,
        command: &'static str,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The first refused or malformed request of a caller in an interval.
    ControlRefused {
        caller_uid: u32,
        caller_pid: Option<i32>,
        error: String,
    },
    /// The further refusals of one caller in an interval, counted.
    ControlRefusedSummary {
        caller_uid: u32,
        refused: u64,
        seconds: f64,
        last_error: String,
        /// "uid 1001: 36,709 refused requests in 5 s".
        summary: String,
    },
    /// A torn last line was cut off when the log was opened.
    AuditRepaired {
        removed_bytes: u64,
        removed: String,
    },
    /// The log was reopened by its name (SIGUSR1).
    AuditReopened {
        file: String,
    },
    /// `audit_max_size` was reached: the log went on in a new file.
    AuditRotated {
        previous_file: String,
        max_size: u64,
        keep: u32,
    },
    /// The file shrank under the daemon.
    AuditTruncated {
        size_before: u64,
        size_after: u64,
        note: &'static str,
    },
    /// Records that could not be written.
    Gap {
        lost_records: u64,
        /// RFC 3339: when the first of them was lost.
        since: String,
        error: String,
    },
}

crate::labels::closed_set! {
    /// The name of each [`AuditEvent`] variant: its `event` field.
    pub enum EventName {
        DaemonStart => "daemon_start",
        DaemonStop => "daemon_stop",
        SessionStart => "session_start",
        SessionUser => "session_user",
        Warning => "warning",
        WouldEnd => "would_end",
        SessionEnd => "session_end",
        TerminationFailed => "termination_failed",
        NoticeRefused => "notice_refused",
        InputBlocked => "input_blocked",
        Revoke => "revoke",
        Unrevoke => "unrevoke",
        RevocationExpired => "revocation_expired",
        PolicyReload => "policy_reload",
        ControlRequest => "control_request",
        ControlRefused => "control_refused",
        ControlRefusedSummary => "control_refused_summary",
        AuditRepaired => "audit_repaired",
        AuditReopened => "audit_reopened",
        AuditRotated => "audit_rotated",
        AuditTruncated => "audit_truncated",
        Gap => "gap",
    }
}

impl AuditEvent {
    /// The `event` field (the same name serde writes; a test checks every variant).
    pub fn name(&self) -> EventName {
        match self {
            AuditEvent::DaemonStart { .. } => EventName::DaemonStart,
            AuditEvent::DaemonStop { .. } => EventName::DaemonStop,
            AuditEvent::SessionStart { .. } => EventName::SessionStart,
            AuditEvent::SessionUser { .. } => EventName::SessionUser,
            AuditEvent::Warning { .. } => EventName::Warning,
            AuditEvent::WouldEnd { .. } => EventName::WouldEnd,
            AuditEvent::SessionEnd { .. } => EventName::SessionEnd,
            AuditEvent::TerminationFailed { .. } => EventName::TerminationFailed,
            AuditEvent::NoticeRefused { .. } => EventName::NoticeRefused,
            AuditEvent::InputBlocked { .. } => EventName::InputBlocked,
            AuditEvent::Revoke { .. } => EventName::Revoke,
            AuditEvent::Unrevoke { .. } => EventName::Unrevoke,
            AuditEvent::RevocationExpired { .. } => EventName::RevocationExpired,
            AuditEvent::PolicyReload { .. } => EventName::PolicyReload,
            AuditEvent::ControlRequest { .. } => EventName::ControlRequest,
            AuditEvent::ControlRefused { .. } => EventName::ControlRefused,
            AuditEvent::ControlRefusedSummary { .. } => EventName::ControlRefusedSummary,
            AuditEvent::AuditRepaired { .. } => EventName::AuditRepaired,
            AuditEvent::AuditReopened { .. } => EventName::AuditReopened,
            AuditEvent::AuditRotated { .. } => EventName::AuditRotated,
            AuditEvent::AuditTruncated { .. } => EventName::AuditTruncated,
            AuditEvent::Gap { .. } => EventName::Gap,
        }
    }

    /// The change to the revoked users this record is, if it is one.
    pub fn revocation_action(&self) -> Option<RevocationAction> {
        match self {
            AuditEvent::Revoke { .. } => Some(RevocationAction::Revoke),
            AuditEvent::Unrevoke { .. } => Some(RevocationAction::Unrevoke),
            AuditEvent::RevocationExpired { .. } => Some(RevocationAction::Expire),
            _ => None,
        }
    }
}

/// The fields every session record carries: session id, user, uid, kind,
/// terminals (`tty`: the first one or null), what it carries, remote, the rule
/// that applied, idle and total duration at the moment of the decision, plus the
/// container when there is one.
#[derive(Clone, Debug, Serialize)]
pub struct SessionFields {
    pub session_id: String,
    pub user: String,
    pub uid: u32,
    pub kind: SessionKind,
    pub tty: Option<String>,
    pub terminals: Vec<String>,
    pub carries: Vec<Carry>,
    pub remote: Option<String>,
    pub rule: String,
    pub idle_seconds: f64,
    pub duration_seconds: f64,
    pub leader_pid: u32,
    pub identity_pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerInfo>,
}

impl SessionFields {
    /// `login` under `rule`, idle since `last_input_ns`, at `now_ns` (boot time).
    pub fn of(login: &Login, rule: &str, last_input_ns: u64, now_ns: u64) -> Self {
        let terminals: Vec<String> = login
            .terminals
            .iter()
            .map(|t| crate::sessions::tty_name(&t.key))
            .collect();
        Self {
            session_id: login.id.clone(),
            user: login.user.clone(),
            uid: login.uid,
            kind: login.kind,
            tty: terminals.first().cloned(),
            terminals,
            carries: login.carries.clone(),
            remote: login.remote.clone(),
            rule: rule.to_string(),
            idle_seconds: clock::seconds_between(last_input_ns, now_ns),
            duration_seconds: clock::seconds_between(login.started_ns, now_ns),
            leader_pid: login.leader().pid,
            identity_pid: login.identity.pid,
            container: login.container.clone(),
        }
    }
}

/// What ending a session took (`session_end` of an end the daemon carried out).
#[derive(Clone, Debug, Serialize)]
pub struct Ended {
    /// Signals that had to be sent, in order.
    pub signals: Vec<&'static str>,
    /// From the decision to every process gone (or SIGKILL sent).
    pub took_ms: u64,
    /// How many processes were targeted.
    pub processes: usize,
    /// The session's own server, when it was among them.
    pub server_ended: Option<u32>,
    /// Processes that had left the session, ended through its cgroup.
    #[serde(skip_serializing_if = "is_zero")]
    pub escaped_processes: usize,
    /// Processes still alive after SIGKILL (should be none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub survivors: Vec<u32>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The session a blocked input was for.
#[derive(Clone, Debug, Serialize)]
pub struct BlockedIn {
    pub session_id: String,
    pub tty: String,
}

/// Who revoked: a caller of `session-monitor revoke`, or the policy file.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum RevokedBy {
    Request {
        /// Seconds since the epoch; null: until lifted.
        until: Option<u64>,
        reason: Option<String>,
        caller_uid: u32,
        /// The ids of the sessions it ended.
        sessions: Vec<String>,
    },
    /// `source` is always [`Source::Policy`].
    Policy { source: Source },
}

/// How a policy reload went; `result` is [`ReloadOutcome::result`].
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadOutcome {
    Ok {
        sha256: String,
        mode: Mode,
        rules: usize,
    },
    Rejected {
        error: String,
    },
}

impl ReloadOutcome {
    pub fn result(&self) -> crate::labels::ReloadResult {
        match self {
            ReloadOutcome::Ok { .. } => crate::labels::ReloadResult::Ok,
            ReloadOutcome::Rejected { .. } => crate::labels::ReloadResult::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::labels::ReloadResult;

    fn session() -> SessionFields {
        SessionFields {
            session_id: "s1".into(),
            user: "alice".into(),
            uid: 1001,
            kind: SessionKind::Ssh,
            tty: Some("pts/3".into()),
            terminals: vec!["pts/3".into()],
            carries: vec![],
            remote: None,
            rule: "default".into(),
            idle_seconds: 1.5,
            duration_seconds: 10.0,
            leader_pid: 42,
            identity_pid: 41,
            container: None,
        }
    }

    fn target() -> Target {
        Target::Uid { uid: 1001 }
    }

    /// One record of every kind (a new variant needs a name, and then a sample).
    fn samples() -> Vec<AuditEvent> {
        vec![
            AuditEvent::DaemonStart {
                version: "0.1.0",
                pid: 1,
                backend: "tracepoint".into(),
                policy: "p".into(),
                mode: Mode::Enforce,
            },
            AuditEvent::DaemonStop {
                pid: 1,
                sessions: 0,
            },
            AuditEvent::SessionStart {
                session: session(),
                how: SessionOrigin::Started,
                nested_in: None,
            },
            AuditEvent::Warning {
                session: session(),
                reason: EndReason::Idle,
                end_in_seconds: 60,
                dry_run: false,
                on_screen: true,
            },
            AuditEvent::WouldEnd {
                session: session(),
                reason: EndReason::Lifetime,
                dry_run: true,
            },
            AuditEvent::SessionEnd {
                session: session(),
                reason: EndReason::Logout,
                ended: None,
            },
            AuditEvent::NoticeRefused {
                session: session(),
                terminal: "pts/3".into(),
                notice: Notice::Closing,
                why: "not a terminal".into(),
            },
            AuditEvent::InputBlocked {
                pid: 7,
                uid: 1001,
                comm: "bash".into(),
                session: None,
                login: None,
            },
            AuditEvent::Revoke {
                target: target(),
                by: RevokedBy::Policy {
                    source: Source::Policy,
                },
            },
            AuditEvent::Unrevoke {
                target: target(),
                caller_uid: 0,
            },
            AuditEvent::RevocationExpired { target: target() },
            AuditEvent::PolicyReload {
                file: "/etc/p.toml".into(),
                outcome: ReloadOutcome::Rejected {
                    error: "bad".into(),
                },
            },
            AuditEvent::ControlRequest {
                caller_uid: 0,
                caller_pid: Some(9),
                command: "status",
                ok: true,
                error: None,
            },
            AuditEvent::ControlRefused {
                caller_uid: 1001,
                caller_pid: None,
                error: "not allowed".into(),
            },
            AuditEvent::ControlRefusedSummary {
                caller_uid: 1001,
                refused: 3,
                seconds: 5.0,
                last_error: "not allowed".into(),
                summary: "uid 1001: 3 refused requests in 5 s".into(),
            },
            AuditEvent::AuditRepaired {
                removed_bytes: 3,
                removed: "{\"s".into(),
            },
            AuditEvent::AuditReopened { file: "a".into() },
            AuditEvent::AuditRotated {
                previous_file: "a.1".into(),
                max_size: 100,
                keep: 2,
            },
            AuditEvent::AuditTruncated {
                size_before: 10,
                size_after: 0,
                note: "shrank",
            },
            AuditEvent::Gap {
                lost_records: 2,
                since: "2026-12-02T13:01:07Z".into(),
                error: "full".into(),
            },
            AuditEvent::TerminationFailed {
                session: session(),
                reason: EndReason::Idle,
                error: "task panicked".into(),
                retry_in_seconds: 5,
            },
            AuditEvent::SessionUser {
                session: session(),
                previous_user: "root".into(),
                previous_uid: 0,
            },
        ]
    }

    #[test]
    fn every_variant_is_named_as_serde_writes_it() {
        let samples = samples();
        let named: BTreeSet<&str> = samples.iter().map(|e| e.name().as_str()).collect();
        let all: BTreeSet<&str> = EventName::NAMES.iter().copied().collect();
        assert_eq!(named, all, "a sample of every event");
        for event in &samples {
            let value = serde_json::to_value(event).unwrap();
            assert_eq!(value["event"], event.name().as_str(), "{value}");
        }
    }

    #[test]
    fn session_records_carry_the_session_fields_at_top_level() {
        let value = serde_json::to_value(AuditEvent::SessionEnd {
            session: session(),
            reason: EndReason::Idle,
            ended: Some(Ended {
                signals: vec!["SIGHUP"],
                took_ms: 12,
                processes: 3,
                server_ended: None,
                escaped_processes: 0,
                survivors: vec![],
            }),
        })
        .unwrap();
        assert_eq!(
            value,
            json!({
                "event": "session_end", "reason": "idle",
                "session_id": "s1", "user": "alice", "uid": 1001, "kind": "ssh",
                "tty": "pts/3", "terminals": ["pts/3"], "carries": [], "remote": null,
                "rule": "default", "idle_seconds": 1.5, "duration_seconds": 10.0,
                "leader_pid": 42, "identity_pid": 41,
                "signals": ["SIGHUP"], "took_ms": 12, "processes": 3, "server_ended": null,
            })
        );
    }

    #[test]
    fn revocations_by_request_and_by_policy_keep_their_fields() {
        let by_request = serde_json::to_value(AuditEvent::Revoke {
            target: target(),
            by: RevokedBy::Request {
                until: None,
                reason: Some("left".into()),
                caller_uid: 0,
                sessions: vec!["s1".into()],
            },
        })
        .unwrap();
        assert_eq!(
            by_request,
            json!({
                "event": "revoke", "target": {"type": "uid", "uid": 1001},
                "until": null, "reason": "left", "caller_uid": 0, "sessions": ["s1"],
            })
        );
        let by_policy = &samples()[8];
        assert_eq!(
            serde_json::to_value(by_policy).unwrap(),
            json!({"event": "revoke", "target": {"type": "uid", "uid": 1001}, "source": "policy"})
        );
        assert_eq!(
            by_policy.revocation_action(),
            Some(RevocationAction::Revoke)
        );
    }

    #[test]
    fn reload_result_is_the_metrics_label() {
        for outcome in [
            ReloadOutcome::Ok {
                sha256: "ab".into(),
                mode: Mode::DryRun,
                rules: 2,
            },
            ReloadOutcome::Rejected { error: "x".into() },
        ] {
            let value = serde_json::to_value(&outcome).unwrap();
            assert_eq!(value["result"], outcome.result().as_str());
        }
        assert_eq!(ReloadResult::NAMES, ["ok", "rejected"]);
    }

    /// The event names in the README's "Audit log" section: every `word` before the
    /// paragraph on session records that names an event (lower case, with `_` or a
    /// known single word).
    fn documented_events() -> BTreeSet<String> {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("\n### Audit log\n")
            .nth(1)
            .expect("README has an \"Audit log\" section");
        let events = section
            .split("Events:")
            .nth(1)
            .expect("the Audit log section lists its \"Events:\"");
        let list = events.split("\n\n").next().unwrap_or_default();
        // Field names and values are in parentheses after their event; drop them.
        let mut depth = 0usize;
        let mut outside = String::new();
        for c in list.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ if depth == 0 => outside.push(c),
                _ => {}
            }
        }
        outside
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn readme_documents_exactly_the_events_written() {
        let documented = documented_events();
        let written: BTreeSet<String> = EventName::NAMES.iter().map(|n| n.to_string()).collect();
        let undocumented: Vec<_> = written.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&written).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "README.md \"Audit log\" section: events written but not documented: {undocumented:?}; \
             documented but never written: {unknown:?}"
        );
    }

    /// The fields the README says every session record carries exist in
    /// [`SessionFields`] (`time` is the log's).
    #[test]
    fn readme_session_fields_are_written() {
        let readme = include_str!("../../../README.md");
        let paragraph = readme
            .split("Session records carry")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("README says what session records carry");
        let paragraph = paragraph.split(". ").next().unwrap_or_default();
        let mut fields = session();
        fields.container = Some(ContainerInfo::default());
        let written = serde_json::to_value(fields).unwrap();
        let documented: Vec<&str> = paragraph.split('`').skip(1).step_by(2).collect();
        assert!(documented.len() > 5, "{documented:?}");
        for field in documented.into_iter().filter(|f| *f != "time") {
            assert!(
                written.get(field).is_some(),
                "README names `{field}`: {written}"
            );
        }
    }

    #[test]
    fn the_readme_parser_sees_the_list() {
        let documented = documented_events();
        assert!(documented.contains("daemon_start"), "{documented:?}");
        assert!(documented.contains("gap"), "{documented:?}");
        // `idle` is a value of session_end's reason, in parentheses: not an event.
        assert!(!documented.contains("idle"), "{documented:?}");
    }
}
