//! Start-up checks: what the daemon needs from the machine (or from its container)
//! before it can see and end sessions — as data, [`PATHS`] and [`CAPABILITIES`] — and
//! [`check`], which reports what is missing.
//!
//! The Kubernetes DaemonSet (`deploy/kubernetes/daemonset.yaml`) grants exactly these;
//! a test below holds the two together.

use std::{
    fmt,
    io::{self, ErrorKind},
    path::Path,
};

use rustix::fs::{Access, AtFlags, CWD, accessat};

/// How bad a missing requirement is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The daemon cannot do its job without it.
    Fatal,
    /// The daemon runs, without the feature the problem names.
    Degraded,
}

/// A Linux capability the daemon needs in its effective set.
#[derive(Clone, Copy, Debug)]
pub struct Capability {
    /// As capabilities(7) names it: `CAP_BPF`.
    pub name: &'static str,
    /// Its bit in the capability sets (`CapEff` in /proc/PID/status).
    pub bit: u32,
    /// What the daemon does with it, and what breaks without it.
    pub why: &'static str,
}

impl Capability {
    /// The name as Kubernetes spells it in `securityContext.capabilities.add`: `BPF`.
    #[cfg(test)]
    pub fn kubernetes_name(&self) -> &'static str {
        self.name.strip_prefix("CAP_").unwrap_or(self.name)
    }
}

/// Every capability the daemon needs; all are [`Severity::Fatal`].
///
/// `CAP_DAC_OVERRIDE` rather than the narrower `CAP_DAC_READ_SEARCH`: reading other
/// users' /proc entries needs only the latter, but warnings are written through a
/// description of the user's terminal of the daemon's own (non-blocking, so the
/// user's file flags stay untouched): the leader's descriptor, taken with
/// pidfd_getfd(2) (allowed by `CAP_SYS_PTRACE`) and checked, is opened again through
/// /proc/self/fd/N, which checks the terminal's mode.
///
/// Not needed, and not granted by the DaemonSet: `CAP_SYS_RESOURCE` (`RLIMIT_MEMLOCK`
/// limits BPF memory only before Linux 5.11, and the daemon tolerates failing to raise
/// it), `CAP_SYSLOG` (nothing reads /proc/kallsyms: fentry targets are found in the
/// kernel's BTF), `CAP_CHOWN` (the control socket is mode 0666 and owned by root;
/// the `control_group` is checked per request from the caller's SO_PEERCRED),
/// `CAP_NET_ADMIN` (no network configuration; UDP activity comes from tracepoints).
pub const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "CAP_BPF",
        bit: 39,
        why: "create BPF maps, load BTF and the probe programs (bpf(2))",
    },
    Capability {
        name: "CAP_PERFMON",
        bit: 38,
        why: "load tracing programs (tracepoint, tp_btf, fentry) that read kernel memory, and \
              attach them through perf events",
    },
    Capability {
        name: "CAP_SYS_ADMIN",
        bit: 21,
        why: "mount tracefs when the host has not; on kernels before 5.8, which know neither \
              CAP_BPF nor CAP_PERFMON, bpf(2) and perf_event_open(2) require it",
    },
    Capability {
        name: "CAP_KILL",
        bit: 5,
        why: "signal other users' processes (kill, pidfd_send_signal) to end their idle or \
              revoked sessions",
    },
    Capability {
        name: "CAP_SYS_PTRACE",
        bit: 19,
        why: "pass the ptrace access check on other users' /proc/PID/{fd/*,fdinfo,exe,root,\
              environ}: which process holds a pty master, the transport's executable, the \
              session's /dev/pts instance and Mosh's SSH_CONNECTION; and pidfd_getfd(2), \
              which takes the session leader's descriptor of its terminal for warnings",
    },
    Capability {
        name: "CAP_DAC_OVERRIDE",
        bit: 1,
        why: "open other users' /proc/PID/fd directories (mode 0500) and environ files (mode \
              0400), which are permission-checked before the ptrace check, and open users' \
              terminals (mode 0620 or 0600) for warnings, through the daemon's own copy of \
              the session leader's descriptor",
    },
];

/// What the daemon needs of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A file it reads.
    ReadableFile,
    /// A directory it reads (and watches for changes).
    ReadableDirectory,
    /// A directory it creates files in; created at start when missing.
    WritableDirectory,
    /// tracefs: mounted here, or anywhere else the daemon can find it in /proc/mounts;
    /// the daemon mounts it here when it is nowhere (with `CAP_SYS_ADMIN`).
    Tracefs,
    /// The BPF file system.
    Bpffs,
    /// procfs, of the host's PID namespace so that every process is seen.
    HostProcfs,
}

