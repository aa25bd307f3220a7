//! Ring-buffer events: state changes only, never one per keystroke.

use crate::{LoginId, TtyKey};

/// What a record says. The record's fields each mean one thing; which of them a kind
/// fills is said here. `tgid`, `uid` and `comm` are always the process that caused
/// the event (the current task).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Terminal `key` was written to for the first time since it was last forgotten,
    /// by its transport (input): `tgid`.
    TtyFirstInput = 1,
    /// Terminal `key` was seen for the first time through program output, written by
    /// `tgid`, which lives inside the session.
    TtyFirstOutput = 2,
    /// Input arrived on known terminal `key` from `tgid`; sent at most once per notice
    /// interval per terminal (map `TTY_ACTIVITY` has the totals).
    TtyInput = 3,
    /// Tracked process `tgid` exited (its last thread did).
    ProcessExit = 4,
    /// Input from a revoked user was stopped in the kernel: `tgid` (running as `uid`)
    /// got SIGKILL. `key` is the terminal written to; for a write into a pipe or
    /// socket by a transport, `key` is zero and `login` is the transport's login.
    RevokedInputBlocked = 5,
    /// Login `login`'s transport (`tgid`) wrote into a pipe or AF_UNIX socket: input
    /// without a terminal. Sent on the login's first such input and then at most once
    /// per notice interval (map `LOGIN_ACTIVITY` has the totals).
    LoginInput = 6,
    /// A process flagged `LISTENER` (`tgid`) forked `child_tgid`; `login` is the
    /// listener's own login (usually none). The child is already in map `PROCS` if the
    /// listener belongs to a login.
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

/// One ring-buffer record, as the programs write it. The daemon decodes it once into
/// a typed event per kind (`probes::events`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// Thread-group id of the process that caused the event.
    pub tgid: u32,
    /// Real uid of that process.
    pub uid: u32,
    /// [`EventKind::ListenerForked`]: the new process; 0 otherwise.
    pub child_tgid: u32,
    /// The terminal the event concerns; zero for none.
    pub key: TtyKey,
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
