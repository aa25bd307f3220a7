//! Revocations: users, uids and groups whose sessions are ended and kept out.
//!
//! Revocations come from two places: `session-monitor revoke` (persisted in the
//! state directory, so they survive restarts) and the policy's `revoked_users` /
//! `revoked_groups` (replaced on every reload). They apply in every mode: dry-run is
//! for trying out time limits, not for ignoring an explicit revocation.
//!
//! The state file fails closed: if it cannot be read or parsed, the daemon refuses
//! to start rather than forget who is revoked.

use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::sessions::Login as Session;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/session-monitor";
const STATE_FILE: &str = "revocations.json";

/// Who is revoked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Target {
    User { name: String, uid: Option<u32> },
    Uid { uid: u32 },
    Group { name: String, gid: Option<u32> },
}

impl Target {
    /// Resolves names to ids where the system knows them (unknown users may still be
    /// revoked: an account created later must not slip through).
    pub fn user(name: &str) -> Self {
        let uid = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw());
        Target::User {
            name: name.to_string(),
            uid,
        }
    }

    pub fn group(name: &str) -> Self {
        let gid = nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw());
        Target::Group {
            name: name.to_string(),
            gid,
        }
    }

    pub fn matches(&self, session: &Session) -> bool {
        match self {
            Target::User { name, uid } => {
                session.user == *name || uid.is_some_and(|u| u == session.uid)
            }
            Target::Uid { uid } => session.uid == *uid,
            Target::Group { name, gid } => {
                session.group_names.iter().any(|g| g == name)
                    || gid.is_some_and(|g| session.gid == g || session.groups.contains(&g))
            }
        }
    }

    /// Same target, compared by what identifies it.
    fn same(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::User { name: a, .. }, Target::User { name: b, .. }) => a == b,
            (Target::Uid { uid: a }, Target::Uid { uid: b }) => a == b,
            (Target::Group { name: a, .. }, Target::Group { name: b, .. }) => a == b,
            _ => false,
        }
    }

    /// Uids whose transports the kernel stops (never root: root runs the shared
    /// infrastructure — container shims, system tmux — that other users' sessions
    /// go through).
    fn uids(&self) -> Vec<u32> {
        let ids = match self {
            Target::User { uid, .. } => uid.iter().copied().collect(),
            Target::Uid { uid } => vec![*uid],
            Target::Group { name, .. } => nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| {
                    g.mem
                        .iter()
                        .filter_map(|m| nix::unistd::User::from_name(m).ok().flatten())
                        .map(|u| u.uid.as_raw())
                        .collect()
                })
                .unwrap_or_default(),
        };
        ids.into_iter().filter(|&u| u != 0).collect()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::User { name, .. } => write!(f, "user {name}"),
            Target::Uid { uid } => write!(f, "uid {uid}"),
            Target::Group { name, .. } => write!(f, "group {name}"),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `session-monitor revoke`.
    #[default]
    Command,
    /// The policy file's `revoked_users` / `revoked_groups`.
    Policy,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revocation {
    pub target: Target,
    /// Seconds since the Unix epoch.
    pub since: u64,
    /// Lifted automatically at this time (seconds since the epoch); None = until lifted.
    pub until: Option<u64>,
    pub reason: Option<String>,
    /// Uid of whoever asked for it (None for the policy file).
    pub by_uid: Option<u32>,
    #[serde(default)]
    pub source: Source,
}

impl Revocation {
    pub fn new(
        target: Target,
        duration: Option<Duration>,
        reason: Option<String>,
        by_uid: Option<u32>,
    ) -> Self {
        let now = unix_now();
        Self {
            target,
            since: now,
            until: duration.map(|d| now + d.as_secs().max(1)),
            reason,
            by_uid,
            source: Source::Command,
        }
    }

    pub fn reason_text(&self) -> String {
        self.reason
            .clone()
            .unwrap_or_else(|| format!("{} revoked", self.target))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[derive(Serialize, Deserialize, Default)]
struct StateFile {
    version: u32,
    revocations: Vec<Revocation>,
}

pub struct Revocations {
    entries: Vec<Revocation>,
    state_path: PathBuf,
}

impl Revocations {
    /// Loads the persisted revocations; a missing file is an empty list, an
    /// unreadable or corrupt one is an error.
    pub fn load(state_dir: &Path) -> Result<Self> {
        let state_path = state_dir.join(STATE_FILE);
        let entries = match fs::read_to_string(&state_path) {
            Ok(text) => {
                let state: StateFile = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{} is corrupt; refusing to start without knowing who is revoked",
                        state_path.display()
                    )
                })?;
                state.revocations
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => bail!(
                "cannot read {}: {e}; refusing to start without knowing who is revoked",
                state_path.display()
            ),
        };
        let mut this = Self {
            entries,
            state_path,
        };
        this.entries.retain(|r| r.source == Source::Command);
        Ok(this)
    }

    pub fn list(&self) -> &[Revocation] {
        &self.entries
    }

    /// Adds (or replaces the revocation of the same target) and persists.
    pub fn add(&mut self, revocation: Revocation) -> Result<()> {
        self.entries
            .retain(|r| !(r.source == revocation.source && r.target.same(&revocation.target)));
        self.entries.push(revocation);
        self.save()
    }

