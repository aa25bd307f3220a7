//! The workloads: each runs in this process (plus the session leaders it needs) for
//! a given time and reports its throughput. They are the same with and without the
//! daemon; only whether the daemon is running changes between runs.

use std::{
    ffi::CString,
    io,
    net::{Ipv4Addr, UdpSocket},
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use rustix::{fs::OFlags, io::Errno, pipe::PipeFlags};

use anyhow::{Context as _, Result, bail};

use super::{
    sys::{self, LeaderMode, Leaders, Pty},
    whole::WholeSizes,
};

/// Which target a workload is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    /// A whole program a user runs (a build, `git status`, `scp`): what users feel.
    Whole,
    TerminalOutput,
    Keystrokes,
    UnrelatedWrites,
    /// Reads that have nothing to do with terminals: on the tracepoint backend
    /// every read(2) on the host passes the console-input hook.
    UnrelatedReads,
    UnrelatedUdp,
    /// System calls that are neither writes nor reads (`getppid`): with syscall
    /// tracepoints on, every system call takes the slow path.
    OtherSyscalls,
    ProcessChurn,
}

/// A goal for the attached/detached ratio of work per CPU-second.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Target {
    /// At least this ratio.
    AtLeast(f64),
    /// At least the floor's ratio (measured in the same run) less this many points.
    FloorLess(f64),
    /// At least this share of the floor's ratio ("within 15 % of the floor": 0.85).
    OfFloor(f64),
}

impl Target {
    pub fn threshold(self, floor: f64) -> f64 {
        match self {
            Target::AtLeast(t) => t,
            Target::FloorLess(points) => floor - points,
            Target::OfFloor(share) => floor * share,
        }
    }
}

/// How a workload's ratio stands against its goal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    Met,
    /// The median is below the goal, but none of the daemon's programs ran on the
    /// workload's path and the goal lies inside the median's confidence interval:
    /// the rounds cannot tell the daemon's cost from none (emulated runs vary by
    /// several percent, more than a 0.995 goal allows).
    WithinNoise,
    Missed {
        /// The floor (empty programs on the same attach points) is below the goal
        /// too: the hooks alone miss it, whatever the programs do.
        floor_too: bool,
    },
}

impl Verdict {
    /// The confidence of the interval that decides [`Verdict::WithinNoise`].
    pub const CONFIDENCE: f64 = 0.9;
    /// Fewer program runs than this per operation is "no program on the path"
    /// (a timer or another task's event, not the workload's).
    pub const IDLE_RUNS_PER_OP: f64 = 0.01;

    /// `median` and `floor` are the medians of the attached and floor ratios;
    /// `interval_hi` the top of the attached median's interval, if the rounds give
    /// one; `runs_per_op` the daemon's program runs per operation, if measured.
    pub fn judge(
        target: Target,
        median: f64,
        floor: f64,
        interval_hi: Option<f64>,
        runs_per_op: Option<f64>,
    ) -> Self {
        let threshold = target.threshold(floor);
        if median >= threshold {
            return Verdict::Met;
        }
        let idle = runs_per_op.is_some_and(|r| r < Self::IDLE_RUNS_PER_OP);
        if idle && interval_hi.is_some_and(|hi| hi >= threshold) {
            return Verdict::WithinNoise;
        }
        Verdict::Missed {
            floor_too: floor < threshold,
        }
    }

    /// A miss: neither met nor within noise.
    pub fn missed(self) -> bool {
        matches!(self, Verdict::Missed { .. })
    }
}

impl From<bool> for Verdict {
    fn from(met: bool) -> Self {
        if met {
            Verdict::Met
        } else {
            Verdict::Missed { floor_too: false }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtLeast(t) => write!(f, "≥ {t}"),
            Target::FloorLess(p) => write!(f, "≥ floor − {p}"),
            Target::OfFloor(s) => write!(f, "≥ {s} × floor"),
        }
    }
}

