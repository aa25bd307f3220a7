//! `bpf_rdonly_cast`, the one kfunc the programs call. aya cannot relocate kfunc calls,
//! so the call is a placeholder instruction the loader patches with the kfunc's BTF id
//! in the running kernel (see `session_monitor_common::config::KernelTypes`).

use core::arch::asm;

use session_monitor_common::config::kfunc::PLACEHOLDER_IMM;

use crate::config::conf;

/// True where the kernel has `bpf_rdonly_cast` (6.2 and later). A load-time constant:
/// the verifier walks one side of every test of it, so where the kernel lacks the
/// kfunc the call (patched into `r0 = 0`) is never reached.
#[inline(always)]
pub fn casts() -> bool {
    conf!(types.rdonly_cast) != 0
}

/// True where `bpf_rdonly_cast(p, 0)` gives untyped read-only memory, read by direct
/// loads at any offset (6.17 and later). A load-time constant, like [`casts`].
#[inline(always)]
pub fn casts_void() -> bool {
    casts() && conf!(types.void_cast) != 0
}

/// `void *bpf_rdonly_cast(const void *obj, u32 btf_id)`: `obj`, which the verifier
/// only sees as a number, as a read-only pointer to the kernel type `type_id`, whose
/// members are then read by direct loads (a bad address reads as zero). The verifier
/// turns the call into a register move: it costs nothing. Only call it where
/// [`casts`] holds; `type_id` must be a load-time constant.
#[inline(always)]
pub fn rdonly_cast(obj: *const u8, type_id: u32) -> *const u8 {
    let out: u64;
    // SAFETY: a kfunc call by the BPF calling convention: arguments in r1 and r2,
    // result in r0, r1-r5 clobbered, no memory touched.
    unsafe {
        asm!(
            ".byte 0x85, 0x20, 0x00, 0x00",
            ".4byte {imm}",
            imm = const PLACEHOLDER_IMM,
            inlateout("r1") obj as u64 => _,
            inlateout("r2") type_id as u64 => _,
            lateout("r0") out,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(nostack, nomem, pure),
        );
    }
    out as *const u8
}
