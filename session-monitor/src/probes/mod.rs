//! The kernel side, seen from user space: loading the eBPF object, choosing and
//! attaching a backend, and typed access to its maps and events.

mod btf;
mod events;
mod kfunc;
mod loader;
mod maps;
mod pins;
mod programs;
mod pts_slots;
mod standby;
mod tracefs;

pub use events::{Blocked, KernelEvent, raw_event, spawn_event_reader};
pub use loader::{AttachedProgram, Backend, BackendChoice, LoadOptions, Probes, load};
pub use maps::{CounterSnapshot, KernelMaps};
pub use pins::DEFAULT_PIN_DIR;