impl Kind {
    /// The goal for attached/detached work per CPU-second, by the backend in use:
    /// on fentry nothing runs on unrelated paths, so absolute goals; on tracepoints
    /// every system call pays the hooks, so goals relative to the floor.
    pub fn target(self, backend: &str) -> Option<Target> {
        if self == Kind::ProcessChurn {
            return None;
        }
        Some(match (self, backend == "fentry") {
            (Kind::Whole, true) => Target::AtLeast(0.99),
            (Kind::Whole, false) => Target::FloorLess(0.02),
            (Kind::TerminalOutput, true) => Target::AtLeast(0.99),
            (Kind::Keystrokes, true) => Target::AtLeast(0.95),
            (_, true) => Target::AtLeast(0.995),
            (_, false) => Target::OfFloor(0.85),
        })
    }
}

pub trait Workload {
    /// Short name for tables (`keystrokes-100`).
    fn name(&self) -> String;
    fn kind(&self) -> Kind;
    /// What one run does, precisely enough to reproduce it.
    fn describe(&self) -> String;
    /// Unit of the throughput `run` returns.
    fn unit(&self) -> &'static str;
    /// Session leaders the daemon must track before a run counts as attached.
    fn leaders(&self) -> &[i32] {
        &[]
    }
    /// System calls of the workload's kind per unit of throughput (1 KiB writes per
    /// MiB for terminal output), to relate program runs to operations.
    fn ops_per_unit(&self) -> f64 {
        1.0
    }
    /// CPU time so far of processes the workload uses that are neither this process,
    /// its reaped children nor its leaders (an sshd and its sessions), in ns.
    fn extra_cpu_ns(&self) -> u64 {
        0
    }
    /// Runs for about `duration`.
    fn run(&mut self, duration: Duration) -> Result<Sample>;
}

/// What one run did: `amount` in the workload's unit (times seconds), over `wall`.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub amount: f64,
    pub wall: Duration,
}

/// Calls `step` (which does some operations and returns how many) until `duration`
/// has passed.
fn timed(duration: Duration, mut step: impl FnMut() -> Result<u64>) -> Result<Sample> {
    let start = Instant::now();
    let mut ops = 0u64;
    loop {
        ops += step()?;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return Ok(Sample {
                amount: ops as f64,
                wall: elapsed,
            });
        }
        if sys::interrupted() {
            bail!("interrupted");
        }
    }
}

/// write(2); `Ok(None)` when the descriptor would block.
fn write_fd(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<Option<usize>> {
    match rustix::io::write(fd, buf) {
        Ok(n) => Ok(Some(n)),
        Err(Errno::AGAIN | Errno::INTR) => Ok(None),
        Err(err) => Err(io::Error::from(err)).context("write"),
    }
}

/// read(2) until the descriptor would block.
fn drain(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<u64> {
    let mut total = 0;
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(Errno::AGAIN | Errno::INTR) => return Ok(total),
            Err(err) => return Err(io::Error::from(err)).context("read"),
        }
    }
}

/// 1. Program output: a process in a session writes lines into its terminal (the
///    slave) and the terminal's server drains the master, like a terminal emulator.
pub struct TerminalOutput {
    pty: Pty,
    slave: OwnedFd,
    leaders: Leaders,
    chunk: Vec<u8>,
    buf: Vec<u8>,
}

const OUTPUT_CHUNK: usize = 1024;

impl TerminalOutput {
    pub fn new() -> Result<Self> {
        let (mut ptys, leaders) = sys::sessions(1, false, LeaderMode::Sleep, None)?;
        let pty = ptys.pop().expect("one pty");
        let slave = sys::open_path(
            &pty.slave_path(),
            OFlags::WRONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
        )?;
        sys::set_nonblocking(pty.master.as_fd())?;
        let line: Vec<u8> = (0..79)
            .map(|i| b'a' + (i % 26) as u8)
            .chain([b'\n'])
            .collect();
        let chunk = line.iter().copied().cycle().take(OUTPUT_CHUNK).collect();
        Ok(Self {
            pty,
            slave,
            leaders,
            chunk,
            buf: vec![0; 64 * 1024],
        })
    }
}

