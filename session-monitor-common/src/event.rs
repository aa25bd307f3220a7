//! Ring-buffer events: state changes only, never one per keystroke.

use crate::{LoginId, TtyKey};

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A terminal was written to for the first time since it was last forgotten, by
    /// its transport (input). `tgid` is the writer, i.e. the transport process.
    TtyFirstInput = 1,
    /// A terminal was seen for the first time through program output. `tgid` is the
    /// writing process, which lives inside the session.
    TtyFirstOutput = 2,
    /// Input arrived on a known terminal; sent at most once per notice interval per
    /// terminal. `value` is the total input bytes so far.
    TtyInput = 3,
    /// A tracked process exited. `value` is its exit code.
    ProcessExit = 4,
    /// Input from a revoked user was stopped in the kernel: `tgid` got SIGKILL. `key`
    /// is the terminal written to; for a write into a pipe or socket by a transport,
    /// `key` is zero and `login` is the transport's login.
    RevokedInputBlocked = 5,
    /// A login's transport wrote into a pipe or AF_UNIX socket: input without a
    /// terminal. Sent on the login's first such input and then at most once per notice
    /// interval. `login` is the login, `tgid` the transport, `value` the total input
    /// bytes so far (map `LOGIN_ACTIVITY` has the rest).
    LoginInput = 6,
    /// A process flagged `LISTENER` forked: `tgid` is the listener, `value` the new
    /// process's tgid, `login` the listener's own login (usually none). The child is
    /// already in map `PROCS` if the listener belongs to a login.
    ListenerForked = 7,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => EventKind::TtyFirstInput,
            2 => EventKind::TtyFirstOutput,
            3 => EventKind::TtyInput,
            4 => EventKind::ProcessExit,
            5 => EventKind::RevokedInputBlocked,
            6 => EventKind::LoginInput,
            7 => EventKind::ListenerForked,
            _ => return None,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// Thread-group id of the process that caused the event.
    pub tgid: u32,
    /// Real uid of that process.
    pub uid: u32,
    pub _pad: u32,
    pub key: TtyKey,
    /// `bpf_ktime_get_boot_ns()` (CLOCK_BOOTTIME).
    pub ts_ns: u64,
    pub value: u64,
    /// The login the event concerns, for the kinds that say so; 0 otherwise.
    pub login: LoginId,
    /// `comm` of the process that caused the event.
    pub comm: [u8; 16],
}

impl Event {
    pub const SIZE: usize = core::mem::size_of::<Event>();

    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_u32(self.kind)
    }
}
