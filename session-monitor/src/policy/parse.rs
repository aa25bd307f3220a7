//! Reading and validating a policy file. Every error names the file, the line and the
//! key, and parsing either yields a whole valid policy or nothing.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::{Limits, Mode, Overrides, Policy, Rule, duration::parse_setting};
use crate::{audit::Rotation, sessions::SessionKind};

/// One problem in a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    /// The key at fault (empty when the TOML itself is malformed).
    pub key: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: `{}`: {}",
                self.file, self.line, self.key, self.message
            )
        }
    }
}

/// All problems found in one file.
#[derive(Clone, Debug)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    idle_timeout: Option<Spanned<String>>,
    max_session: Option<Spanned<String>>,
    network_timeout: Option<Spanned<String>>,
    warn_before: Option<Spanned<String>>,
    kill_grace: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    control_group: Option<Spanned<String>>,
    revoked_users: Option<Vec<Spanned<String>>>,
    revoked_groups: Option<Vec<Spanned<String>>>,
    metrics_addr: Option<Spanned<String>>,
    metrics_user_labels: Option<bool>,
    audit_log: Option<Spanned<String>>,
    audit_max_size: Option<Spanned<String>>,
    audit_keep: Option<Spanned<i64>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Spanned<String>>,
    #[serde(default)]
    users: Vec<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    kinds: Vec<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    max_session: Option<Spanned<String>>,
    network_timeout: Option<Spanned<String>>,
    warn_before: Option<Spanned<String>>,
    exempt: Option<Spanned<bool>>,
}

/// Reads and validates a policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        PolicyErrors(vec![PolicyError {
            file: name.clone(),
            line: 0,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    let mut policy = parse_str(&text, &name)?;
    policy.source = Some(path.to_path_buf());
    Ok(policy)
}

/// Validates policy text; `file` names it in errors.
pub fn parse_str(text: &str, file: &str) -> Result<Policy, PolicyErrors> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        PolicyErrors(vec![PolicyError {
            file: file.to_string(),
            line,
            key: String::new(),
            message: e.message().trim().to_string(),
        }])
    })?;
    let mut v = Validator {
        text,
        file,
        errors: Vec::new(),
    };
    let policy = v.policy(raw);
    if v.errors.is_empty() {
        Ok(policy)
    } else {
        Err(PolicyErrors(v.errors))
    }
}

/// Rotated audit files kept when the policy does not say.
pub const DEFAULT_AUDIT_KEEP: u32 = 5;

/// The smallest `audit_max_size`: a file must hold a few records.
const MIN_AUDIT_SIZE: u64 = 4096;

