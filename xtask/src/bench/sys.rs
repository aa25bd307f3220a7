//! System pieces the benchmark is built from: clocks, kernel settings and limits
//! that are put back when dropped, pseudo-terminals, and session-leader children.
//!
//! Children are made with fork(2) and never exec: this process has no other threads
//! when it forks, and a child only makes plain system calls before it sleeps or reads.

use std::{
    fs, io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::sys::resource::{UsageWho, getrusage};
use rustix::{
    fs::{Mode, OFlags},
    process::{Resource, Rlimit, getrlimit, setrlimit},
    pty::OpenptFlags,
    termios::OptionalActions,
    time::{ClockId, clock_gettime},
};

/// CLOCK_BOOTTIME in nanoseconds: the clock the daemon and its probes use.
pub fn boot_ns() -> u64 {
    timespec_ns(clock_gettime(ClockId::Boottime))
}

/// Wall-clock time (CLOCK_REALTIME), ns since the epoch.
pub fn wall_ns() -> u64 {
    timespec_ns(clock_gettime(ClockId::Realtime))
}

fn timespec_ns(ts: rustix::time::Timespec) -> u64 {
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub use crate::interrupt::{check_interrupted, install_interrupt_handler, interrupted};

/// Sleeps in short steps so that an interrupt is noticed.
pub fn sleep(duration: Duration) -> Result<()> {
    let end = Instant::now() + duration;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Held while a benchmark runs: two at once measure each other, and each puts back
/// the kernel settings and removes the test user as it found them, so the one that
/// ends last left `kernel.pty.max` raised and the user behind.
pub struct OnlyBenchmark {
    _held: nix::fcntl::Flock<fs::File>,
}

impl OnlyBenchmark {
    /// In `/run`, which only root may write: not `/run/lock` or `/tmp`, where any
    /// user could put a file or a link there first.
    const PATH: &str = "/run/session-monitor-bench.lock";

    pub fn take() -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(Self::PATH)
            .with_context(|| format!("opening {}", Self::PATH))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(Self { _held: held }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
                "another benchmark is running on this machine (it holds {}); wait for it \
                 to end: two at once measure each other",
                Self::PATH
            ),
            Err((_, err)) => Err(err).with_context(|| format!("locking {}", Self::PATH)),
        }
    }
}

/// A kernel setting (`kernel.pty.max`) changed for the benchmark; dropping it puts
/// the old value back.
pub struct Sysctl {
    name: String,
    path: PathBuf,
    old: String,
}

impl Sysctl {
    pub fn path_of(name: &str) -> PathBuf {
        PathBuf::from("/proc/sys").join(name.replace('.', "/"))
    }

    pub fn read(name: &str) -> Result<String> {
        let path = Self::path_of(name);
        Ok(fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    pub fn set(name: &str, value: &str) -> Result<Self> {
        let path = Self::path_of(name);
        let old = Self::read(name)?;
        fs::write(&path, value).with_context(|| format!("setting {name} = {value}"))?;
        println!("    sysctl {name}: {old} -> {value} (restored afterwards)");
        Ok(Self {
            name: name.to_string(),
            path,
            old,
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        match fs::write(&self.path, &self.old) {
            Ok(()) => println!("    sysctl {} restored to {}", self.name, self.old),
            Err(err) => eprintln!(
                "xtask: warning: could not restore {} to {}: {err}",
                self.name, self.old
            ),
        }
    }
}

/// RLIMIT_NOFILE raised for the benchmark; dropping it restores the old limits.
pub struct NofileLimit {
    old: Rlimit,
}

impl NofileLimit {
    pub fn raise(at_least: u64) -> Result<Self> {
        let old = getrlimit(Resource::Nofile);
        // `None` is unlimited.
        let raised = |v: Option<u64>| v.map(|v| v.max(at_least));
        let new = Rlimit {
            current: raised(old.current),
            maximum: raised(old.maximum),
        };
        setrlimit(Resource::Nofile, new)
            .map_err(io::Error::from)
            .with_context(|| format!("raising RLIMIT_NOFILE to {at_least}"))?;
        Ok(Self { old })
    }
}

impl Drop for NofileLimit {
    fn drop(&mut self) {
        if let Err(err) = setrlimit(Resource::Nofile, self.old) {
            eprintln!("xtask: warning: could not restore RLIMIT_NOFILE: {err}");
        }
    }
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(io::Error::from)?;
    rustix::fs::fcntl_setfl(fd, flags | OFlags::NONBLOCK).map_err(io::Error::from)?;
    Ok(())
}

pub fn open_path(path: &str, flags: OFlags) -> Result<OwnedFd> {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())
        .map_err(io::Error::from)
        .with_context(|| format!("opening {path}"))
}

/// One pseudo-terminal, master side held here.
pub struct Pty {
    pub master: OwnedFd,
    pub index: u32,
}

impl Pty {
    pub fn open() -> Result<Self> {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .map_err(io::Error::from)
                .context("opening /dev/ptmx")?;
        rustix::pty::unlockpt(&master)
            .map_err(io::Error::from)
            .context("unlockpt")?;
        let name = rustix::pty::ptsname(&master, Vec::new())
            .map_err(io::Error::from)
            .context("ptsname")?;
        let index = name
            .to_str()
            .ok()
            .and_then(|n| n.strip_prefix("/dev/pts/")?.parse().ok())
            .with_context(|| format!("unexpected pty name {name:?}"))?;
        Ok(Self { master, index })
    }

    pub fn slave_path(&self) -> String {
        format!("/dev/pts/{}", self.index)
    }

    /// Raw mode without echo, set through the master: every byte written into the
    /// master reaches the reader at once and nothing comes back.
    pub fn set_raw(&self) -> Result<()> {
        let mut t = rustix::termios::tcgetattr(&self.master)
            .map_err(io::Error::from)
            .context("tcgetattr")?;
        t.make_raw();
        rustix::termios::tcsetattr(&self.master, OptionalActions::Now, &t)
            .map_err(io::Error::from)
            .context("tcsetattr")?;
        Ok(())
    }
}

/// Opens `count` pseudo-terminals.
pub fn open_ptys(count: usize, raw: bool) -> Result<Vec<Pty>> {
    (0..count)
        .map(|i| {
            let pty = Pty::open().with_context(|| format!("opening pty {} of {count}", i + 1))?;
            if raw {
                pty.set_raw()?;
            }
            Ok(pty)
        })
        .collect()
}

/// What a session leader does once it has its terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderMode {
    /// Sleeps (like a shell waiting at its prompt with nothing typed).
    Sleep,
    /// Reads and discards its terminal's input (a shell or editor taking keystrokes).
    Drain,
}

/// Session leaders: children that called setsid() and made a pty slave their
/// controlling terminal. Dropping this kills and reaps them.
#[derive(Default)]
pub struct Leaders {
    pub pids: Vec<i32>,
}

/// A child reports back with (pid, status); status 0 is ready, otherwise
/// `step * 1000 + errno`.
const READY_RECORD: usize = 8;

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: valid pointer to two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both were just created and are ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `count` sessions: a pty each (raw mode if `raw`) and a session leader on its
/// slave, optionally running as `(uid, gid)`.
///
/// The children are forked first, while this process holds few descriptors (a fork
/// copies the descriptor table, which would make 10,000 forks with 10,000 masters
/// open quadratic); then the ptys are opened and each waiting child is sent the
/// number of one through a pipe.
pub fn sessions(
    count: usize,
    raw: bool,
    mode: LeaderMode,
    creds: Option<(u32, u32)>,
) -> Result<(Vec<Pty>, Leaders)> {
    let mut leaders = Leaders::default();
    let (go_r, go_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    // SAFETY: plain syscall.
    let parent = unsafe { libc::getpid() };
    for _ in 0..count {
        check_interrupted()?;
        // SAFETY: this process is single-threaded; the child only makes
        // async-signal-safe calls (see `leader_main`) and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!(
                "fork for session leader {}: {}",
                leaders.pids.len() + 1,
                io::Error::last_os_error()
            );
        }
        if pid == 0 {
            // SAFETY: in the child, see above.
            unsafe { leader_main(go_r.as_raw_fd(), mode, creds, ready_w.as_raw_fd(), parent) };
        }
        leaders.pids.push(pid);
    }
    drop(go_r);
    drop(ready_w);
    let ptys = open_ptys(count, raw)?;
    let mut numbers = Vec::with_capacity(count * 4);
    for pty in &ptys {
        numbers.extend_from_slice(&pty.index.to_ne_bytes());
    }
    write_all(&go_w, &numbers)?;
    read_ready(&ready_r, count)?;
    if mode == LeaderMode::Sleep {
        wait_asleep(&leaders.pids)?;
    }
    Ok((ptys, leaders))
}

/// How long the leaders of a large session count may take to fall asleep.
const ASLEEP_WITHIN: Duration = Duration::from_secs(120);

/// The system calls `sleep infinity` blocks in: glibc's `pause()` is the `pause`
/// call where the architecture has one (x86_64) and `rt_sigsuspend` elsewhere
/// (arm64); a finite sleep is a `nanosleep`.
const SLEEP_CALLS: &[libc::c_long] = &[
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pause,
    libc::SYS_rt_sigsuspend,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
];

/// Waits until every leader sleeps in `sleep`. A leader reports ready before it
/// executes `/bin/sleep`, and 10,000 execs (each dropping a copy of this process's
/// address space, then loading `sleep`) take seconds of CPU after the last report:
/// a daemon started then competes with them, which no real host's settled sessions
/// would make it do. A leader is asleep when `/proc/PID/syscall` names one of
/// [`SLEEP_CALLS`].
fn wait_asleep(pids: &[i32]) -> Result<()> {
    let asleep = |pid: i32| {
        fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|text| {
            let nr = text
                .split_whitespace()
                .next()
                .and_then(|nr| nr.parse().ok());
            nr.is_some_and(|nr| SLEEP_CALLS.contains(&nr))
        })
    };
    let deadline = Instant::now() + ASLEEP_WITHIN;
    let mut waiting: Vec<i32> = pids.to_vec();
    loop {
        check_interrupted()?;
        waiting.retain(|&pid| !asleep(pid));
        let Some(&first) = waiting.first() else {
            return Ok(());
        };
        if Instant::now() > deadline {
            bail!(
                "{} of {} session leaders were not asleep in `sleep` after {} s (pid {first} among them: /proc/{first}/syscall reads {:?})",
                waiting.len(),
                pids.len(),
                ASLEEP_WITHIN.as_secs(),
                fs::read_to_string(format!("/proc/{first}/syscall"))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Leaders {
    /// pidfds of the leaders, to see when each one ends.
    pub fn pidfds(&self) -> Result<Vec<OwnedFd>> {
        self.pids
            .iter()
            .map(|&pid| {
                // SAFETY: plain syscall.
                let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
                if fd < 0 {
                    bail!("pidfd_open({pid}): {}", io::Error::last_os_error());
                }
                // SAFETY: a new descriptor we own.
                Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
            })
            .collect()
    }
}

impl Drop for Leaders {
    fn drop(&mut self) {
        for &pid in &self.pids {
            // SAFETY: our own children.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for &pid in &self.pids {
            reap(pid);
        }
    }
}

/// Waits for child `pid` (already reaped or not ours: returns at once).
pub fn reap(pid: i32) {
    loop {
        let mut status = 0;
        // SAFETY: plain syscall.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || errno() != libc::EINTR {
            return;
        }
    }
}

fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        // SAFETY: valid buffer.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            bail!(
                "writing to the session leaders: {}",
                io::Error::last_os_error()
            );
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

fn read_ready(ready: &OwnedFd, count: usize) -> Result<()> {
    let mut buf = vec![0u8; count * READY_RECORD];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < buf.len() {
        check_interrupted()?;
        let mut pfd = libc::pollfd {
            fd: ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if n == 0 {
            if Instant::now() > deadline {
                bail!(
                    "session leaders did not report ready within 120 s ({} of {count})",
                    got / READY_RECORD
                );
            }
            continue;
        }
        // SAFETY: reading into the unfilled part of buf.
        let r = unsafe {
            libc::read(
                ready.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            bail!("reading leader reports: {}", io::Error::last_os_error());
        }
        if r == 0 {
            bail!(
                "session leaders exited before reporting ({} of {count} reported)",
                got / READY_RECORD
            );
        }
        got += r as usize;
    }
    for record in buf.chunks_exact(READY_RECORD) {
        let pid = i32::from_ne_bytes(record[..4].try_into().expect("4 bytes"));
        let status = i32::from_ne_bytes(record[4..].try_into().expect("4 bytes"));
        if status != 0 {
            let step = [
                "",
                "setsid",
                "open slave",
                "TIOCSCTTY",
                "dup2",
                "set credentials",
                "read pty number",
                "exec /bin/sleep",
            ]
            .get((status / 1000) as usize)
            .copied()
            .unwrap_or("?");
            bail!(
                "session leader {pid} failed at {step}: {}",
                io::Error::from_raw_os_error(status % 1000)
            );
        }
    }
    Ok(())
}

/// `/dev/pts/N` as a NUL-terminated string, without allocating.
fn slave_path(index: u32, buf: &mut [u8; 32]) {
    let prefix = b"/dev/pts/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut n = index;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[prefix.len() + i] = digits[len - 1 - i];
    }
    buf[prefix.len() + len] = 0;
}

/// The child side of [`sessions`]. Only async-signal-safe calls, no allocation,
/// never returns.
unsafe fn leader_main(
    go: RawFd,
    mode: LeaderMode,
    creds: Option<(u32, u32)>,
    ready: RawFd,
    parent: libc::pid_t,
) -> ! {
    // SAFETY: every call below is a plain system call on valid arguments.
    unsafe {
        let report = |status: i32| {
            let mut rec = [0u8; READY_RECORD];
            rec[..4].copy_from_slice(&libc::getpid().to_ne_bytes());
            rec[4..].copy_from_slice(&status.to_ne_bytes());
            libc::write(ready, rec.as_ptr().cast(), rec.len());
        };
        let fail = |step: i32| -> ! {
            report(step * 1000 + errno().clamp(0, 999));
            libc::_exit(1)
        };
        // The benchmark's interrupt handler must not outlive the fork: a session
        // leader dies of SIGHUP like a shell does.
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(signal, libc::SIG_DFL);
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        // Records of 4 bytes, written at once: each read takes exactly one.
        let mut number = [0u8; 4];
        if libc::read(go, number.as_mut_ptr().cast(), 4) != 4 {
            fail(6);
        }
        let mut path = [0u8; 32];
        slave_path(u32::from_ne_bytes(number), &mut path);
        if libc::setsid() < 0 {
            fail(1);
        }
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDWR);
        if fd < 0 {
            fail(2);
        }
        if libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
            fail(3);
        }
        for target in 0..3 {
            if libc::dup2(fd, target) < 0 {
                fail(4);
            }
        }
        if let Some((uid, gid)) = creds
            && (libc::setgroups(0, std::ptr::null()) < 0
                || libc::setgid(gid) < 0
                || libc::setuid(uid) < 0)
        {
            fail(5);
        }
        // A change of credentials clears the parent-death signal: set it again.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        report(0);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        match mode {
            // A shell at its prompt is a small process. A fork of this one that
            // sleeps would carry the whole benchmark's address space, and its exit
            // (unmapping all of it) made each ended session cost the machine far
            // more than a real one: a thousand of them took 40 % of the CPU that
            // the daemon needed to end them.
            LeaderMode::Sleep => {
                let argv = [c"sleep".as_ptr(), c"infinity".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                libc::execve(c"/bin/sleep".as_ptr(), argv.as_ptr(), envp.as_ptr());
                fail(7)
            }
            LeaderMode::Drain => {
                let mut buf = [0u8; 4096];
                loop {
                    let n = libc::read(0, buf.as_mut_ptr().cast(), buf.len());
                    if n == 0 || (n < 0 && errno() != libc::EINTR) {
                        libc::_exit(0);
                    }
                }
            }
        }
    }
}

/// The kernel's clock ticks per second (for /proc/PID/stat times).
pub fn clock_ticks() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        hz => hz as f64,
    }
}