/// How the Kubernetes DaemonSet gives the container a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provision {
    /// A hostPath volume of the same path, mounted at that path (or at a parent).
    HostPath,
    /// `hostPID: true`: the runtime's own /proc of the container then shows the host's
    /// processes. No volume.
    HostPid,
    /// The policy ConfigMap, mounted as a directory (not with subPath, so that
    /// updates reach the daemon).
    ConfigMap,
}

/// A path the daemon needs.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(test), allow(dead_code))] // `provision` is for the manifest tests
pub struct PathRequirement {
    pub path: &'static str,
    pub need: Need,
    pub provision: Provision,
    pub severity: Severity,
    /// What the daemon does with it.
    pub why: &'static str,
}

/// Kernel type information, for structure offsets and fentry programs.
pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
/// tracefs: tracepoint record layouts and ids.
pub const TRACEFS_PATH: &str = "/sys/kernel/tracing";
/// The BPF file system.
pub const BPFFS_PATH: &str = "/sys/fs/bpf";
/// procfs.
pub const PROC_PATH: &str = "/proc";
/// The control socket's directory.
pub const RUN_DIR: &str = "/run/session-monitor";
/// The audit log's directory.
pub const LOG_DIR: &str = "/var/log/session-monitor";
/// The policy's directory.
pub const CONFIG_DIR: &str = "/etc/session-monitor";
/// Where revocations are kept across restarts.
pub const STATE_DIR: &str = "/var/lib/session-monitor";
/// The node's user and group names.
pub const PASSWD_PATH: &str = "/etc/passwd";
pub const GROUP_PATH: &str = "/etc/group";

/// Every path the daemon needs.
pub const PATHS: &[PathRequirement] = &[
    PathRequirement {
        path: BTF_PATH,
        need: Need::ReadableFile,
        provision: Provision::HostPath,
        severity: Severity::Fatal,
        why: "kernel structure offsets for the probes, and fentry attach points",
    },
    PathRequirement {
        path: TRACEFS_PATH,
        need: Need::Tracefs,
        provision: Provision::HostPath,
        severity: Severity::Fatal,
        why: "tracepoint record layouts (events/*/*/format) and ids to attach to",
    },
    PathRequirement {
        path: BPFFS_PATH,
        need: Need::Bpffs,
        provision: Provision::HostPath,
        severity: Severity::Degraded,
        why: "pinning the probes' maps, so that kernel-side state (revoked users) can \
              outlive a daemon restart",
    },
    PathRequirement {
        path: PROC_PATH,
        need: Need::HostProcfs,
        provision: Provision::HostPid,
        severity: Severity::Fatal,
        why: "every process's terminal, credentials, cgroup, open files and peer sockets \
              (/proc/PID/...)",
    },
    PathRequirement {
        path: RUN_DIR,
        need: Need::WritableDirectory,
        provision: Provision::HostPath,
        severity: Severity::Fatal,
        why: "the control socket, which `session-monitor sessions` and `status` use",
    },
    PathRequirement {
        path: LOG_DIR,
        need: Need::WritableDirectory,
        provision: Provision::HostPath,
        severity: Severity::Fatal,
        why: "the audit log of ended sessions, revocations and refused requests",
    },
    PathRequirement {
        path: STATE_DIR,
        need: Need::WritableDirectory,
        provision: Provision::HostPath,
        severity: Severity::Fatal,
        why: "the revocations, kept across restarts so that a restart cannot lift them",
    },
    // In a container, names come from the image's files unless the node's are
    // mounted: a session would show uid 1001 instead of its user, and policy rules
    // and `revoke` by user or group name would never match. (Names from LDAP or
    // other NSS sources of the node are not seen in the container.)
    PathRequirement {
        path: PASSWD_PATH,
        need: Need::ReadableFile,
        provision: Provision::HostPath,
        severity: Severity::Degraded,
        why: "user names of sessions, which policy rules and `revoke USER` name",
    },
    PathRequirement {
        path: GROUP_PATH,
        need: Need::ReadableFile,
        provision: Provision::HostPath,
        severity: Severity::Degraded,
        why: "group names and members, which policy rules and `revoke --group` name",
    },
    PathRequirement {
        path: CONFIG_DIR,
        need: Need::ReadableDirectory,
        provision: Provision::ConfigMap,
        severity: Severity::Degraded,
        why: "the policy (policy.toml); the directory is watched to reload it",
    },
];

