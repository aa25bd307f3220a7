//! The policy: how long sessions may stay idle or open, per user, group and kind.
//!
//! [`parse`] turns a TOML file into a validated [`Policy`] (or errors that name the
//! file, line and key); [`Policy::resolve`] picks the limits for one session.

mod duration;
mod parse;
mod watch;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Serialize;

pub use parse::load_file;
#[cfg(test)]
pub use parse::parse_str;
pub use watch::spawn_watcher;

use crate::sessions::SessionKind;

pub const DEFAULT_PATH: &str = "/etc/session-monitor/policy.toml";

/// `enforce` ends sessions; `dry-run` logs and counts what would happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Enforce,
    DryRun,
}

/// Limits one session gets. `None` durations are disabled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    #[serde(with = "duration::serde_opt")]
    pub idle_timeout: Option<Duration>,
    #[serde(with = "duration::serde_opt")]
    pub max_session: Option<Duration>,
    #[serde(with = "duration::serde_opt")]
    pub network_timeout: Option<Duration>,
    #[serde(with = "duration::serde_req")]
    pub warn_before: Duration,
    /// Never ended by this policy (revocation still applies).
    pub exempt: bool,
}

/// Settings a rule may override; `None` = not set by this rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub idle_timeout: Option<Option<Duration>>,
    pub max_session: Option<Option<Duration>>,
    pub network_timeout: Option<Option<Duration>>,
    pub warn_before: Option<Duration>,
    pub exempt: Option<bool>,
}

/// A `[[rule]]`: applies when every selector it has matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub line: usize,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub kinds: Vec<SessionKind>,
    pub overrides: Overrides,
}

impl Rule {
    /// User rules beat group rules beat kind rules; combinations add up.
    pub fn specificity(&self) -> u8 {
        (!self.users.is_empty() as u8) * 4
            + (!self.groups.is_empty() as u8) * 2
            + (!self.kinds.is_empty() as u8)
    }

    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        (self.users.is_empty() || self.users.iter().any(|u| u == subject.user))
            && (self.groups.is_empty()
                || self
                    .groups
                    .iter()
                    .any(|g| subject.groups.iter().any(|sg| sg == g)))
            && (self.kinds.is_empty() || self.kinds.contains(&subject.kind))
    }
}

/// What a policy decision is about.
pub struct Subject<'a> {
    pub user: &'a str,
    /// Names of the primary and supplementary groups.
    pub groups: &'a [String],
    pub kind: SessionKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Where it came from (None: built-in defaults).
    pub source: Option<PathBuf>,
    pub mode: Mode,
    pub defaults: Limits,
    pub rules: Vec<Rule>,
    /// Grace between SIGHUP, SIGTERM and SIGKILL when ending a session.
    pub kill_grace: Duration,
    pub control_group: Option<String>,
    pub revoked_users: Vec<String>,
    pub revoked_groups: Vec<String>,
    pub metrics_addr: Option<Option<SocketAddr>>,
    pub metrics_user_labels: bool,
    pub audit_log: Option<PathBuf>,
    /// Size rotation of the audit log (`audit_max_size`, `audit_keep`).
    pub audit_rotation: Option<crate::audit::Rotation>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            source: None,
            mode: Mode::Enforce,
            defaults: Limits {
                idle_timeout: Some(Duration::from_secs(15 * 60)),
                max_session: None,
                network_timeout: Some(Duration::from_secs(3600)),
                warn_before: Duration::from_secs(60),
                exempt: false,
            },
            rules: Vec::new(),
            kill_grace: Duration::from_secs(2),
            control_group: None,
            revoked_users: Vec::new(),
            revoked_groups: Vec::new(),
            metrics_addr: None,
            metrics_user_labels: false,
            audit_log: None,
            audit_rotation: None,
        }
    }
}

/// The limits for one session and where they came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub limits: Limits,
    /// The most specific matching rule, or `default`.
    pub rule: String,
    /// Every matching rule, most specific first.
    pub matched: Vec<String>,
}

