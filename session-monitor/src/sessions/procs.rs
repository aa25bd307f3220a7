//! What the daemon reads about processes from /proc.

use std::{
    fs,
    os::{fd::OwnedFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use procfs::process::{FDTarget, Process};
use serde::Serialize;
use session_monitor_common::TtyKey;

use super::tty::key_from_stat;

/// A process, identified by pid *and* start time, so that a pid reused by another
/// process is never mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ProcRef {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

impl ProcRef {
    pub fn of(pid: u32) -> Option<Self> {
        let stat = read_stat(pid)?;
        Some(Self {
            pid,
            start_ticks: stat.starttime,
        })
    }

    /// True while the same process (not a pid reuse) is alive and not a zombie.
    pub fn is_alive(&self) -> bool {
        read_stat(self.pid)
            .is_some_and(|stat| stat.starttime == self.start_ticks && stat.state != 'Z')
    }

    /// Start time in CLOCK_BOOTTIME nanoseconds.
    pub fn start_boot_ns(&self) -> u64 {
        let hz = procfs::ticks_per_second().max(1);
        self.start_ticks.saturating_mul(1_000_000_000) / hz
    }

    /// A pidfd of exactly this process, or None once it has exited. The pidfd
    /// pins whatever process has the pid when it is opened; it is checked
    /// afterwards to be this one (same start time, not a zombie), so nothing done
    /// through it can reach a process that reused the pid.
    pub fn pin(&self) -> Option<Pinned> {
        use rustix::process::{Pid, PidfdFlags, pidfd_open};
        let pid = Pid::from_raw(self.pid as i32)?;
        let fd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
        self.is_alive().then_some(Pinned { process: *self, fd })
    }
}

/// A process held by a pidfd that was checked to be it ([`ProcRef::pin`]).
/// Opened once per end and shared by the steps that need it (the closing line's
/// descriptor copy, the signals): each check costs a read of `/proc/PID/stat`.
#[derive(Debug)]
pub struct Pinned {
    pub process: ProcRef,
    pub fd: OwnedFd,
}

/// The facts about one process that sessions are built from.
#[derive(Clone, Debug)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub sid: u32,
    /// Controlling terminal as (major, minor), if any.
    pub tty: Option<(u32, u32)>,
    pub start_ticks: u64,
    pub comm: String,
}

impl ProcInfo {
    pub fn read(pid: u32) -> Option<Self> {
        Self::read_with_state(pid).map(|(p, _)| p)
    }

    /// The process, and whether it is a zombie (exited, not reaped yet).
    fn read_with_state(pid: u32) -> Option<(Self, bool)> {
        let stat = read_stat(pid)?;
        let (major, minor) = stat.tty_nr();
        let zombie = stat.state == 'Z';
        Some((
            Self {
                pid,
                ppid: stat.ppid as u32,
                sid: stat.session as u32,
                tty: (stat.tty_nr != 0).then_some((major as u32, minor as u32)),
                start_ticks: stat.starttime,
                comm: stat.comm,
            },
            zombie,
        ))
    }

    pub fn is_session_leader(&self) -> bool {
        self.pid == self.sid
    }

    pub fn proc_ref(&self) -> ProcRef {
        ProcRef {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }
}

/// `/proc/PID/stat`, parsed by procfs, read with one open, read and close: the
/// hot path of every snapshot and liveness check (procfs's `Process` would open and
/// stat the process directory first, and reading the file to its end would add a
/// `statx`, an `lseek` and a second `read` for every process).
fn read_stat(pid: u32) -> Option<procfs::process::Stat> {
    use procfs::FromRead as _;
    let (buf, n) = read_small_bytes(&format!("/proc/{pid}/stat"))?;
    procfs::process::Stat::from_read(&buf[..n]).ok()
}

/// Every process's [`ProcInfo`]; threads are not listed.
pub fn all_processes() -> Vec<ProcInfo> {
    all_processes_with_state()
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// Every process's [`ProcInfo`], and whether it is a zombie.
pub fn all_processes_with_state() -> Vec<(ProcInfo, bool)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    map_in_parallel(&pids, |&pid| ProcInfo::read_with_state(pid))
        .into_iter()
        .flatten()
        .collect()
}

/// Below this many items [`map_in_parallel`] stays on the calling thread.
const PARALLEL_FROM: usize = 512;

/// `f` of each item, in order, on a few threads when there are many items. For
/// reads of many processes' /proc files: each read is the kernel formatting that
/// process's state, independent of the others, so a host with ten thousand
/// processes reads them on every CPU (at most four) instead of one.
pub fn map_in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if threads < 2 || items.len() < PARALLEL_FROM {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| match part.join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Real uid, gid and supplementary groups.
pub fn credentials(pid: u32) -> Option<(u32, u32, Vec<u32>)> {
    // One open, read and close (see `read_stat`); a status too long for that (a
    // process in thousands of groups) is read in full.
    match read_small_bytes(&format!("/proc/{pid}/status")) {
        Some((buf, n)) => Credentials::parse(&buf[..n]).map(Credentials::into_tuple),
        None => {
            let status = Process::new(pid as i32).ok()?.status().ok()?;
            Some((status.ruid, status.rgid, status.groups))
        }
    }
}

/// The three lines of `/proc/PID/status` that [`credentials`] needs. Start-up reads
/// one status per session; procfs parses all its fifty-odd lines into a map first,
/// which was a tenth of the daemon's start-up CPU with ten thousand sessions.
#[derive(Debug, PartialEq)]
struct Credentials {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Credentials {
    /// `Uid:` and `Gid:` give real, effective, saved and file-system ids, tab
    /// separated; the real one is first. `Groups:` lists the supplementary groups
    /// (none: nothing after the tab). A status without all three, or with a
    /// number that does not parse, is refused.
    fn parse(status: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(status).ok()?;
        let (mut uid, mut gid, mut groups) = (None, None, None);
        for line in text.lines() {
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            let first = || value.split_whitespace().next()?.parse::<u32>().ok();
            match field {
                "Uid" => uid = Some(first()?),
                "Gid" => gid = Some(first()?),
                "Groups" => {
                    let list: Result<Vec<u32>, _> =
                        value.split_whitespace().map(str::parse).collect();
                    groups = Some(list.ok()?);
                }
                _ => {}
            }
            if uid.is_some() && gid.is_some() && groups.is_some() {
                break;
            }
        }
        Some(Self {
            uid: uid?,
            gid: gid?,
            groups: groups?,
        })
    }

    fn into_tuple(self) -> (u32, u32, Vec<u32>) {
        (self.uid, self.gid, self.groups)
    }
}

pub fn exe(pid: u32) -> Option<PathBuf> {
    Process::new(pid as i32).ok()?.exe().ok()
}

pub fn environ_var(pid: u32, name: &str) -> Option<String> {
    let env = Process::new(pid as i32).ok()?.environ().ok()?;
    env.get(std::ffi::OsStr::new(name))
        .map(|v| v.to_string_lossy().into_owned())
}

/// The terminals this process holds the master side of (`/dev/ptmx` fds), as the keys
/// of their slaves.
///
/// A terminal server (tmux, a container runtime's shim) may hold thousands: one
/// `readlink` per descriptor, one read of `fdinfo` per master, and the devpts of the
/// process's root looked up once (procfs's descriptor iterator would open, readlink,
/// stat and close each descriptor).
pub fn pty_masters(pid: u32) -> Vec<TtyKey> {
    let dir = format!("/proc/{pid}/fd");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut root_devpts: Option<Option<u64>> = None;
    let mut keys = Vec::new();
    for name in entries.filter_map(Result::ok).map(|e| e.file_name()) {
        let Some(fd) = name.to_str() else { continue };
        let fd_path = format!("{dir}/{fd}");
        let Ok(target) = fs::read_link(&fd_path) else {
            continue;
        };
        if target != Path::new("/dev/ptmx") && target != Path::new("/dev/pts/ptmx") {
            continue;
        }
        let Some(index) = fdinfo_tty_index(pid, fd) else {
            continue;
        };
        // Opened through a devpts `ptmx`, the file is in its instance; opened through
        // `/dev/ptmx`, the instance is the `pts` next to it in the process's root.
        let pts_dev = if is_devpts(&fd_path) {
            fs::metadata(&fd_path).ok().map(|m| m.dev())
        } else {
            *root_devpts.get_or_insert_with(|| devpts_of(pid))
        };
        let Some(pts_dev) = pts_dev else { continue };
        let slave_rdev = libc::makedev(session_monitor_common::dev::PTY_SLAVE_MAJOR_FIRST, index);
        keys.push(key_from_stat(slave_rdev, pts_dev));
    }
    keys
}

/// `tty-index` of a pty master's `fdinfo`: the number of its slave.
fn fdinfo_tty_index(pid: u32, fd: &str) -> Option<u32> {
    let info = read_small(&format!("/proc/{pid}/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("tty-index:"))?
        .trim()
        .parse()
        .ok()
}

/// A small /proc file (under 4 KiB) with one open, one read and one close: `/proc`
/// files report size 0, so `fs::read_to_string`'s size probe (`statx`, `lseek`) and
/// its growing reads only cost system calls.
fn read_small(path: &str) -> Option<String> {
    let (buf, n) = read_small_bytes(path)?;
    String::from_utf8(buf[..n].to_vec()).ok()
}

/// The bytes of a small /proc file (see [`read_small`]) and how many were read. A
/// file that fills the buffer is refused: it may have been cut short.
fn read_small_bytes(path: &str) -> Option<([u8; 4096], usize)> {
    use std::io::Read as _;
    let mut file = fs::File::open(path).ok()?;
    let mut buf = [0u8; 4096];
    let n = file.read(&mut buf).ok()?;
    (n < buf.len()).then_some((buf, n))
}

/// True when `path` lives on a devpts file system.
fn is_devpts(path: &str) -> bool {
    const DEVPTS_SUPER_MAGIC: u64 = 0x1cd1;
    crate::preflight::fs_magic(path).is_ok_and(|magic| magic == DEVPTS_SUPER_MAGIC)
}

/// The metadata of the first descriptor of `pid` whose file satisfies `wanted`
/// (one `stat` each: a description of what was there at one moment, used only to
/// learn which terminal a process has; nothing is opened or written through it).
fn find_fd(pid: u32, wanted: impl Fn(&fs::Metadata) -> bool) -> Option<fs::Metadata> {
    fd_numbers(pid).find_map(|fd| {
        let meta = fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok()?;
        wanted(&meta).then_some(meta)
    })
}

/// The terminal `(major, minor)` as `pid` has it open: its key (with the devpts
/// instance it lives in) and metadata.
pub fn open_tty(pid: u32, major: u32, minor: u32) -> Option<(TtyKey, fs::Metadata)> {
    let meta = find_fd(pid, |m| {
        libc::major(m.rdev()) == major && libc::minor(m.rdev()) == minor
    })?;
    Some((key_from_stat(meta.rdev(), meta.dev()), meta))
}

/// How many of a process's descriptors are looked at for its terminal: a process
/// with a million open files must not stall the daemon (a shell has its terminal on
/// 0, 1 and 2; /proc lists the others in ascending order).
const MAX_FDS_SCANNED: usize = 4096;

/// The descriptor numbers of `pid`, 0, 1 and 2 first (a shell has its terminal
/// there), then the rest of `/proc/PID/fd`, at most [`MAX_FDS_SCANNED`] in all.
/// Only numbers: what a number refers to is the user's to change at any time, so
/// callers take the descriptor itself (`pidfd_getfd`) and check that, never a path.
pub fn fd_numbers(pid: u32) -> impl Iterator<Item = i32> {
    let rest = move || {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|fd| *fd > 2)
    };
    [0, 1, 2]
        .into_iter()
        .chain(std::iter::once(()).flat_map(move |()| rest()))
        .take(MAX_FDS_SCANNED)
}

/// Device number of the devpts mounted at `/dev/pts` in the process's root.
///
/// The process's root and mounts may be the user's own (a user namespace): the
/// directory is opened once and both checks are made on what was opened, so a
/// mount swapped in between cannot mix two file systems' answers.
pub fn devpts_of(pid: u32) -> Option<u64> {
    use rustix::fs::{Mode, OFlags};
    const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;
    let dir = rustix::fs::open(
        format!("/proc/{pid}/root/dev/pts"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fs = rustix::fs::fstatfs(&dir).ok()?;
    if fs.f_type as i64 != DEVPTS_SUPER_MAGIC {
        return None;
    }
    rustix::fs::fstat(&dir).ok().map(|st| st.st_dev)
}

/// Peer address of the first connected TCP socket the process holds.
///
/// Each socket the process holds is copied into the daemon through a pidfd
/// (`pidfd_getfd`) and asked for its peer (`getpeername`). `/proc/PID/net/tcp` and
/// `tcp6`, read before, walk the kernel's whole table of established connections
/// on every read (3.4 ms each here, 262,144 buckets for one connection), and this
/// runs for every ssh terminal: they are read only where copying a descriptor is
/// not allowed.
pub fn tcp_peer(pid: u32) -> Option<String> {
    use rustix::{
        io::Errno,
        process::{PidfdGetfdFlags, pidfd_getfd},
    };
    let process = Process::new(pid as i32).ok()?;
    let sockets: Vec<(i32, u64)> = process
        .fd()
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some((fd.fd, inode)),
            _ => None,
        })
        .collect();
    if sockets.is_empty() {
        return None;
    }
    // Pinned only now: the listing is a hint, the copy is what is checked.
    let pinned = ProcRef::of(pid)?.pin()?;
    for &(fd, _) in &sockets {
        // What the number refers to now is checked on the copy: only a TCP socket
        // answers (anything else fails the first `getsockopt`, untouched).
        match pidfd_getfd(&pinned.fd, fd, PidfdGetfdFlags::empty()) {
            Ok(copy) => {
                if let Some(peer) = tcp_peer_of(&copy) {
                    return Some(peer.to_string());
                }
            }
            Err(Errno::PERM | Errno::NOSYS) => {
                let inodes: Vec<u64> = sockets.iter().map(|&(_, inode)| inode).collect();
                return tcp_peer_in_tables(&process, &inodes);
            }
            Err(_) => {}
        }
    }
    None
}

/// The peer of a connected TCP socket (IPv4 or IPv6); None for anything else.
fn tcp_peer_of(fd: &OwnedFd) -> Option<std::net::SocketAddr> {
    use rustix::net::{AddressFamily, ipproto, sockopt};
    let family = sockopt::socket_domain(fd).ok()?;
    if family != AddressFamily::INET && family != AddressFamily::INET6 {
        return None;
    }
    // An inet socket of protocol TCP is a stream socket: the type adds nothing.
    if sockopt::socket_protocol(fd).ok()? != Some(ipproto::TCP) {
        return None;
    }
    let peer = std::net::SocketAddr::try_from(rustix::net::getpeername(fd).ok()??).ok()?;
    (!peer.ip().is_unspecified()).then_some(peer)
}

/// [`tcp_peer`] from the process's `/proc/PID/net/tcp` and `tcp6`: the first
/// connected entry whose inode is one of `inodes`.
fn tcp_peer_in_tables(process: &Process, inodes: &[u64]) -> Option<String> {
    if inodes.is_empty() {
        return None;
    }
    let tables = [
        process.tcp().unwrap_or_default(),
        process.tcp6().unwrap_or_default(),
    ];
    tables
        .iter()
        .flatten()
        .find(|entry| inodes.contains(&entry.inode) && !entry.remote_address.ip().is_unspecified())
        .map(|entry| entry.remote_address.to_string())
}

/// The audit session id (`/proc/PID/sessionid`): set once at login by pam_loginuid,
/// inherited by everything started in that login (daemonized tmux servers too), and
/// not changeable by the user. None when the process was not started in a login.
pub fn audit_session(pid: u32) -> Option<u32> {
    let id: u32 = read_small(&format!("/proc/{pid}/sessionid"))?
        .trim()
        .parse()
        .ok()?;
    (id != u32::MAX).then_some(id)
}

/// The process's cgroups, every hierarchy (`/proc/PID/cgroup`). One read of the
/// file (procfs's `Process` would stat and open the process directory first); a
/// file too long for that is read in full.
pub fn cgroups(pid: u32) -> Option<procfs::ProcessCGroups> {
    use procfs::FromRead as _;
    match read_small_bytes(&format!("/proc/{pid}/cgroup")) {
        Some((buf, n)) => procfs::ProcessCGroups::from_read(&buf[..n]).ok(),
        None => Process::new(pid as i32).and_then(|p| p.cgroups()).ok(),
    }
}

/// The process's path in the cgroup v2 hierarchy (`0::/user.slice/...`).
pub fn cgroup2_path(pid: u32) -> Option<String> {
    cgroups(pid)?
        .into_iter()
        .find(|g| g.hierarchy == 0)
        .map(|g| g.pathname)
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid systems).
pub fn cgroup2_root() -> Option<PathBuf> {
    static ROOT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        procfs::mounts()
            .ok()?
            .into_iter()
            .find(|m| m.fs_vfstype == "cgroup2")
            .map(|m| PathBuf::from(m.fs_file))
    })
    .clone()
}

/// Real uid of a process.
pub fn uid_of(pid: u32) -> Option<u32> {
    Process::new(pid as i32).ok()?.uid().ok()
}

/// The process's arguments (its title, for processes that set one: sshd's
/// `sshd: user [priv]`). Empty for kernel threads and when unreadable.
pub fn cmdline(pid: u32) -> Vec<String> {
    Process::new(pid as i32)
        .and_then(|p| p.cmdline())
        .unwrap_or_default()
}

/// Every process one of whose user ids (real, effective, saved, file system) is
/// in `uids`, from one walk of /proc.
pub fn processes_of_uids(uids: &[u32]) -> Vec<ProcRef> {
    all_processes()
        .into_iter()
        .filter(|p| p.pid > 1)
        .filter(|p| {
            Process::new(p.pid as i32)
                .and_then(|proc| proc.status())
                .is_ok_and(|s| {
                    [s.ruid, s.euid, s.suid, s.fuid]
                        .iter()
                        .any(|u| uids.contains(u))
                })
        })
        .map(|p| p.proc_ref())
        .collect()
}

/// Every process by parent pid, from one walk of /proc.
pub fn processes_by_parent() -> std::collections::HashMap<u32, Vec<ProcInfo>> {
    let mut parents: std::collections::HashMap<u32, Vec<ProcInfo>> =
        std::collections::HashMap::new();
    for p in all_processes().into_iter().filter(|p| p.pid != 0) {
        parents.entry(p.ppid).or_default().push(p);
    }
    parents
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_in_parallel_keeps_the_order_of_many_items_and_of_few() {
        for n in [
            0,
            3,
            PARALLEL_FROM - 1,
            PARALLEL_FROM,
            10 * PARALLEL_FROM + 7,
        ] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = map_in_parallel(&items, |&i| i * 2);
            assert_eq!(
                doubled,
                items.iter().map(|i| i * 2).collect::<Vec<_>>(),
                "{n} items"
            );
        }
    }

    #[test]
    fn credentials_agree_with_procfs_on_a_real_status() {
        let status = std::fs::read("/proc/self/status").expect("/proc/self/status");
        let full = Process::myself().unwrap().status().unwrap();
        assert_eq!(
            Credentials::parse(&status),
            Some(Credentials {
                uid: full.ruid,
                gid: full.rgid,
                groups: full.groups,
            })
        );
    }

    #[test]
    fn credentials_take_the_real_ids_and_every_group() {
        let status = b"Name:\tbash\nUmask:\t0022\nUid:\t1001\t0\t0\t0\n\
            Gid:\t1002\t1002\t1002\t1002\nFDSize:\t256\nGroups:\t4 27 1002 \nNStgid:\t7\n";
        assert_eq!(
            Credentials::parse(status),
            Some(Credentials {
                uid: 1001,
                gid: 1002,
                groups: vec![4, 27, 1002],
            })
        );
        let no_groups = b"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert_eq!(
            Credentials::parse(no_groups).map(|c| c.groups),
            Some(Vec::new())
        );
    }

    #[test]
    fn credentials_refuse_a_status_missing_a_line_or_a_number() {
        assert_eq!(Credentials::parse(b"Uid:\t0\t0\t0\t0\nGroups:\t\n"), None);
        assert_eq!(
            Credentials::parse(b"Uid:\tx\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n"),
            None
        );
        assert_eq!(
            Credentials::parse(b"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t1 two\n"),
            None
        );
    }
}