/// Something the daemon needs and does not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The capability (`CAP_KILL`) or path (`/sys/fs/bpf`) concerned.
    pub subject: &'static str,
    pub severity: Severity,
    /// What is wrong and what it is needed for, in one line.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Fatal => "missing",
            Severity::Degraded => "degraded",
        };
        write!(f, "{severity}: {}: {}", self.subject, self.detail)
    }
}

/// What the daemon checks when it starts: everything, but of its own directories
/// (which follow its command line: `--socket`, `--audit-log`, `--state-dir`,
/// `--config`) only those it uses, `used`. So a container whose state directory is
/// not mounted (a read-only root cannot make one) is refused with the rest of the
/// list, not found out at the first revocation. Fatal problems stop it.
pub fn startup_problems(used: &[&Path]) -> Vec<Problem> {
    let own = [RUN_DIR, LOG_DIR, STATE_DIR, CONFIG_DIR];
    check()
        .into_iter()
        .filter(|p| !own.contains(&p.subject) || used.contains(&Path::new(p.subject)))
        .collect()
}

/// Runs every check; an empty list means all is there.
pub fn check() -> Vec<Problem> {
    let mut problems = Vec::new();
    let effective = match effective_capabilities() {
        Ok(effective) => {
            problems.extend(missing_capabilities(effective));
            effective
        }
        Err(err) => {
            problems.push(Problem {
                subject: "capabilities",
                severity: Severity::Fatal,
                detail: format!("cannot read CapEff from /proc/self/status: {err}"),
            });
            0
        }
    };
    let can_mount = has_capability(effective, "CAP_SYS_ADMIN");
    problems.extend(PATHS.iter().filter_map(|req| check_path(req, can_mount)));
    problems
}

/// The effective capability set, from `CapEff` in /proc/self/status.
pub fn effective_capabilities() -> io::Result<u64> {
    procfs::process::Process::myself()
        .and_then(|me| me.status())
        .map(|status| status.capeff)
        .map_err(io::Error::other)
}

/// The required capabilities missing from `effective`.
pub fn missing_capabilities(effective: u64) -> Vec<Problem> {
    CAPABILITIES
        .iter()
        .filter(|cap| effective & (1 << cap.bit) == 0)
        .map(|cap| Problem {
            subject: cap.name,
            severity: Severity::Fatal,
            detail: format!("not in the effective set; needed to {}", cap.why),
        })
        .collect()
}

fn has_capability(effective: u64, name: &str) -> bool {
    CAPABILITIES
        .iter()
        .find(|cap| cap.name == name)
        .is_some_and(|cap| effective & (1 << cap.bit) != 0)
}

// statfs(2) magic numbers (linux/magic.h).
const PROC_SUPER_MAGIC: u64 = 0x9fa0;
const TRACEFS_MAGIC: u64 = 0x7472_6163;
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
/// Inode of the initial PID namespace (PROC_PID_INIT_INO), fixed since Linux 3.8.
const INIT_PID_NAMESPACE: &str = "pid:[4026531836]";

/// The file system type mounted at `path` (its statfs magic number).
pub fn fs_magic(path: &str) -> io::Result<u64> {
    let stat = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    // The field's width and sign differ between C libraries and architectures; every
    // magic number fits in 32 bits.
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.filesystem_type().0 as u64 & 0xffff_ffff)
}

