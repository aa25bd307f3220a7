//! Sessions: one per terminal (a pty slave or a console) that has a login session on
//! it. This module knows how to find them in /proc and keeps the table of live ones.

mod discover;
mod kind;
mod procs;
mod table;
mod tty;

pub use discover::{Resolved, Resolver, StartupTerminal, discover_existing};
pub use kind::{ContainerInfo, SessionKind};
pub use procs::ProcRef;
pub use table::{Session, SessionTable, SessionView};
pub use tty::{key_from_stat, tty_name};