impl Policy {
    /// Each setting comes from the most specific matching rule that sets it, else
    /// from the top-level defaults.
    pub fn resolve(&self, subject: &Subject<'_>) -> Resolution {
        let mut matching: Vec<&Rule> = self.rules.iter().filter(|r| r.matches(subject)).collect();
        // Stable sort: among equally specific rules, file order decides.
        matching.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        let mut limits = self.defaults.clone();
        let first = |get: &dyn Fn(&Overrides) -> bool| matching.iter().find(|r| get(&r.overrides));
        if let Some(r) = first(&|o| o.idle_timeout.is_some()) {
            limits.idle_timeout = r.overrides.idle_timeout.unwrap_or_default();
        }
        if let Some(r) = first(&|o| o.max_session.is_some()) {
            limits.max_session = r.overrides.max_session.unwrap_or_default();
        }
        if let Some(r) = first(&|o| o.network_timeout.is_some()) {
            limits.network_timeout = r.overrides.network_timeout.unwrap_or_default();
        }
        if let Some(r) = first(&|o| o.warn_before.is_some()) {
            limits.warn_before = r.overrides.warn_before.unwrap_or(limits.warn_before);
        }
        if let Some(r) = first(&|o| o.exempt.is_some()) {
            limits.exempt = r.overrides.exempt.unwrap_or(false);
        }
        Resolution {
            limits,
            rule: matching
                .first()
                .map_or_else(|| "default".to_string(), |r| r.name.clone()),
            matched: matching.iter().map(|r| r.name.clone()).collect(),
        }
    }

    /// Short description for logs and the audit log.
    pub fn describe(&self) -> String {
        match &self.source {
            Some(path) => format!(
                "{} ({} rules, {:?})",
                path.display(),
                self.rules.len(),
                self.mode
            ),
            None => format!("built-in defaults ({:?})", self.mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject<'a>(user: &'a str, groups: &'a [String], kind: SessionKind) -> Subject<'a> {
        Subject { user, groups, kind }
    }

    const POLICY: &str = r#"
idle_timeout = "15m"
warn_before = "30s"

[[rule]]
name = "mosh is slower"
kinds = ["mosh"]
idle_timeout = "1h"

[[rule]]
name = "ops"
groups = ["ops"]
idle_timeout = "2h"
max_session = "12h"

[[rule]]
name = "alice"
users = ["alice"]
idle_timeout = "5m"

[[rule]]
name = "robots"
users = ["ci"]
exempt = true
"#;

    #[test]
    fn most_specific_rule_wins_per_setting() {
        let policy = parse_str(POLICY, "policy.toml").unwrap();
        let ops = vec!["ops".to_string()];
        let none: Vec<String> = vec![];

        let r = policy.resolve(&subject("bob", &none, SessionKind::Ssh));
        assert_eq!(r.rule, "default");
        assert_eq!(r.limits.idle_timeout, Some(Duration::from_secs(900)));
        assert_eq!(r.limits.warn_before, Duration::from_secs(30));

        let r = policy.resolve(&subject("bob", &none, SessionKind::Mosh));
        assert_eq!(r.rule, "mosh is slower");
        assert_eq!(r.limits.idle_timeout, Some(Duration::from_secs(3600)));

        // Group beats kind; the group's max_session applies too.
        let r = policy.resolve(&subject("carol", &ops, SessionKind::Mosh));
        assert_eq!(r.rule, "ops");
        assert_eq!(r.limits.idle_timeout, Some(Duration::from_secs(7200)));
        assert_eq!(r.limits.max_session, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(r.matched, vec!["ops", "mosh is slower"]);

        // User beats group, but the group's max_session still applies.
        let r = policy.resolve(&subject("alice", &ops, SessionKind::Ssh));
        assert_eq!(r.rule, "alice");
        assert_eq!(r.limits.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(r.limits.max_session, Some(Duration::from_secs(12 * 3600)));

        let r = policy.resolve(&subject("ci", &none, SessionKind::Ssh));
        assert!(r.limits.exempt);
    }

    #[test]
    fn defaults_without_a_file() {
        let p = Policy::default();
        let none: Vec<String> = vec![];
        let r = p.resolve(&subject("x", &none, SessionKind::Local));
        assert_eq!(r.limits.idle_timeout, Some(Duration::from_secs(900)));
        assert_eq!(r.limits.network_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(r.limits.warn_before, Duration::from_secs(60));
        assert_eq!(r.limits.max_session, None);
    }
}