/// Checks one path; `can_mount` tells whether the daemon could mount tracefs itself.
pub fn check_path(req: &PathRequirement, can_mount: bool) -> Option<Problem> {
    let problem = |detail: String| {
        Some(Problem {
            subject: req.path,
            severity: req.severity,
            detail: format!("{detail}; needed for {}", req.why),
        })
    };
    match req.need {
        Need::ReadableFile => match std::fs::File::open(req.path) {
            Ok(_) => None,
            Err(err) => problem(format!("cannot be read ({err})")),
        },
        Need::ReadableDirectory => match std::fs::read_dir(req.path) {
            Ok(_) => None,
            Err(err) => problem(format!("cannot be read ({err})")),
        },
        Need::WritableDirectory => match writable_directory(Path::new(req.path)) {
            Ok(()) => None,
            Err(detail) => problem(detail),
        },
        Need::Tracefs => {
            if fs_magic(req.path).ok() == Some(TRACEFS_MAGIC) || tracefs_mounted_elsewhere() {
                None
            } else if !Path::new(req.path).is_dir() {
                problem("does not exist, so tracefs cannot be mounted there".into())
            } else if !can_mount {
                problem("tracefs is not mounted, and mounting it needs CAP_SYS_ADMIN".into())
            } else {
                None // the daemon mounts it
            }
        }
        Need::Bpffs => match fs_magic(req.path) {
            Ok(BPF_FS_MAGIC) => None,
            Ok(_) => problem("is not a bpf file system (mount -t bpf bpf /sys/fs/bpf)".into()),
            Err(err) => problem(format!("cannot be examined ({err})")),
        },
        Need::HostProcfs => match fs_magic(req.path) {
            Ok(PROC_SUPER_MAGIC) => match std::fs::read_link("/proc/self/ns/pid") {
                Ok(ns) if ns.as_os_str() == INIT_PID_NAMESPACE => None,
                Ok(ns) => Some(Problem {
                    subject: req.path,
                    severity: Severity::Degraded,
                    detail: format!(
                        "shows a PID namespace of its own ({}), so only the sessions inside \
                         it are seen; run in the host's (Kubernetes: hostPID: true)",
                        ns.display()
                    ),
                }),
                Err(err) => problem(format!("cannot tell its PID namespace ({err})")),
            },
            Ok(_) => problem("is not procfs".into()),
            Err(err) => problem(format!("cannot be examined ({err})")),
        },
    }
}

/// Ok when `dir` is a directory the daemon can create files in, or is missing and can
/// be created; else why not.
fn writable_directory(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            writable(dir).map_err(|err| format!("is not writable ({err})"))
        }
        Ok(_) => Err("is not a directory".into()),
        Err(err) if err.kind() == ErrorKind::NotFound => {
            let parent = dir
                .ancestors()
                .skip(1)
                .find(|a| a.exists())
                .unwrap_or(Path::new("/"));
            writable(parent).map_err(|err| {
                format!(
                    "is missing and cannot be created: {} is not writable ({err})",
                    parent.display()
                )
            })
        }
        Err(err) => Err(format!("cannot be examined ({err})")),
    }
}

/// Whether this process may create entries in `dir` (read-only mounts included).
fn writable(dir: &Path) -> io::Result<()> {
    accessat(
        CWD,
        dir,
        Access::WRITE_OK | Access::EXEC_OK,
        AtFlags::EACCESS,
    )
    .map_err(io::Error::from)
}

fn tracefs_mounted_elsewhere() -> bool {
    procfs::mounts()
        .map(|mounts| mounts.iter().any(|m| m.fs_vfstype == "tracefs"))
        .unwrap_or(false)
}