/// A `Key:   value kB` line of /proc/PID/status, in KiB.
pub fn process_status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// CPU time of this process (all threads) so far, in ns.
pub fn process_cpu_ns() -> u64 {
    timespec_ns(clock_gettime(ClockId::ProcessCPUTime))
}

/// CPU time of the children this process has reaped, in ns.
pub fn reaped_children_cpu_ns() -> u64 {
    (usage_seconds(UsageWho::RUSAGE_CHILDREN) * 1e9) as u64
}

/// User and system time of this process or of its reaped children, in seconds.
fn usage_seconds(who: UsageWho) -> f64 {
    getrusage(who).map_or(0.0, |u| {
        [u.user_time(), u.system_time()]
            .iter()
            .map(|tv| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6)
            .sum()
    })
}

/// Time a thread has run on a CPU, in ns (`/proc/PID/task/TID/schedstat`, first field).
fn schedstat_ns(path: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time of a process so far, in ns: all its threads, those that have exited
/// too (the daemon's start-up and blocking-pool threads come and go; a sum over
/// `/proc/PID/task` would miss them).
pub fn cpu_ns_of(pid: u32) -> Result<u64> {
    let clock = nix::time::clock_getcpuclockid(nix::unistd::Pid::from_raw(pid as i32))
        .with_context(|| format!("the CPU clock of process {pid}"))?;
    let ts = nix::time::clock_gettime(clock)
        .with_context(|| format!("reading the CPU clock of process {pid}"))?;
    Ok(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
}

/// CPU time of a workload so far, in ns: this process, the children it reaped, and
/// its live session leaders (which are single-threaded).
pub fn workload_cpu_ns(leaders: &[i32]) -> u64 {
    process_cpu_ns()
        + reaped_children_cpu_ns()
        + leaders
            .iter()
            .filter_map(|pid| schedstat_ns(&format!("/proc/{pid}/schedstat")))
            .sum::<u64>()
}

/// CPU time used by this process and its reaped children, in seconds.
pub fn own_cpu_seconds() -> f64 {
    usage_seconds(UsageWho::RUSAGE_SELF) + usage_seconds(UsageWho::RUSAGE_CHILDREN)
}

/// Busy CPU time of the whole machine so far (all CPUs, everything but idle and
/// iowait), in seconds, from /proc/stat.
pub fn machine_busy_seconds() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4 && i < 8)
        .map(|(_, x)| x)
        .sum();
    Ok(busy as f64 / clock_ticks())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slave_paths_without_allocation() {
        let mut buf = [0u8; 32];
        slave_path(0, &mut buf);
        assert_eq!(&buf[..11], b"/dev/pts/0\0");
        slave_path(10234, &mut buf);
        assert_eq!(&buf[..15], b"/dev/pts/10234\0");
    }

    #[test]
    fn own_process_has_a_status() {
        let pid = std::process::id();
        assert!(process_status_kib(pid, "VmRSS").unwrap() > 0);
        assert!(cpu_ns_of(pid).unwrap() > 0);
        assert!(process_cpu_ns() > 0);
    }
}
