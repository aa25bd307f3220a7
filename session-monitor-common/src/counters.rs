//! Per-CPU counters kept by the probes: how many events each probe saw, how many were
//! relevant, how many it sent through the ring buffer and how many reservations failed.
//! The daemon sums the per-CPU slots for `status` and the metrics endpoint.

/// One signal source. Each backend implements every probe with its own programs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Writes into terminals (master = input, slave = output).
    TtyWrite = 0,
    /// Window resizes on a pty master.
    TtyResize = 1,
    /// Console and serial input.
    ConsoleInput = 2,
    /// UDP receives by tracked processes (Mosh servers).
    UdpRecv = 3,
    /// Process exits.
    ProcessExit = 4,
    /// New processes (not threads): a child of a login's process joins the login; a
    /// child of a listener is reported. Seen: every fork; matched: forks of such parents.
    ProcessFork = 5,
    /// Input without a terminal: writes by a login's transport into pipes and AF_UNIX
    /// sockets. Seen: writes the program looked at (fentry: every pipe and AF_UNIX
    /// write; tracepoints: every pipe or socket write by a transport); matched: those
    /// counted as input.
    PipeInput = 6,
}

impl Probe {
    pub const ALL: [Probe; 7] = [
        Probe::TtyWrite,
        Probe::TtyResize,
        Probe::ConsoleInput,
        Probe::UdpRecv,
        Probe::ProcessExit,
        Probe::ProcessFork,
        Probe::PipeInput,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Probe::TtyWrite => "tty_write",
            Probe::TtyResize => "tty_resize",
            Probe::ConsoleInput => "console_input",
            Probe::UdpRecv => "udp_recv",
            Probe::ProcessExit => "process_exit",
            Probe::ProcessFork => "process_fork",
            Probe::PipeInput => "pipe_input",
        }
    }
}

/// What a counter slot counts, per probe.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// The program ran.
    Seen = 0,
    /// The event concerned a terminal or a tracked process.
    Matched = 1,
    /// A ring-buffer event was sent.
    Sent = 2,
    /// A ring-buffer reservation failed (buffer full): the event was dropped.
    Dropped = 3,
}

impl Stat {
    pub const ALL: [Stat; 4] = [Stat::Seen, Stat::Matched, Stat::Sent, Stat::Dropped];

    pub const fn name(self) -> &'static str {
        match self {
            Stat::Seen => "seen",
            Stat::Matched => "matched",
            Stat::Sent => "sent",
            Stat::Dropped => "dropped",
        }
    }
}

pub const STATS_PER_PROBE: u32 = 4;
/// Input blocked in the kernel for a revoked user (a signal was sent).
pub const COUNTER_REVOKE_SIGNALS: u32 = Probe::ALL.len() as u32 * STATS_PER_PROBE;
/// Kernel memory reads that failed (a structure was not where BTF said).
pub const COUNTER_READ_ERRORS: u32 = COUNTER_REVOKE_SIGNALS + 1;
/// Writes into a pty master, and console input, that held only terminal answers and
/// were not counted as input (see [`crate::answers`]).
pub const COUNTER_ANSWERS_IGNORED: u32 = COUNTER_READ_ERRORS + 1;
/// Console input that a process of the console's own session put there itself
/// (TIOCSTI; on the fentry backend also a selection paste) and was not counted.
pub const COUNTER_INJECTIONS_IGNORED: u32 = COUNTER_ANSWERS_IGNORED + 1;
/// Inserts into map `PROCS` that failed (map full, or no memory): a process of a login
/// that the kernel could not record. Exported so that it is never silent.
pub const COUNTER_PROCS_INSERT_FAILURES: u32 = COUNTER_INJECTIONS_IGNORED + 1;
/// Inserts into map `LOGIN_ACTIVITY` that failed (map full).
pub const COUNTER_LOGIN_INSERT_FAILURES: u32 = COUNTER_PROCS_INSERT_FAILURES + 1;
pub const COUNTER_SLOTS: u32 = COUNTER_LOGIN_INSERT_FAILURES + 1;

#[inline(always)]
pub const fn slot(probe: Probe, stat: Stat) -> u32 {
    probe as u32 * STATS_PER_PROBE + stat as u32
}
