//! Requests and responses on the control socket.

use serde::{Deserialize, Serialize};

/// Requests larger than this are refused unread.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Live sessions.
    Sessions,
    /// Backend, attached programs, counters.
    Status,
    /// Which rule applies to a session and when it will be warned and ended.
    Explain { id: String },
    /// End every live session of the matching users and keep them out.
    Revoke {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// Seconds; absent means until lifted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_secs: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Lift a revocation.
    Unrevoke {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// Revocations in force.
    Revocations,
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Sessions => "sessions",
            Request::Status => "status",
            Request::Explain { .. } => "explain",
            Request::Revoke { .. } => "revoke",
            Request::Unrevoke { .. } => "unrevoke",
            Request::Revocations => "revocations",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: impl Serialize) -> Self {
        Self {
            ok: true,
            error: None,
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            data: serde_json::Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let req = Request::Revoke {
            user: Some("alice".into()),
            uid: None,
            group: None,
            duration_secs: Some(60),
            reason: Some("left".into()),
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"sessions"}"#).unwrap(),
            Request::Sessions
        );
    }

    #[test]
    fn unknown_commands_and_fields_are_refused() {
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
        assert!(
            serde_json::from_str::<Request>(r#"{"cmd":"explain","id":"x","extra":1}"#).is_err()
        );
        assert!(serde_json::from_str::<Request>("not json").is_err());
    }
}
