//! The fields every session record in the audit log carries.

use serde_json::{Value, json};

use crate::{audit::Fields, clock, sessions::Session};

/// Session id, user, uid, kind, tty, remote, the rule that applied, idle and total
/// duration, plus the container when there is one.
pub fn session(session: &Session, rule: &str, last_input_ns: u64, now_ns: u64) -> Fields {
    let mut f = Fields::new();
    f.insert("session_id".into(), json!(session.id));
    f.insert("user".into(), json!(session.user));
    f.insert("uid".into(), json!(session.uid));
    f.insert("kind".into(), json!(session.kind.as_str()));
    f.insert("tty".into(), json!(session.tty));
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
    f.insert("leader_pid".into(), json!(session.leader.pid));
    if let Some(c) = &session.container {
        f.insert(
            "container".into(),
            serde_json::to_value(c).unwrap_or(Value::Null),
        );
    }
    f
}
