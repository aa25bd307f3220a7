//! Load-time configuration of the probes, written by the loader into the read-only
//! global `CONFIG`. The verifier sees it as constants, so disabled branches cost nothing.
//!
//! No structure offset is compiled in: the loader resolves every kernel member (the
//! table in [`crate::kernel_members`]) from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) and every tracepoint field from its tracefs `format`
//! file, so one build runs on every supported kernel.

pub use crate::kernel_members::{ITER_UNKNOWN, KernelOffsets};

/// Offsets of the fields the tracepoint programs read from their context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointFields {
    /// `syscalls/sys_enter_{write,writev,read,ioctl}`: `fd` is at the same place in each.
    pub sys_enter_fd: u32,
    /// `sys_enter_write.count`, `sys_enter_read.count`.
    pub sys_enter_write_count: u32,
    /// `sys_enter_write.buf`: where the written bytes are, to tell answers from keys.
    pub sys_enter_write_buf: u32,
    /// `sys_enter_writev.vec` and `.vlen`.
    pub sys_enter_writev_vec: u32,
    pub sys_enter_writev_vlen: u32,
    /// `sys_enter_ioctl.cmd`.
    pub sys_enter_ioctl_cmd: u32,
    /// `sys_exit_{read,recvmsg,recvfrom}.ret` (the same offset in each).
    pub sys_exit_ret: u32,
    /// `sock/sock_recv_length.protocol` and `.ret`.
    pub sock_recv_protocol: u32,
    pub sock_recv_ret: u32,
}

/// Feature flags of [`ProbeConfig::flags`].
pub mod flags {
    /// Kill the writer of input for a revoked user in the kernel (`bpf_send_signal`).
    pub const KERNEL_REVOKE: u32 = 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    pub offsets: KernelOffsets,
    pub tracepoints: TracepointFields,
    pub flags: u32,
    /// The daemon's own tgid: its writes are never activity.
    pub self_tgid: u32,
    /// Minimum interval between two `TtyInput` notices for one terminal.
    pub notice_interval_ns: u64,
}
