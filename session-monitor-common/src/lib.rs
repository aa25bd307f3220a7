//! Types shared by the eBPF programs (`session-monitor-ebpf`) and the daemon.
//!
//! Everything that crosses the kernel/user boundary — map keys and values, ring-buffer
//! events, the load-time configuration — is defined once here as `#[repr(C)]` plain data,
//! so both sides agree on the layout by construction.
#![no_std]

pub mod answers;
pub mod config;
pub mod counters;
pub mod dev;
pub mod event;
pub mod kernel_members;
pub mod state;

pub use config::ProbeConfig;
pub use counters::{Probe, Stat};
pub use dev::{TtyClass, TtyKey};
pub use event::{Event, EventKind};
pub use state::{InputActivity, LoginActivity, LoginId, NO_LOGIN, ProcState, PtsSlot, TtyActivity};

/// Names of the maps in the eBPF object, used by the loader to find them.
pub mod map_names {
    pub const TTY_ACTIVITY: &str = "TTY_ACTIVITY";
    pub const PTS_ACTIVITY: &str = "PTS_ACTIVITY";
    pub const PROCS: &str = "PROCS";
    pub const LOGIN_ACTIVITY: &str = "LOGIN_ACTIVITY";
    pub const REVOKED_UIDS: &str = "REVOKED_UIDS";
    pub const REVOKED_ANY: &str = "REVOKED_ANY";
    pub const TRANSPORT_PIDS: &str = "TRANSPORT_PIDS";
    pub const ADOPTED_PIDS: &str = "ADOPTED_PIDS";
    pub const FORKED_PIDS: &str = "FORKED_PIDS";
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
}

/// Name of the read-only global holding [`ProbeConfig`].
pub const CONFIG_GLOBAL: &str = "CONFIG";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, contain only integers, and every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for crate::TtyKey {}
    unsafe impl aya::Pod for crate::InputActivity {}
    unsafe impl aya::Pod for crate::PtsSlot {}
    unsafe impl aya::Pod for crate::ProcState {}
    unsafe impl aya::Pod for crate::Event {}
    unsafe impl aya::Pod for crate::ProbeConfig {}
}
