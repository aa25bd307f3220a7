//! Whether a process's cgroup may be believed: only root can have made it.
//!
//! Cgroup *names* are not evidence. A user with a delegated subtree (systemd's
//! `user@UID.service`, or any cgroup directory owned by or writable by them) can
//! create `docker-<64 hex>.scope` or `session-9.scope` inside it and move their own
//! processes there. So a name shaped like a container runtime's, or like logind's
//! session scope, counts only when every directory from the hierarchy's root down
//! to the cgroup belongs to root and nobody else can write it: then root (a runtime,
//! systemd) made it.
//!
//! The directories are checked on what was opened: each one is opened relative to
//! its parent's descriptor with `O_NOFOLLOW` and checked with `fstat`, so a rename
//! or a symbolic link between the check and the use cannot substitute another.

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use procfs::process::MountInfo;
use rustix::fs::{Mode, OFlags};

/// Verdicts of [`trusted_cgroup`] by (hierarchy, path), for one batch of
/// resolutions: the sessions of one login manager or container share a few
/// cgroups, and checking a path walks and `fstat`s every directory of it.
pub type TrustVerdicts = std::collections::HashMap<(u32, String), bool>;

/// A cgroup path of a process, as `/proc/PID/cgroup` gives it, with its hierarchy.
#[derive(Clone, Debug)]
pub struct CgroupPath {
    /// 0 for cgroup v2; the hierarchy id for v1.
    pub hierarchy: u32,
    /// v1 only: the controllers bound to the hierarchy (`memory`, `name=systemd`).
    pub controllers: Vec<String>,
    pub path: String,
}

/// The process's cgroup paths (every hierarchy) that only root can have made;
/// the others are left out, so their names cannot decide anything.
/// Each path is checked once per `verdicts`.
pub fn trusted_cgroup_paths(pid: u32, verdicts: &mut TrustVerdicts) -> Vec<String> {
    let Some(groups) = super::procs::cgroups(pid) else {
        return Vec::new();
    };
    groups
        .into_iter()
        .map(|g| CgroupPath {
            hierarchy: g.hierarchy,
            controllers: g.controllers,
            path: g.pathname,
        })
        .filter(|g| {
            let key = (g.hierarchy, g.path.clone());
            if let Some(&trusted) = verdicts.get(&key) {
                return trusted;
            }
            let trusted = match trusted_cgroup(g) {
                Ok(_) => true,
                Err(why) => {
                    tracing::debug!(pid, cgroup = %g.path, "cgroup name not trusted: {why}");
                    false
                }
            };
            verdicts.insert(key, trusted);
            trusted
        })
        .map(|g| g.path)
        .collect()
}

/// Checks that only root can have made cgroup `group`; returns an open descriptor
/// of its directory (checked, and staying that directory whatever is renamed).
pub fn trusted_cgroup(group: &CgroupPath) -> Result<OwnedFd, String> {
    let root = hierarchy_mount(group).ok_or("its hierarchy is not mounted here")?;
    trusted_dir_chain(&root, &group.path)
}

/// Opens `root` and then each component of `relative` below it, each checked to
/// be a directory owned by root and writable by nobody else.
pub fn trusted_dir_chain(root: &Path, relative: &str) -> Result<OwnedFd, String> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(root, flags, Mode::empty())
        .map_err(|e| format!("{}: {e}", root.display()))?;
    check_root_only(&dir).map_err(|why| format!("{}: {why}", root.display()))?;
    let mut walked = root.to_path_buf();
    for part in relative.split('/').filter(|p| !p.is_empty()) {
        // A path outside our view of the hierarchy (another cgroup namespace shows
        // `/../..`) cannot be checked.
        if part == "." || part == ".." {
            return Err(format!("`{relative}` leaves the hierarchy as mounted here"));
        }
        walked.push(part);
        dir = rustix::fs::openat(&dir, part, flags, Mode::empty())
            .map_err(|e| format!("{}: {e}", walked.display()))?;
        check_root_only(&dir).map_err(|why| format!("{}: {why}", walked.display()))?;
    }
    Ok(dir)
}

/// Owned by root, and writable by nobody else: not by others, and by its group
/// only when that is root's group (a umask of 002 makes cgroups so).
fn check_root_only(dir: &OwnedFd) -> Result<(), String> {
    let st = rustix::fs::fstat(dir).map_err(|e| format!("fstat: {e}"))?;
    if st.st_uid != 0 {
        return Err(format!("owned by uid {}, not root", st.st_uid));
    }
    if st.st_mode & 0o002 != 0 || (st.st_mode & 0o020 != 0 && st.st_gid != 0) {
        return Err(format!(
            "writable by its group or others (mode {:o})",
            st.st_mode & 0o7777
        ));
    }
    Ok(())
}

/// Where the daemon sees the root of `group`'s hierarchy: the cgroup2 mount, or
/// the v1 mount with exactly its controllers. Only a mount of the hierarchy's root
/// (not a bind mount of a subtree) matches the paths in `/proc/PID/cgroup`.
fn hierarchy_mount(group: &CgroupPath) -> Option<PathBuf> {
    root_mounts()?
        .iter()
        .find(|m| {
            if group.hierarchy == 0 {
                return m.fs_type == "cgroup2";
            }
            m.fs_type == "cgroup"
                && !group.controllers.is_empty()
                && group.controllers.iter().all(|c| match c.split_once('=') {
                    Some((key, value)) => {
                        m.super_options.get(key) == Some(&Some(value.to_string()))
                    }
                    None => m.super_options.contains_key(c.as_str()),
                })
        })
        .map(|m| m.mount_point.clone())
}

/// How long the daemon's list of mounts is reused. Only root changes mounts, and a
/// change shows within this time.
const MOUNTS_FRESH_FOR: Duration = Duration::from_secs(1);

/// The daemon's mounts of filesystem roots (`/proc/self/mountinfo`), read at most
/// once per [`MOUNTS_FRESH_FOR`]: a burst of a thousand new logins is resolved with
/// one read of the mount table, not a thousand (it was the largest single cost of
/// resolving such a burst).
fn root_mounts() -> Option<Arc<Vec<MountInfo>>> {
    static CACHE: Mutex<Option<(Instant, Arc<Vec<MountInfo>>)>> = Mutex::new(None);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((read_at, mounts)) = cache.as_ref()
        && read_at.elapsed() < MOUNTS_FRESH_FOR
    {
        return Some(mounts.clone());
    }
    let mounts: Vec<MountInfo> = procfs::process::Process::myself()
        .ok()?
        .mountinfo()
        .ok()?
        .into_iter()
        .filter(|m| m.root == "/")
        .collect();
    let mounts = Arc::new(mounts);
    *cache = Some((Instant::now(), mounts.clone()));
    Some(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_leaving_the_hierarchy_is_not_trusted() {
        let err = trusted_dir_chain(Path::new("/"), "/../etc").unwrap_err();
        assert!(err.contains("leaves the hierarchy"), "{err}");
    }

    #[test]
    fn a_directory_writable_by_others_is_not_trusted() {
        // /tmp is root's but everyone's to write (mode 1777).
        let err = trusted_dir_chain(Path::new("/"), "/tmp").unwrap_err();
        assert!(err.contains("/tmp: writable"), "{err}");
    }

    #[test]
    fn root_only_directories_are_trusted() {
        trusted_dir_chain(Path::new("/"), "/usr/lib").unwrap();
    }

    #[test]
    fn a_symbolic_link_is_not_followed() {
        // /proc/self is a link: walking through it is refused.
        assert!(trusted_dir_chain(Path::new("/"), "/proc/self").is_err());
    }
}