impl Workload for TerminalOutput {
    fn name(&self) -> String {
        "terminal-output".into()
    }
    fn kind(&self) -> Kind {
        Kind::TerminalOutput
    }
    fn describe(&self) -> String {
        format!(
            "write(2) of {OUTPUT_CHUNK}-byte chunks of 80-column text into a pty slave \
             (default termios, so ONLCR output processing) until it would block, then \
             read(2) of the master in 64 KiB reads until empty; one process, one session \
             (a sleeping leader owns the terminal)"
        )
    }
    fn unit(&self) -> &'static str {
        "MiB/s"
    }
    fn leaders(&self) -> &[i32] {
        &self.leaders.pids
    }
    fn ops_per_unit(&self) -> f64 {
        (1024 * 1024 / OUTPUT_CHUNK) as f64
    }
    fn run(&mut self, duration: Duration) -> Result<Sample> {
        let (slave, master) = (self.slave.as_fd(), self.pty.master.as_fd());
        let bytes = timed(duration, || {
            let mut written = 0u64;
            while let Some(n) = write_fd(slave, &self.chunk)? {
                written += n as u64;
            }
            drain(master, &mut self.buf)?;
            Ok(written)
        })?;
        Ok(Sample {
            amount: bytes.amount / (1024.0 * 1024.0),
            ..bytes
        })
    }
}

/// 2. Keystrokes: one byte at a time into pty masters, round robin, as a transport
///    (sshd, tmux) does; each pty has a session leader that reads its input. As
///    pastes: 16 bytes of text per write, which the answer filter reads (writes of
///    one byte skip it).
pub struct Keystrokes {
    ptys: Vec<Pty>,
    leaders: Leaders,
    typing: Typing,
}

/// What each write into a master carries.
#[derive(Clone, Copy)]
enum Typing {
    /// One byte: a typed key, which the answer filter never reads.
    Key,
    /// A line of text, which the answer filter reads and finds to be input.
    Paste,
}

impl Typing {
    fn bytes(self) -> &'static [u8] {
        match self {
            Typing::Key => b"k",
            Typing::Paste => b"ls -l /var/log\r\n",
        }
    }
}

impl Keystrokes {
    pub fn new(count: usize) -> Result<Self> {
        Self::writing(count, Typing::Key)
    }

    pub fn pastes(count: usize) -> Result<Self> {
        Self::writing(count, Typing::Paste)
    }

    fn writing(count: usize, typing: Typing) -> Result<Self> {
        let (ptys, leaders) = sys::sessions(count, true, LeaderMode::Drain, None)?;
        for pty in &ptys {
            sys::set_nonblocking(pty.master.as_fd())?;
        }
        Ok(Self {
            ptys,
            leaders,
            typing,
        })
    }
}

impl Workload for Keystrokes {
    fn name(&self) -> String {
        match self.typing {
            Typing::Key => format!("keystrokes-{}", self.ptys.len()),
            Typing::Paste => format!("pastes-{}", self.ptys.len()),
        }
    }
    fn kind(&self) -> Kind {
        Kind::Keystrokes
    }
    fn describe(&self) -> String {
        let what = match self.typing {
            Typing::Key => "1 byte".to_string(),
            Typing::Paste => format!(
                "{} bytes of text (a paste: the answer filter reads each write)",
                self.typing.bytes().len()
            ),
        };
        format!(
            "write(2) of {what} into each of {} pty masters in turn (raw mode, no echo), \
             as fast as possible; each pty's session leader reads its input",
            self.ptys.len()
        )
    }
    fn unit(&self) -> &'static str {
        match self.typing {
            Typing::Key => "keystrokes/s",
            Typing::Paste => "pastes/s",
        }
    }
    fn leaders(&self) -> &[i32] {
        &self.leaders.pids
    }
    fn run(&mut self, duration: Duration) -> Result<Sample> {
        let masters: Vec<BorrowedFd<'_>> = self.ptys.iter().map(|p| p.master.as_fd()).collect();
        let bytes = self.typing.bytes();
        let mut next = 0;
        timed(duration, || {
            let mut done = 0;
            for _ in 0..64 {
                if write_fd(masters[next], bytes)? == Some(bytes.len()) {
                    done += 1;
                }
                next = (next + 1) % masters.len();
            }
            Ok(done)
        })
    }
}

