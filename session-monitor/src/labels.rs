//! Closed sets of values that the audit log and the metrics labels both name (why a
//! session ended, what happened to a revocation, how a reload went, ...).
//!
//! [`closed_set!`] writes each name once: `as_str()` gives it to the metrics labels,
//! `Serialize`/`Deserialize` to the audit log and the state files. A value outside
//! the set cannot be built, so no label can grow the number of series.

/// An enum of unit variants, each with its name: `Variant => "name",`. Generates
/// `ALL`, `NAMES`, `as_str()`, `Display`, and `Serialize`/`Deserialize` as the name.
macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        #[allow(dead_code)]
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The names of [`Self::ALL`], in the same order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The name, as the audit log and the metrics labels write it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| ::serde::de::Error::unknown_variant(&text, Self::NAMES))
            }
        }
    };
}
pub(crate) use closed_set;

closed_set! {
    /// A change to the set of revoked users: the `revoke`, `unrevoke` and
    /// `revocation_expired` records, `session_monitor_revocations_total{action}`.
    pub enum RevocationAction {
        Revoke => "revoke",
        Unrevoke => "unrevoke",
        Expire => "expire",
    }
}

closed_set! {
    /// How a policy reload went: `policy_reload`'s `result`,
    /// `session_monitor_policy_reloads_total{result}`.
    pub enum ReloadResult {
        /// The new policy is in force.
        Ok => "ok",
        /// The new policy was invalid or unreadable; the last good one stays.
        Rejected => "rejected",
    }
}

closed_set! {
    /// How the daemon came to know a session: `session_start`'s `how`.
    pub enum SessionOrigin {
        /// Open before the daemon started, found in /proc.
        Discovered => "discovered",
        /// Opened while the daemon watched.
        Started => "started",
    }
}

closed_set! {
    /// Which line the daemon meant to write to a terminal: `notice_refused`'s `notice`.
    pub enum Notice {
        /// The warning that the session will end.
        Warning => "warning",
        /// The closing line that says why it ended.
        Closing => "closing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_serialize_and_parse_as_themselves() {
        for (value, name) in RevocationAction::ALL.iter().zip(RevocationAction::NAMES) {
            assert_eq!(value.as_str(), *name);
            assert_eq!(serde_json::to_value(value).unwrap(), *name);
            let back: RevocationAction = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(back, *value);
        }
        assert_eq!(ReloadResult::Rejected.to_string(), "rejected");
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_the_known_ones() {
        let err = serde_json::from_str::<ReloadResult>("\"maybe\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `maybe`"), "{err}");
        assert!(err.contains("expected `ok` or `rejected`"), "{err}");
    }
}
