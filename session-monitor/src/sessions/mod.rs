//! Logins: an ssh connection, a mosh-server, a console login, a container exec or a
//! local terminal, with their terminals. This module knows how to find them in /proc
//! and keeps the table of live ones.

mod cgroup_trust;
mod discover;
mod kind;
mod names;
mod procs;
mod table;
mod tty;

pub use cgroup_trust::trusted_dir_chain;
pub use discover::{Resolved, Resolver, discover_existing};
pub use kind::{ContainerInfo, SessionKind};
pub use procs::{
    Pinned, ProcInfo, ProcRef, cgroup2_path, cgroup2_root, credentials, fd_numbers,
    processes_by_parent, processes_of_uids, uid_of,
};
pub use table::{Carry, Login, LoginKey, LoginTable, SessionView, Terminal, login_key};
pub use tty::{key_from_stat, tty_name};

/// What /proc says about one process.
pub fn proc_info(pid: u32) -> Option<ProcInfo> {
    ProcInfo::read(pid)
}
