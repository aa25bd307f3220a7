//! Warnings already given, kept in the state directory. A daemon restarted after a
//! crash finds its sessions again under the same ids; without this it would warn
//! them a second time, and a second warning postpones the end by `warn_before`
//! (a warned user always gets the full warning time). Instants are CLOCK_BOOTTIME,
//! valid only within one boot: a file from an earlier boot is ignored.

use std::{
    collections::HashMap,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{EndReason, Warned};

const FILE: &str = "warnings.json";

#[derive(Serialize, Deserialize)]
struct OnDisk {
    /// `/proc/sys/kernel/random/boot_id` when the file was written.
    boot_id: String,
    warned: HashMap<String, Given>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
struct Given {
    reason: EndReason,
    end_ns: u64,
    at_ns: u64,
}

/// The file of warnings given, by session id.
pub struct GivenWarnings {
    path: PathBuf,
    boot_id: String,
}

impl GivenWarnings {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(FILE),
            boot_id: boot_id(),
        }
    }

    /// The warnings a previous daemon of this boot gave. A missing, unreadable or
    /// foreign file gives none: the worst outcome is a second warning.
    pub fn load(&self) -> HashMap<String, Warned> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == ErrorKind::NotFound => return HashMap::new(),
            Err(err) => {
                tracing::warn!(
                    "warnings given before the restart are unknown: {}: {err}",
                    self.path.display()
                );
                return HashMap::new();
            }
        };
        match serde_json::from_str::<OnDisk>(&text) {
            Ok(disk) if disk.boot_id == self.boot_id => disk
                .warned
                .into_iter()
                .map(|(id, g)| {
                    let warned = Warned {
                        reason: g.reason,
                        end_ns: g.end_ns,
                        at_ns: g.at_ns,
                    };
                    (id, warned)
                })
                .collect(),
            Ok(_) => HashMap::new(),
            Err(err) => {
                tracing::warn!("ignoring {}: {err}", self.path.display());
                HashMap::new()
            }
        }
    }

    /// Replaces the file with the warnings of the live sessions (written aside and
    /// renamed, so a crash leaves the old file or the new one).
    pub fn save<'a>(&self, warned: impl Iterator<Item = (&'a str, &'a Warned)>) -> Result<()> {
        let disk = OnDisk {
            boot_id: self.boot_id.clone(),
            warned: warned
                .map(|(id, w)| {
                    let given = Given {
                        reason: w.reason,
                        end_ns: w.end_ns,
                        at_ns: w.at_ns,
                    };
                    (id.to_string(), given)
                })
                .collect(),
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&disk)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_survive_a_restart_of_the_same_boot_only() {
        let dir = std::env::temp_dir().join(format!("given-test-{}", std::process::id()));
        let store = GivenWarnings::new(&dir);
        assert!(store.load().is_empty());
        let w = Warned {
            reason: EndReason::Idle,
            end_ns: 9_000,
            at_ns: 6_000,
        };
        store.save([("abc", &w)].into_iter()).unwrap();
        assert_eq!(store.load().get("abc"), Some(&w));

        let other_boot = GivenWarnings {
            boot_id: "another boot".into(),
            ..GivenWarnings::new(&dir)
        };
        assert!(other_boot.load().is_empty());
        std::fs::write(dir.join(FILE), "{not json").unwrap();
        assert!(store.load().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
