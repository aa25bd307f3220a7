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
    /// `syscalls/sys_enter_{write,writev,ioctl}`: `fd` is at the same place in each.
    pub sys_enter_fd: u32,
    /// `sys_enter_write.count`.
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
}

/// BTF type ids in the running kernel, for `bpf_rdonly_cast`: it turns a pointer the
/// verifier only sees as a number (a `void *` member, a slot of an allocated descriptor
/// table) back into a typed one, so its members are read by direct loads instead of
/// `bpf_probe_read_kernel` calls (about 30 ns each on the keystroke path).
///
/// The programs call the kfunc through a placeholder instruction
/// ([`kfunc::PLACEHOLDER_CALL`]) that the loader patches: aya cannot relocate kfunc
/// calls. `rdonly_cast` is 0 where the kernel has no such kfunc (before 6.2); the
/// loader then turns the call into `r0 = 0`, and the programs read through the helper.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTypes {
    /// The kfunc `bpf_rdonly_cast`'s own id; 0 where the kernel lacks it.
    pub rdonly_cast: u32,
    pub file: u32,
    pub tty_file_private: u32,
    pub pts_fs_info: u32,
    pub socket: u32,
    /// 1 where `bpf_rdonly_cast(p, 0)` gives untyped read-only memory, which direct
    /// loads read at any offset (6.17 and later): the slot of an allocated descriptor
    /// table is then a load, not a `bpf_probe_read_kernel` call.
    pub void_cast: u32,
}

/// A field of [`KernelTypes`].
pub type KernelTypeField = fn(&mut KernelTypes) -> &mut u32;

impl KernelTypes {
    /// The structures the programs cast to, by the field that holds each id.
    pub const STRUCTS: [(&'static str, KernelTypeField); 4] = [
        ("file", |t| &mut t.file),
        ("tty_file_private", |t| &mut t.tty_file_private),
        ("pts_fs_info", |t| &mut t.pts_fs_info),
        ("socket", |t| &mut t.socket),
    ];
}

/// The kfunc call the programs hold in place of `bpf_rdonly_cast`, and what the loader
/// writes over it.
pub mod kfunc {
    /// `call` (`BPF_JMP | BPF_CALL`) with `src_reg = BPF_PSEUDO_KFUNC_CALL` (2) and an
    /// immediate no kernel type has: 8 bytes that occur in the object only where
    /// [`PLACEHOLDER_CALL`] was written.
    pub const PLACEHOLDER_IMM: u32 = 0x5ec0_ca57;
    pub const PLACEHOLDER_CALL: [u8; 8] = call(PLACEHOLDER_IMM);

    /// A kfunc call to the kernel function with BTF id `id` (in vmlinux: `off` 0).
    pub const fn call(id: u32) -> [u8; 8] {
        let imm = id.to_le_bytes();
        [0x85, 0x20, 0, 0, imm[0], imm[1], imm[2], imm[3]]
    }

    /// `r0 = 0`: where the kernel lacks the kfunc, so that the verifier accepts the
    /// (never taken) branch that holds the call.
    pub const NO_CALL: [u8; 8] = [0xb7, 0x00, 0, 0, 0, 0, 0, 0];
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
    pub types: KernelTypes,
    pub flags: u32,
    /// The daemon's own tgid: its writes are never activity.
    pub self_tgid: u32,
    /// Zeros where the `u64` below would otherwise get implicit padding, whose
    /// value is undefined: sized by the compiler, so adding a member keeps it right.
    pub padding: [u8; CONFIG_PADDING],
    /// Minimum interval between two `TtyInput` notices for one terminal.
    pub notice_interval_ns: u64,
}

/// The bytes [`ProbeConfig::padding`] takes: what aligns the `u32` members before
/// `notice_interval_ns` to 8.
const CONFIG_PADDING: usize = {
    use core::mem::size_of;
    let u32s = size_of::<KernelOffsets>()
        + size_of::<TracepointFields>()
        + size_of::<KernelTypes>()
        + 2 * size_of::<u32>();
    (8 - u32s % 8) % 8
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration is copied into the programs as bytes: no byte of it may be
    /// implicit padding, whose value is undefined.
    #[test]
    fn probe_config_has_no_padding() {
        use core::mem::size_of;
        let fields = size_of::<KernelOffsets>()
            + size_of::<TracepointFields>()
            + size_of::<KernelTypes>()
            + 2 * size_of::<u32>()
            + CONFIG_PADDING
            + size_of::<u64>();
        assert_eq!(size_of::<ProbeConfig>(), fields);
        assert_eq!(size_of::<KernelOffsets>() % 4, 0);
    }
}