/// 3a. Writes that have nothing to do with terminals: /dev/null.
pub struct DevNullWrites {
    fd: OwnedFd,
}

const SMALL_WRITE: usize = 64;

impl DevNullWrites {
    pub fn new() -> Result<Self> {
        Ok(Self {
            fd: sys::open_path("/dev/null", OFlags::WRONLY)?,
        })
    }
}

impl Workload for DevNullWrites {
    fn name(&self) -> String {
        "writes-devnull".into()
    }
    fn kind(&self) -> Kind {
        Kind::UnrelatedWrites
    }
    fn describe(&self) -> String {
        format!("write(2) of {SMALL_WRITE} bytes to /dev/null in a tight loop, one process")
    }
    fn unit(&self) -> &'static str {
        "writes/s"
    }
    fn run(&mut self, duration: Duration) -> Result<Sample> {
        let fd = self.fd.as_fd();
        let buf = [b'x'; SMALL_WRITE];
        timed(duration, || {
            for _ in 0..256 {
                write_fd(fd, &buf)?;
            }
            Ok(256)
        })
    }
}

/// 3c. Reads that have nothing to do with terminals: /dev/zero.
pub struct DevZeroReads {
    fd: OwnedFd,
}

impl DevZeroReads {
    pub fn new() -> Result<Self> {
        Ok(Self {
            fd: sys::open_path("/dev/zero", OFlags::RDONLY)?,
        })
    }
}

impl Workload for DevZeroReads {
    fn name(&self) -> String {
        "reads-devzero".into()
    }
    fn kind(&self) -> Kind {
        Kind::UnrelatedReads
    }
    fn describe(&self) -> String {
        format!("read(2) of {SMALL_WRITE} bytes from /dev/zero in a tight loop, one process")
    }
    fn unit(&self) -> &'static str {
        "reads/s"
    }
    fn run(&mut self, duration: Duration) -> Result<Sample> {
        let fd = self.fd.as_fd();
        let mut buf = [0u8; SMALL_WRITE];
        timed(duration, || {
            for _ in 0..256 {
                rustix::io::read(fd, &mut buf)
                    .map_err(io::Error::from)
                    .context("read")?;
            }
            Ok(256)
        })
    }
}

/// 3b. Writes into a pipe, drained by the same process whenever it is full.
pub struct PipeWrites {
    read: OwnedFd,
    write: OwnedFd,
    buf: Vec<u8>,
}

impl PipeWrites {
    pub fn new() -> Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .map_err(io::Error::from)
            .context("pipe2")?;
        Ok(Self {
            read,
            write,
            buf: vec![0; 64 * 1024],
        })
    }
}

impl Workload for PipeWrites {
    fn name(&self) -> String {
        "writes-pipe".into()
    }
    fn kind(&self) -> Kind {
        Kind::UnrelatedWrites
    }
    fn describe(&self) -> String {
        format!(
            "write(2) of {SMALL_WRITE} bytes into a non-blocking pipe until it is full \
             (about 1000 writes), then read(2) of 64 KiB until it is empty; one process"
        )
    }
    fn unit(&self) -> &'static str {
        "writes/s"
    }
    fn run(&mut self, duration: Duration) -> Result<Sample> {
        let (r, w) = (self.read.as_fd(), self.write.as_fd());
        let data = [b'x'; SMALL_WRITE];
        timed(duration, || {
            let mut writes = 0;
            while write_fd(w, &data)?.is_some() {
                writes += 1;
            }
            drain(r, &mut self.buf)?;
            Ok(writes)
        })
    }
}

