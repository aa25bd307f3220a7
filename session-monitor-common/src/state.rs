//! Values of the kernel maps that aggregate activity, so that nothing is lost when the
//! ring buffer is busy: the daemon reads the latest state from here whenever it decides.

/// Per-terminal activity (map `TTY_ACTIVITY`, keyed by [`crate::TtyKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TtyActivity {
    /// When the probes first saw this terminal (CLOCK_BOOTTIME ns).
    pub first_seen_ns: u64,
    /// Last user input (a write into the master, a resize, console input); 0 = none yet.
    pub last_input_ns: u64,
    pub input_bytes: u64,
    pub input_count: u64,
    /// When the last `TtyInput` notice went out, for rate limiting.
    pub last_notice_ns: u64,
    /// The last process that wrote input into this terminal (its transport).
    pub last_writer_tgid: u32,
    pub _pad: u32,
}

/// Flags of [`ProcState::flags`].
pub mod proc_flags {
    /// Send a `ProcessExit` event when the process exits.
    pub const WATCH_EXIT: u32 = 1;
    /// Record UDP receives (network liveness of a Mosh server).
    pub const WATCH_UDP: u32 = 2;
}

/// A process the daemon tracks (map `PROCS`, keyed by tgid). The kernel removes the
/// entry when the process exits, so a reused pid never inherits it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcState {
    pub flags: u32,
    pub _pad: u32,
    /// Last UDP datagram received (CLOCK_BOOTTIME ns); 0 = none yet.
    pub last_udp_ns: u64,
    pub udp_bytes: u64,
    pub udp_count: u64,
}
