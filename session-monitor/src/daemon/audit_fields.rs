//! The fields every session record in the audit log carries.

use serde_json::{Value, json};

use crate::{audit::Fields, clock, sessions::Login};

/// Session id, user, uid, kind, terminals (`tty`: the first one or null), what it
/// carries, remote, the rule that applied, idle and total duration, plus the
/// container when there is one.
pub fn session(session: &Login, rule: &str, last_input_ns: u64, now_ns: u64) -> Fields {
    let mut f = Fields::new();
    f.insert("session_id".into(), json!(session.id));
    f.insert("user".into(), json!(session.user));
    f.insert("uid".into(), json!(session.uid));
    f.insert("kind".into(), json!(session.kind.as_str()));
    let terminals: Vec<String> = session
        .terminals
        .iter()
        .map(|t| crate::sessions::tty_name(&t.key))
        .collect();
    f.insert("tty".into(), json!(terminals.first()));
    f.insert("terminals".into(), json!(terminals));
    f.insert("carries".into(), json!(session.carries));
    f.insert(
        "remote".into(),
        session.remote.as_ref().map_or(Value::Null, |r| json!(r)),
    );
    f.insert("rule".into(), json!(rule));
    f.insert(
        "idle_seconds".into(),
        json!(clock::seconds_between(last_input_ns, now_ns)),
    );
    f.insert(
        "duration_seconds".into(),
        json!(clock::seconds_between(session.started_ns, now_ns)),
    );
    f.insert("leader_pid".into(), json!(session.leader().pid));
    f.insert("identity_pid".into(), json!(session.identity.pid));
    if let Some(c) = &session.container {
        f.insert(
            "container".into(),
            serde_json::to_value(c).unwrap_or(Value::Null),
        );
    }
    f
}