#[cfg(test)]
mod manifest_tests;
#[cfg(test)]
mod systemd_unit_tests;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn requirement_lists_are_well_formed() {
        let mut names = HashSet::new();
        let mut bits = HashSet::new();
        for cap in CAPABILITIES {
            assert!(cap.name.starts_with("CAP_"), "{}", cap.name);
            assert!(cap.bit <= 40, "{}", cap.name);
            assert!(
                names.insert(cap.name) && bits.insert(cap.bit),
                "{} twice",
                cap.name
            );
            assert!(!cap.why.is_empty());
        }
        let mut paths = HashSet::new();
        for req in PATHS {
            assert!(req.path.starts_with('/'), "{}", req.path);
            assert!(paths.insert(req.path), "{} twice", req.path);
            assert!(!req.why.is_empty());
        }
        assert_eq!(CAPABILITIES[0].kubernetes_name(), "BPF");
    }

    /// The bit numbers are the kernel's (include/uapi/linux/capability.h): capsh
    /// decodes each bit to its name.
    #[test]
    fn capability_bits_match_their_names() {
        for cap in CAPABILITIES {
            let out = std::process::Command::new("capsh")
                .arg(format!("--decode={:x}", 1u64 << cap.bit))
                .output()
                .unwrap_or_else(|e| panic!("capsh cannot run ({e}): apt-get install libcap2-bin"));
            let decoded = String::from_utf8_lossy(&out.stdout).to_lowercase();
            assert!(
                decoded.trim_end().ends_with(&cap.name.to_lowercase()),
                "{decoded}"
            );
        }
    }

    #[test]
    fn missing_capabilities_are_named_with_their_use() {
        assert_eq!(missing_capabilities(0).len(), CAPABILITIES.len());
        assert!(missing_capabilities(u64::MAX).is_empty());
        let all_but_kill = CAPABILITIES
            .iter()
            .filter(|cap| cap.name != "CAP_KILL")
            .fold(0u64, |set, cap| set | 1 << cap.bit);
        let problems = missing_capabilities(all_but_kill);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].subject, "CAP_KILL");
        assert_eq!(problems[0].severity, Severity::Fatal);
        // The line says it is missing, which capability, and what it is needed for.
        let line = problems[0].to_string();
        assert!(line.starts_with("missing: CAP_KILL: "), "{line}");
        assert!(
            line.ends_with("to end their idle or revoked sessions"),
            "{line}"
        );
    }

    fn requirement(path: &Path, need: Need) -> PathRequirement {
        PathRequirement {
            path: String::leak(path.to_string_lossy().into_owned()),
            need,
            provision: Provision::HostPath,
            severity: Severity::Fatal,
            why: "testing",
        }
    }

    #[test]
    fn paths_are_checked_for_what_the_daemon_does_with_them() {
        let dir = std::env::temp_dir().join(format!("preflight-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, "x").unwrap();

        assert_eq!(
            check_path(&requirement(&file, Need::ReadableFile), false),
            None
        );
        let missing = dir.join("missing");
        let problem = check_path(&requirement(&missing, Need::ReadableFile), false).unwrap();
        // The line names the path, what is wrong with it (the OS error) and what it is for.
        let line = problem.to_string();
        assert!(line.contains(&*missing.to_string_lossy()), "{line}");
        assert!(problem.detail.contains("cannot be read"), "{line}");
        assert!(problem.detail.contains("No such file"), "{line}");
        assert!(problem.detail.ends_with("needed for testing"), "{line}");

        assert_eq!(
            check_path(&requirement(&dir, Need::ReadableDirectory), false),
            None
        );
        assert_eq!(
            check_path(&requirement(&dir, Need::WritableDirectory), false),
            None
        );
        // Missing, but creatable: the daemon creates it.
        let nested = missing.join("deeper");
        assert_eq!(
            check_path(&requirement(&nested, Need::WritableDirectory), false),
            None
        );
        let problem = check_path(&requirement(&file, Need::WritableDirectory), false).unwrap();
        assert!(problem.detail.contains("is not a directory"), "{problem}");
        // Below a file: it can be neither examined nor made.
        let below_file = file.join("sub");
        let problem =
            check_path(&requirement(&below_file, Need::WritableDirectory), false).unwrap();
        assert!(
            problem.detail.starts_with("cannot be examined"),
            "{problem}"
        );

        // A plain directory is not a bpf file system, nor procfs.
        let problem = check_path(&requirement(&dir, Need::Bpffs), false).unwrap();
        assert!(
            problem.detail.contains("is not a bpf file system"),
            "{problem}"
        );
        let problem = check_path(&requirement(&dir, Need::HostProcfs), false).unwrap();
        assert!(problem.detail.starts_with("is not procfs"), "{problem}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The daemon's own directories are checked when it uses them (its command line
    /// may put them elsewhere), and every other requirement always.
    #[test]
    fn own_directories_are_checked_when_used() {
        let own = [RUN_DIR, LOG_DIR, STATE_DIR, CONFIG_DIR].map(Path::new);
        let all = check();
        let ignored = startup_problems(&[]);
        assert_eq!(
            ignored,
            all.iter()
                .filter(|p| !own.contains(&Path::new(p.subject)))
                .cloned()
                .collect::<Vec<_>>()
        );
        assert_eq!(startup_problems(&own), all);
        let state_dir = startup_problems(&[Path::new(STATE_DIR)]);
        assert_eq!(
            state_dir
                .iter()
                .filter(|p| p.subject == STATE_DIR)
                .collect::<Vec<_>>(),
            all.iter()
                .filter(|p| p.subject == STATE_DIR)
                .collect::<Vec<_>>(),
        );
    }

    /// On a machine set up by `cargo xtask setup` and as root (how `cargo xtask test`
    /// runs), nothing the daemon needs at start is missing; without root, the missing
    /// capabilities are what stops it, each named.
    #[test]
    fn this_machine_has_what_the_daemon_needs_at_start() {
        let problems = startup_problems(&[]);
        let fatal: Vec<String> = problems
            .iter()
            .filter(|p| p.severity == Severity::Fatal)
            .map(ToString::to_string)
            .collect();
        if nix::unistd::geteuid().is_root() {
            assert!(fatal.is_empty(), "missing as root: {fatal:#?}");
        } else {
            assert!(
                fatal.iter().any(|p| p.contains("CAP_BPF")),
                "without root, CAP_BPF must be reported missing: {fatal:#?}"
            );
        }
    }
}
