//! The kernel side, seen from user space: loading the eBPF object, choosing and
//! attaching a backend, and typed access to its maps and events.

mod btf;
mod events;
mod loader;
mod maps;
mod programs;
mod tracefs;

pub use btf::{kernel_btf, member_offset, resolve_offsets};
pub use events::spawn_event_reader;
pub use loader::{AttachedProgram, Backend, BackendChoice, LoadOptions, Probes, load};
pub use maps::{CounterSnapshot, KernelMaps};
pub use programs::AttachPoint;
pub use tracefs::UdpSource;
