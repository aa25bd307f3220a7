//! Requests and responses on the control socket. A request is typed once, where the
//! CLI parses its arguments (`Who` and `Revoke` are both clap arguments and the
//! wire format), and each request has a typed reply the CLI decodes.

use serde::{Deserialize, Serialize};

use crate::revoke::{Revocation, Target};

/// Requests larger than this are refused unread.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Live sessions. Reply: `Vec<SessionView>`.
    Sessions,
    /// Backend, attached programs, counters. Reply: `Status`.
    Status,
    /// Which rule applies to a session and when it will be warned and ended.
    /// Reply: `Explanation`.
    Explain { id: String },
    /// End every live session of the matching users and keep them out.
    /// Reply: `Revoked`.
    Revoke(Revoke),
    /// Lift a revocation. Reply: `Lifted`.
    Unrevoke(Who),
    /// Revocations in force. Reply: `Vec<Revocation>`.
    Revocations,
}

/// Whose access: a user name, a uid or a group. On the wire the three are
/// optional, so that a request naming none or several reaches the daemon, which
/// refuses it (and audits it) with `target`'s reason.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[group(required = true, multiple = false)]
#[serde(deny_unknown_fields)]
pub struct Who {
    /// The user's login name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A numeric uid (also for users without a name on this host).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Every member of this group (primary or supplementary).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Who {
    /// The revocation target named, with names resolved to ids where the system
    /// knows them.
    pub fn target(&self) -> Result<Target, String> {
        match (&self.user, self.uid, &self.group) {
            (Some(u), None, None) if !u.trim().is_empty() => Ok(Target::user(u.trim())),
            (None, Some(uid), None) => Ok(Target::Uid { uid }),
            (None, None, Some(g)) if !g.trim().is_empty() => Ok(Target::group(g.trim())),
            _ => Err("name exactly one of a user, a uid or a group".into()),
        }
    }
}

/// `session-monitor revoke`, as parsed and as sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    #[command(flatten)]
    #[serde(flatten)]
    pub who: Who,
    /// Lift the revocation automatically after this long (`30m`, `2h`, `7d`);
    /// default: until `unrevoke`.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_seconds)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// Why; shown on the terminals being closed and kept in the audit log.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The reply to `revoke`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revoked {
    pub revoked: Revocation,
    /// The ids of the live sessions being ended.
    pub sessions_ended: Vec<String>,
}

/// The reply to `unrevoke`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lifted {
    pub lifted: Target,
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Sessions => "sessions",
            Request::Status => "status",
            Request::Explain { .. } => "explain",
            Request::Revoke(_) => "revoke",
            Request::Unrevoke(_) => "unrevoke",
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
/// `--for`: whole seconds, at least one (the daemon refuses a revocation of zero
/// seconds).
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_secs().max(1))
        .map_err(|e| format!("`{s}`: {e} (write e.g. `30m`, `2h`, `7d`)"))
}

#[cfg(test)]
#[path = "../fuzz/support.rs"]
#[allow(clippy::duplicate_mod)]
mod fuzz_support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let req = Request::Revoke(Revoke {
            who: Who {
                user: Some("alice".into()),
                ..Who::default()
            },
            duration_secs: Some(60),
            reason: Some("left".into()),
        });
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
        for extra in [
            r#"{"cmd":"revoke","user":"alice","extra":1}"#,
            r#"{"cmd":"unrevoke","uid":5,"extra":1}"#,
            r#"{"cmd":"unrevoke","uid":5,"uid":6}"#,
        ] {
            let why = decode_request(extra.as_bytes()).unwrap_err();
            assert!(why.contains("field"), "{extra}: {why}");
        }
    }

    /// The wire format stays flat (`user`, `uid`, `group` beside `cmd`), as clients
    /// of earlier versions send it.
    #[test]
    fn revocation_requests_keep_their_wire_format() {
        let revoke = Request::Revoke(Revoke {
            who: Who {
                uid: Some(1000),
                ..Who::default()
            },
            duration_secs: Some(3600),
            reason: Some("left".into()),
        });
        let line = r#"{"cmd":"revoke","uid":1000,"duration_secs":3600,"reason":"left"}"#;
        assert_eq!(serde_json::to_string(&revoke).unwrap(), line);
        assert_eq!(decode_request(line.as_bytes()), Ok(revoke));
        let unrevoke = Request::Unrevoke(Who {
            group: Some("ops".into()),
            ..Who::default()
        });
        let line = r#"{"cmd":"unrevoke","group":"ops"}"#;
        assert_eq!(serde_json::to_string(&unrevoke).unwrap(), line);
        assert_eq!(decode_request(line.as_bytes()), Ok(unrevoke));
        // Naming nobody decodes: the daemon refuses it with a reason, and audits it.
        assert_eq!(
            decode_request(br#"{"cmd":"revoke"}"#),
            Ok(Request::Revoke(Revoke {
                who: Who::default(),
                duration_secs: None,
                reason: None
            }))
        );
    }

    #[test]
    fn exactly_one_target_is_named() {
        let who = |user: Option<&str>, uid: Option<u32>, group: Option<&str>| Who {
            user: user.map(str::to_string),
            uid,
            group: group.map(str::to_string),
        };
        assert_eq!(
            who(None, Some(1234), None).target(),
            Ok(Target::Uid { uid: 1234 })
        );
        assert_eq!(
            who(Some(" root "), None, None).target(),
            Ok(Target::User {
                name: "root".into(),
                uid: Some(0)
            })
        );
        assert!(matches!(
            who(None, None, Some("no-such-group-here")).target(),
            Ok(Target::Group { name, gid: None }) if name == "no-such-group-here"
        ));
        for nobody in [
            who(None, None, None),
            who(Some("  "), None, None),
            who(None, None, Some("")),
            who(Some("root"), Some(0), None),
            who(None, Some(0), Some("root")),
        ] {
            assert_eq!(
                nobody.target(),
                Err("name exactly one of a user, a uid or a group".to_string()),
                "{nobody:?}"
            );
        }
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
                who(),
                proptest::option::of(any::<u64>()),
                proptest::option::of(text())
            )
                .prop_map(|(who, duration_secs, reason)| Request::Revoke(Revoke {
                    who,
                    duration_secs,
                    reason
                })),
            who().prop_map(Request::Unrevoke),
        ]
    }

    fn who() -> impl Strategy<Value = Who> {
        (
            proptest::option::of(text()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(text()),
        )
            .prop_map(|(user, uid, group)| Who { user, uid, group })
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
