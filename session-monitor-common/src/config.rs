//! Load-time configuration of the probes, written by the loader into the read-only
//! global `CONFIG`. The verifier sees it as constants, so disabled branches cost nothing.
//!
//! No structure offset is compiled in: the loader resolves every field below from the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`) and every tracepoint field from its
//! tracefs `format` file, so one build runs on every supported kernel.

/// Kernel structure member offsets, in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_f_inode: u32,
    pub file_private_data: u32,
    pub inode_i_mode: u32,
    pub inode_i_rdev: u32,
    pub inode_i_sb: u32,
    pub tty_file_private_tty: u32,
    pub tty_index: u32,
    pub tty_driver: u32,
    pub tty_driver_data: u32,
    pub tty_driver_major: u32,
    pub tty_driver_minor_start: u32,
    pub pts_fs_info_sb: u32,
    pub super_block_s_dev: u32,
    pub kiocb_ki_filp: u32,
    pub iov_iter_count: u32,
    /// `iov_iter.iter_type`, and where a write's user buffer is: `ubuf` for
    /// `ITER_UBUF` (write(2) since 6.0), `__iov` (`iov` before 6.4) for `ITER_IOVEC`.
    pub iov_iter_type: u32,
    pub iov_iter_ubuf: u32,
    pub iov_iter_iov: u32,
    /// Values of `enum iter_type` on this kernel (the order changed in 6.4);
    /// [`ITER_UNKNOWN`] where the kernel has no such kind.
    pub iter_ubuf: u32,
    pub iter_iovec: u32,
    pub task_signal: u32,
    pub signal_tty: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    /// `signal_struct.live`: threads of the process not yet exiting (an `atomic_t`,
    /// whose counter is its only member).
    pub signal_live: u32,
    pub socket_sk: u32,
    pub sock_sk_common: u32,
    pub sock_common_skc_family: u32,
}

/// An `iter_type` value no `u8` member holds: the kind does not exist on this kernel.
pub const ITER_UNKNOWN: u32 = u32::MAX;

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