    /// Lifts command revocations of `target`; returns how many were lifted.
    pub fn remove(&mut self, target: &Target) -> Result<usize> {
        let before = self.entries.len();
        self.entries
            .retain(|r| !(r.source == Source::Command && r.target.same(target)));
        let removed = before - self.entries.len();
        if removed > 0 {
            self.save()?;
        }
        Ok(removed)
    }

    /// True when the policy file revokes `target` (it cannot be lifted by command).
    pub fn is_policy_revoked(&self, target: &Target) -> bool {
        self.entries
            .iter()
            .any(|r| r.source == Source::Policy && r.target.same(target))
    }

    /// Replaces the policy's revocations; returns the ones that are new.
    pub fn set_policy(&mut self, users: &[String], groups: &[String]) -> Vec<Revocation> {
        let wanted: Vec<Target> = users
            .iter()
            .map(|u| Target::user(u))
            .chain(groups.iter().map(|g| Target::group(g)))
            .collect();
        let old: Vec<Revocation> = self
            .entries
            .iter()
            .filter(|r| r.source == Source::Policy)
            .cloned()
            .collect();
        self.entries.retain(|r| r.source != Source::Policy);
        let mut added = Vec::new();
        for target in wanted {
            let existing = old.iter().find(|r| r.target.same(&target));
            let revocation = existing.cloned().unwrap_or_else(|| {
                let r = Revocation {
                    source: Source::Policy,
                    reason: Some("revoked by the policy file".into()),
                    ..Revocation::new(target, None, None, None)
                };
                added.push(r.clone());
                r
            });
            self.entries.push(revocation);
        }
        added
    }

    /// Removes revocations whose time is up; returns them.
    pub fn expire(&mut self) -> Result<Vec<Revocation>> {
        let now = unix_now();
        let (expired, kept): (Vec<_>, Vec<_>) = self
            .entries
            .drain(..)
            .partition(|r| r.until.is_some_and(|t| t <= now));
        self.entries = kept;
        if !expired.is_empty() {
            self.save()?;
        }
        Ok(expired)
    }

    /// The revocation that applies to a session, if any.
    pub fn matching(&self, session: &Session) -> Option<&Revocation> {
        let now = unix_now();
        self.entries
            .iter()
            .filter(|r| r.until.is_none_or(|t| t > now))
            .find(|r| r.target.matches(session))
    }

    /// Uids the kernel should stop: revoked users and members of revoked groups, plus
    /// `extra` (uids of live sessions matched at run time, e.g. by primary group).
    pub fn kernel_uids(&self, extra: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
        self.entries
            .iter()
            .flat_map(|r| r.target.uids())
            .chain(extra.into_iter().filter(|&u| u != 0))
            .collect()
    }

    /// Writes command revocations atomically (temp file + rename), mode 0600.
    fn save(&self) -> Result<()> {
        let dir = self.state_path.parent().unwrap_or(Path::new("/"));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let state = StateFile {
            version: 1,
            revocations: self
                .entries
                .iter()
                .filter(|r| r.source == Source::Command)
                .cloned()
                .collect(),
        };
        let tmp = self.state_path.with_extension("json.tmp");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(serde_json::to_string_pretty(&state)?.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &self.state_path)
            .with_context(|| format!("replacing {}", self.state_path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sm-revoke-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempdir("persist");
        let mut r = Revocations::load(&dir).unwrap();
        r.add(Revocation::new(
            Target::Uid { uid: 4242 },
            None,
            Some("left".into()),
            Some(0),
        ))
        .unwrap();
        r.add(Revocation::new(
            Target::user("nosuchuser-sm"),
            Some(Duration::from_secs(3600)),
            None,
            Some(0),
        ))
        .unwrap();
        r.set_policy(&["policyuser".into()], &[]);
        let again = Revocations::load(&dir).unwrap();
        // Policy revocations are not persisted: they come back with the policy.
        assert_eq!(again.list().len(), 2);
        assert_eq!(again.kernel_uids([]), BTreeSet::from([4242]));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_state_fails_closed() {
        let dir = tempdir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(STATE_FILE), "{ not json").unwrap();
        let err = Revocations::load(&dir).err().unwrap().to_string();
        assert!(err.contains("refusing to start"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn root_is_never_stopped_in_the_kernel() {
        let dir = tempdir("root");
        let mut r = Revocations::load(&dir).unwrap();
        r.add(Revocation::new(Target::Uid { uid: 0 }, None, None, None))
            .unwrap();
        assert!(r.kernel_uids([0]).is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn expiry_lifts_revocations() {
        let dir = tempdir("expire");
        let mut r = Revocations::load(&dir).unwrap();
        let mut rev = Revocation::new(
            Target::Uid { uid: 7 },
            Some(Duration::from_secs(1)),
            None,
            None,
        );
        rev.until = Some(unix_now() - 1);
        r.add(rev).unwrap();
        assert_eq!(r.expire().unwrap().len(), 1);
        assert!(r.list().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }
}