/// 4. UDP on loopback by a process that is not a session (and not a Mosh server).
pub struct UdpLoopback {
    socket: UdpSocket,
}

const DATAGRAM: usize = 64;

impl UdpLoopback {
    pub fn new() -> Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a UDP socket")?;
        socket.connect(socket.local_addr()?)?;
        // A lost datagram must not hang the benchmark.
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok(Self { socket })
    }
}

impl Workload for UdpLoopback {
    fn name(&self) -> String {
        "udp-loopback".into()
    }
    fn kind(&self) -> Kind {
        Kind::UnrelatedUdp
    }
    fn describe(&self) -> String {
        format!(
            "send(2) of a {DATAGRAM}-byte datagram to its own socket on 127.0.0.1, then \
             recv(2) of it, in a loop; one process outside any session (throughput = \
             datagrams received)"
        )
    }
    fn unit(&self) -> &'static str {
        "datagrams/s"
    }
    fn run(&mut self, duration: Duration) -> Result<Sample> {
        let mut buf = [0u8; DATAGRAM];
        timed(duration, || {
            let mut received = 0;
            for _ in 0..64 {
                self.socket.send(&buf).context("send")?;
                if self.socket.recv(&mut buf).ok() == Some(DATAGRAM) {
                    received += 1;
                }
            }
            Ok(received)
        })
    }
}

/// 4b. A system call that is neither a write nor a read: with syscall tracepoints
///     on, it too goes through the slow system-call path.
pub struct Getppid;

impl Workload for Getppid {
    fn name(&self) -> String {
        "getppid".into()
    }
    fn kind(&self) -> Kind {
        Kind::OtherSyscalls
    }
    fn describe(&self) -> String {
        "getppid(2) in a tight loop, one process".into()
    }
    fn unit(&self) -> &'static str {
        "calls/s"
    }
    fn run(&mut self, duration: Duration) -> Result<Sample> {
        timed(duration, || {
            for _ in 0..256 {
                std::hint::black_box(rustix::process::getppid());
            }
            Ok(256)
        })
    }
}

/// 5. Process churn: fork, exec `true`, exit, reap.
pub struct ProcessChurn {
    path: CString,
    argv: [*const libc::c_char; 2],
    envp: [*const libc::c_char; 1],
}

impl ProcessChurn {
    pub fn new() -> Result<Self> {
        let path = ["/bin/true", "/usr/bin/true"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .context("no `true` program in /bin or /usr/bin")?;
        let path = CString::new(path)?;
        let argv = [path.as_ptr(), std::ptr::null()];
        Ok(Self {
            argv,
            envp: [std::ptr::null()],
            path,
        })
    }
}

impl Workload for ProcessChurn {
    fn name(&self) -> String {
        "process-churn".into()
    }
    fn kind(&self) -> Kind {
        Kind::ProcessChurn
    }
    fn describe(&self) -> String {
        format!(
            "fork(2), execve(2) of {} in the child, waitpid(2) in the parent, in a loop",
            self.path.to_string_lossy()
        )
    }
    fn unit(&self) -> &'static str {
        "processes/s"
    }
    fn run(&mut self, duration: Duration) -> Result<Sample> {
        timed(duration, || {
            // SAFETY: single-threaded; the child only calls execve and _exit.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                bail!("fork: {}", io::Error::last_os_error());
            }
            if pid == 0 {
                // SAFETY: valid, NUL-terminated argument and environment arrays.
                unsafe {
                    libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
                    libc::_exit(127);
                }
            }
            let mut status = 0;
            loop {
                // SAFETY: our child.
                let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                if r >= 0 {
                    break;
                }
                if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    bail!("waitpid: {}", io::Error::last_os_error());
                }
            }
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                bail!("the churn child failed (wait status {status:#x})");
            }
            Ok(1)
        })
    }
}

