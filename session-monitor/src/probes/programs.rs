//! Which programs each backend attaches, and where.

use session_monitor_common::Probe;

use super::tracefs::UdpSource;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachPoint {
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    FEntry {
        function: &'static str,
    },
    /// A BTF tracepoint (`tp_btf`): typed arguments, no trampoline.
    BtfTracepoint {
        name: &'static str,
    },
}

impl std::fmt::Display for AttachPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachPoint::Tracepoint { category, name } => write!(f, "tracepoint/{category}/{name}"),
            AttachPoint::FEntry { function } => write!(f, "fentry/{function}"),
            AttachPoint::BtfTracepoint { name } => write!(f, "tp_btf/{name}"),
        }
    }
}

/// One program of the eBPF object (by its function name) and where it attaches.
#[derive(Clone, Copy, Debug)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub attach: AttachPoint,
    pub probe: Probe,
    /// Absent on some kernels without loss of function (e.g. IPv6 built as a module).
    pub optional: bool,
    /// Other names of the same fentry target on other kernels, tried in order when
    /// the kernel has no function of the first name.
    pub renamed: &'static [&'static str],
    /// When the program is attached.
    pub needed: Needed,
}

/// When a program has work to do, and so when it is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needed {
    /// From start to stop.
    Always,
    /// Only while some login has a console terminal: a program on a hook that
    /// every process on the host passes (every `read`) and that finds work only
    /// on consoles. Loaded at start, attached and detached by the daemon (see
    /// `super::standby`).
    WhileConsoleLogins,
}

impl Needed {
    /// In words, for `status`.
    pub fn describe(self) -> &'static str {
        match self {
            Needed::Always => "always",
            Needed::WhileConsoleLogins => "while a login has a console terminal",
        }
    }
}

const fn tp(
    name: &'static str,
    category: &'static str,
    event: &'static str,
    probe: Probe,
) -> ProgramSpec {
    ProgramSpec {
        name,
        attach: AttachPoint::Tracepoint {
            category,
            name: event,
        },
        probe,
        optional: false,
        renamed: &[],
        needed: Needed::Always,
    }
}

const fn fe(
    name: &'static str,
    function: &'static str,
    probe: Probe,
    optional: bool,
) -> ProgramSpec {
    ProgramSpec {
        name,
        attach: AttachPoint::FEntry { function },
        probe,
        optional,
        renamed: &[],
        needed: Needed::Always,
    }
}

/// Process exit: a BTF tracepoint, used by both backends; it costs no perf record
/// per exiting thread, where the classic tracepoint fills one.
pub const EXIT: ProgramSpec = ProgramSpec {
    name: "process_exit",
    attach: AttachPoint::BtfTracepoint {
        name: "sched_process_exit",
    },
    probe: Probe::ProcessExit,
    optional: false,
    renamed: &[],
    needed: Needed::Always,
};

/// Process creation: a BTF tracepoint (a tracepoint, not a trampoline), used by both
/// backends. It gives the child's `task_struct` typed, so threads are told from
/// processes by direct loads; see the eBPF crate's `exit.rs`.
pub const FORK: ProgramSpec = ProgramSpec {
    name: "process_fork",
    attach: AttachPoint::BtfTracepoint {
        name: "sched_process_fork",
    },
    probe: Probe::ProcessFork,
    optional: false,
    renamed: &[],
    needed: Needed::Always,
};

pub fn tracepoint_backend(udp: UdpSource) -> Vec<ProgramSpec> {
    let udp_programs = match udp {
        UdpSource::SockRecvLength => vec![ProgramSpec {
            name: "tp_sock_recv",
            attach: AttachPoint::BtfTracepoint {
                name: "sock_recv_length",
            },
            probe: Probe::UdpRecv,
            optional: false,
            renamed: &[],
            needed: Needed::Always,
        }],
        UdpSource::RecvSyscalls => vec![
            tp(
                "tp_recvmsg_exit",
                "syscalls",
                "sys_exit_recvmsg",
                Probe::UdpRecv,
            ),
            tp(
                "tp_recvfrom_exit",
                "syscalls",
                "sys_exit_recvfrom",
                Probe::UdpRecv,
            ),
        ],
    };
    let mut programs = vec![
        tp("tp_write", "syscalls", "sys_enter_write", Probe::TtyWrite),
        tp("tp_writev", "syscalls", "sys_enter_writev", Probe::TtyWrite),
        tp("tp_ioctl", "syscalls", "sys_enter_ioctl", Probe::TtyResize),
        // Every read(2) on the host passes here; only a console's matter.
        ProgramSpec {
            needed: Needed::WhileConsoleLogins,
            ..tp(
                "tp_read_exit",
                "syscalls",
                "sys_exit_read",
                Probe::ConsoleInput,
            )
        },
    ];
    programs.extend(udp_programs);
    programs.push(EXIT);
    programs.push(FORK);
    programs
}

pub fn fentry_backend() -> Vec<ProgramSpec> {
    vec![
        fe("fe_tty_write", "tty_write", Probe::TtyWrite, false),
        fe("fe_tty_ioctl", "tty_ioctl", Probe::TtyResize, false),
        fe("fe_rx_buf", "n_tty_receive_buf", Probe::ConsoleInput, false),
        fe(
            "fe_rx_buf2",
            "n_tty_receive_buf2",
            Probe::ConsoleInput,
            false,
        ),
        // Datagrams received, IPv4 and IPv6 (see fe_udp_consume).
        fe("fe_udp_consume", "skb_consume_udp", Probe::UdpRecv, false),
        // Input without a terminal: a transport's writes into pipes and AF_UNIX sockets.
        ProgramSpec {
            // Linux 6.14 split it: anonymous pipes (and, through it, FIFOs) write
            // in `anon_pipe_write`.
            renamed: &["anon_pipe_write"],
            ..fe("fe_pipe_write", "pipe_write", Probe::PipeInput, false)
        },
        fe(
            "fe_unix_stream_send",
            "unix_stream_sendmsg",
            Probe::PipeInput,
            false,
        ),
        fe(
            "fe_unix_dgram_send",
            "unix_dgram_sendmsg",
            Probe::PipeInput,
            false,
        ),
        EXIT,
        FORK,
    ]
}
