//! Ending a session exactly: its processes and its own server, nothing else.
//!
//! Every target is opened as a pidfd and then checked against the start time the
//! daemon recorded, so a signal can never reach a process that merely reused a pid.
//! The escalation is SIGHUP (what a hangup sends: shells save history and exit),
//! then SIGTERM after a grace period, then SIGKILL, each only to survivors.
//!
//! A process can leave the terminal's session (`setsid`, `nohup`, a daemon started
//! from the shell). Where the session has a cgroup of its own — systemd-logind's
//! `session-N.scope`, holding nothing but this login's processes — those are ended
//! too, and `cgroup.kill` sweeps whatever was forked in the meantime.

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use rustix::{
    fs::{Mode, OFlags},
    process::{Signal, pidfd_send_signal},
};
use serde::Serialize;
use tokio::io::{Interest, unix::AsyncFd};

use crate::sessions::{Pinned, ProcRef};

/// Why a process is a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// In the login's process tree (forked from it, or in a terminal's session).
    Member,
    /// The login's identity process or a terminal server serving only this login
    /// (sshd for this connection, mosh-server).
    Server,
    /// Left the terminal's session but is in the session's own cgroup.
    Escaped,
}

#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub process: ProcRef,
    pub role: Role,
}

/// Processes that are never signalled, whatever the session looks like: init, the
/// daemon itself and its ancestors (a daemon started from a shell it monitors must
/// not end its own parent).
fn protected() -> &'static [u32] {
    static PROTECTED: OnceLock<Vec<u32>> = OnceLock::new();
    PROTECTED.get_or_init(|| {
        let mut pids = vec![0, 1, std::process::id()];
        pids.extend(daemon_ancestors());
        pids
    })
}

/// The daemon's ancestors, its parent first, up to (not including) init. Computed
/// once: the daemon's ancestry is set at start.
pub fn daemon_ancestors() -> &'static [u32] {
    static ANCESTORS: OnceLock<Vec<u32>> = OnceLock::new();
    ANCESTORS.get_or_init(|| {
        let me = std::process::id();
        let mut pids = Vec::new();
        let mut pid = me;
        while let Some(info) = crate::sessions::proc_info(pid) {
            if info.ppid <= 1 || info.ppid == me || pids.contains(&info.ppid) {
                break;
            }
            pids.push(info.ppid);
            pid = info.ppid;
        }
        pids
    })
}

/// What to end: the targets, and the session's own cgroup when it has one.
pub struct Plan {
    pub targets: Vec<Target>,
    pub cgroup: Option<OwnCgroup>,
}

/// The session's own cgroup, held open: its directory was checked to be root's
/// (see `sessions::trusted_dir_chain`), and `cgroup.kill` is written through this
/// descriptor, so a rename cannot point the kill elsewhere.
pub struct OwnCgroup {
    pub path: PathBuf,
    dir: OwnedFd,
}

impl std::fmt::Debug for OwnCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.path.fmt(f)
    }
}