/// Makes a workload (its ptys and children exist only while it does).
pub type Factory = Box<dyn Fn() -> Result<Box<dyn Workload>>>;

/// Every throughput workload, by name, in the order they run: the whole workloads
/// (`whole`) first, then the micro workloads. `keystroke_ptys` are the pty counts of
/// the keystroke workload.
pub fn all(whole: &WholeSizes, keystroke_ptys: &[usize]) -> Vec<(String, Factory)> {
    fn boxed<W: Workload + 'static>(w: Result<W>) -> Result<Box<dyn Workload>> {
        Ok(Box::new(w?))
    }
    let mut list: Vec<(String, Factory)> = Vec::new();
    for &name in &whole.run {
        let sizes = whole.clone();
        list.push((
            name.into(),
            Box::new(move || super::whole::make(name, &sizes)),
        ));
    }
    list.push((
        "terminal-output".into(),
        Box::new(|| boxed(TerminalOutput::new())),
    ));
    for &n in keystroke_ptys {
        list.push((
            format!("keystrokes-{n}"),
            Box::new(move || boxed(Keystrokes::new(n))),
        ));
    }
    list.push(("pastes-1".into(), Box::new(|| boxed(Keystrokes::pastes(1)))));
    list.push((
        "writes-devnull".into(),
        Box::new(|| boxed(DevNullWrites::new())),
    ));
    list.push(("writes-pipe".into(), Box::new(|| boxed(PipeWrites::new()))));
    list.push((
        "reads-devzero".into(),
        Box::new(|| boxed(DevZeroReads::new())),
    ));
    list.push(("getppid".into(), Box::new(|| boxed(Ok(Getppid)))));
    list.push((
        "udp-loopback".into(),
        Box::new(|| boxed(UdpLoopback::new())),
    ));
    list.push((
        "process-churn".into(),
        Box::new(|| boxed(ProcessChurn::new())),
    ));
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOAL: Target = Target::AtLeast(0.995);

    #[test]
    fn a_median_at_the_goal_is_met() {
        assert_eq!(Verdict::judge(GOAL, 0.995, 0.9, None, None), Verdict::Met);
        let share = Target::OfFloor(0.85);
        assert_eq!(Verdict::judge(share, 0.86, 1.0, None, None), Verdict::Met);
        assert_eq!(
            Verdict::judge(share, 0.84, 1.0, Some(0.9), Some(1.0)),
            Verdict::Missed { floor_too: false }
        );
    }

    #[test]
    fn noise_needs_an_idle_path_and_an_interval_holding_the_goal() {
        // /dev/null writes under emulation: no program ran, rounds 0.89–1.14.
        assert_eq!(
            Verdict::judge(GOAL, 0.9785, 1.0113, Some(1.1446), Some(0.0)),
            Verdict::WithinNoise
        );
        // The same numbers with a program on the path are a miss.
        assert_eq!(
            Verdict::judge(GOAL, 0.9785, 1.0113, Some(1.1446), Some(0.5)),
            Verdict::Missed { floor_too: false }
        );
        // No statistics run, or too few rounds for an interval: a miss.
        assert!(Verdict::judge(GOAL, 0.9785, 1.0113, Some(1.1446), None).missed());
        assert!(Verdict::judge(GOAL, 0.9785, 1.0113, None, Some(0.0)).missed());
        // Every round below the goal: a miss, idle or not.
        assert!(Verdict::judge(GOAL, 0.9753, 0.9989, Some(0.99), Some(0.0)).missed());
    }

    #[test]
    fn a_miss_says_when_the_floor_misses_too() {
        // Pipe writes on fentry: the empty programs alone give 0.90.
        assert_eq!(
            Verdict::judge(GOAL, 0.8479, 0.8997, Some(0.8772), Some(1.0)),
            Verdict::Missed { floor_too: true }
        );
    }
}