/// A size like `100M`, `1G`, `512K` or a number of bytes; `none` turns rotation off.
fn parse_size(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t == "none" {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`; write e.g. `100M`, `1G`, `512K` or `none`"
            ));
        }
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("`{text}` is not a size; write e.g. `100M`, `1G`, `512K` or `none`")
    })?;
    let bytes = n
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes < MIN_AUDIT_SIZE {
        return Err(format!(
            "`{text}` is too small for an audit file; at least {MIN_AUDIT_SIZE} bytes (4K)"
        ));
    }
    Ok(Some(bytes))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

struct Validator<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<PolicyError>,
}

impl Validator<'_> {
    fn error(&mut self, offset: usize, key: &str, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: line_of(self.text, offset),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// A duration setting: Some(None) = `none`, None = absent or invalid.
    fn duration(&mut self, value: &Option<Spanned<String>>, key: &str) -> Option<Option<Duration>> {
        let value = value.as_ref()?;
        match parse_setting(value.get_ref()) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(value.span().start, key, msg);
                None
            }
        }
    }

    /// A duration that cannot be `none`.
    fn required_duration(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
    ) -> Option<Duration> {
        match self.duration(value, key)? {
            Some(d) => Some(d),
            None => {
                let start = value.as_ref().map_or(0, |v| v.span().start);
                self.error(start, key, "cannot be `none`");
                None
            }
        }
    }

    fn policy(&mut self, raw: RawPolicy) -> Policy {
        let mut policy = Policy::default();
        if let Some(d) = self.duration(&raw.idle_timeout, "idle_timeout") {
            policy.defaults.idle_timeout = d;
        }
        if let Some(d) = self.duration(&raw.max_session, "max_session") {
            policy.defaults.max_session = d;
        }
        if let Some(d) = self.duration(&raw.network_timeout, "network_timeout") {
            policy.defaults.network_timeout = d;
        }
        if let Some(d) = self.required_duration(&raw.warn_before, "warn_before") {
            policy.defaults.warn_before = d;
        }
        if let Some(d) = self.required_duration(&raw.kill_grace, "kill_grace") {
            policy.kill_grace = d;
        }
        let warn_at = raw
            .warn_before
            .as_ref()
            .or(raw.idle_timeout.as_ref())
            .map_or(0, |v| v.span().start);
        self.check_warning_fits(&policy.defaults, warn_at, "warn_before");
        if let Some(mode) = &raw.mode {
            match mode.get_ref().as_str() {
                "enforce" => policy.mode = Mode::Enforce,
                "dry-run" => policy.mode = Mode::DryRun,
                other => self.error(
                    mode.span().start,
                    "mode",
                    format!("unknown mode `{other}`; expected `enforce` or `dry-run`"),
                ),
            }
        }
        policy.control_group = raw
            .control_group
            .map(Spanned::into_inner)
            .filter(|g| !g.is_empty());
        policy.revoked_users = self.names(raw.revoked_users, "revoked_users");
        policy.revoked_groups = self.names(raw.revoked_groups, "revoked_groups");
        if let Some(addr) = &raw.metrics_addr {
            let text = addr.get_ref().trim();
            if text.is_empty() {
                policy.metrics_addr = Some(None);
            } else {
                match text.parse::<SocketAddr>() {
                    Ok(a) => policy.metrics_addr = Some(Some(a)),
                    Err(_) => self.error(
                        addr.span().start,
                        "metrics_addr",
                        format!("`{text}` is not an address like `127.0.0.1:9469` (empty turns metrics off)"),
                    ),
                }
            }
        }
        policy.metrics_user_labels = raw.metrics_user_labels.unwrap_or(false);
        policy.audit_log = raw.audit_log.map(|p| PathBuf::from(p.into_inner()));
        policy.audit_rotation = self.audit_rotation(&raw.audit_max_size, &raw.audit_keep);
        for (i, rule) in raw.rule.into_iter().enumerate() {
            if let Some(rule) = self.rule(rule, i + 1) {
                policy.rules.push(rule);
            }
        }
        self.check_rules(&policy.rules);
        policy
    }

    /// `audit_max_size` turns size rotation on; `audit_keep` (default 5) says how
    /// many rotated files stay.
    fn audit_rotation(
        &mut self,
        max_size: &Option<Spanned<String>>,
        keep: &Option<Spanned<i64>>,
    ) -> Option<Rotation> {
        let keep = match keep {
            None => DEFAULT_AUDIT_KEEP,
            Some(k) => match u32::try_from(*k.get_ref()) {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    self.error(
                        k.span().start,
                        "audit_keep",
                        format!(
                            "{} rotated files: write a number from 1 to 1000",
                            k.get_ref()
                        ),
                    );
                    return None;
                }
            },
        };
        let size = max_size.as_ref()?;
        match parse_size(size.get_ref()) {
            Ok(Some(max_size)) => Some(Rotation { max_size, keep }),
            Ok(None) => None,
            Err(msg) => {
                self.error(size.span().start, "audit_max_size", msg);
                None
            }
        }
    }

    fn names(&mut self, list: Option<Vec<Spanned<String>>>, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for name in list.unwrap_or_default() {
            if name.get_ref().trim().is_empty() {
                self.error(name.span().start, key, "empty name");
            } else {
                out.push(name.into_inner());
            }
        }
        out
    }

    /// A warning must come before the end it announces.
    fn check_warning_fits(&mut self, limits: &Limits, offset: usize, key: &str) {
        for (name, limit) in [
            ("idle_timeout", limits.idle_timeout),
            ("max_session", limits.max_session),
        ] {
            if let Some(limit) = limit
                && limits.warn_before >= limit
            {
                self.error(
                    offset,
                    key,
                    format!(
                        "warn_before ({}) must be shorter than {name} ({})",
                        super::duration::format(Some(limits.warn_before)),
                        super::duration::format(Some(limit))
                    ),
                );
            }
        }
    }

    fn rule(&mut self, raw: Spanned<RawRule>, index: usize) -> Option<Rule> {
        let start = raw.span().start;
        let line = line_of(self.text, start);
        let raw = raw.into_inner();
        let name = raw.name.as_ref().map_or_else(
            || format!("rule {index} (line {line})"),
            |n| n.get_ref().clone(),
        );
        let errors_before = self.errors.len();
        let mut kinds = Vec::new();
        for kind in &raw.kinds {
            match SessionKind::parse(kind.get_ref()) {
                Some(k) => kinds.push(k),
                None => self.error(
                    kind.span().start,
                    "kinds",
                    format!(
                        "unknown session kind `{}`; expected one of ssh, mosh, console, container, local",
                        kind.get_ref()
                    ),
                ),
            }
        }
        let overrides = Overrides {
            idle_timeout: self.duration(&raw.idle_timeout, "idle_timeout"),
            max_session: self.duration(&raw.max_session, "max_session"),
            network_timeout: self.duration(&raw.network_timeout, "network_timeout"),
            warn_before: self.required_duration(&raw.warn_before, "warn_before"),
            exempt: raw.exempt.as_ref().map(|e| *e.get_ref()),
        };
        if raw.users.is_empty() && raw.groups.is_empty() && raw.kinds.is_empty() {
            self.error(
                start,
                "rule",
                format!("rule `{name}` has no users, groups or kinds; put defaults at the top level instead"),
            );
        }
        if let Some(exempt) = raw.exempt.as_ref().filter(|e| *e.get_ref()) {
            let sets_limit = overrides.idle_timeout.is_some()
                || overrides.max_session.is_some()
                || overrides.network_timeout.is_some()
                || overrides.warn_before.is_some();
            if sets_limit {
                self.error(
                    exempt.span().start,
                    "exempt",
                    format!("rule `{name}` is exempt but also sets limits; an exempt session is never ended"),
                );
            }
        }
        if let Some(warn) = overrides.warn_before {
            for (key, limit) in [
                ("idle_timeout", overrides.idle_timeout),
                ("max_session", overrides.max_session),
            ] {
                if let Some(Some(limit)) = limit
                    && warn >= limit
                {
                    let offset = raw.warn_before.as_ref().map_or(start, |w| w.span().start);
                    self.error(
                        offset,
                        "warn_before",
                        format!(
                            "rule `{name}`: warn_before ({}) must be shorter than {key} ({})",
                            super::duration::format(Some(warn)),
                            super::duration::format(Some(limit))
                        ),
                    );
                }
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Rule {
            name,
            line,
            users: raw.users.into_iter().map(Spanned::into_inner).collect(),
            groups: raw.groups.into_iter().map(Spanned::into_inner).collect(),
            kinds,
            overrides,
        })
    }

    /// Two equally specific rules that can match the same session must not disagree:
    /// which one applied would depend on file order, which nobody reads that closely.
    fn check_rules(&mut self, rules: &[Rule]) {
        for (i, a) in rules.iter().enumerate() {
            for b in &rules[..i] {
                if a.name == b.name {
                    self.errors.push(PolicyError {
                        file: self.file.to_string(),
                        line: a.line,
                        key: "name".into(),
                        message: format!(
                            "rule name `{}` is already used by the rule at line {}",
                            a.name, b.line
                        ),
                    });
                    continue;
                }
                if a.specificity() != b.specificity() || !overlap(a, b) {
                    continue;
                }
                let (x, y) = (&a.overrides, &b.overrides);
                let conflicts = [
                    (
                        "idle_timeout",
                        x.idle_timeout.is_some()
                            && y.idle_timeout.is_some()
                            && x.idle_timeout != y.idle_timeout,
                    ),
                    (
                        "max_session",
                        x.max_session.is_some()
                            && y.max_session.is_some()
                            && x.max_session != y.max_session,
                    ),
                    (
                        "network_timeout",
                        x.network_timeout.is_some()
                            && y.network_timeout.is_some()
                            && x.network_timeout != y.network_timeout,
                    ),
                    (
                        "warn_before",
                        x.warn_before.is_some()
                            && y.warn_before.is_some()
                            && x.warn_before != y.warn_before,
                    ),
                    (
                        "exempt",
                        x.exempt.is_some() && y.exempt.is_some() && x.exempt != y.exempt,
                    ),
                ];
                for (key, conflict) in conflicts {
                    if conflict {
                        self.errors.push(PolicyError {
                            file: self.file.to_string(),
                            line: a.line,
                            key: key.into(),
                            message: format!(
                                "rules `{}` (line {}) and `{}` (line {}) can apply to the same session and set `{key}` differently",
                                b.name, b.line, a.name, a.line
                            ),
                        });
                    }
                }
            }
        }
    }
}

/// Can one session match both rules (same selector dimensions, intersecting values)?
fn overlap(a: &Rule, b: &Rule) -> bool {
    fn meets<T: PartialEq>(x: &[T], y: &[T]) -> bool {
        x.is_empty() || y.is_empty() || x.iter().any(|v| y.contains(v))
    }
    meets(&a.users, &b.users) && meets(&a.groups, &b.groups) && meets(&a.kinds, &b.kinds)
}

// Each parser's tests include the shared fuzzing support themselves, so that the
// daemon's module tree (main.rs) stays as it is.
#[cfg(test)]
#[path = "../fuzz/support.rs"]
#[allow(clippy::duplicate_mod)]
mod fuzz_support;

#[cfg(test)]
mod fuzz {
    //! Property tests of the policy parser: any text gives a policy or errors that
    //! name file, line and key; valid policies read back as written.

    use proptest::prelude::*;

    use super::{fuzz_support, parse_str};
    use crate::policy::duration;

    /// Keys an error may name (empty: the TOML itself).
    const KEYS: [&str; 20] = [
        "",
        "idle_timeout",
        "max_session",
        "network_timeout",
        "warn_before",
        "kill_grace",
        "mode",
        "control_group",
        "revoked_users",
        "revoked_groups",
        "metrics_addr",
        "metrics_user_labels",
        "audit_log",
        "rule",
        "name",
        "users",
        "groups",
        "kinds",
        "exempt",
        "rules",
    ];

    fn check(text: &str) -> Result<(), TestCaseError> {
        let lines = text.matches('\n').count() + 1;
        match parse_str(text, "fuzz.toml") {
            Ok(policy) => {
                let limits = [policy.defaults.idle_timeout, policy.defaults.max_session];
                for limit in limits.into_iter().flatten() {
                    prop_assert!(limit <= duration::MAX && !limit.is_zero());
                    prop_assert!(policy.defaults.warn_before < limit);
                }
                for rule in &policy.rules {
                    prop_assert!(rule.specificity() > 0, "a rule without selectors");
                    prop_assert!((1..=lines).contains(&rule.line));
                }
            }
            Err(errors) => {
                prop_assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    prop_assert_eq!(&e.file, "fuzz.toml");
                    prop_assert!(
                        (1..=lines).contains(&e.line) || (e.line == 0 && e.key.is_empty()),
                        "line {} of {}: {}",
                        e.line,
                        lines,
                        e
                    );
                    prop_assert!(KEYS.contains(&e.key.as_str()), "key {:?}", e.key);
                    prop_assert!(!e.message.trim().is_empty(), "{}", e);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn fuzz_policy_corpus_replays() {
        let mut valid = 0;
        for (name, bytes) in fuzz_support::corpus("policy") {
            // Policy files are read as UTF-8; others fail before the parser.
            let text = String::from_utf8(bytes).unwrap_or_else(|_| panic!("{name}: not UTF-8"));
            check(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            valid += usize::from(parse_str(&text, "fuzz.toml").is_ok());
        }
        assert!(valid >= 2, "the corpus keeps valid policies too");
    }

    /// A duration in one of the ways people write them.
    fn written_duration() -> impl Strategy<Value = (u64, String)> {
        (1u64..=10_000_000, 0..3).prop_map(|(secs, style)| {
            let text = match style {
                0 => format!("{secs}s"),
                1 => duration::format(Some(std::time::Duration::from_secs(secs))),
                _ => format!(
                    " {} ",
                    humantime::format_duration(std::time::Duration::from_secs(secs))
                ),
            };
            (secs, text)
        })
    }

    fn toml_string(s: &str) -> String {
        toml::Value::String(s.to_string()).to_string()
    }

    proptest! {
        #![proptest_config(fuzz_support::config(256))]

        #[test]
        fn fuzz_policy_mutated_corpus(bytes in fuzz_support::mutated("policy")) {
            check(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn fuzz_policy_any_text(text in "\\PC{0,200}") {
            check(&text)?;
        }

        #[test]
        fn fuzz_policy_durations(text in "\\PC{0,24}") {
            // Never panics; accepted durations are usable as nanosecond deadlines.
            if let Ok(Some(d)) = duration::parse_setting(&text) {
                prop_assert!(!d.is_zero() && d <= duration::MAX);
            }
        }

        #[test]
        fn fuzz_policy_valid_policies_read_back(
            idle in written_duration(),
            rules in proptest::collection::vec(
                ("\\PC{1,12}", written_duration(), proptest::sample::subsequence(
                    vec!["ssh", "mosh", "console", "container", "local"], 0..=5)),
                0..5,
            ),
        ) {
            let (idle_secs, idle_text) = idle;
            let mut text = format!(
                "idle_timeout = {}\nwarn_before = \"1s\"\n",
                toml_string(&idle_text)
            );
            for (i, (user, (secs, written), kinds)) in rules.iter().enumerate() {
                let kinds: Vec<String> = kinds.iter().map(|k| toml_string(k)).collect();
                text.push_str(&format!(
                    "\n[[rule]]\nname = \"rule {i}\"\nusers = [{}]\nkinds = [{}]\nidle_timeout = {}\nwarn_before = \"1s\"\n",
                    toml_string(&format!("{user}{i}")),
                    kinds.join(", "),
                    toml_string(written),
                ));
                let _ = secs;
            }
            let warn_fits = idle_secs > 1 && rules.iter().all(|(_, (s, _), _)| *s > 1);
            match parse_str(&text, "fuzz.toml") {
                Ok(policy) => {
                    prop_assert!(warn_fits);
                    prop_assert_eq!(
                        policy.defaults.idle_timeout,
                        Some(std::time::Duration::from_secs(idle_secs))
                    );
                    prop_assert_eq!(policy.rules.len(), rules.len());
                    for (i, (rule, (user, (secs, _), kinds))) in
                        policy.rules.iter().zip(&rules).enumerate()
                    {
                        prop_assert_eq!(&rule.name, &format!("rule {i}"));
                        prop_assert_eq!(&rule.users, &vec![format!("{user}{i}")]);
                        prop_assert_eq!(rule.kinds.len(), kinds.len());
                        prop_assert_eq!(
                            rule.overrides.idle_timeout,
                            Some(Some(std::time::Duration::from_secs(*secs)))
                        );
                    }
                }
                Err(errors) => {
                    // Only a warning that does not fit before its limit is refused.
                    prop_assert!(!warn_fits, "{}\n{}", errors, text);
                    prop_assert!(errors.0.iter().all(|e| e.key == "warn_before"), "{}", errors);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<PolicyError> {
        parse_str(text, "p.toml").unwrap_err().0
    }

    #[test]
    fn audit_rotation_keys() {
        let p = parse_str("audit_max_size = \"100M\"\naudit_keep = 3\n", "p.toml").unwrap();
        assert_eq!(
            p.audit_rotation,
            Some(Rotation {
                max_size: 100 << 20,
                keep: 3
            })
        );
        let p = parse_str("audit_max_size = \"8K\"\n", "p.toml").unwrap();
        assert_eq!(
            p.audit_rotation.map(|r| (r.max_size, r.keep)),
            Some((8192, 5))
        );
        assert_eq!(parse_str("", "p.toml").unwrap().audit_rotation, None);
        let e = errors("mode = \"dry-run\"\naudit_max_size = \"10 parsecs\"\n");
        assert_eq!((e[0].line, e[0].key.as_str()), (2, "audit_max_size"));
        assert!(
            e[0].message.contains("unknown size unit `parsecs`"),
            "{}",
            e[0]
        );
        let e = errors("audit_max_size = \"100\"\n");
        assert!(e[0].message.contains("too small"), "{}", e[0]);
        let e = errors("audit_max_size = \"1M\"\naudit_keep = 0\n");
        assert_eq!((e[0].line, e[0].key.as_str()), (2, "audit_keep"));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = errors("idle_timeout = \"5m\"\nidle_timout = \"5m\"\n");
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("idle_timout"), "{}", e[0]);
        assert!(e[0].to_string().starts_with("p.toml:2:"), "{}", e[0]);
    }

    #[test]
    fn unknown_key_in_a_rule() {
        let e = errors("[[rule]]\nusers = [\"a\"]\nidle = \"5m\"\n");
        assert_eq!(e[0].line, 3, "{}", e[0]);
        assert!(e[0].message.contains("idle"));
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let e = errors(
            "warn_before = \"10s\"\n\n[[rule]]\nkinds = [\"ssh\"]\nidle_timeout = \"soon\"\n",
        );
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].line, e[0].key.as_str()), (5, "idle_timeout"));
        assert_eq!(
            e[0].to_string(),
            "p.toml:5: `idle_timeout`: invalid duration `soon` (expected number at 0); write e.g. `90s`, `15m`, `2h` or `none`"
        );
    }

    #[test]
    fn unknown_kind() {
        let e = errors("[[rule]]\nkinds = [\"ssh\", \"telnet\"]\nidle_timeout = \"1m\"\n");
        assert_eq!((e[0].line, e[0].key.as_str()), (2, "kinds"));
        assert!(e[0].message.contains("telnet"));
    }

    #[test]
    fn contradictory_rules() {
        let text = "[[rule]]\nname = \"a\"\ngroups = [\"ops\", \"dev\"]\nidle_timeout = \"1h\"\n\n[[rule]]\nname = \"b\"\ngroups = [\"dev\"]\nidle_timeout = \"2h\"\n";
        let e = errors(text);
        assert_eq!((e[0].line, e[0].key.as_str()), (6, "idle_timeout"));
        assert!(e[0].message.contains("`a` (line 1)"), "{}", e[0]);
        // Different groups never meet: no contradiction.
        assert!(
            parse_str(
                &text.replace(
                    "[\"dev\"]\nidle_timeout = \"2h\"",
                    "[\"qa\"]\nidle_timeout = \"2h\""
                ),
                "p"
            )
            .is_ok()
        );
    }

    #[test]
    fn exempt_with_limits_is_contradictory() {
        let e = errors("[[rule]]\nusers = [\"x\"]\nexempt = true\nidle_timeout = \"1h\"\n");
        assert_eq!((e[0].line, e[0].key.as_str()), (3, "exempt"));
    }

    #[test]
    fn warning_longer_than_timeout() {
        let e = errors("idle_timeout = \"30s\"\nwarn_before = \"1m\"\n");
        assert_eq!((e[0].line, e[0].key.as_str()), (2, "warn_before"));
    }

    #[test]
    fn rule_without_selectors() {
        let e = errors("[[rule]]\nidle_timeout = \"1h\"\n");
        assert_eq!((e[0].line, e[0].key.as_str()), (1, "rule"));
    }

    #[test]
    fn reports_every_problem() {
        let e = errors("idle_timeout = \"x\"\nmode = \"sometimes\"\n");
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn full_policy() {
        let p = parse_str(
            "mode = \"dry-run\"\nidle_timeout = \"none\"\nkill_grace = \"1s\"\nmetrics_addr = \"\"\nrevoked_users = [\"mallory\"]\ncontrol_group = \"smadmin\"\n",
            "p",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::DryRun);
        assert_eq!(p.defaults.idle_timeout, None);
        assert_eq!(p.kill_grace, Duration::from_secs(1));
        assert_eq!(p.metrics_addr, Some(None));
        assert_eq!(p.revoked_users, vec!["mallory"]);
        assert_eq!(p.control_group.as_deref(), Some("smadmin"));
    }
}