impl OwnCgroup {
    fn pids(&self) -> Option<Vec<u32>> {
        let file = rustix::fs::openat(
            &self.dir,
            "cgroup.procs",
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let text = std::io::read_to_string(std::fs::File::from(file)).ok()?;
        Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn kill(&self) -> std::io::Result<()> {
        let file = rustix::fs::openat(
            &self.dir,
            "cgroup.kill",
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::io::write(&file, b"1")?;
        Ok(())
    }
}

/// The session's own cgroup: a logind `session-N.scope` in which every process is
/// the session user's or its server's (the sshd monitor of this login runs as
/// root), and none is the daemon's or its ancestors'.
///
/// The name alone proves nothing (a user can create `session-9.scope` in a
/// delegated subtree): the directory and all its ancestors must be root's and
/// writable by nobody else. Each member is returned as the exact process (pid and
/// start time) that was checked to be in the cgroup and the user's, so a pid
/// reused after `cgroup.procs` was read is not taken for a member.
fn own_cgroup(
    leader: ProcRef,
    uid: u32,
    servers: &[ProcRef],
    protected: &[u32],
) -> Option<(OwnCgroup, Vec<ProcRef>)> {
    let path = crate::sessions::cgroup2_path(leader.pid)?;
    let name = Path::new(&path).file_name()?.to_string_lossy().into_owned();
    if !(name.starts_with("session-") && name.ends_with(".scope")) {
        return None;
    }
    let root = crate::sessions::cgroup2_root()?;
    let dir = match crate::sessions::trusted_dir_chain(&root, &path) {
        Ok(dir) => dir,
        Err(why) => {
            tracing::info!(cgroup = %path, "not the session's own cgroup: {why}");
            return None;
        }
    };
    // Read by pid: the leader may have been replaced by a pid reuse meanwhile.
    if !leader.is_alive() {
        return None;
    }
    let cgroup = OwnCgroup {
        path: root.join(path.trim_start_matches('/')),
        dir,
    };
    let server_chain: Vec<u32> = servers
        .iter()
        .flat_map(|s| {
            [
                Some(s.pid),
                crate::sessions::proc_info(s.pid).map(|i| i.ppid),
            ]
        })
        .flatten()
        .collect();
    let mut members = Vec::new();
    for pid in cgroup.pids()? {
        if protected.contains(&pid) {
            return None;
        }
        let Some(process) = ProcRef::of(pid) else {
            continue; // exited
        };
        let ours = server_chain.contains(&pid) || crate::sessions::uid_of(pid) == Some(uid);
        let inside = crate::sessions::cgroup2_path(pid).as_deref() == Some(path.as_str());
        // Only if it is still the same process after both reads were they about it;
        // one that exited or (by root's hand) left the cgroup is not a member.
        if !process.is_alive() || !inside {
            continue;
        }
        if !ours {
            return None;
        }
        members.push(process);
    }
    Some((cgroup, members))
}

/// The processes of a login's tree, as found.
#[derive(Debug, Default)]
pub struct Tree {
    /// Processes known exactly: the kernel's members of the login (each checked
    /// against its start time when it is opened).
    pub exact: Vec<ProcRef>,
    /// Processes found through another one in a /proc snapshot: a terminal's
    /// session by its leader's session id, the identity's descendants by parent
    /// pid. Only through a process the snapshot saw as the one recorded (same
    /// start time): a pid that had been reused would name another process's
    /// session or children.
    pub through: Vec<ProcRef>,
}

impl Tree {
    fn members(self) -> Vec<ProcRef> {
        let mut members = self.exact;
        for p in self.through {
            if !members.contains(&p) {
                members.push(p);
            }
        }
        members
    }
}

/// The processes to end for a login whose (first) leader is `leader` and whose user
/// is `uid`: every process of its tree, its `servers` (the identity process, and
/// terminal servers that serve only this login), and the rest of the login's own
/// cgroup. `never` are processes that must survive whatever (the sshd listeners,
/// terminal servers shared with other logins).
pub fn collect_targets(
    leader: ProcRef,
    uid: u32,
    servers: Vec<ProcRef>,
    tree: Tree,
    never: &[u32],
) -> Plan {
    let mut protected = protected().to_vec();
    protected.extend(never);
    let protected = protected.as_slice();
    let members: Vec<ProcRef> = tree
        .members()
        .into_iter()
        .filter(|p| !servers.contains(p))
        .collect();
    let mut targets: Vec<Target> = members
        .into_iter()
        .filter(|p| !protected.contains(&p.pid))
        .map(|process| Target {
            process,
            role: Role::Member,
        })
        .collect();
    // A leader that is also a server (a local shell is its own login's identity)
    // is added below as one; only a leader found nowhere else is read in /proc.
    if !targets.iter().any(|t| t.process == leader)
        && !servers.contains(&leader)
        && leader.is_alive()
        && !protected.contains(&leader.pid)
    {
        targets.push(Target {
            process: leader,
            role: Role::Member,
        });
    }
    for server in &servers {
        if protected.contains(&server.pid) {
            continue;
        }
        targets.retain(|t| t.process != *server);
        targets.push(Target {
            process: *server,
            role: Role::Server,
        });
    }
    let cgroup = own_cgroup(leader, uid, &servers, protected).map(|(cgroup, members)| {
        for process in members {
            if !targets.iter().any(|t| t.process.pid == process.pid) {
                targets.push(Target {
                    process,
                    role: Role::Escaped,
                });
            }
        }
        cgroup
    });
    Plan { targets, cgroup }
}

/// What the escalation did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    pub targets: usize,
    /// The session's own server, when it was among the targets.
    pub server: Option<u32>,
    /// Processes that had left the terminal's session, found in its own cgroup.
    pub escaped: usize,
    /// Signals that had to be sent, in order (`SIGHUP`, `SIGTERM`, `SIGKILL`).
    pub signals: Vec<&'static str>,
    /// Targets still alive after SIGKILL (should be none).
    pub survivors: Vec<u32>,
    /// From the decision to every target gone (or SIGKILL sent).
    pub took_ms: u64,
}

impl Plan {
    /// Holds every target by a pidfd checked to be that process (see
    /// [`ProcRef::pin`]); the ones already gone are left out. `pinned` are
    /// processes held already (the leaders the closing line was written through):
    /// they are not opened and checked again. Reads /proc: off the async threads.
    pub fn hold(self, mut pinned: Vec<Pinned>) -> Held {
        let held = self
            .targets
            .iter()
            .filter_map(|t| {
                let fd = match pinned.iter().position(|p| p.process == t.process) {
                    Some(i) => pinned.swap_remove(i),
                    None => t.process.pin()?,
                };
                Some((*t, fd.fd))
            })
            .collect();
        Held { plan: self, held }
    }
}

/// A [`Plan`] whose targets are held by pidfds, ready to signal.
pub struct Held {
    plan: Plan,
    held: Vec<(Target, OwnedFd)>,
}

impl Held {
    pub fn targets(&self) -> &[Target] {
        &self.plan.targets
    }

    pub fn cgroup(&self) -> Option<&OwnCgroup> {
        self.plan.cgroup.as_ref()
    }
}

struct Open {
    pid: u32,
    role: Role,
    fd: AsyncFd<OwnedFd>,
}

/// Registers each held target's pidfd with the reactor, to wait for its exit.
fn open_all(held: Vec<(Target, OwnedFd)>) -> Vec<Open> {
    held.into_iter()
        .filter_map(|(t, fd)| {
            // SAFETY: we own the pidfd and keep it open as long as the AsyncFd.
            let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()?;
            Some(Open {
                pid: t.process.pid,
                role: t.role,
                fd,
            })
        })
        .collect()
}

/// A pidfd turns readable when its process has exited (checked without waiting).
fn exited(open: &Open) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(open.fd.get_ref(), PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0)
}

async fn wait_all(open: &[Open], grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    for o in open {
        if exited(o) {
            continue;
        }
        let _ = tokio::time::timeout_at(deadline, o.fd.readable()).await;
    }
}

/// Signals the targets with escalation; returns when all are gone or SIGKILL was sent.
///
/// `server_grace`: on the first round the session's server (sshd, mosh-server) is
/// signalled only after the session's processes, and after up to this long for it
/// to exit by itself, as it does once the shell is gone: time to forward the closing
/// line just written to the terminal, which a server killed at once would drop.
///
/// `decided`: when the end was decided; the outcome's `took_ms` counts from then,
/// so that the time spent before the first signal (the closing line, finding the
/// targets, waiting behind other ends) is in it.
pub async fn escalate(
    held: Held,
    grace: Duration,
    server_grace: Duration,
    decided: Instant,
) -> Outcome {
    let Held { plan, held } = held;
    let targets = plan.targets;
    let open = open_all(held);
    let mut outcome = Outcome {
        targets: open.len(),
        server: targets
            .iter()
            .find(|t| t.role == Role::Server)
            .map(|t| t.process.pid),
        escaped: targets.iter().filter(|t| t.role == Role::Escaped).count(),
        ..Outcome::default()
    };
    for (signal, name) in [
        (Signal::HUP, "SIGHUP"),
        (Signal::TERM, "SIGTERM"),
        (Signal::KILL, "SIGKILL"),
    ] {
        let alive: Vec<&Open> = open.iter().filter(|o| !exited(o)).collect();
        if alive.is_empty() {
            break;
        }
        outcome.signals.push(name);
        let (servers, others): (Vec<&Open>, Vec<&Open>) =
            alive.into_iter().partition(|o| o.role == Role::Server);
        let send = |o: &Open| {
            if let Err(err) = pidfd_send_signal(o.fd.get_ref(), signal) {
                tracing::debug!(pid = o.pid, "{name}: {err}");
            }
        };
        others.iter().for_each(|o| send(o));
        if outcome.signals.len() == 1 && !server_grace.is_zero() {
            let deadline = tokio::time::Instant::now() + server_grace;
            for o in &servers {
                let _ = tokio::time::timeout_at(deadline, o.fd.readable()).await;
            }
        }
        servers.iter().filter(|o| !exited(o)).for_each(|o| send(o));
        wait_all(&open, grace).await;
    }
    // Whatever the session's own cgroup still holds was forked while we signalled.
    if let Some(cgroup) = plan.cgroup
        && cgroup.pids().is_some_and(|p| !p.is_empty())
    {
        match cgroup.kill() {
            Ok(()) => outcome.signals.push("cgroup.kill"),
            Err(err) => tracing::warn!("cgroup.kill in {}: {err}", cgroup.path.display()),
        }
    }
    outcome.survivors = open.iter().filter(|o| !exited(o)).map(|o| o.pid).collect();
    outcome.took_ms = decided.elapsed().as_millis() as u64;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Init, the daemon and every ancestor of it are protected; the ancestors alone are
    /// what the core exempts from its policy.
    #[test]
    fn the_daemon_and_its_ancestors_are_protected() {
        let me = std::process::id();
        let parent = nix::unistd::getppid().as_raw() as u32;
        let ancestors = daemon_ancestors();
        assert!(
            !ancestors.iter().any(|&p| p <= 1 || p == me),
            "{ancestors:?}"
        );
        if parent > 1 {
            assert_eq!(ancestors.first(), Some(&parent), "{ancestors:?}");
        }
        let mut expected = vec![0, 1, me];
        expected.extend(ancestors);
        assert_eq!(protected(), expected.as_slice());
    }
}
