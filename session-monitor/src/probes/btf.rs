//! Structure member offsets from the running kernel's BTF.
//!
//! The eBPF programs are compiled once and run on many kernels; the layout of
//! `struct file`, `struct tty_struct` and friends differs between them. Instead of
//! compiling offsets in, the daemon looks every member up here at start-up and hands
//! the result to the programs through their read-only configuration.

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use session_monitor_common::config::{ITER_UNKNOWN, KernelOffsets};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Loads the kernel's BTF. Read into memory first: parsed straight from the file,
/// btf-rs asks the file for its position once per type (~30,000 `lseek` calls).
pub fn kernel_btf() -> Result<Btf> {
    let context = || {
        format!("reading kernel BTF from {VMLINUX_BTF} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")
    };
    let bytes = std::fs::read(VMLINUX_BTF).with_context(context)?;
    Btf::from_bytes(&bytes).with_context(context)
}

/// Every member the programs read, as (struct, member path) pairs. A path descends
/// through anonymous structs and unions on its own; dots are not needed for those.
pub fn resolve_offsets(btf: &Btf) -> Result<KernelOffsets> {
    let off = |strukt: &str, member: &str| member_offset(btf, strukt, member);
    Ok(KernelOffsets {
        task_files: off("task_struct", "files")?,
        files_fdt: off("files_struct", "fdt")?,
        fdtable_max_fds: off("fdtable", "max_fds")?,
        fdtable_fd: off("fdtable", "fd")?,
        file_f_inode: off("file", "f_inode")?,
        file_private_data: off("file", "private_data")?,
        inode_i_mode: off("inode", "i_mode")?,
        inode_i_rdev: off("inode", "i_rdev")?,
        inode_i_sb: off("inode", "i_sb")?,
        tty_file_private_tty: off("tty_file_private", "tty")?,
        tty_index: off("tty_struct", "index")?,
        tty_driver: off("tty_struct", "driver")?,
        tty_driver_data: off("tty_struct", "driver_data")?,
        tty_driver_major: off("tty_driver", "major")?,
        tty_driver_minor_start: off("tty_driver", "minor_start")?,
        pts_fs_info_sb: off("pts_fs_info", "sb")?,
        super_block_s_dev: off("super_block", "s_dev")?,
        kiocb_ki_filp: off("kiocb", "ki_filp")?,
        iov_iter_count: off("iov_iter", "count")?,
        // Where a write's bytes are, for the fentry backend to tell answers from keys.
        // Optional: on a kernel without them every master write counts as input.
        iov_iter_type: off("iov_iter", "iter_type").unwrap_or(0),
        iov_iter_ubuf: off("iov_iter", "ubuf").unwrap_or(0),
        iov_iter_iov: off("iov_iter", "__iov")
            .or_else(|_| off("iov_iter", "iov"))
            .unwrap_or(0),
        iter_ubuf: iter_kind(btf, "ITER_UBUF"),
        iter_iovec: iter_kind(btf, "ITER_IOVEC"),
        task_signal: off("task_struct", "signal")?,
        signal_tty: off("signal_struct", "tty")?,
        task_pid: off("task_struct", "pid")?,
        task_tgid: off("task_struct", "tgid")?,
        signal_live: off("signal_struct", "live")?,
        socket_sk: off("socket", "sk")?,
        sock_sk_common: off("sock", "__sk_common")?,
        sock_common_skc_family: off("sock_common", "skc_family")?,
    })
}

/// The value of `kind` in `enum iter_type` (its order changed in 6.4), or
/// [`ITER_UNKNOWN`] when this kernel has no such kind or no `iter_type` member to
/// compare it with (before 5.14 the kind shared a field with the direction).
fn iter_kind(btf: &Btf, kind: &str) -> u32 {
    if member_offset(btf, "iov_iter", "iter_type").is_err() {
        return ITER_UNKNOWN;
    }
    enum_value(btf, "iter_type", kind).unwrap_or(ITER_UNKNOWN)
}

/// The value of `name` in `enum enumeration`.
pub fn enum_value(btf: &Btf, enumeration: &str, name: &str) -> Option<u32> {
    btf.resolve_types_by_name(enumeration)
        .ok()?
        .iter()
        .find_map(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| btf.resolve_name(*m).is_ok_and(|n| n == name))
                .map(|m| m.val()),
            _ => None,
        })
}

/// Byte offset of `member` in `struct strukt`, searching anonymous members too.
pub fn member_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32> {
    let types = btf
        .resolve_types_by_name(strukt)
        .with_context(|| format!("BTF has no type named `{strukt}`"))?;
    let st = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("BTF has no struct `{strukt}` with members"))?;
    find_member(btf, st, member, 0)?
        .ok_or_else(|| anyhow!("struct `{strukt}` has no member `{member}` in this kernel's BTF"))
}

fn find_member(
    btf: &Btf,
    st: &btf_rs::Struct,
    member: &str,
    base_bits: u32,
) -> Result<Option<u32>> {
    for m in &st.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits + m.bit_offset();
        if name == member {
            if m.bitfield_size().is_some_and(|size| size != 0) || !bits.is_multiple_of(8) {
                bail!("member `{member}` is a bitfield; the probes cannot read it");
            }
            return Ok(Some(bits / 8));
        }
        if name.is_empty() {
            // Anonymous struct or union: look inside.
            let inner = btf.resolve_chained_type(m)?;
            if let Type::Struct(s) | Type::Union(s) = &inner
                && let Some(found) = find_member(btf, s, member, bits)?
            {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// True when the kernel's BTF has a function named `name` (a trampoline target).
pub fn has_function(btf: &Btf, name: &str) -> bool {
    btf.resolve_types_by_name(name)
        .map(|types| types.iter().any(|t| matches!(t, Type::Func(_))))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the BTF of the machine the tests run on: every member the probes
    /// need must be found, at distinct offsets inside each struct.
    #[test]
    fn resolves_every_offset_on_this_kernel() {
        let btf = kernel_btf().unwrap_or_else(|e| panic!("{e:#}"));
        let offsets = resolve_offsets(&btf).unwrap();
        assert_ne!(offsets.tty_index, offsets.tty_driver_data);
        assert_ne!(offsets.inode_i_mode, offsets.inode_i_rdev);
        // `fd` follows `max_fds` in every kernel since 2.6.
        assert!(offsets.fdtable_fd > offsets.fdtable_max_fds);
        // Since 6.0 write(2) hands tty_write an ITER_UBUF, writev an ITER_IOVEC.
        assert_ne!(offsets.iter_ubuf, ITER_UNKNOWN);
        assert_ne!(offsets.iter_iovec, ITER_UNKNOWN);
        assert_ne!(offsets.iter_ubuf, offsets.iter_iovec);
        assert_ne!(offsets.iov_iter_ubuf, offsets.iov_iter_type);
        assert_ne!(offsets.iov_iter_iov, offsets.iov_iter_type);
    }

    #[test]
    fn unknown_member_is_an_error_that_names_it() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            return;
        }
        let btf = kernel_btf().unwrap();
        let err = member_offset(&btf, "tty_struct", "no_such_member").unwrap_err();
        assert!(err.to_string().contains("no_such_member"), "{err}");
    }
}
