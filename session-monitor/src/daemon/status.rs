//! What `session-monitor status` shows.

use serde::{Deserialize, Serialize};
use serde_json::json;
use session_monitor_common::config::KernelOffsets;

use crate::policy::Mode;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub kernel: String,
    pub backend: String,
    /// Why `auto` did not pick fentry, if it did not.
    pub fallback_reason: Option<String>,
    pub programs: Vec<ProgramStatus>,
    pub skipped_programs: Vec<String>,
    pub udp_source: Option<String>,
    /// Input of revoked users is stopped in the kernel (else by the daemon only).
    pub kernel_revocation: bool,
    /// Structure member offsets resolved from the running kernel's BTF.
    pub offsets: serde_json::Value,
    pub counters: serde_json::Value,
    pub events_received: u64,
    pub ring_buffer_drops: u64,
    pub sessions: usize,
    pub unresolved_terminals: usize,
    pub uptime_seconds: u64,
    pub policy: String,
    pub mode: Mode,
    pub audit_log: Option<String>,
    pub policy_reloads_ok: u64,
    pub policy_reloads_rejected: u64,
    /// Where /metrics, /healthz and /readyz are served (None: off).
    pub metrics_addr: Option<String>,
    /// The kernel state pinned across restarts (None: pinning off).
    pub kernel_state: Option<KernelState>,
}

/// What survives a restart of the daemon, and what this start found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelState {
    /// `<--pin-dir>/<layout>`.
    pub dir: String,
    /// `reused` (the previous daemon's maps), `fresh` or `replaced` (another
    /// layout's state was removed).
    pub found: String,
    /// The programs stay attached if the daemon dies (input during a restart counts).
    pub links_pinned: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgramStatus {
    pub name: String,
    pub attach: String,
    pub probe: String,
}

/// Offsets keyed `struct.member`, as BTF names them.
pub fn offsets_json(o: &KernelOffsets) -> serde_json::Value {
    json!({
        "task_struct.files": o.task_files,
        "files_struct.fdt": o.files_fdt,
        "fdtable.max_fds": o.fdtable_max_fds,
        "fdtable.fd": o.fdtable_fd,
        "file.f_inode": o.file_f_inode,
        "file.private_data": o.file_private_data,
        "inode.i_mode": o.inode_i_mode,
        "inode.i_rdev": o.inode_i_rdev,
        "inode.i_sb": o.inode_i_sb,
        "tty_file_private.tty": o.tty_file_private_tty,
        "tty_struct.index": o.tty_index,
        "tty_struct.driver": o.tty_driver,
        "tty_struct.driver_data": o.tty_driver_data,
        "tty_driver.major": o.tty_driver_major,
        "tty_driver.minor_start": o.tty_driver_minor_start,
        "pts_fs_info.sb": o.pts_fs_info_sb,
        "super_block.s_dev": o.super_block_s_dev,
        "kiocb.ki_filp": o.kiocb_ki_filp,
        "iov_iter.count": o.iov_iter_count,
        "iov_iter.iter_type": o.iov_iter_type,
        "iov_iter.ubuf": o.iov_iter_ubuf,
        "iov_iter.__iov": o.iov_iter_iov,
        "task_struct.signal": o.task_signal,
        "signal_struct.tty": o.signal_tty,
        "task_struct.pid": o.task_pid,
        "task_struct.tgid": o.task_tgid,
        "signal_struct.live": o.signal_live,
        "socket.sk": o.socket_sk,
        "sock.__sk_common": o.sock_sk_common,
        "sock_common.skc_family": o.sock_common_skc_family,
    })
}
