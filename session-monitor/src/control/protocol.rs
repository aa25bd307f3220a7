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

/// Decodes one request line as read from the socket (with or without its
/// newline). Any client may send anything here: every refusal says what is wrong.
pub fn decode_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "request too large (limit {MAX_REQUEST_BYTES} bytes)"
        ));
    }
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Err("empty request".into());
    }
    serde_json::from_str(text.trim()).map_err(|e| format!("malformed request: {e}"))
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

// Each parser's tests include the shared fuzzing support themselves, so that the
// daemon's module tree (main.rs) stays as it is.
#[cfg(test)]
#[path = "../fuzz/support.rs"]
#[allow(clippy::duplicate_mod)]
mod fuzz_support;

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

    use super::fuzz_support;
    use proptest::prelude::*;

    /// What every refusal starts with: the reason a client is shown.
    const REASONS: [&str; 4] = [
        "request too large",
        "request is not UTF-8",
        "empty request",
        "malformed request: ",
    ];

    /// Decodes like the server: refusals name the problem, nothing panics, and a
    /// request that decodes encodes back to the same request.
    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        match decode_request(bytes) {
            Ok(request) => {
                let again = serde_json::to_string(&request).expect("encodes");
                prop_assert_eq!(decode_request(again.as_bytes()), Ok(request));
            }
            Err(why) => {
                let detail = REASONS
                    .iter()
                    .find_map(|r| why.strip_prefix(r))
                    .map(|rest| rest.trim().len());
                // A malformed request is told what and where (serde_json's message).
                prop_assert!(
                    detail.is_some_and(|d| d > 0 || !why.starts_with("malformed")),
                    "unhelpful refusal {:?}",
                    why
                );
            }
        }
        Ok(())
    }

    #[test]
    fn fuzz_control_corpus_replays() {
        let mut decoded = 0;
        for (name, bytes) in fuzz_support::corpus("control") {
            check(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            decoded += usize::from(decode_request(&bytes).is_ok());
        }
        assert!(decoded >= 3, "the corpus keeps valid requests too");
    }

    #[test]
    fn oversized_requests_are_refused_unparsed() {
        let big = format!(
            r#"{{"cmd":"explain","id":"{}"}}"#,
            "x".repeat(MAX_REQUEST_BYTES)
        );
        assert!(
            decode_request(big.as_bytes())
                .unwrap_err()
                .starts_with("request too large")
        );
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,24}", "[a-z]{1,12}", "\\PC{0,8}"]
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::Sessions),
            Just(Request::Status),
            Just(Request::Revocations),
            text().prop_map(|id| Request::Explain { id }),
            (
                proptest::option::of(text()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(text()),
                proptest::option::of(any::<u64>()),
                proptest::option::of(text()),
            )
                .prop_map(|(user, uid, group, duration_secs, reason)| {
                    Request::Revoke {
                        user,
                        uid,
                        group,
                        duration_secs,
                        reason,
                    }
                }),
            (
                proptest::option::of(text()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(text()),
            )
                .prop_map(|(user, uid, group)| Request::Unrevoke { user, uid, group }),
        ]
    }

    proptest! {
        #![proptest_config(fuzz_support::config(512))]

        #[test]
        fn fuzz_control_mutated_corpus(bytes in fuzz_support::mutated("control")) {
            check(&bytes)?;
        }

        #[test]
        fn fuzz_control_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            check(&bytes)?;
        }

        #[test]
        fn fuzz_control_requests_round_trip(request in request(), newline in any::<bool>()) {
            let mut line = serde_json::to_string(&request).unwrap();
            if newline {
                line.push('\n');
            }
            prop_assert_eq!(decode_request(line.as_bytes()), Ok(request));
        }
    }
}
